"""The aggregator of the BFT Prio cothority (protocol.md §5–§6).

Aggregator ``i`` of a job holds, after the key release, the Shamir shares (point i + 1,
degree t) of every submission's measurements, proofs and mask ``ρ``. It then

1. publishes, in one signed :class:`Published` message, a consistency value
   ``z_i = ρ_i + rᵀ(meas_i·c_meas + proof_i·c_proof)`` per submission (``r``, ``c`` from the
   coin) and its verifier shares for every record of the job (batched FLP ``query``);
2. locates, from the public z values, the (submission, aggregator) pairs off the degree-t
   polynomial (:func:`find_disputes`; every holder, for a submission whose z cannot be
   decoded); a flagged aggregator justifies itself by disclosing the key it was released
   and its parts (:class:`Reveal`), which anyone checks against the provider's signed
   manifest (part hashes, key commitment) to recompute ``z``: a z that does not match its
   part blames the aggregator; the provider's submission is rejected iff the z computed
   from the parts *as sent* are off one degree-t polynomial;
3. opens the verifier shares of the consistent submissions robustly, runs ``decide``
   (:func:`decide_job`; every honest aggregator computes the same :class:`Decision` from
   the same public messages), sums ``truncate`` of its accepted shares and seals that
   share of the aggregate to the consumer.

A part that does not open is disclosed in round 1 (its released key and blobs), with the
single-slot ``WrittenKeyProof`` of the key the provider actually wrote when the released key
is not the committed one; a disclosure then proves the provider at fault from what it signed.

Message discipline (DESIGN.md): every message is a :class:`kaires_fl.schema.Message` signed
over the canonical encoding of all its fields (field, shape and dtype of every array
included); a decision rests on ≥ n − t valid round-1 messages; openings correct wrong
values only when the number present makes it unambiguous (:func:`correction_radius`) and
otherwise only detect; an aggregator checks that its own messages are relayed unaltered and
never decides a blame on itself. An honest aggregator discloses a part only when the
provider is provably at fault: a part that does not open, or its own z flagged by an
unambiguous decoding of a complete enough column (which, with at most t faulty
aggregators, never happens for an honest provider). An undecodable column is rejected
without any disclosure; an inconsistent column with too few values decides nothing.

:class:`AggregatorJob` is one aggregator's state for one job (pure computation, no I/O);
the service that moves its messages is :class:`kaires_fl.aggregation.job.AggregatorService`.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any

import msgspec
import numpy as np

from kaires_fl import schema
from kaires_fl.aggregation.submission import (
    Id,
    Manifest,
    PartShares,
    SealedSubmission,
    joint_rand_of,
    key_commit,
    open_part,
    part_hash,
)
from kaires_fl.arith import _kernels as kern
from kaires_fl.arith import sharing
from kaires_fl.arith.flp import FlpBBCGGI19, sum_records
from kaires_fl.crypto import envelope
from kaires_fl.crypto.sign import H, Identity, is_valid
from kaires_fl.errors import DecodingError, EncodingError, InvalidSubmission, ProtocolError
from kaires_fl.ledger.darc import policy_owner
from kaires_fl.ledger.encoding import canonical
from kaires_fl.ledger.jobs import distinct_owners
from kaires_fl.privacy.mechanism import Complaints, NoiseComplaint, NoiseRound
from kaires_fl.schema import Blob, Bytes32, Count, Elements, Index, Signature

PUBLISH_CONTEXT = b"kaires/aggregation/publish"
REVEAL_CONTEXT = b"kaires/aggregation/reveal"
RESULT_CONTEXT = b"kaires/aggregation/result"

#: Mean records per submission from which each submission is queried on its own.
PER_SUBMISSION_QUERY = 64
#: Measurement elements (records × MEAS_LEN) from which a submission is verified and folded
#: into the running sum as soon as it is opened, its shares then dropped
#: (:class:`AggregatorJob`): 2^14 elements = 128 KiB of Field64 shares.
STREAM_ELEMENTS = 2**14

#: Behaviours of a simulated faulty aggregator ("crash" is the network's business).
AGGREGATOR_FAULTS = ("crash", "byzantine", "no_noise", "big_noise", "bad_noise_share")

# Rejection reasons (stable codes; the receipt carries them).
REASON_MISSING = "no_submission"
REASON_UNOPENABLE = "unopenable_part"
REASON_WRONG_KEY = "wrong_key_written"
REASON_INCONSISTENT = "inconsistent_shares"
REASON_INVALID_MEAS = "invalid_measurement"
REASON_INVALID_PROOF = "invalid_proof"
REASON_OVER_TOTAL = "over_job_total"


# ---------------------------------------------------------------------------- job context


@dataclass(frozen=True)
class JobContext:
    """What every aggregator of a job agrees on before verification starts.

    ``submissions`` is the fixed, ordered set recorded by the ``inputs`` transaction;
    ``aggregators`` the job's Ed25519 keys (aggregator i = Shamir point i + 1);
    ``providers`` every provider (policy id) included in the job.
    """

    job: str
    chain: str
    flp: FlpBBCGGI19
    circuit: str
    n: int
    t: int
    aggregators: tuple[str, ...]
    consumer_key: bytes
    providers: tuple[str, ...]
    min_providers: int
    submissions: tuple[SealedSubmission, ...]
    #: Closed inputs left out by the job-total rule (``submission.fit_job_total``):
    #: (provider, why); rejected with :data:`REASON_OVER_TOTAL`.
    excluded: tuple[tuple[str, str], ...] = ()
    #: The job's signers (its consumer and co-signers, as the ledger recorded them): their
    #: own policies protect nobody, so they are not counted towards a policy's
    #: ``min_providers`` (:func:`kaires_fl.ledger.jobs.distinct_owners`).
    signers: tuple[str, ...] = ()
    #: ``(provider, min_providers)`` of every included policy, as the ledger holds it.
    provider_min: tuple[tuple[str, int], ...] = ()
    #: ``written_key(s, i, proof_blob)``: the key the provider wrote for slot i of
    #: submission s, from an encoded single-slot ``WrittenKeyProof`` (None if it does not
    #: hold); None when no trustee committee is at hand (then such claims stay unproven).
    written_key: Callable[[int, int, bytes], bytes | None] | None = field(
        default=None, compare=False, repr=False
    )

    @cached_property
    def offsets(self) -> np.ndarray:
        """Row offsets of each submission in the job's record batch (length S + 1)."""
        return np.concatenate([[0], np.cumsum([s.manifest.batch for s in self.submissions])])

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])

    def joint_rand(self, s: int) -> np.ndarray:
        """Joint randomness ``(JOINT_RAND_LEN,)`` of submission s (Fiat–Shamir on its parts)."""
        return joint_rand_of(self.flp, self.submissions[s].manifest)

    @cached_property
    def joint_rands(self) -> np.ndarray:
        """Per-record joint randomness ``(rows, JOINT_RAND_LEN)`` (Fiat–Shamir per submission)."""
        flp = self.flp
        F = flp.field
        if not flp.JOINT_RAND_LEN:
            return F.zeros((self.rows, 0))
        per = [joint_rand_of(flp, s.manifest) for s in self.submissions]
        counts = [s.manifest.batch for s in self.submissions]
        return np.repeat(np.stack(per), counts, axis=0) if per else F.zeros((0, flp.JOINT_RAND_LEN))


_COEFFS: dict[tuple[bytes, int], tuple[np.ndarray, np.ndarray]] = {}


@dataclass(frozen=True)
class Coin:
    """The job's public coin (threshold VRF output) and what is expanded from it."""

    value: bytes

    def query_rand(self, flp: FlpBBCGGI19) -> np.ndarray:
        return flp.derive_query_rand(H(b"kaires/aggregation/query-rand", self.value))

    def consistency(self, flp: FlpBBCGGI19) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients over one record's measurement and proof coordinates (cached)."""
        got = _COEFFS.get((self.value, id(flp)))
        if got is None:
            F = flp.field
            c_meas = F.from_seed(self.value, (flp.MEAS_LEN,), b"kaires/consistency/meas")
            c_proof = F.from_seed(self.value, (flp.PROOF_LEN,), b"kaires/consistency/proof")
            got = _COEFFS[(self.value, id(flp))] = (c_meas, c_proof)
            if len(_COEFFS) > 16:
                _COEFFS.pop(next(iter(_COEFFS)))
        return got

    def row_coeffs(self, flp: FlpBBCGGI19, manifest: Manifest) -> np.ndarray:
        return flp.field.from_seed(
            self.value, (manifest.batch,), b"kaires/consistency/rows" + manifest.hash
        )


def consistency_value(
    flp: FlpBBCGGI19, coin: Coin, manifest: Manifest, shares: PartShares
) -> np.ndarray:
    """``z = ρ + rᵀ(meas·c_meas + proof·c_proof)`` on one party's shares: shape ``(1,)``.

    Linear in the shares, so the z of all parties lie on one degree-t polynomial iff
    (except with probability ≈ 2/|F| over the coin) every share vector does.
    """
    F = flp.field
    c_meas, c_proof = coin.consistency(flp)
    per_row = F.add(F.dot(shares.meas, c_meas), F.dot(shares.proof, c_proof))
    return F.add(shares.rho, F.dot(coin.row_coeffs(flp, manifest), per_row).reshape(1))


def fold_truncated(flp: FlpBBCGGI19, meas: np.ndarray) -> np.ndarray:
    """``Σ_records truncate(meas)`` for ``meas`` ``(B, MEAS_LEN)``: shape ``(OUTPUT_LEN,)``.

    ``truncate`` is affine with its constants added in full (T(m) = L(m) + c), so the sum
    over B records is T(Σ m) + (B − 1)·c with c = T(0): one pass over the shares, and the
    circuit's decoding (e.g. integers from their bits) runs on a single row.
    """
    F = flp.field
    B = meas.shape[0]
    total = flp.valid.truncate(sum_records(F, meas)[None, :])[0]
    if B == 1:
        return total
    const = flp.valid.truncate(F.zeros((1, meas.shape[1])))[0]
    return F.add(total, F.mul(const, F.elements((B - 1) % F.MODULUS)))


# ---------------------------------------------------------------------------- messages

#: Largest number of items (disclosures, relayed messages) in one message.
MAX_ITEMS = 2**16
#: Largest reason text a Failed message carries (characters).
MAX_REASON = 4096

JobId = Id
#: A sealed-share hash (hex), or "" when nothing is released.
ShareHash = Annotated[str, msgspec.Meta(pattern=r"^([0-9a-f]{64})?\Z")]


class Disclosure(schema.Message, frozen=True):
    """One disclosed part of one submission (a dispute's evidence, nothing else).

    ``key``: the key aggregator ``i`` was released for submission ``submission``; ``meas``
    / ``proof``: its two part blobs (anyone checks them against the signed manifest and
    reopens them); ``written``: for a part whose released key is not the committed one,
    the encoded single-slot ``WrittenKeyProof`` (trustees' decryption shares of that one
    slot) showing that the provider wrote that key — ``b""`` otherwise.
    """

    submission: Count
    key: Bytes32
    meas: Blob
    proof: Blob
    written: Blob = b""


Disclosures = Annotated[tuple[Disclosure, ...], msgspec.Meta(max_length=MAX_ITEMS)]


class Published(schema.Message, frozen=True):
    """Aggregator ``i``'s round-1 message: z per submission, verifier shares per record.

    ``z``: ``(S,)`` and ``verifier``: ``(rows, VERIFIER_LEN)`` elements of the job's field
    (field, shape and every byte under the signature); ``unopened`` the submissions whose
    part did not open with the key released for it.
    """

    job: JobId
    aggregator: Index
    z: Elements
    verifier: Elements
    unopened: Disclosures = ()
    signature: Signature = b""
    #: Its values for the job's differential-privacy noise deals (None: no noise; after
    #: ``signature`` so that positional construction stays as it was — still signed).
    noise: NoiseRound | None = None


class Reveal(schema.Message, frozen=True, tag="AggregatorReveal"):
    """Aggregator ``i``'s justification: its released key for each disputed submission."""

    job: JobId
    aggregator: Index
    keys: Disclosures = ()
    signature: Signature = b""
    #: Its proven part keys of the noise deals it is in question for (differential privacy;
    #: signed like every field).
    noise: Complaints = ()


@dataclass(frozen=True)
class Decision:
    """What the honest aggregators agree on (the receipt's content but the share hashes)."""

    accepted: tuple[str, ...]
    rejected: tuple[tuple[str, str], ...]  # (provider, reason code)
    faulty: tuple[tuple[int, str], ...]  # (aggregator index, reason)
    num_measurements: int
    status: str  # "done" | "failed"
    why: str = ""
    accepted_subs: tuple[int, ...] = field(default=(), compare=False)

    def to_obj(self, ctx: JobContext) -> dict[str, Any]:
        return {
            "status": self.status,
            "accepted": list(self.accepted),
            "rejected": [p for p, _ in self.rejected],
            "reasons": {p: r for p, r in self.rejected},
            "faulty": [ctx.aggregators[i] for i, _ in self.faulty],
            "faulty_reasons": {ctx.aggregators[i]: r for i, r in self.faulty},
            "num_measurements": self.num_measurements,
            "min_providers": ctx.min_providers,
            "why": self.why,
        }


class ResultShare(schema.Message, frozen=True):
    """Aggregator ``i``'s round-3 message: its decision and the hash of its sealed share."""

    job: JobId
    aggregator: Index
    decision: Blob  # canonical Decision.to_obj
    share_hash: ShareHash  # hash of the sealed aggregate share ("" when nothing is released)
    signature: Signature = b""


def sealed_share_hash(blob: bytes) -> str:
    return H(b"kaires/aggregation/sealed-share", blob).hex()


def share_aad(job: str, i: int) -> bytes:
    return H(b"kaires/aggregation/aggregate-share", job.encode(), i.to_bytes(4, "little"))


_CONTEXTS: dict[type, bytes] = {
    Published: PUBLISH_CONTEXT,
    Reveal: REVEAL_CONTEXT,
    ResultShare: RESULT_CONTEXT,
}


def sign_message(msg: Any, identity: Identity) -> Any:
    """``msg`` (Published / Reveal / ResultShare) signed by ``identity`` over every field
    (``schema.sign`` under the message type's context)."""
    return schema.sign(msg, identity, _CONTEXTS[type(msg)])


def verify_signed(msg: Any, public_hex: str) -> bool:
    """Whether ``msg`` (Published / Reveal / ResultShare) is signed by ``public_hex``.

    Never raises: a message that is not one of these types, or whose fields do not encode,
    does not verify.
    """
    context = _CONTEXTS.get(type(msg))
    if context is None:
        return False
    try:
        public = bytes.fromhex(public_hex)
    except (TypeError, ValueError):
        return False
    return schema.verify(msg, public, context)


# ---------------------------------------------------------------------------- decisions


def _points(F: Any, idx: Sequence[int]) -> np.ndarray:
    return F.elements([i + 1 for i in idx])


def _interpolate_at(
    F: Any, xs_idx: Sequence[int], ys: np.ndarray, targets: Sequence[int]
) -> np.ndarray:
    """Values at parties ``targets`` of the degree-(len(xs)−1) polynomial through ``ys``."""
    from kaires_fl.arith.poly import lagrange_coefficients

    W = np.stack(
        [lagrange_coefficients(F, _points(F, xs_idx), _points(F, [j])[0]) for j in targets]
    )
    return F.matmul(W, ys)


def correction_radius(m: int, t: int, u: int) -> int | None:
    """How many wrong shares an opening of ``m`` degree-t shares may correct, or None.

    Pre: at most ``u`` of the ``m`` shares come from faulty aggregators not yet proven
    faulty (``u = t −`` the number proven faulty by what they signed). Post:

    * ``u`` when ``m ≥ 3t + 1`` (every pattern of at most u ≤ t wrong shares then decodes to
      the one right polynomial: correcting is unambiguous);
    * ``0`` when ``u = 0`` (every share present is from an honest aggregator: nothing to
      correct, and an inconsistency can only be the dealer's);
    * None otherwise: the opening may only *detect* an inconsistency, never correct it or
      blame anyone for it — which shares are wrong is not determined (a relay withholding
      shares and a faulty aggregator could point the blame anywhere).
    """
    if m >= 3 * t + 1:
        return max(u, 0)
    if u <= 0:
        return 0
    return None


def _consistent_columns(F: Any, Z: Mapping[int, np.ndarray], t: int) -> np.ndarray:
    """Per column of the ``(k,)`` vectors ``Z[i]``: whether they lie on one degree-t poly."""
    parties = sorted(Z)
    if len(parties) <= t + 1:
        return np.ones(next(iter(Z.values())).shape[0] if Z else 0, dtype=bool)
    base, rest = parties[: t + 1], parties[t + 1 :]
    expect = _interpolate_at(F, base, np.stack([Z[i] for i in base]), rest)
    return np.all(expect == np.stack([Z[i] for i in rest]), axis=0)


@dataclass
class Disputes:
    """Where the round-1 z values of each submission stand (:func:`find_disputes`).

    ``flagged[s]``: the aggregators whose z for submission s is off the polynomial the
    others determine unambiguously (each must justify it by disclosing its part);
    ``undecodable``: submissions whose z cannot be within the correctable number of wrong
    values of any degree-t polynomial although enough values are present to correct —
    with at most t faulty aggregators that is the provider's fault (its shares are
    inconsistent), and it is rejected *without any disclosure*; ``undecided``: submissions
    whose z are inconsistent while too few values are present to say whose fault it is —
    nobody can be blamed and nothing may be disclosed: the job cannot be decided.
    """

    flagged: dict[int, set[int]] = field(default_factory=dict)
    undecodable: set[int] = field(default_factory=set)
    undecided: set[int] = field(default_factory=set)


def find_disputes(
    F: Any,
    n: int,
    t: int,
    z: Mapping[int, np.ndarray],
    opened: Mapping[int, set[int]],
    S: int,
    u: int | None = None,
) -> Disputes:
    """Locate z values off the degree-t polynomial of each submission.

    Pre: ``z[i]`` is ``(S,)`` for each aggregator whose round-1 message is valid and not
    proven faulty; ``opened[i]`` the submissions it opened; ``u`` (default ``t``) bounds the
    faulty aggregators among them. Post: a :class:`Disputes` — a submission's column of m
    values is corrected (radius :func:`correction_radius`) only when that is unambiguous,
    else only checked. An honest provider's column never flags an honest aggregator and is
    never undecodable when at most t aggregators are faulty.
    """
    u = t if u is None else u
    out = Disputes()
    groups: dict[tuple[int, ...], list[int]] = {}
    for s in range(S):
        groups.setdefault(tuple(i for i in sorted(z) if s in opened[i]), []).append(s)
    for parties, subs in groups.items():
        m = len(parties)
        if m < t + 1:
            out.undecided.update(subs)
            continue
        cols = np.asarray(subs)
        Z = {i: z[i][cols] for i in parties}
        radius = correction_radius(m, t, u)
        if radius is None:
            ok = _consistent_columns(F, Z, t)
            out.undecided.update(int(cols[c]) for c in np.flatnonzero(~ok))
            continue
        try:
            _, bad = sharing.robust_reconstruct(F, Z, n, t)
        except DecodingError:
            bad = None
        if bad is not None and len(bad) <= radius:
            if not bad:
                continue
            good = [i for i in parties if i not in bad][: t + 1]
            expect = _interpolate_at(F, good, np.stack([Z[i] for i in good]), bad)
            for k, j in enumerate(bad):
                for wrong_col in np.flatnonzero(expect[k] != Z[j]):
                    out.flagged.setdefault(int(cols[wrong_col]), set()).add(j)
            continue
        # Slow path (errors in several places): decode each submission alone.
        for c, s in enumerate(subs):
            col = {i: Z[i][c : c + 1] for i in parties}
            try:
                _, bad_s = sharing.robust_reconstruct(F, col, n, t)
            except DecodingError:
                out.undecodable.add(s)
                continue
            if len(bad_s) > radius:
                out.undecodable.add(s)
            elif bad_s:
                out.flagged[s] = set(bad_s)
    return out


@dataclass
class Round1:
    """A job's checked round-1 messages (:func:`check_round1`).

    ``messages``/``z``/``verifier``: the validly signed, well-formed messages and their
    decoded arrays; ``proven``: aggregators proven faulty by what they signed (a malformed
    message, two different messages).
    """

    messages: dict[int, Published] = field(default_factory=dict)
    z: dict[int, np.ndarray] = field(default_factory=dict)
    verifier: dict[int, np.ndarray] = field(default_factory=dict)
    proven: dict[int, str] = field(default_factory=dict)
    #: ``published_digest`` of each kept message (what its signature covers).
    digests: dict[int, bytes] = field(default_factory=dict)


def _encoded(msg: Any) -> bytes | None:
    """The canonical encoding of ``msg``, or None if it has fields outside the schema."""
    try:
        return schema.encode(msg)
    except Exception:
        return None


def _same(msg: Any, mine: Any, cache: list[bytes | None]) -> bool:
    """Whether ``msg`` encodes byte for byte as ``mine`` (whose encoding ``cache`` keeps)."""
    if not cache:
        cache.append(_encoded(mine))
    return cache[0] is not None and _encoded(msg) == cache[0]


def _items(msgs: Any) -> list[Any]:
    if isinstance(msgs, Mapping):
        return list(msgs.values())
    return list(msgs)


_DIGEST_BUFFERS = threading.local()
_PUBLISH_PREFIX = len(PUBLISH_CONTEXT).to_bytes(2, "little") + PUBLISH_CONTEXT


def published_digest(p: Any) -> bytes | None:
    """What a round-1 signature covers: ``schema.signing_digest`` of ``p`` under the
    publish context (every field but the signature), or None if ``p`` is not a
    :class:`Published` that encodes. Computed once per relayed message and reused for the
    aggregator's signature, the coordinator's relay signature and the own-message check.

    The same bytes are hashed as by ``schema.signing_digest`` (the schema's canonical
    encoder), encoded into a per-thread reused buffer: a multi-MB message is not copied
    into freshly allocated memory each time. A message object nothing in which can change
    (:func:`kaires_fl.schema.deeply_immutable`, as every decoded one) is hashed once per
    process (:class:`kaires_fl.schema.DigestMemo`): in a simulation its signer, the
    coordinator and the other aggregators hold the same object. Only what this process
    computed over that very object is reused; an altered copy is another object.
    """
    return _PUBLISHED_DIGESTS(p)


def _published_digest(p: Any) -> bytes | None:
    if not isinstance(p, Published):
        return None
    try:
        buf = getattr(_DIGEST_BUFFERS, "buf", None)
        if buf is None:
            buf = _DIGEST_BUFFERS.buf = bytearray()
        schema._ENCODER.encode_into(msgspec.structs.replace(p, signature=b""), buf)
        h = hashlib.sha256(_PUBLISH_PREFIX)
        h.update(buf)
        if len(buf) > 2**26:  # keep at most 64 MiB per thread between messages
            _DIGEST_BUFFERS.buf = None
        return h.digest()
    except Exception:
        return None


def _memoisable(p: Any) -> bool:
    # the signature is outside the digest: a message differing from a remembered one only
    # in its signature is another object anyway
    return type(p) is Published and schema.deeply_immutable(p)


_PUBLISHED_DIGESTS = schema.DigestMemo(_published_digest, _memoisable, capacity=1024)


def _elements(e: Any, F: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``e.expect(F, shape)`` without copying a Field64 array: a read-only view of the
    message's bytes, every element checked canonical (``EncodingError`` otherwise)."""
    if (
        F.__name__ == "Field64"
        and isinstance(e, Elements)
        and e.field == "Field64"
        and tuple(e.shape) == tuple(shape)
        and isinstance(e.data, bytes)
        and np.little_endian
    ):
        v = np.frombuffer(e.data, dtype=np.uint64).reshape(shape)
        if v.size and int(v.max()) >= int(F.MODULUS):
            return e.expect(F, shape)  # raises, naming the offending element
        return v
    return e.expect(F, shape)


def check_round1(
    ctx: JobContext,
    messages: Any,
    own: Published | None = None,
    digests: Sequence[bytes | None] | None = None,
    own_digest: bytes | None = None,
) -> Round1:
    """Keep the round-1 messages that are validly signed by their claimed aggregator.

    Pre: ``messages`` (a mapping or sequence) is what the coordinator relayed — anything;
    ``own``: the checking aggregator's own message, if any (a relayed copy with its digest
    and signature needs no signature check); ``digests``: ``published_digest`` of each
    item of ``messages`` if already computed (each is computed at most once);
    ``own_digest``: that of ``own``.
    Post: an unsigned, mis-signed or foreign message is ignored (it counts as missing: the
    relay may have altered it, so nobody is blamed); a validly signed one whose fields do
    not have the job's field and shapes, or a second, different one from the same signer,
    proves its signer faulty. Never raises.
    """
    flp, F, n = ctx.flp, ctx.flp.field, ctx.n
    S = len(ctx.submissions)
    out = Round1()
    first: dict[int, Published] = {}
    items = _items(messages)
    if digests is None or len(digests) != len(items):
        digests = [None] * len(items)
        fresh = True
    else:
        fresh = False
    for k, p in enumerate(items):
        if not isinstance(p, Published):
            continue
        i = p.aggregator
        if type(i) is not int or not 0 <= i < n or p.job != ctx.job:
            continue
        d = published_digest(p) if fresh else digests[k]
        if d is None:
            continue
        if own is not None and i == own.aggregator:
            if own_digest is None:
                own_digest = published_digest(own)
            if p is not own and (d != own_digest or p.signature != own.signature):
                continue  # not its own message as it sent it: the relay altered it
        elif not _verify_digest(d, p.signature, ctx.aggregators[i], PUBLISH_CONTEXT):
            continue
        if i in first:
            if d != out.digests[i]:
                out.proven[i] = "signed two different round-1 messages"
            continue
        first[i] = p
        out.digests[i] = d
        try:
            z = _elements(p.z, F, (S,))
            verifier = _elements(p.verifier, F, (ctx.rows, flp.VERIFIER_LEN))
            subs = [d_.submission for d_ in p.unopened]
            if not all(type(s) is int and 0 <= s < S for s in subs) or len(set(subs)) != len(subs):
                raise EncodingError("unopened submissions out of range or repeated")
        except Exception as exc:  # a peer's signed message: it is at fault
            out.proven.setdefault(i, f"malformed signed round-1 message ({type(exc).__name__})")
            continue
        out.messages[i], out.z[i], out.verifier[i] = p, z, verifier
    keep = sorted(i for i in out.messages if i not in out.proven)  # one order for everyone
    out.messages = {i: out.messages[i] for i in keep}
    out.z = {i: out.z[i] for i in keep}
    out.verifier = {i: out.verifier[i] for i in keep}
    out.digests = {i: out.digests[i] for i in keep}
    out.proven = dict(sorted(out.proven.items()))
    return out


def _verify_digest(digest: bytes, sig: Any, public_hex: str, context: bytes) -> bool:
    """Whether ``sig`` is ``public_hex``'s signature over ``digest`` (never raises)."""
    if not isinstance(sig, bytes) or len(sig) != 64:
        return False
    try:
        return is_valid(bytes.fromhex(public_hex), context, digest, sig)
    except Exception:
        return False


@dataclass
class Analysis:
    """Round 1 as every aggregator reads it from the same messages (:func:`analyse_round1`)."""

    round1: Round1
    rejected: dict[int, str]
    proven: dict[int, str]  # faulty, proven by their own signed messages
    blamed: dict[int, str]  # faulty by what they failed to show (not a proof)
    opened: dict[int, set[int]]
    disputes: Disputes


def analyse_round1(ctx: JobContext, published: Any) -> Analysis:
    """The quorum check, the unopened parts and the z disputes of round 1.

    Raises ``ProtocolError`` when fewer than n − t valid round-1 messages are present (a
    decision needs them; a relay that withholds more only stops the job).
    """
    r1 = published if isinstance(published, Round1) else check_round1(ctx, published)
    flp, n, t = ctx.flp, ctx.n, ctx.t
    S = len(ctx.submissions)
    if len(r1.messages) < max(n - t, t + 1):
        raise ProtocolError(
            f"job {ctx.job[:16]}…: only {len(r1.messages)} valid round-1 message(s) of "
            f"{n}; a decision needs n − t = {n - t}. Nothing is decided or disclosed — "
            "the relay withheld messages or more than t aggregators are faulty"
        )
    proven = dict(r1.proven)
    blamed: dict[int, str] = {}
    rejected: dict[int, str] = {}
    opened = {i: set(range(S)) for i in r1.messages}
    for i, p in r1.messages.items():
        for d in p.unopened:
            s = d.submission
            opened[i].discard(s)
            m = ctx.submissions[s].manifest
            try:
                if (
                    part_hash(d.meas).hex() != m.meas_parts[i]
                    or part_hash(d.proof).hex() != m.proof_parts[i]
                ):
                    proven.setdefault(i, "disclosed parts that do not match the signed manifest")
                    continue
                committed = key_commit(m.job, m.provider, i, d.key).hex() == m.key_commits[i]
                open_part(flp, m, i, d.key, d.meas, d.proof, hashes_checked=True)
            except InvalidSubmission:
                if committed:
                    rejected[s] = REASON_UNOPENABLE  # the committed key does not open it
                elif (
                    d.written
                    and ctx.written_key is not None
                    and ctx.written_key(s, i, d.written) == d.key
                ):
                    rejected[s] = REASON_WRONG_KEY  # proven: the provider wrote another key
                else:
                    blamed.setdefault(
                        i, "claimed an unopenable part with a key that is not the committed one"
                    )
            except Exception:  # a signed disclosure that cannot be checked
                proven.setdefault(i, "disclosed a part that cannot be checked")
            else:
                proven.setdefault(i, "claimed an openable part was unopenable")
    parties = {i: r1.z[i] for i in r1.messages if i not in proven}
    disputes = find_disputes(
        flp.field,
        n,
        t,
        parties,
        {i: opened[i] for i in parties},
        S,
        u=max(t - len(proven), 0),
    )
    for s in list(disputes.flagged):
        if s in rejected:
            del disputes.flagged[s]
    disputes.undecodable -= set(rejected)
    disputes.undecided -= set(rejected)
    return Analysis(r1, rejected, proven, blamed, opened, disputes)


def undecided_error(ctx: JobContext, subs: set[int]) -> ProtocolError:
    return ProtocolError(
        f"job {ctx.job[:16]}…: the consistency values of {len(subs)} submission(s) disagree "
        "while too few round-1 messages are present to tell whether a provider or an "
        "aggregator is at fault; nothing is decided or disclosed (a relay that withholds "
        "messages only stops the job) — rerun it with every aggregator's messages relayed"
    )


def check_own(relayed: Any, sent: Any) -> None:
    """Raise ``ProtocolError`` unless ``sent`` is among ``relayed`` byte for byte.

    An aggregator's own message missing from, or altered in, a set it is asked to act on
    is the relay's fault: it then decides nothing and discloses nothing.
    """
    if sent is None:
        return
    if isinstance(sent, Published) and isinstance(relayed, Round1):
        # a checked set keeps, for each signer, one message with its digest
        m = relayed.messages.get(sent.aggregator)
        if m is sent or (
            m is not None
            and m.signature == sent.signature
            and relayed.digests.get(sent.aggregator) == published_digest(sent)
        ):
            return
        relayed = ()
    cache: list[bytes | None] = []
    for m in _items(relayed):
        if m is sent:
            return
        if (
            type(m) is type(sent)
            and getattr(m, "aggregator", None) == sent.aggregator
            and _same(m, sent, cache)
        ):
            return
    raise ProtocolError(
        f"aggregator {sent.aggregator}'s own {type(sent).__name__} is missing or altered in "
        "the set the coordinator relayed: the relay is at fault; nothing is decided or "
        "disclosed"
    )


#: Elements of every share ``_open_consistent`` interpolates at a time: the chunks of the
#: t + 1 base shares and their interpolated rows stay in cache (L2).
OPEN_CHUNK = 1 << 15


def _open_consistent(F: Any, shares: Mapping[int, np.ndarray], t: int) -> np.ndarray | None:
    """The secret of ``shares`` when every present share lies on one degree-t polynomial
    (exactly, every coordinate), else None (then open with ``sharing.robust_reconstruct``
    or detect with ``sharing.is_consistent``).

    Pre: ``shares`` maps a 0-based party to a canonical ``F`` array, all of one shape.
    Post: the same value as ``sharing.reconstruct`` / ``robust_reconstruct`` give in that
    case (interpolation at 0 through the lowest t + 1 parties), computed without stacking
    the (multi-MB) shares into one array: tile by tile, the polynomial through the base
    parties is evaluated at 0 and at every other party (one pass over the data, no
    share-sized temporaries: ``_kernels.open_shares`` for Field64, small matrix products
    otherwise), and the first tile that disagrees ends the pass.
    """
    from kaires_fl.arith.poly import lagrange_coefficients

    idx = sorted(shares)
    if len(idx) < t + 1:
        return None
    base, rest = idx[: t + 1], idx[t + 1 :]
    xs = _points(F, base)
    targets = [F.elements(0), *(_points(F, [k])[0] for k in rest)]
    W = np.stack([lagrange_coefficients(F, xs, x) for x in targets])  # (1 + len(rest), t + 1)
    first = shares[base[0]]
    flat = {i: np.ascontiguousarray(shares[i]).reshape(-1) for i in idx}
    n = first.size
    out = np.empty(n, dtype=first.dtype)
    if F.__name__ == "Field64":  # one fused pass: every share read once, no copies
        ys = []
        for i in base + rest:
            v = flat[i].view()
            v.flags.writeable = False  # one numba type for the tuple, whatever the source
            ys.append(v)
        ok = kern.open_shares(tuple(ys), np.ascontiguousarray(W, dtype=np.uint64), out)
        return out.reshape(first.shape) if ok else None
    buf = np.empty((t + 1, min(n, OPEN_CHUNK)), dtype=first.dtype)
    for s in range(0, n, OPEN_CHUNK):
        e = min(s + OPEN_CHUNK, n)
        y = buf if e - s == buf.shape[1] else np.empty((t + 1, e - s), dtype=first.dtype)
        for r, i in enumerate(base):
            y[r] = flat[i][s:e]
        vals = F.matmul(W, y)  # row 0: the secret; row 1 + r: party rest[r]'s share
        for r, k in enumerate(rest):
            if not np.array_equal(vals[1 + r], flat[k][s:e]):
                return None
        out[s:e] = vals[0]
    return out.reshape(first.shape)


def _rows_elements(F: Any, rows: np.ndarray | list[np.ndarray]) -> Elements:
    """``Elements.of(F, np.concatenate(rows))`` with one copy instead of two: Field64 row
    blocks are joined straight into the message's bytes (little-endian hosts)."""
    if isinstance(rows, np.ndarray):
        return Elements.of(F, rows)
    if F.__name__ != "Field64" or not np.little_endian or not rows:
        return Elements.of(F, np.concatenate(rows))
    blocks = [np.ascontiguousarray(r, dtype=np.uint64) for r in rows]
    width = blocks[0].shape[1]
    if any(b.ndim != 2 or b.shape[1] != width for b in blocks):
        return Elements.of(F, np.concatenate(rows))
    n = sum(b.shape[0] for b in blocks)
    return Elements(F.__name__, (n, width), b"".join(b.data for b in blocks))


def _diagnose(flp: FlpBBCGGI19, verifier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per record: (circuit output zero, gadget checks hold) from opened verifiers."""
    F = flp.field
    out_ok = np.ones(verifier.shape[0], dtype=bool)
    gad_ok = np.ones(verifier.shape[0], dtype=bool)
    off = 0
    for _rep in range(flp.proofs):
        out_ok &= verifier[:, off] == 0
        off += 1
        for lay in flp.layouts:
            L = lay.gadget.ARITY
            gad_ok &= lay.gadget.eval(F, verifier[:, off : off + L]) == verifier[:, off + L]
            off += L + 1
    return out_ok, gad_ok


def _checked_reveals(ctx: JobContext, reveals: Any, parties: Any) -> tuple[dict, dict[int, str]]:
    """Validly signed reveals of ``parties`` → {i: {s: Disclosure}}, and equivocators."""
    out: dict[int, dict[int, Disclosure]] = {}
    enc: dict[int, bytes] = {}
    two: dict[int, str] = {}
    for r in _items(reveals):
        if not isinstance(r, Reveal):
            continue
        i = r.aggregator
        if type(i) is not int or i not in parties or r.job != ctx.job:
            continue
        if not verify_signed(r, ctx.aggregators[i]):
            continue
        e = schema.encode(r)
        if i in enc:
            if e != enc[i]:
                two[i] = "signed two different reveals"
            continue
        enc[i] = e
        try:
            out[i] = {d.submission: d for d in r.keys if isinstance(d, Disclosure)}
        except Exception:
            two[i] = "malformed signed reveal"
    for i in two:
        out.pop(i, None)
    return out, two


def accepted_owners(ctx: JobContext, accepted: Sequence[str]) -> tuple[int, int]:
    """``(owners, protect)`` of the accepted policies, counted as ``job.create`` counts them.

    ``owners``: the distinct owner keys of ``accepted`` other than the job's signers
    (:func:`kaires_fl.ledger.jobs.distinct_owners`); ``protect``: the largest
    ``min_providers`` of an accepted policy the signers do not own (0 if none). A result is
    released only if ``owners ≥ protect``: a consumer that closes the inputs with a victim
    and its own (or one colluder's several) policies learns nothing the victim's policy
    forbids.
    """
    mins = dict(ctx.provider_min)
    signers = set(ctx.signers)
    protect = max(
        (mins.get(p, 0) for p in accepted if (policy_owner(p) or p) not in signers), default=0
    )
    return distinct_owners(list(accepted), ctx.signers), protect


def decide_job(
    ctx: JobContext,
    coin: Coin,
    published: Any,
    reveals: Any,
    *,
    me: int | None = None,
    sent: Sequence[Any] = (),
) -> Decision:
    """The job's accept/reject decision from the public messages (deterministic).

    Pre: ``published``/``reveals`` hold the messages the coordinator relayed (a mapping or
    sequence, or a :class:`Round1` already checked; signatures are checked here: bad ones
    count as missing). ``me``: the deciding aggregator, whose ``sent`` messages (its
    Published and Reveal) must be among them unaltered.
    Post: every aggregator given the same messages returns the same :class:`Decision`; a
    decision rests on ≥ n − t valid round-1 messages; openings correct errors only when
    that is unambiguous (:func:`correction_radius`), otherwise they only detect.
    Raises ``ProtocolError`` — deciding nothing — with fewer than n − t valid messages,
    when an opening is inconsistent and cannot be corrected (more than t faulty
    aggregators, or withheld messages), when ``me``'s own messages were altered, or when
    the decision would blame ``me`` (an honest aggregator knows its messages are right:
    more than t are faulty).
    """
    flp, F, n, t = ctx.flp, ctx.flp.field, ctx.n, ctx.t
    S = len(ctx.submissions)
    a = analyse_round1(ctx, published)
    for msg in sent:
        check_own(a.round1 if isinstance(msg, Published) else reveals, msg)
    if a.disputes.undecided:
        raise undecided_error(ctx, a.disputes.undecided)
    proven, blamed, rejected = dict(a.proven), dict(a.blamed), dict(a.rejected)
    pub = a.round1.messages
    parties = [i for i in pub if i not in proven]
    rev_keys, two = _checked_reveals(ctx, reveals, set(parties))
    for i, why in two.items():
        proven.setdefault(i, why)
    for s in sorted(a.disputes.undecodable):
        rejected.setdefault(s, REASON_INCONSISTENT)  # provider's fault; nothing disclosed
    for s, js in sorted(a.disputes.flagged.items()):
        sub = ctx.submissions[s]
        truthful: set[int] = set()
        for j in sorted(js):
            d = rev_keys.get(j, {}).get(s)
            if d is None:
                blamed.setdefault(
                    j, "published a consistency value off the polynomial and did not justify it"
                )
                continue
            try:
                shares = open_part(flp, sub.manifest, j, d.key, d.meas, d.proof)
                right = bool(
                    np.all(consistency_value(flp, coin, sub.manifest, shares) == a.round1.z[j][s])
                )
            except Exception:  # InvalidSubmission, or a malformed disclosure
                proven.setdefault(
                    j,
                    "published a consistency value off the polynomial; the key it disclosed "
                    "does not open its part",
                )
                continue
            if right:
                truthful.add(j)
            else:
                proven.setdefault(
                    j, "published a wrong consistency value (its disclosed part gives another)"
                )
        # The z values now known to be computed from the parts as sent: the provider dealt
        # consistent shares iff they lie on one degree-t polynomial.
        known = {
            i: a.round1.z[i][s : s + 1]
            for i in parties
            if s in a.opened[i] and (i not in js or i in truthful)
        }
        if len(known) < t + 1 or not sharing.is_consistent(F, known, t):
            rejected.setdefault(s, REASON_INCONSISTENT)
    # FLP verification of the consistent submissions, on shares (protocol.md §5.3).
    live = [s for s in range(S) if s not in rejected]
    voters = [i for i in parties if i not in proven and i not in blamed]
    if live:
        if len(voters) < n - t:
            raise ProtocolError(
                f"job {ctx.job[:16]}…: only {len(voters)} aggregator(s) left to open the "
                f"verifier shares, n − t = {n - t} are needed; more than t = {t} aggregators "
                "are faulty or their messages were withheld — nothing is decided"
            )
        off = ctx.offsets
        if len(live) == S:  # the usual case: open every row, no copy of the verifiers
            vshares = {i: a.round1.verifier[i] for i in voters}
        else:
            rows = np.concatenate([np.arange(off[s], off[s + 1]) for s in live])
            vshares = {i: a.round1.verifier[i][rows] for i in voters}
        radius = correction_radius(len(voters), t, t - len(proven))
        bad: list[int] = []
        try:
            opened = _open_consistent(F, vshares, t)
            if opened is not None:  # the usual case: every share on one polynomial
                verifier = opened
            elif radius is None:
                if not sharing.is_consistent(F, vshares, t):
                    raise DecodingError("the verifier shares are inconsistent")
                verifier = sharing.reconstruct(F, vshares, t)
            else:
                verifier, bad = sharing.robust_reconstruct(F, vshares, n, t)
                if len(bad) > radius:
                    raise DecodingError(f"{len(bad)} wrong verifier shares, at most {radius}")
        except DecodingError as exc:
            raise ProtocolError(
                f"job {ctx.job[:16]}…: the verifier shares cannot be opened ({exc}); more than "
                f"t = {ctx.t} aggregators are faulty or messages were withheld — nothing is "
                "decided; rerun the job with a healthy committee"
            ) from exc
        for j in bad:
            proven.setdefault(j, "published wrong verifier shares")
        ok = flp.decide(verifier)
        # which check failed is only needed for a failing record (a second pass otherwise)
        gad_ok = _diagnose(flp, verifier)[1] if not ok.all() else ok
        start = 0
        for s in live:
            b = int(off[s + 1] - off[s])
            if not ok[start : start + b].all():
                bad_gadget = not gad_ok[start : start + b].all()
                rejected[s] = REASON_INVALID_PROOF if bad_gadget else REASON_INVALID_MEAS
            start += b
    faulty = {i: "no response" for i in range(n) if i not in pub and i not in proven}
    faulty.update(blamed)
    faulty.update(proven)
    if me is not None and me in faulty:
        raise ProtocolError(
            f"aggregator {me} would blame itself ({faulty[me]}): its own messages are right, "
            "so more than t aggregators are faulty or the relay altered messages — nothing "
            "is decided or disclosed"
        )
    accepted_subs = [s for s in range(S) if s not in rejected]
    by_prov = {ctx.submissions[s].manifest.provider: s for s in range(S)}
    rej = {ctx.submissions[s].manifest.provider: r for s, r in rejected.items()}
    for prov in ctx.providers:
        if prov not in by_prov:
            rej[prov] = REASON_MISSING
    for prov, _why in ctx.excluded:
        rej[prov] = REASON_OVER_TOTAL
    accepted = sorted(ctx.submissions[s].manifest.provider for s in accepted_subs)
    status, why = "done", ""
    owners, protect = accepted_owners(ctx, accepted)
    if len(accepted) < ctx.min_providers:
        status = "failed"
        why = (
            f"{len(accepted)} provider(s) accepted, the policies require at least "
            f"{ctx.min_providers}: nothing is released and every payment is refunded"
        )
    elif owners < protect:
        status = "failed"
        why = (
            f"the {len(accepted)} accepted policies belong to {owners} distinct provider "
            f"key(s) other than the job's signers, an accepted policy requires at least "
            f"{protect} (several policies of one key are one provider, and the consumer's "
            "own data hides nobody's): nothing is released and every payment is refunded"
        )
    return Decision(
        accepted=tuple(accepted),
        rejected=tuple(sorted(rej.items())),
        faulty=tuple(sorted(faulty.items())),
        num_measurements=int(sum(ctx.submissions[s].manifest.batch for s in accepted_subs)),
        status=status,
        why=why,
        accepted_subs=tuple(accepted_subs),
    )


# ---------------------------------------------------------------------------- one aggregator


class AggregatorJob:
    """Aggregator ``index``'s computation for one job (no I/O).

    ``behaviour`` = ``"byzantine"`` makes it send wrong values at every step (for the
    simulation's fault injection); the honest code path is otherwise identical.

    Memory is bounded per submission, not per job: a *large* submission (at least
    :data:`STREAM_ELEMENTS` measurement elements) is verified as soon as its part is opened
    and the coin is known — its z and verifier shares computed, ``truncate`` of its
    measurement share folded into a running sum — and its shares are then dropped. What
    the decision and the disputes need stays (z, verifier shares, the released keys; the
    parts themselves are in the job's context). A large submission the decision rejects is
    opened once more in :meth:`aggregate` and subtracted from the sum (rejections are the
    faulty providers'). Small submissions are kept until :meth:`publish` and verified in one
    batched ``query``.
    """

    def __init__(
        self,
        ctx: JobContext,
        index: int,
        identity: Identity,
        behaviour: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.index = index
        self.identity = identity
        self.byzantine = behaviour == "byzantine"
        self.keys: dict[int, bytes] = {}
        #: Opened shares not yet folded (small submissions, or any before the coin is known).
        self.shares: dict[int, PartShares] = {}
        #: Large submissions already verified and folded into :attr:`running`.
        self.streamed: set[int] = set()
        #: z (shape ``(1,)``) and verifier shares ``(B, VERIFIER_LEN)`` of the streamed ones.
        self.z: dict[int, np.ndarray] = {}
        self.verifiers: dict[int, np.ndarray] = {}
        #: Σ ``truncate(meas share)`` over :attr:`streamed` (None before the first).
        self.running: np.ndarray | None = None
        self.unopened: dict[int, bytes] = {}
        #: Encoded single-slot WrittenKeyProofs of the key written for parts whose
        #: released key is not the committed one (set by the service).
        self.written_proofs: dict[int, bytes] = {}
        self.decision: Decision | None = None
        self.sealed_share: bytes | None = None
        #: ``published_digest`` of the round-1 message it signed (set by :meth:`publish`).
        self.sent_digest: bytes | None = None
        #: Differential privacy (set by the service): the round-1 values of the noise deals
        #: and this aggregator's share of the accepted noise, added to its aggregate share.
        self.noise_round: NoiseRound | None = None
        self.noise_share: np.ndarray | None = None
        self.noise_complaints: tuple[NoiseComplaint, ...] = ()

    # -- step 4: open the parts with the released keys
    def open_parts(
        self, keys: Mapping[int, bytes], hashes_checked: bool = False, coin: Coin | None = None
    ) -> None:
        """Open every submission's part ``index`` with its released key.

        ``hashes_checked``: the parts were already checked against their manifests.
        ``coin``: the job's coin when already known; then each large submission is verified
        and folded as soon as it is opened (peak memory: one submission's shares).
        """
        ctx, i = self.ctx, self.index
        for s in range(len(ctx.submissions)):
            key = keys.get(s)
            if key is None:
                raise ProtocolError(
                    f"aggregator {i} got no key for submission {s} of job {ctx.job[:16]}…; "
                    "request the key release again"
                )
            self.keys[s] = key
            try:
                shares = self._open(s, hashes_checked)
            except InvalidSubmission:
                self.unopened[s] = key
                continue
            if coin is not None and self._large(s):
                self._stream(s, shares, coin)
            else:
                self.shares[s] = shares

    def _open(self, s: int, hashes_checked: bool = True) -> PartShares:
        sub, i = self.ctx.submissions[s], self.index
        return open_part(
            self.ctx.flp,
            sub.manifest,
            i,
            self.keys[s],
            sub.meas_parts[i],
            sub.proof_parts[i],
            hashes_checked=hashes_checked,
        )

    def _large(self, s: int) -> bool:
        """Whether submission s is verified on its own and folded at once (never kept)."""
        return self.ctx.submissions[s].manifest.batch * self.ctx.flp.MEAS_LEN >= STREAM_ELEMENTS

    def _query(self, s: int, shares: PartShares, coin: Coin) -> np.ndarray:
        """Verifier shares ``(B, VERIFIER_LEN)`` of submission s (its joint randomness
        shared by its records, so the circuit's powers are computed once)."""
        flp = self.ctx.flp
        jr = self.ctx.joint_rand(s) if flp.JOINT_RAND_LEN else None
        return flp.query(shares.meas, shares.proof, coin.query_rand(flp), jr)

    def _fold(self, shares: PartShares) -> np.ndarray:
        """``Σ_records truncate(meas share)``: shape ``(OUTPUT_LEN,)``."""
        return fold_truncated(self.ctx.flp, shares.meas)

    def _stream(self, s: int, shares: PartShares, coin: Coin) -> None:
        """Verify submission s on its shares, fold them into the running sum, drop them."""
        F = self.ctx.flp.field
        self.z[s] = consistency_value(self.ctx.flp, coin, self.ctx.submissions[s].manifest, shares)
        self.verifiers[s] = self._query(s, shares, coin)
        part = self._fold(shares)
        self.running = part if self.running is None else F.add(self.running, part)
        self.streamed.add(s)

    # -- step 5, round 1
    def publish(self, coin: Coin) -> Published:
        """z per submission and verifier shares for all records.

        Large submissions were (or are now) verified one by one (:meth:`_stream`); the
        small ones in one batched ``query`` over their records (per-record joint
        randomness) — or one ``query`` per submission when they hold many records each.
        """
        ctx, flp = self.ctx, self.ctx.flp
        F = flp.field
        S = len(ctx.submissions)
        for s in sorted(s for s in self.shares if self._large(s)):
            self._stream(s, self.shares.pop(s), coin)
        z = F.zeros((S,))
        for s, zs in self.z.items():
            z[s] = zs[0]
        for s, sh in self.shares.items():
            z[s] = consistency_value(flp, coin, ctx.submissions[s].manifest, sh)[0]
        blocks: dict[int, np.ndarray] = dict(self.verifiers)
        small = sorted(self.shares)
        if small and ctx.rows >= PER_SUBMISSION_QUERY * S:
            for s in small:
                blocks[s] = self._query(s, self.shares[s], coin)
        elif small:
            off = ctx.offsets
            rows = np.concatenate([np.arange(off[s], off[s + 1]) for s in small])
            jr_all = ctx.joint_rands[rows] if flp.JOINT_RAND_LEN else None
            v = flp.query(
                np.concatenate([self.shares[s].meas for s in small]),
                np.concatenate([self.shares[s].proof for s in small]),
                coin.query_rand(flp),
                jr_all,
            )
            start = 0
            for s in small:
                b = int(off[s + 1] - off[s])
                blocks[s] = v[start : start + b]
                start += b
        verifier: np.ndarray | list[np.ndarray]
        if not ctx.rows:
            verifier = F.zeros((0, flp.VERIFIER_LEN))
        else:
            # unopened: zeros, its rows are ignored by every decision
            verifier = [
                blocks[s] if s in blocks else F.zeros((s_.manifest.batch, flp.VERIFIER_LEN))
                for s, s_ in enumerate(ctx.submissions)
            ]  # concatenated where encoded (:func:`_rows_elements`)
        if self.byzantine:
            z = F.random(z.shape)
            verifier = F.random((ctx.rows, flp.VERIFIER_LEN))
        msg = Published(
            ctx.job,
            self.index,
            Elements.of(F, z),
            _rows_elements(F, verifier),
            tuple(self._disclose(s, k) for s, k in sorted(self.unopened.items())),
            noise=self.noise_round,
        )
        self.verifiers.clear()  # in the message now
        # schema.sign's signature, keeping the digest (the own-message check compares it)
        digest = published_digest(msg)
        assert digest is not None
        self.sent_digest = digest
        signed = msgspec.structs.replace(msg, signature=self.identity.sign(PUBLISH_CONTEXT, digest))
        # the digest leaves the signature out: the signed message's is the one just computed
        _PUBLISHED_DIGESTS.remember(signed, digest)
        return signed

    # -- step 5, round 2
    def reveal(self, flagged: Mapping[int, set[int]]) -> Reveal:
        """Keys of the submissions where this aggregator's z was disputed (maybe none).

        Pre: ``flagged`` comes from :func:`analyse_round1` on a set holding this
        aggregator's own message unaltered, with nothing undecided — then an honest
        aggregator is flagged only for a provider at fault, and discloses only that part.
        """
        mine = sorted(s for s, js in flagged.items() if self.index in js)
        keys = tuple(
            self._disclose(s, secrets.token_bytes(32) if self.byzantine else self.keys[s])
            for s in mine
        )
        msg = Reveal(self.ctx.job, self.index, keys, noise=self.noise_complaints)
        return sign_message(msg, self.identity)

    def _disclose(self, s: int, key: bytes) -> Disclosure:
        sub = self.ctx.submissions[s]
        written = self.written_proofs.get(s, b"") if s in self.unopened else b""
        return Disclosure(s, key, sub.meas_parts[self.index], sub.proof_parts[self.index], written)

    # -- step 6
    def aggregate(self, decision: Decision) -> ResultShare:
        """Sum truncated accepted shares, seal them to the consumer, report the hash.

        The sum is the running sum of the streamed submissions less those the decision
        rejected (opened again), plus the kept small ones it accepted.
        """
        ctx, flp = self.ctx, self.ctx.flp
        F = flp.field
        self.decision = decision
        share_hash = ""
        if decision.status == "done":
            total = F.zeros((flp.OUTPUT_LEN,))
            accepted = set(decision.accepted_subs)
            for s in sorted(accepted & set(self.shares)):
                total = F.add(total, self._fold(self.shares[s]))
            if self.running is not None:
                total = F.add(total, self.running)
                for s in sorted(self.streamed - accepted):
                    total = F.sub(total, self._fold(self._open(s)))
            if self.noise_share is not None:
                total = F.add(total, self.noise_share)
            if self.byzantine:
                total = F.random(total.shape)
            self.sealed_share = envelope.seal_to(
                ctx.consumer_key, F.encode(total), share_aad(ctx.job, self.index)
            )
            share_hash = sealed_share_hash(self.sealed_share)
        obj = decision.to_obj(ctx)
        if self.byzantine:
            obj = {**obj, "accepted": [], "status": "failed", "why": "byzantine"}
        msg = ResultShare(ctx.job, self.index, canonical(obj), share_hash)
        return sign_message(msg, self.identity)

    def retained_bytes(self) -> int:
        """Bytes of the arrays this job holds (shares, z, verifiers, sums): what grows with
        the job, the sealed parts of its context aside."""
        arrays: list[np.ndarray] = [*self.z.values(), *self.verifiers.values()]
        for sh in self.shares.values():
            arrays += [sh.meas, sh.proof, sh.rho]
        if self.running is not None:
            arrays.append(self.running)
        return int(sum(a.nbytes for a in arrays))
