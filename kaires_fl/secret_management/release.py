"""CALYPSO read / key release, the reader's side: request, verify, combine.

1. The reader (aggregator i, or the consumer) commits a ``calypso.read`` transaction
   naming the job, its slot, its X25519 key and the writes it needs (one read for a whole
   batch; :func:`read_payload`), with a **proof of knowledge of its group key** y
   (Y = y·G derived from the X25519 key; a Schnorr proof under strong Fiat–Shamir bound
   to the LTS, job, slot, key and every write: :func:`prove_reader_key`). The ledger
   checks it (:func:`.contracts.check_read`); the committed read *is* the record of the
   release.
2. It sends every trustee a :class:`ReleaseRequest`: the read id plus
   :class:`~.evidence.StateEvidence` for the read, the job, its inputs and the writes, all
   proven against one recent final block.
3. Every trustee verifies the evidence from the genesis block and repeats every check
   itself (the proof of knowledge included), then answers the reader with a
   :class:`ReleaseResponse` — for each write its share x_j·(U + Y) re-encrypted to the
   recipient key Y the *job* names, with ONE batched DLEQ proof against X_j for all of
   them — or a :class:`Refusal`, **sealed to the reader's X25519 key**
   (:class:`SealedAnswer`, opened with :func:`open_answer`), so nobody on the way sees
   the shares.
4. :func:`combine_release` verifies every answer (2(K − 1) + O(1) scalar multiplications per
   trustee for K writes). A trustee whose batch proof fails is faulty; its shares are then
   checked one by one against the Lagrange interpolation of t + 1 verified trustees'
   shares, so the message names the wrong shares. It names the trustees whose shares are
   wrong, missing or refused, and recovers each key from any t + 1 valid shares.

Why the proof of knowledge (issue 9, finding 2). Trustees return x_j·(U + Y), so
Σ λ_j x_j(U + Y) = x·U + x·Y. Without it, anyone able to name a recipient key in a job
could choose Y = U_victim − r·G and write U = r·G in its own job: the trustees would
return x·U_victim, the key of a write the attacker has no grant for. Knowing log Y is
impossible for such a Y (it would give log U_victim), and with it x·U + y·X is the only
thing the shares reveal.

Shares are re-encrypted to the job's key for the reader (the group key derived from its
X25519 key, :meth:`~kaires_fl.crypto.elgamal.RecipientKey.from_x25519`), so a share is
useless to anyone else and a read cannot be redirected: trustees never take the key from
the request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from kaires_fl import schema
from kaires_fl.crypto import elgamal
from kaires_fl.crypto.elgamal import RecipientKey
from kaires_fl.crypto.envelope import EnvelopeKeyPair, open_sealed, seal_to
from kaires_fl.crypto.group import L, Point, Scalar, multi_scalar_mult
from kaires_fl.crypto.proofs import DLEQProof, SchnorrProof, schnorr_prove, schnorr_verify
from kaires_fl.crypto.sign import H
from kaires_fl.crypto.vss import lagrange_coefficients
from kaires_fl.errors import AccessDenied, ConfigError, EncodingError, InvalidProof, ProtocolError
from kaires_fl.ledger.encoding import hex_bytes
from kaires_fl.secret_management.contracts import (
    inputs_key,
    read_key,
    write_key,
)
from kaires_fl.secret_management.evidence import MAX_ENTRIES, StateEvidence
from kaires_fl.secret_management.write import (
    WriteEntry,
    check_slot,
    entry_ciphertext,
    entry_label,
)

__all__ = [
    "LtsInfo",
    "ReencryptedValue",
    "Refusal",
    "ReleaseRequest",
    "ReleaseResponse",
    "ReleaseResult",
    "SealedAnswer",
    "combine_release",
    "evidence_keys",
    "open_answer",
    "prove_reader_key",
    "read_payload",
    "read_pok_context",
    "release_context",
    "seal_answer",
    "verify_reader_key",
]

_RELEASE_TAG = b"kaires-fl/calypso/release/v1"
_READ_POK_TAG = b"kaires-fl/calypso/read-pok/v1"
_ANSWER_TAG = b"kaires-fl/calypso/sealed-answer/v1"
#: Longest refusal reason a trustee sends (characters).
MAX_REASON = 4096


@dataclass(frozen=True)
class LtsInfo:
    """The public part of an LTS entry: id, threshold t, X and every X_j."""

    id: str
    t: int
    X: Point
    public_shares: tuple[Point, ...]
    trustees: tuple[str, ...]

    @property
    def n(self) -> int:
        return len(self.public_shares)

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> LtsInfo:
        """Decode a ``calypso/lts/<id>`` ledger entry (validating every point)."""
        try:
            return cls(
                id=entry["id"],
                t=entry["t"],
                X=Point.from_bytes(hex_bytes(entry["X"], 32, "X"), allow_identity=False),
                public_shares=tuple(
                    Point.from_bytes(hex_bytes(s, 32, "X_j"), allow_identity=False)
                    for s in entry["shares"]
                ),
                trustees=tuple(entry["trustees"]),
            )
        except (KeyError, TypeError) as exc:
            raise EncodingError(f"malformed LTS entry: {exc}") from exc


# ---- the reader's proof of knowledge of its key ----------------------------------------------
def read_pok_context(
    lts_id: str, job_id: str, slot: str, recipient: str, writes: Sequence[str]
) -> bytes:
    """What a read's proof of knowledge is bound to: LTS, job, slot, recipient, every write."""
    return H(
        _READ_POK_TAG,
        str(lts_id).encode(),
        str(job_id).encode(),
        str(slot).encode(),
        str(recipient).encode(),
        len(writes).to_bytes(8, "little"),
        *(str(w).encode() for w in writes),
    )


def prove_reader_key(
    keypair: EnvelopeKeyPair, lts_id: str, job_id: str, slot: str, writes: Sequence[str]
) -> bytes:
    """The reader's Schnorr proof of knowledge of y (Y = y·G from its X25519 key), 64 bytes."""
    rk = RecipientKey.from_x25519(keypair)
    ctx = read_pok_context(lts_id, job_id, slot, keypair.public.hex(), writes)
    return schnorr_prove(rk.secret, ctx, statement=rk.public).to_bytes()


def verify_reader_key(read: Mapping[str, Any]) -> Point:
    """Check a read's proof of knowledge of its recipient key; returns that key Y.

    ``read`` is a ``calypso.read`` payload or entry (``lts``, ``job``, ``slot``,
    ``recipient``, ``writes``, ``pok``). Y is decoded without the subgroup check: the
    proof's verification multiplies Y by a non-zero challenge, which libsodium refuses for
    any point outside the prime-order group.

    Raises
    ------
    AccessDenied
        if the proof is missing, malformed or does not verify (the reader does not know
        the key it asks the trustees to re-encrypt to: the related-key attack).
    """
    try:
        Y = elgamal.recipient_point_from_x25519(
            bytes.fromhex(read["recipient"]), subgroup_check=False
        )
        proof = SchnorrProof.from_bytes(hex_bytes(read.get("pok"), 64, "pok"))
        if not proof.challenge:
            raise InvalidProof("zero challenge")
        ctx = read_pok_context(
            read["lts"], read["job"], read["slot"], read["recipient"], read["writes"]
        )
        schnorr_verify(proof, Y, ctx)
    except (InvalidProof, EncodingError, ValueError, TypeError, KeyError) as exc:
        raise AccessDenied(
            "the read carries no valid proof of knowledge of its recipient key (bound to "
            f"this LTS, job, slot and writes): {exc}; a reader must prove it holds the key "
            "the shares are re-encrypted to (read_payload with the reader's EnvelopeKeyPair)"
        ) from None
    return Y


def read_payload(
    lts_id: str,
    job_id: str,
    slot: str,
    recipient: EnvelopeKeyPair | bytes,
    writes: Sequence[str],
    *,
    pok: bytes | None = None,
) -> dict[str, Any]:
    """Payload of the reader's ``calypso.read`` transaction.

    ``recipient`` is the reader's :class:`~kaires_fl.crypto.envelope.EnvelopeKeyPair`
    (its X25519 public key goes in the read, with a proof of knowledge of the derived
    group key). Passing only the 32-byte public key requires an explicit ``pok``.

    Raises
    ------
    ConfigError
        if only a public key is given without ``pok``.
    EncodingError
        on a bad slot, key length or repeated writes.
    """
    check_slot(slot)
    public = recipient.public if isinstance(recipient, EnvelopeKeyPair) else bytes(recipient)
    if len(public) != 32 or not writes or len(set(writes)) != len(writes):
        raise EncodingError("a read names a 32-byte X25519 recipient key and distinct writes")
    if pok is None:
        if not isinstance(recipient, EnvelopeKeyPair):
            raise ConfigError(
                "read_payload needs the reader's EnvelopeKeyPair (not only its public key): "
                "a read carries a proof of knowledge of the reader's key"
            )
        pok = prove_reader_key(recipient, lts_id, job_id, slot, writes)
    return {
        "lts": lts_id,
        "job": job_id,
        "slot": slot,
        "recipient": public.hex(),
        "writes": list(writes),
        "pok": bytes(pok).hex(),
    }


def evidence_keys(lts_id: str, read_id: str, job_id: str, writes: Sequence[str]) -> list[str]:
    """The state keys a release request must prove (read, job, inputs, writes)."""
    from kaires_fl.ledger.jobs import job_key

    return [read_key(read_id), job_key(job_id), inputs_key(job_id), *(write_key(w) for w in writes)]


def release_context(lts_id: str, job_id: str, write_id: str, slot: str) -> bytes:
    """What a re-encrypted share's proof is bound to (besides the recipient key)."""
    return H(_RELEASE_TAG, lts_id.encode(), job_id.encode(), write_id.encode(), slot.encode())


# ---- messages ---------------------------------------------------------------------------------
class ReleaseRequest(schema.Message, frozen=True):
    """Reader → every trustee: release the keys of committed read ``read_id``."""

    read_id: schema.Hex32
    evidence: StateEvidence


@dataclass(frozen=True)
class ReencryptedValue:
    """A re-encrypted share x_j·(U + Y): with its own DLEQ ``proof``, or covered by its
    response's batch proof (``proof`` None)."""

    value: Point
    proof: DLEQProof | None = None


class ReleaseResponse(schema.Message, frozen=True):
    """Trustee → reader: one re-encrypted share per write of the read, in the read's order.

    With ``batch_proof`` (what trustees send) one batched DLEQ proof covers every value
    (:func:`~kaires_fl.crypto.elgamal.reencrypt_batch`); without it each value carries its
    own DLEQ proof.
    """

    trustee: schema.Index
    read_id: schema.Hex32
    shares: Annotated[
        tuple[tuple[schema.Hex32, ReencryptedValue], ...], msgspec.Meta(max_length=MAX_ENTRIES)
    ]
    batch_proof: DLEQProof | None = None


class Refusal(schema.Message, frozen=True):
    """Trustee → requester: refused; ``error`` is the error class name, ``read_id`` the
    read (or job, for a coin) the request named."""

    trustee: schema.Index
    read_id: schema.Label
    error: schema.Label
    reason: Annotated[str, msgspec.Meta(max_length=MAX_REASON)]


class SealedAnswer(schema.Message, frozen=True):
    """Trustee → reader: a :class:`ReleaseResponse` or :class:`Refusal` sealed to the
    reader's X25519 key (the one the read names), bound to ``read`` and ``trustee``."""

    read: schema.Hex32
    trustee: schema.Index
    blob: schema.Blob


def _answer_aad(read: str, trustee: int) -> bytes:
    return H(_ANSWER_TAG, read.encode(), trustee.to_bytes(2, "little"))


def refusal(trustee: int, about: str, exc: BaseException) -> Refusal:
    """A :class:`Refusal` for ``exc`` (reason truncated to the schema's bound)."""
    return Refusal(trustee, str(about)[:256], type(exc).__name__, str(exc)[:MAX_REASON])


def seal_answer(answer: ReleaseResponse | Refusal, read: str, recipient: bytes) -> SealedAnswer:
    """Trustee step: seal ``answer`` to ``recipient`` (the read's X25519 key)."""
    aad = _answer_aad(read, answer.trustee)
    return SealedAnswer(read, answer.trustee, seal_to(recipient, schema.encode(answer), aad))


def open_answer(msg: SealedAnswer, keypair: EnvelopeKeyPair) -> ReleaseResponse | Refusal:
    """Reader step: open a trustee's sealed answer.

    Raises
    ------
    InvalidProof
        if the envelope was altered, is for another reader, read or trustee, or holds an
        answer naming another read or trustee.
    EncodingError
        if it does not hold a well-formed answer.
    """
    if not isinstance(msg, SealedAnswer):
        raise EncodingError(f"expected a SealedAnswer, got {type(msg).__name__}")
    raw = open_sealed(keypair, bytes(msg.blob), _answer_aad(msg.read, msg.trustee))
    answer: ReleaseResponse | Refusal = schema.decode(raw, ReleaseResponse | Refusal)
    if answer.trustee != msg.trustee or answer.read_id != msg.read:
        raise InvalidProof("sealed answer holds an answer for another trustee or read: discard it")
    return answer


@dataclass(frozen=True)
class ReleaseResult:
    """What the reader ends with: ``keys`` by write id, and who misbehaved or refused."""

    keys: dict[str, bytes]
    faulty: dict[int, str] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)


def combine_release(
    responses: Mapping[int, ReleaseResponse | Refusal | None],
    read_id: str,
    read: Mapping[str, Any],
    writes: Mapping[str, Mapping[str, Any] | WriteEntry],
    lts: LtsInfo,
    recipient: RecipientKey,
    *,
    verify_all: bool = True,
) -> ReleaseResult:
    """Verify the trustees' shares and recover each key of the read.

    ``responses`` maps every trustee (0-based) to its answer (None = silent); ``read`` is
    the committed read entry (or its payload), ``writes`` the write entries it names (ledger
    entries or decoded :class:`~.write.WriteEntry`) as proven on the ledger (their write
    proofs were checked when they were committed).
    With ``verify_all`` (default) every answer is verified so that every faulty trustee
    is named; otherwise answers are verified in trustee order until every key has t + 1
    valid shares. An answer with a batch proof costs 2(K − 1) + O(1) scalar multiplications
    for K writes; if its proof fails, its shares are compared with the interpolation of t + 1
    verified trustees' shares, which names the wrong ones (or says the proof alone was
    bad); that trustee's shares are not used.

    Returns
    -------
    ReleaseResult
        ``keys[write_id]`` for every write; ``faulty[j]`` says what trustee j did wrong
        (silent, a share for the wrong read, an invalid share or proof); ``refused[j]`` is
        a trustee's refusal.

    Raises
    ------
    ProtocolError
        if some key has fewer than t + 1 valid shares (the message names the trustees
        that failed and those that refused — a refusal by every trustee means the access
        is not authorised), or ``recipient`` is not the key the read names.
    """
    job, slot = read["job"], read["slot"]
    if not elgamal.recipient_matches_x25519(recipient.public, bytes.fromhex(read["recipient"])):
        raise ProtocolError(
            "this recipient key is not the one the read names: only the holder of the job's "
            "key for this reader can combine its shares"
        )
    order: list[str] = list(read["writes"])
    faulty: dict[int, str] = {}
    refused: dict[int, str] = {}
    answers: dict[int, ReleaseResponse] = {}
    for j in range(lts.n):
        resp = responses.get(j)
        if resp is None:
            faulty[j] = "no answer (silent)"
        elif isinstance(resp, Refusal):
            refused[j] = f"{resp.error}: {resp.reason}"
        elif not isinstance(resp, ReleaseResponse):
            faulty[j] = f"answered with a {type(resp).__name__}, not a release response"
        elif resp.trustee != j or resp.read_id != read_id:
            faulty[j] = "answered for another trustee index or another read"
        elif [w for w, _ in resp.shares] != order and (
            resp.batch_proof is not None or {w for w, _ in resp.shares} != set(order)
        ):
            faulty[j] = "answer does not hold exactly one share per write of the read"
        else:
            answers[j] = resp
    cts = {w: entry_ciphertext(writes[w], slot) for w in order}
    ctxs = [release_context(lts.id, job, w, slot) for w in order]
    bases = elgamal.reencryption_bases([cts[w].U for w in order], recipient.public)
    # valid[j][w]: trustee j's share of write w, verified.
    valid: dict[int, dict[str, Point]] = {}
    unlocated: dict[int, dict[str, Point]] = {}
    for j, resp in answers.items():
        if not verify_all and _enough(valid, order, lts.t):
            break
        got, bad = _verify_answer(resp, order, bases, ctxs, recipient.public, lts, j)
        if bad is None:
            valid[j] = got
        elif bad == "batch":
            unlocated[j] = got  # a failed batch proof: locate the bad shares below
        else:
            faulty[j] = bad
    for j, got in unlocated.items():
        faulty[j] = _locate(j, got, valid, order, lts.t)
    keys: dict[str, bytes] = {}
    yX = recipient.shared_with(lts.X)
    for w in order:
        have = [j for j in sorted(valid) if w in valid[j]]
        if len(have) < lts.t + 1:
            raise ProtocolError(
                f"key of write {w[:16]}… cannot be recovered: {len(have)} valid shares, need "
                f"t + 1 = {lts.t + 1}; faulty trustees {faulty}, refusals {refused}"
            )
        chosen = have[: lts.t + 1]
        # Σ λ_j x_j (U + Y) = x·U + y·X
        combined = multi_scalar_mult(lagrange_coefficients(chosen), [valid[j][w] for j in chosen])
        keys[w] = elgamal.recover_key(cts[w], combined - yX, entry_label(writes[w], slot))
    return ReleaseResult(keys, dict(sorted(faulty.items())), dict(sorted(refused.items())))


def _enough(valid: Mapping[int, Mapping[str, Point]], order: Sequence[str], t: int) -> bool:
    return all(sum(w in v for v in valid.values()) > t for w in order)


def _verify_answer(
    resp: ReleaseResponse,
    order: Sequence[str],
    bases: Sequence[Point],
    ctxs: Sequence[bytes],
    Y: Point,
    lts: LtsInfo,
    j: int,
) -> tuple[dict[str, Point], str | None]:
    """(values by write, None | "batch" | reason): verify one trustee's answer.

    A batch whose proof fails returns its values and "batch" (locate the bad ones); with
    per-share proofs every share is checked and the first bad one is the reason.
    """
    X_j = lts.public_shares[j]
    if resp.batch_proof is not None:
        values = [v.value for _, v in resp.shares if isinstance(getattr(v, "value", None), Point)]
        if len(values) != len(order) or not isinstance(resp.batch_proof, DLEQProof):
            return {}, "malformed answer (a share value is not a group element)"
        points = dict(zip(order, values, strict=True))
        try:
            elgamal.verify_reencrypted_batch(values, resp.batch_proof, bases, Y, X_j, ctxs)
        except (InvalidProof, EncodingError, ProtocolError):
            return points, "batch"
        return points, None
    got = dict(resp.shares)
    out: dict[str, Point] = {}
    for k, w in enumerate(order):
        share = got[w]
        try:
            if not isinstance(share, ReencryptedValue) or not isinstance(share.proof, DLEQProof):
                raise EncodingError("not a re-encrypted value with its DLEQ proof")
            elgamal.verify_exponent_share(
                elgamal.ExponentShare(share.value, share.proof),
                bases[k],
                X_j,
                elgamal.reencryption_context(Y, ctxs[k]),
            )
        except (InvalidProof, EncodingError, ProtocolError):
            return out, f"invalid re-encrypted share or DLEQ proof for write {w[:16]}…"
        out[w] = share.value
    return out, None


def _locate(
    j: int,
    got: Mapping[str, Point],
    valid: Mapping[int, Mapping[str, Point]],
    order: Sequence[str],
    t: int,
) -> str:
    """Why trustee j's batch failed: its shares checked one by one against verified ones.

    Shares of t + 1 trustees whose proofs verified fix x·B_w in the exponent, so trustee
    j's share must equal their Lagrange interpolation at x = j + 1 ((t + 1) scalar
    multiplications per share). The trustee is faulty either way (its batch proof fails);
    its shares are never used.
    """
    ref = sorted(valid)[: t + 1]
    if len(ref) < t + 1:
        return "invalid batched DLEQ proof (too few verified trustees to locate the bad shares)"
    lam = lagrange_at([i + 1 for i in ref], j + 1)
    wrong = [
        w
        for w in order
        if not isinstance(got.get(w), Point)
        or multi_scalar_mult(lam, [valid[i][w] for i in ref]) != got[w]
    ]
    if not wrong:
        return "invalid batched DLEQ proof (its shares are right: the proof was forged or altered)"
    return (
        f"invalid batched DLEQ proof: wrong re-encrypted share for {len(wrong)} of "
        f"{len(order)} writes, first {wrong[0][:16]}…"
    )


def lagrange_at(xs: Sequence[int], x: int) -> list[Scalar]:
    """λ_m with f(x) = Σ λ_m f(xs[m]) for every polynomial of degree < len(xs)."""
    out = []
    for m, xm in enumerate(xs):
        num, den = 1, 1
        for i, xi in enumerate(xs):
            if i != m:
                num = num * (x - xi) % L
                den = den * (xm - xi) % L
        out.append(Scalar(num * pow(den, -1, L)))
    return out


def writes_from_evidence(
    proven: Mapping[str, Any], write_ids: Sequence[str]
) -> dict[str, Mapping[str, Any]]:
    """The write entries of ``write_ids`` from verified evidence (InvalidProof if absent)."""
    out = {}
    for w in write_ids:
        e = proven.get(write_key(w))
        if e is None:
            raise InvalidProof(f"the evidence does not prove write {w[:16]}…")
        out[w] = e
    return out
