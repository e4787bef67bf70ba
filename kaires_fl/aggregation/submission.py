"""Sealed submissions (protocol.md §2): Shamir shares under per-aggregator keys, signed manifest.

A provider turns a batch of encoded measurements ``(B, MEAS_LEN)`` into

* for every aggregator ``i`` a fresh 32-byte key ``k_i`` and two AES-256-GCM blobs under it
  (:func:`kaires_fl.crypto.envelope.seal_bulk`): the *measurement part* (its Shamir share of
  the measurements and of a random mask ``ρ``) and the *proof part* (its Shamir share of the
  FLP proofs). Shares are *compressed*: t aggregators (default the first t) get a fresh
  32-byte seed per part instead, their shares are expanded from it (AES-256-CTR,
  :meth:`~kaires_fl.arith.field.PrimeField.expand_seed`), and the other n − t shares are
  completed from the secret and those (:func:`kaires_fl.arith.sharing.share_seeded`,
  written straight into the rows that become the plaintexts); a format byte at the start
  of each plaintext says which (:data:`FORMAT_FULL`, :data:`FORMAT_SEED`);
* a *key commitment* ``H(job, provider, i, k_i)`` per aggregator, so that a revealed key can
  be checked by anyone (AES-GCM alone is not key-committing);
* a :class:`Manifest` signed by the provider: job, provider, B, circuit id, the hashes of
  every part (:func:`part_hash`, BLAKE3), the key commitments and a reference to the
  CALYPSO write carrying the keys.

The joint randomness of the FLP is Fiat–Shamir over the hashes of the measurement parts
(:func:`joint_rand_seed`), so the proof is made after — and bound to — the shares. A circuit
with a witness (the PINE circuits' wraparound bits) takes it in two stages
(:func:`joint_rand_of`): stage 1 (what the witness depends on) from the measurement parts;
the witness is then shared and sealed at the head of each proof part, its sealed blobs
hashed into the manifest (``witness_parts``), and stage 2 (what may weight the witness's
checks) from the measurement and witness hashes.

The keys themselves are CALYPSO-written to the trustees by the caller
(:mod:`kaires_fl.roles.provider`), which then signs the manifest with the write's reference.
"""

from __future__ import annotations

import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import numpy as np

from kaires_fl import schema
from kaires_fl.arith import sharing
from kaires_fl.arith.flp import FlpBBCGGI19
from kaires_fl.crypto import envelope
from kaires_fl.crypto.sign import H, Identity, bulk_hash, is_valid
from kaires_fl.errors import ConfigError, EncodingError, InvalidProof, InvalidSubmission

MANIFEST_CONTEXT = b"kaires/aggregation/manifest"

#: Provider fault behaviours understood by :func:`seal_parts` (simulation and tests).
PROVIDER_FAULTS = ("out_of_range", "inconsistent_shares", "bad_proof", "bad_seed")

#: Most aggregators (parts per submission) a manifest may name.
MAX_PARTS = 1024
#: Largest batch a manifest may declare at all (a job's own limit, :func:`max_batch`, is
#: far lower: 1 in provider granularity, the row cap in record granularity).
MAX_BATCH = 2**32

#: Ids a manifest names (job, provider policy, circuit, write): the ledger's id alphabet.
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:/-]+\Z")]
Batch = Annotated[int, msgspec.Meta(ge=1, le=MAX_BATCH)]
Hashes = Annotated[tuple[schema.Hex32, ...], msgspec.Meta(min_length=1, max_length=MAX_PARTS)]
Parts = Annotated[tuple[schema.Blob, ...], msgspec.Meta(min_length=1, max_length=MAX_PARTS)]
#: The witness hashes: none (a circuit without a witness) or one per aggregator.
WitnessHashes = Annotated[tuple[schema.Hex32, ...], msgspec.Meta(max_length=MAX_PARTS)]

_ID = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
_HEX32 = re.compile(r"[0-9a-f]{64}")


def _bad(what: str, value: Any, want: str) -> EncodingError:
    shown = repr(value)
    return EncodingError(
        f"manifest field {what} = {shown[:80]}{'…' if len(shown) > 80 else ''} is not "
        f"{want}; the provider must sign a manifest built by sign_manifest"
    )


def _check_manifest_fields(m: Manifest) -> None:
    """Every field of ``m`` has its declared type, range and size (else ``EncodingError``).

    Decoding checks the same through the schema; this also covers a manifest built in
    Python (msgspec does not validate constructor arguments).
    """
    for what in ("job", "provider", "circuit", "write"):
        v = getattr(m, what)
        if type(v) is not str or _ID.fullmatch(v) is None:
            raise _bad(what, v, "an id of 1-128 characters [A-Za-z0-9_.:/-]")
    if type(m.signer) is not str or _HEX32.fullmatch(m.signer) is None:
        raise _bad("signer", m.signer, "a 64-character lowercase hex Ed25519 key")
    if type(m.batch) is not int or not 1 <= m.batch <= MAX_BATCH:
        raise _bad("batch", m.batch, f"an integer in [1, {MAX_BATCH}]")
    n = len(m.meas_parts) if type(m.meas_parts) is tuple else -1
    for what in ("meas_parts", "proof_parts", "key_commits"):
        v = getattr(m, what)
        if (
            type(v) is not tuple
            or not 1 <= len(v) <= MAX_PARTS
            or len(v) != n
            or not all(type(h) is str and _HEX32.fullmatch(h) is not None for h in v)
        ):
            raise _bad(
                what,
                v,
                f"a tuple of {max(n, 1)}..{MAX_PARTS} 32-byte hex digests, one per aggregator "
                "(as many as meas_parts)",
            )
    w = m.witness_parts
    if (
        type(w) is not tuple
        or len(w) not in (0, n)
        or not all(type(h) is str and _HEX32.fullmatch(h) is not None for h in w)
    ):
        raise _bad(
            "witness_parts",
            w,
            f"empty or a tuple of {max(n, 1)} 32-byte hex digests (one per aggregator)",
        )


class Manifest(schema.Message, frozen=True):
    """What a provider signs about one submission (hashes, keys and ids as lowercase hex).

    A schema message: every field has a declared type, range and size, checked when the
    manifest is built or decoded (``EncodingError``). The signature (carried by
    :class:`SealedSubmission`) covers the canonical encoding of every field
    (:func:`manifest_signing_bytes`), and :attr:`hash` is computed from that encoding on
    every access: nothing derived from the fields is cached on the object.
    """

    job: Id
    provider: Id  # the provider's policy id on the ledger
    signer: schema.Hex32  # the provider's Ed25519 key (its policy's owner)
    batch: Batch
    circuit: Id
    meas_parts: Hashes
    proof_parts: Hashes
    key_commits: Hashes
    write: Id
    #: Hashes of the sealed witness blobs at the head of the proof parts (stage 2 of the
    #: joint randomness; empty for a circuit without a witness).
    witness_parts: WitnessHashes = ()

    def __post_init__(self) -> None:
        _check_manifest_fields(self)

    def to_obj(self) -> dict[str, Any]:
        """The manifest as a JSON-ready dict (inverse: :meth:`from_obj`)."""
        return {
            "job": self.job,
            "provider": self.provider,
            "signer": self.signer,
            "batch": self.batch,
            "circuit": self.circuit,
            "meas_parts": list(self.meas_parts),
            "proof_parts": list(self.proof_parts),
            "key_commits": list(self.key_commits),
            "write": self.write,
            "witness_parts": list(self.witness_parts),
        }

    @classmethod
    def from_obj(cls, obj: Any) -> Manifest:
        """The manifest from :meth:`to_obj`'s dict; ``EncodingError`` if anything is off."""
        try:
            return msgspec.convert(obj, cls)
        except msgspec.ValidationError as exc:
            raise EncodingError(f"malformed manifest: {exc}") from None

    def body(self) -> bytes:
        """The canonical encoding of every field (what the hash and signature cover)."""
        return schema.encode(self)

    @property
    def hash(self) -> bytes:
        """H(context, canonical encoding): the id the inputs record (never cached)."""
        return H(MANIFEST_CONTEXT, schema.encode(self))


def manifest_signing_bytes(m: Manifest) -> bytes:
    """What the provider's manifest signature covers (:func:`schema.signing_bytes`)."""
    return schema.signing_bytes(m, MANIFEST_CONTEXT)


class SealedSubmission(schema.Message, frozen=True):
    """A provider's submission as the coordinator sees it: nothing in it is plaintext.

    ``meas_parts[i]`` / ``proof_parts[i]`` are AEAD blobs only aggregator ``i`` can open
    (after the trustees release ``k_i``); ``signature`` is the provider's over the manifest
    (:func:`manifest_signing_bytes`). The wire form is :meth:`to_bytes` /
    :meth:`from_bytes` (the schema's canonical encoding; decoding raises ``EncodingError``).
    """

    manifest: Manifest
    signature: schema.Signature
    meas_parts: Parts
    proof_parts: Parts

    def __post_init__(self) -> None:
        if type(self.manifest) is not Manifest:
            raise EncodingError("a sealed submission carries a Manifest")
        if type(self.signature) is not bytes or len(self.signature) > 64:
            raise EncodingError("a manifest signature is at most 64 bytes")
        for what in ("meas_parts", "proof_parts"):
            v = getattr(self, what)
            if (
                type(v) is not tuple
                or not 1 <= len(v) <= MAX_PARTS
                or not all(type(b) is bytes for b in v)
            ):
                raise EncodingError(
                    f"{what} must be a tuple of 1..{MAX_PARTS} bytes values (one per aggregator)"
                )

    def to_bytes(self) -> bytes:
        """The canonical wire encoding (each part copied once)."""
        return schema.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> SealedSubmission:
        """Decode and validate a submission (``EncodingError`` for anything malformed)."""
        return schema.decode(data, cls)

    def only(self, i: int) -> SealedSubmission:
        """The submission as aggregator ``i`` gets it: its own two parts, the others empty."""
        n = len(self.meas_parts)
        return (
            SealedSubmission(
                self.manifest,
                self.signature,
                tuple(p if j == i else b"" for j, p in enumerate(self.meas_parts)),
                tuple(p if j == i else b"" for j, p in enumerate(self.proof_parts)),
            )
            if 0 <= i < n
            else self
        )

    def check(
        self, n: int, parts: Sequence[int] | None = None, max_batch: int | None = None
    ) -> None:
        """Check the submission's form, its signature, its batch size and that the parts
        (all, or ``parts``) match the manifest.

        Pre: ``n`` is the job's number of aggregators; ``max_batch`` the job's largest
        admissible batch (:func:`max_batch`; None: only the schema's limit).
        Post: the manifest is well formed and signed by ``manifest.signer``, it names ``n``
        parts, ``1 ≤ batch ≤ max_batch``, and every checked part hashes to its entry.

        Raises
        ------
        InvalidSubmission
            naming the provider and what does not match (the coordinator or the network
            altered it, or the provider is faulty); never another exception.
        """
        m = self.manifest
        who = _who(m)
        try:
            self.__post_init__()
            _check_manifest_fields(m)
        except (EncodingError, AttributeError, TypeError) as exc:
            raise InvalidSubmission(f"malformed submission of {who}: {exc}") from None
        try:
            signed = manifest_signing_bytes(m)
        except (TypeError, ValueError, OverflowError, NotImplementedError) as exc:
            raise InvalidSubmission(f"manifest of {who} has no canonical encoding: {exc}") from None
        if not is_valid(bytes.fromhex(m.signer), MANIFEST_CONTEXT, signed, self.signature):
            raise InvalidSubmission(
                f"manifest of {who} is not signed by its signer {m.signer[:16]}…: the "
                "manifest or its signature was altered (or signed by another key)"
            )
        if not (len(m.meas_parts) == n and len(self.meas_parts) == len(self.proof_parts) == n):
            raise InvalidSubmission(
                f"submission of {who} has parts for {len(m.meas_parts)} aggregators, the "
                f"committee has {n}"
            )
        if max_batch is not None and not 1 <= m.batch <= max_batch:
            raise InvalidSubmission(
                f"provider {who} submitted a batch of {m.batch} measurements; this job "
                f"admits 1..{max_batch} per provider (1 for provider-granularity statistics "
                "and model updates, the row cap for record granularity): refused"
            )
        for i in range(n) if parts is None else parts:
            if not 0 <= i < n:
                raise InvalidSubmission(f"part {i} does not exist in a committee of {n}")
            if part_hash(self.meas_parts[i]).hex() != m.meas_parts[i] or (
                part_hash(self.proof_parts[i]).hex() != m.proof_parts[i]
            ):
                raise InvalidSubmission(
                    f"part {i} of {who}'s submission does not match its signed manifest: "
                    "it was altered in transit"
                )


def _who(m: Any) -> str:
    p = getattr(m, "provider", "?")
    return repr(p[:64]) if isinstance(p, str) else "an unnamed provider"


def max_batch(statistic: Any, job: Mapping[str, Any] | None = None) -> int:
    """The largest batch (measurements) one provider may submit to a job of ``statistic``.

    1 for provider-granularity statistics and model updates (each provider's local
    statistic counts once); the statistic's record row cap (``max_rows``, else its
    ``max_measurements``) in record granularity. ``job`` (the committed job entry) may
    lower it with ``params["max_batch"]``.

    Raises
    ------
    ConfigError
        for a statistic that declares no known granularity (refused rather than unbounded).
    """
    g = getattr(statistic, "granularity", None)
    if g == "provider":
        cap = 1
    elif g == "record":
        cap = int(statistic.max_batch)
    else:
        raise ConfigError(
            f"statistic {type(statistic).__name__} declares granularity {g!r}; a job needs "
            "'provider' or 'record' to bound each provider's batch"
        )
    if job is not None:
        lim = job.get("params", {}).get("max_batch")
        if type(lim) is int and lim >= 1:
            cap = min(cap, lim)
    return cap


def fit_job_total(
    submissions: Sequence[SealedSubmission], statistic: Any
) -> tuple[list[SealedSubmission], dict[str, str]]:
    """Keep the submissions whose batches sum to at most ``statistic.max_measurements``.

    The statistic's field is sized for that many measurements: more could wrap the sums
    (or fail the consumer's decoding after everyone was paid). While the total is too
    large, the submission with the largest batch is dropped (ties: the larger provider
    id), so one provider inflating its batch is dropped rather than honest ones. Call it
    at admission (after the per-submission :meth:`SealedSubmission.check`) and, on the
    closed inputs, in every aggregator (the same deterministic rule gives every honest
    aggregator the same set).

    Returns ``(kept in the given order, {provider: reason} for the dropped)``.
    """
    cap = int(getattr(statistic, "max_measurements", 0) or 0)
    batches = [int(s.manifest.batch) for s in submissions]
    total = sum(batches)
    dropped: dict[str, str] = {}
    if cap <= 0 or total <= cap:
        return list(submissions), dropped
    order = sorted(
        range(len(submissions)),
        key=lambda k: (batches[k], submissions[k].manifest.provider),
        reverse=True,
    )
    out: set[int] = set()
    for k in order:
        if total <= cap:
            break
        out.add(k)
        total -= batches[k]
        dropped[submissions[k].manifest.provider] = (
            f"submission refused: its batch of {batches[k]} takes the job over the "
            f"{cap} measurements its statistic is sized for"
        )
    return [s for k, s in enumerate(submissions) if k not in out], dropped


def check_for_job(
    sub: SealedSubmission,
    job: Mapping[str, Any],
    *,
    statistic: Any,
    circuit: str | None = None,
    parts: Sequence[int] | None = None,
) -> None:
    """Every check of ``sub`` against committed ``job`` that needs no ledger read.

    The form, signature and parts (:meth:`SealedSubmission.check` with ``n`` the job's
    aggregators and :func:`max_batch`), and that the manifest names this job, one of its
    providers and its ``circuit`` id (when given). Raises ``InvalidSubmission`` only.
    """
    sub.check(len(job["aggregators"]), parts=parts, max_batch=max_batch(statistic, job))
    m = sub.manifest
    if m.job != job["id"] or m.provider not in job["providers"]:
        raise InvalidSubmission(
            f"submission of {_who(m)} is not for job {str(job['id'])[:16]}… or its provider "
            "is not in the job"
        )
    if circuit is not None and m.circuit != circuit:
        raise InvalidSubmission(f"submission of {_who(m)} is for another circuit than the job's")


@dataclass
class SealedParts:
    """Output of :func:`seal_parts`: the provider's secrets stay here, never in a message."""

    keys: list[bytes]
    meas_parts: list[bytes]
    proof_parts: list[bytes]
    key_commits: list[bytes]
    batch: int
    meas: np.ndarray = field(repr=False)
    meas_hashes: list[str] = field(default_factory=list)
    proof_hashes: list[str] = field(default_factory=list)
    witness_hashes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PartShares:
    """Aggregator ``i``'s opened part: shares of the measurements, proofs and mask ``ρ``."""

    meas: np.ndarray  # (B, MEAS_LEN)
    proof: np.ndarray  # (B, PROOF_LEN)
    rho: np.ndarray  # (1,)


def _part_hash(blob: bytes) -> bytes:
    return bulk_hash(b"kaires/aggregation/part/v2", blob)


def _is_bytes(blob: Any) -> bool:
    return type(blob) is bytes


#: :func:`part_hash` memoised by blob object (``bytes`` cannot change; see DigestMemo).
_PART_HASHES = schema.DigestMemo(_part_hash, _is_bytes)


def part_hash(blob: bytes) -> bytes:
    """BLAKE3 of a sealed part blob (:func:`~kaires_fl.crypto.sign.bulk_hash`, domain
    ``kaires/aggregation/part/v2``): what the manifest signs for it.

    Each ``bytes`` object is hashed once per process (:class:`kaires_fl.schema.DigestMemo`):
    in a simulation the provider that sealed a part, the coordinator that admits it and the
    aggregator that checks it share one object, and only a digest this process computed
    over that very object is reused — a tampered part is a new object, hashed afresh.
    """
    return _PART_HASHES(blob)


def key_commit(job: str, provider: str, i: int, key: bytes) -> bytes:
    """Commitment to aggregator ``i``'s key (binding: a revealed key is checkable by all)."""
    return H(
        b"kaires/aggregation/key-commit",
        job.encode(),
        provider.encode(),
        i.to_bytes(4, "little"),
        key,
    )


def _aad(kind: bytes, job: str, provider: str, i: int) -> bytes:
    return H(
        b"kaires/aggregation/aad", kind, job.encode(), provider.encode(), i.to_bytes(4, "little")
    )


def joint_rand_seed(
    job: str, provider: str, circuit: str, meas_part_hashes: Sequence[str]
) -> bytes:
    """Fiat–Shamir seed of the FLP joint randomness: binds the job, provider and every share."""
    return H(
        b"kaires/aggregation/joint-rand",
        job.encode(),
        provider.encode(),
        circuit.encode(),
        *[bytes.fromhex(h) for h in meas_part_hashes],
    )


def witness_rand_seed(stage1: bytes, witness_part_hashes: Sequence[str]) -> bytes:
    """Fiat–Shamir seed of stage 2 of the joint randomness: binds stage 1 (hence the job,
    provider, circuit and measurement shares) and every sealed witness share."""
    return H(
        b"kaires/aggregation/joint-rand/stage2",
        stage1,
        *[bytes.fromhex(h) for h in witness_part_hashes],
    )


def joint_rand_of(flp: FlpBBCGGI19, m: Manifest) -> np.ndarray:
    """The FLP joint randomness ``(JOINT_RAND_LEN,)`` of the submission ``m`` describes,
    from its signed hashes alone (what every aggregator, and any third party, recomputes).

    One stage for a circuit without a witness; two for one with a witness (module
    docstring). A manifest without the witness hashes its circuit needs gets a stage 2
    from none: :func:`open_part` refuses such a submission anyway.
    """
    seed = joint_rand_seed(m.job, m.provider, m.circuit, m.meas_parts)
    if not flp.valid.WITNESS_LEN:
        return flp.derive_joint_rand(seed)
    return flp.derive_joint_rand_staged(seed, witness_rand_seed(seed, m.witness_parts))


def _split_proof_part(blob: bytes) -> tuple[bytes, bytes]:
    """(witness blob, proof blob) of a proof part ``len32 ‖ witness blob ‖ proof blob``."""
    if len(blob) < 4 or int.from_bytes(blob[:4], "little") > len(blob) - 4:
        raise EncodingError("the proof part does not start with its witness blob's length")
    k = 4 + int.from_bytes(blob[:4], "little")
    return blob[4:k], blob[k:]


#: First byte of a part's plaintext: the part carries its shares in full.
FORMAT_FULL = 0
#: First byte of a part's plaintext in kaires-fl's first seeded format (shares expanded by
#: SHAKE-128): refused since the expansion is AES-256-CTR, so that no part is misread.
FORMAT_SEED_SHAKE = 1
#: First byte of a part's plaintext: the part carries a 32-byte seed its shares expand from
#: (:meth:`~kaires_fl.arith.field.PrimeField.expand_seed`, AES-256-CTR).
FORMAT_SEED = 2
SEED_SIZE = 32


def seed_context(kind: bytes, job: str, provider: str) -> bytes:
    """Expansion context of the seeded shares of one submission's ``kind`` (meas, rho, proof);
    :func:`kaires_fl.arith.sharing.share_seeded` appends the aggregator's index."""
    return H(b"kaires/aggregation/share-seed", kind, job.encode(), provider.encode())


def _plain_rows(F: Any, n: int, width: int) -> np.ndarray | None:
    """``(n, 1 + width)`` uint64 rows whose bytes 7.. are each a :data:`FORMAT_FULL`
    plaintext of ``width`` elements once their columns 1.. are filled (the sharing writes
    there, so a full part is sealed without encoding or concatenating its shares); None
    when the field's array is not its own encoding (Field128, a big-endian machine)."""
    dtype = F.DTYPE
    if dtype != np.uint64 or sys.byteorder != "little":
        return None
    rows = np.empty((n, 1 + width), np.uint64)
    rows[:, 0] = np.uint64(FORMAT_FULL) << np.uint64(56)  # byte 7: the format byte
    return rows


def _share(
    F: Any,
    secret: np.ndarray,
    seeds: Mapping[int, bytes],
    n: int,
    t: int,
    context: bytes,
    rows: np.ndarray | None,
    col: int,
) -> np.ndarray:
    """The ``(n, *secret.shape)`` shares of ``secret`` (seeded ones from ``seeds``, or none),
    written into columns ``col..`` of ``rows`` (and a view of them) when given."""
    if seeds:
        return sharing.share_seeded(F, secret, seeds, n, t, context, out=rows, col=col)
    sh = sharing.share(F, secret, n, t)
    if rows is None:
        return sh
    rows[:, col : col + secret.size] = sh.reshape(n, -1)
    return rows[:, col : col + secret.size].reshape(sh.shape)


def _full_plain(F: Any, rows: np.ndarray | None, i: int, *shares: np.ndarray) -> Any:
    """Party ``i``'s :data:`FORMAT_FULL` plaintext: its row of ``rows`` from byte 7 (a view),
    or the format byte and the encoded ``shares[k][i]``."""
    if rows is not None:
        return rows[i].data.cast("B")[7:]
    return bytes([FORMAT_FULL]) + b"".join(F.encode(sh[i]) for sh in shares)


def seal_parts(
    flp: FlpBBCGGI19,
    meas: np.ndarray,
    *,
    job: str,
    provider: str,
    circuit: str,
    n: int,
    t: int,
    keys: Sequence[bytes] | None = None,
    fault: str | None = None,
    seeded: Sequence[int] | None = None,
) -> SealedParts:
    """Share, prove and seal a batch of measurements for ``n`` aggregators (protocol.md §2).

    Pre: ``meas`` is ``(B, MEAS_LEN)`` elements of ``flp.field``; ``fault`` is None or one
    of :data:`PROVIDER_FAULTS` (a deliberately faulty provider, for simulation); ``keys``
    are the n 32-byte keys CALYPSO-written for the aggregators (fresh random ones if None);
    ``seeded``: the aggregators whose shares are expanded from seeds — exactly ``t`` of
    them (default: the first t, ``range(t)``), or ``()`` to send every share in full.
    Post: ``keys[i]`` opens ``meas_parts[i]`` and ``proof_parts[i]``; a seeded aggregator's
    parts hold a fresh 32-byte seed each (measurement + mask, witness, proof), the others
    their shares in full, computed from the secret and the seeded shares; the joint
    randomness of the proofs is derived from the hashes of the measurement parts (and, for
    a circuit with a witness, in a second stage from those of the sealed witness shares,
    which head the proof parts: :func:`joint_rand_of`).
    """
    F = flp.field
    meas = np.asarray(meas)
    if meas.ndim != 2 or meas.shape[1] != flp.MEAS_LEN or meas.dtype != F.DTYPE:
        raise EncodingError(
            f"measurements must be {F.__name__} elements of shape (B, {flp.MEAS_LEN}); "
            f"got {meas.shape} {meas.dtype}"
        )
    if fault is not None and fault not in PROVIDER_FAULTS:
        raise EncodingError(f"unknown provider fault {fault!r}; use one of {PROVIDER_FAULTS}")
    seeded = list(range(t)) if seeded is None else sorted({int(j) for j in seeded})
    if seeded and (len(seeded) != t or not all(0 <= j < n for j in seeded)):
        raise EncodingError(
            f"seeded aggregators {seeded}: a degree-{t} sharing has exactly t = {t} seeded "
            f"shares among aggregators 0..{n - 1} (or none)"
        )
    if fault == "bad_seed" and not seeded:
        raise EncodingError("the bad_seed fault needs a seeded aggregator (t ≥ 1)")
    B = meas.shape[0]
    if fault == "out_of_range":
        # A value the circuit must refuse: every circuit here range-checks its first entry
        # (a bit or a bounded integer), and 2 + (any bit) is never a bit.
        meas = meas.copy()
        meas[:, 0] = F.add(meas[:, 0], F.elements(F.MODULUS // 2))
    rho = F.random((1,))
    mseeds = {j: secrets.token_bytes(SEED_SIZE) for j in seeded}
    pseeds = {j: secrets.token_bytes(SEED_SIZE) for j in seeded}
    L = meas.size
    mrows = _plain_rows(F, n, L + 1)  # a full part's plaintext: format ‖ meas_i ‖ ρ_i
    meas_sh = _share(F, meas, mseeds, n, t, seed_context(b"meas", job, provider), mrows, 1)
    rho_sh = _share(F, rho, mseeds, n, t, seed_context(b"rho", job, provider), mrows, 1 + L)
    if fault == "inconsistent_shares":
        meas_sh[n - 1] = F.add(meas_sh[n - 1], F.random(meas_sh[n - 1].shape))
    if fault == "bad_seed":
        # The full shares were completed from one seed; the part seals another.
        mseeds[seeded[0]] = secrets.token_bytes(SEED_SIZE)
    if keys is None:
        keys = [secrets.token_bytes(32) for _ in range(n)]
    keys = list(keys)
    if len(keys) != n or any(len(k) != 32 for k in keys):
        raise EncodingError(f"seal_parts needs {n} keys of 32 bytes (one per aggregator)")

    meas_parts = [
        envelope.seal_bulk(
            keys[i],
            bytes([FORMAT_SEED]) + mseeds[i]
            if i in mseeds
            else _full_plain(F, mrows, i, meas_sh, rho_sh),
            _aad(b"meas", job, provider, i),
        )
        for i in range(n)
    ]
    del meas_sh, rho_sh, mrows  # the proof is made next: keep one copy of the shares at a time
    mhashes = [part_hash(p).hex() for p in meas_parts]
    stage1 = joint_rand_seed(job, provider, circuit, mhashes)
    W = flp.valid.WITNESS_LEN
    wblobs: list[bytes] = []
    whashes: list[str] = []
    witness = None
    if W:
        # stage 1 fixed: the witness, committed (sealed, hashed) before stage 2 is drawn
        witness = flp.witness(meas, flp.derive_stage1_rand(stage1))
        wblobs = _seal_shares(F, witness, keys, seeded, n, t, b"witness", job, provider)
        whashes = [part_hash(b).hex() for b in wblobs]
        joint_rand = flp.derive_joint_rand_staged(stage1, witness_rand_seed(stage1, whashes))
    else:
        joint_rand = flp.derive_joint_rand(stage1)
    proof = flp.prove(
        meas, flp.random_prove_rand((B,)), joint_rand if flp.JOINT_RAND_LEN else None, witness
    )[:, W:]
    if fault == "bad_proof":
        proof = proof.copy()
        proof[:, -1] = F.add(proof[:, -1], F.ones((B,)))
    prows = _plain_rows(F, n, proof.size)
    proof_sh = _share(F, proof, pseeds, n, t, seed_context(b"proof", job, provider), prows, 1)
    proof_parts = [
        envelope.seal_bulk(
            keys[i],
            bytes([FORMAT_SEED]) + pseeds[i] if i in pseeds else _full_plain(F, prows, i, proof_sh),
            _aad(b"proof", job, provider, i),
        )
        for i in range(n)
    ]
    if W:
        proof_parts = [
            len(w).to_bytes(4, "little") + w + p for w, p in zip(wblobs, proof_parts, strict=True)
        ]
    commits = [key_commit(job, provider, i, keys[i]) for i in range(n)]
    phashes = [part_hash(p).hex() for p in proof_parts]
    return SealedParts(keys, meas_parts, proof_parts, commits, B, meas, mhashes, phashes, whashes)


def _seal_shares(
    F: Any,
    secret: np.ndarray,
    keys: Sequence[bytes],
    seeded: Sequence[int],
    n: int,
    t: int,
    kind: bytes,
    job: str,
    provider: str,
) -> list[bytes]:
    """The n AEAD blobs of a degree-t sharing of ``secret`` (``kind`` names its seed and
    AAD context): a fresh seed for each seeded aggregator, the shares in full otherwise."""
    seeds = {j: secrets.token_bytes(SEED_SIZE) for j in seeded}
    rows = _plain_rows(F, n, secret.size)
    sh = _share(F, secret, seeds, n, t, seed_context(kind, job, provider), rows, 1)
    return [
        envelope.seal_bulk(
            keys[i],
            bytes([FORMAT_SEED]) + seeds[i] if i in seeds else _full_plain(F, rows, i, sh),
            _aad(kind, job, provider, i),
        )
        for i in range(n)
    ]


def sign_manifest(
    identity: Identity,
    parts: SealedParts,
    *,
    job: str,
    provider: str,
    circuit: str,
    write: str,
) -> SealedSubmission:
    """The provider's signed manifest over ``parts`` and the CALYPSO write reference ``write``."""
    m = Manifest(
        job=job,
        provider=provider,
        signer=identity.public.hex(),
        batch=parts.batch,
        circuit=circuit,
        meas_parts=tuple(parts.meas_hashes or [part_hash(p).hex() for p in parts.meas_parts]),
        proof_parts=tuple(parts.proof_hashes or [part_hash(p).hex() for p in parts.proof_parts]),
        key_commits=tuple(c.hex() for c in parts.key_commits),
        write=write,
        witness_parts=tuple(parts.witness_hashes),
    )
    sig = identity.sign(MANIFEST_CONTEXT, manifest_signing_bytes(m))
    return SealedSubmission(m, sig, tuple(parts.meas_parts), tuple(parts.proof_parts))


def open_part(
    flp: FlpBBCGGI19,
    manifest: Manifest,
    i: int,
    key: bytes,
    meas_blob: bytes,
    proof_blob: bytes,
    *,
    hashes_checked: bool = False,
) -> PartShares:
    """Aggregator ``i``'s shares from its released key (or anyone's, from a revealed key).

    ``hashes_checked``: the caller already checked both blobs against the manifest.

    Raises
    ------
    InvalidSubmission
        if the key does not match the signed commitment, a blob does not match its hash
        or does not decrypt, or the plaintext is not ``B`` canonical share vectors: the
        provider (who signed the manifest) is at fault.
    """
    F = flp.field
    job, prov, B = manifest.job, manifest.provider, manifest.batch
    if not 0 <= i < len(manifest.key_commits) or len(key) != 32:
        raise InvalidSubmission(
            f"no part {i} (or a key of {len(key)} bytes) in the manifest of {prov[:16]}…"
        )
    if key_commit(job, prov, i, key).hex() != manifest.key_commits[i]:
        raise InvalidSubmission(
            f"released key {i} of provider {prov[:16]}… does not match its signed commitment: "
            "the provider wrote a different key than it committed to"
        )
    if not hashes_checked and (
        part_hash(meas_blob).hex() != manifest.meas_parts[i]
        or part_hash(proof_blob).hex() != manifest.proof_parts[i]
    ):
        raise InvalidSubmission(f"part {i} of provider {prov[:16]}… does not match its manifest")
    W = flp.valid.WITNESS_LEN
    if len(manifest.witness_parts) != (len(manifest.key_commits) if W else 0):
        raise InvalidSubmission(
            f"the manifest of provider {prov[:16]}… names {len(manifest.witness_parts)} "
            f"witness parts; its circuit needs {'one per aggregator' if W else 'none'}"
        )
    try:
        wplain: tuple[int, memoryview] = (FORMAT_FULL, memoryview(b""))
        if W:
            wblob, proof_blob = _split_proof_part(proof_blob)
            if part_hash(wblob).hex() != manifest.witness_parts[i]:
                raise InvalidSubmission(
                    f"the witness blob of part {i} of provider {prov[:16]}… does not match "
                    "its signed hash: the provider sealed another witness than it committed to"
                )
            wplain = _open_plain(key, wblob, _aad(b"witness", job, prov, i))
        mplain = _open_plain(key, meas_blob, _aad(b"meas", job, prov, i))
        pplain = _open_plain(key, proof_blob, _aad(b"proof", job, prov, i))
        meas, rho = _meas_shares(F, mplain, B, flp.MEAS_LEN, job, prov, i)
        proof = _part_shares(F, pplain, (B, flp.PROOF_LEN - W), b"proof", job, prov, i)
        if W:
            wit = _part_shares(F, wplain, (B, W), b"witness", job, prov, i)
            proof = np.concatenate([wit, proof], axis=1)
    except (InvalidProof, EncodingError) as exc:
        raise InvalidSubmission(
            f"part {i} of provider {prov[:16]}… does not open to {B} share vectors: {exc}"
        ) from exc
    return PartShares(meas, proof, rho)


def _open_plain(key: bytes, blob: bytes, aad: bytes) -> tuple[int, memoryview]:
    """The format byte and the rest of a sealed part's plaintext, decrypted into an 8-byte
    aligned buffer so that the rest (from byte 8 of the buffer) decodes to Field64 shares
    without a copy (:meth:`~kaires_fl.arith.field.PrimeField.decode_view`)."""
    size = max(len(blob) - envelope.NONCE_SIZE - envelope.TAG_SIZE, 0)
    buf = np.empty((size + 14) // 8, np.uint64)
    plain = buf.data.cast("B")[7 : 7 + size]
    envelope.open_bulk_into(key, blob, aad, plain)
    if not size:
        raise EncodingError("the part's plaintext is empty: it has no format byte")
    return plain[0], plain[1:]


def _seed(plain: tuple[int, memoryview]) -> bytes | None:
    """The seed of a seeded part's plaintext, None for a full one (else ``EncodingError``)."""
    fmt, rest = plain
    if fmt == FORMAT_FULL:
        return None
    if fmt == FORMAT_SEED_SHAKE:
        raise EncodingError(
            f"the part has format {FORMAT_SEED_SHAKE} (seeds expanded by SHAKE-128, an older "
            f"kaires-fl); seeds now expand by AES-256-CTR (format {FORMAT_SEED}): the "
            "provider must upgrade"
        )
    if fmt != FORMAT_SEED:
        raise EncodingError(f"the part's plaintext has an unknown format byte {fmt}")
    if len(rest) != SEED_SIZE:
        raise EncodingError(f"a seeded part holds {SEED_SIZE} bytes, this one {len(rest)}")
    return bytes(rest)


def _meas_shares(
    F: Any, plain: tuple[int, memoryview], B: int, width: int, job: str, prov: str, i: int
) -> tuple[np.ndarray, np.ndarray]:
    """Measurement and mask shares ``(B, width)``, ``(1,)`` of a measurement part."""
    seed = _seed(plain)
    if seed is not None:
        meas = sharing.seeded_share(
            F, seed, (B, width), sharing.seed_context(seed_context(b"meas", job, prov), i)
        )
        rho = sharing.seeded_share(
            F, seed, (1,), sharing.seed_context(seed_context(b"rho", job, prov), i)
        )
        return meas, rho
    rest = plain[1]
    mlen = B * width * F.ENCODED_SIZE
    if len(rest) != mlen + F.ENCODED_SIZE:
        raise EncodingError(
            f"a full measurement part holds {mlen + F.ENCODED_SIZE} bytes of shares "
            f"({B} × {width} and the mask), this one {len(rest)}"
        )
    return F.decode_view(rest[:mlen], (B, width)), F.decode_view(rest[mlen:], (1,))


def _part_shares(
    F: Any,
    plain: tuple[int, memoryview],
    shape: tuple[int, ...],
    kind: bytes,
    job: str,
    prov: str,
    i: int,
) -> np.ndarray:
    """The shares of shape ``shape`` a part's plaintext holds or expands to."""
    seed = _seed(plain)
    if seed is not None:
        return sharing.seeded_share(
            F, seed, shape, sharing.seed_context(seed_context(kind, job, prov), i)
        )
    return F.decode_view(plain[1], shape)
