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

A part that does not open is disclosed in round 1, with a :class:`KeyProof` of the key the
provider actually wrote when the released key is not the committed one.

A disclosure exposes one share of one submission; for an honest provider only faulty
aggregators (≤ t, whose shares the adversary has anyway) are ever flagged.

:class:`AggregatorJob` is one aggregator's state for one job (pure computation, no I/O);
the service that moves its messages is :class:`kaires_fl.aggregation.job.AggregatorService`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from kaires_fl.aggregation.submission import (
    Manifest,
    PartShares,
    SealedSubmission,
    joint_rand_seed,
    open_part,
    part_hash,
)
from kaires_fl.arith import sharing
from kaires_fl.arith.flp import FlpBBCGGI19
from kaires_fl.crypto import envelope
from kaires_fl.crypto.group import Point
from kaires_fl.crypto.sign import H, Identity, is_valid
from kaires_fl.errors import DecodingError, InvalidSubmission, KairesError, ProtocolError
from kaires_fl.ledger.encoding import canonical

PUBLISH_CONTEXT = b"kaires/aggregation/publish"
REVEAL_CONTEXT = b"kaires/aggregation/reveal"
RESULT_CONTEXT = b"kaires/aggregation/result"

#: Mean records per submission from which each submission is queried on its own.
PER_SUBMISSION_QUERY = 64

#: Behaviours of a simulated faulty aggregator ("crash" is the network's business).
AGGREGATOR_FAULTS = ("crash", "byzantine")

# Rejection reasons (stable codes; the receipt carries them).
REASON_MISSING = "no_submission"
REASON_UNOPENABLE = "unopenable_part"
REASON_WRONG_KEY = "wrong_key_written"
REASON_INCONSISTENT = "inconsistent_shares"
REASON_INVALID_MEAS = "invalid_measurement"
REASON_INVALID_PROOF = "invalid_proof"


# ---------------------------------------------------------------------------- written keys

WRITTEN_KEY_CONTEXT = b"kaires/aggregation/written-key"


@dataclass(frozen=True)
class KeyProof:
    """Publicly verifiable decryption of the key written for aggregator i (one write).

    ``responses``: t_T + 1 trustees' answers to aggregator i's read (``(j, response)``; each
    holds x_j·(U_k + Y_i) for every write k of the read with its DLEQ proof — one per share
    or one batched proof); ``y_x`` = y_i·X with ``proof`` that log_G(Y_i) = log_X(y_x).
    Anyone then computes x·U = Σ λ_j x_j(U + Y_i) − y_i·X and unwraps the key the provider
    wrote, without learning y_i — so an aggregator that cannot open its part proves that
    the provider wrote a key other than the one it committed to.
    """

    responses: tuple[tuple[int, Any], ...]
    y_x: Any
    proof: Any


class KeyVerifier:
    """Checks :class:`KeyProof` s against the ledger's entries (decoded only when needed).

    ``lts``: the LTS (``LtsInfo``); ``writes[s]``: (write id, ledger entry) of submission s;
    ``recipients[i]``: aggregator i's X25519 key (hex) as the job names it.
    """

    def __init__(
        self,
        lts: Any,
        job: str,
        writes: Sequence[tuple[str, Mapping[str, Any]]],
        recipients: Sequence[str],
    ) -> None:
        self.lts = lts
        self.job = job
        self.writes = list(writes)
        self.recipients = recipients

    def _slot(self, wid: str, entry: Mapping[str, Any], slot: str) -> tuple[Any, bytes, bytes]:
        from kaires_fl.secret_management.release import release_context
        from kaires_fl.secret_management.write import WriteEntry, write_label

        e = WriteEntry.from_payload(
            {
                **{k: entry[k] for k in ("lts", "policy", "version", "job")},
                "keys": [k for k in entry["keys"] if k[0] == slot],
            }
        )
        label = write_label(e.lts, e.policy, e.version, e.job, slot)
        return e.slot(slot), label, release_context(self.lts.id, self.job, wid, slot)

    def _check_response(self, resp: Any, j: int, slot: str, Y: Any) -> None:
        """Raise unless ``resp`` is trustee j's correct answer for ``slot`` (any proof form)."""
        from kaires_fl.crypto import elgamal

        by_id = dict(self.writes)
        if getattr(resp, "batch_proof", None) is None:
            for wid, share in resp.shares:
                ct, _, context = self._slot(wid, by_id[wid], slot)
                elgamal.verify_reencrypted_share(share, ct.U, Y, self.lts.public_shares[j], context)
            return
        slots = [self._slot(wid, by_id[wid], slot) for wid, _ in resp.shares]
        elgamal.verify_reencrypted_batch(
            [v.value for _, v in resp.shares],
            resp.batch_proof,
            elgamal.reencryption_bases([ct.U for ct, _, _ in slots], Y),
            Y,
            self.lts.public_shares[j],
            [c for _, _, c in slots],
        )

    def written_key(self, s: int, i: int, kp: KeyProof) -> bytes | None:
        """The key written for slot i of submission s, or None if the proof does not hold."""
        from kaires_fl.crypto.elgamal import recipient_point_from_x25519, recover_key
        from kaires_fl.crypto.group import multi_scalar_mult
        from kaires_fl.crypto.proofs import dleq_verify
        from kaires_fl.crypto.vss import lagrange_coefficients
        from kaires_fl.secret_management.write import aggregator_slot

        try:
            slot = aggregator_slot(i)
            wid, entry = self.writes[s]
            ct, label, _ = self._slot(wid, entry, slot)
            Y = recipient_point_from_x25519(bytes.fromhex(self.recipients[i]))
            idx = sorted({j for j, _ in kp.responses})
            if len(idx) != self.lts.t + 1 or len(kp.responses) != len(idx):
                return None
            values = []
            for j, resp in sorted(kp.responses):
                self._check_response(resp, j, slot, Y)
                values.append(dict(resp.shares)[wid].value)
            dleq_verify(kp.proof, Point.base(), Y, self.lts.X, kp.y_x, WRITTEN_KEY_CONTEXT)
            xb = multi_scalar_mult(lagrange_coefficients(idx), values)
            return recover_key(ct, xb - kp.y_x, label)
        except (KairesError, KeyError, IndexError, ValueError, TypeError, AttributeError):
            return None


def prove_written_key(recipient: Any, lts: Any, responses: Mapping[int, Any]) -> KeyProof:
    """Aggregator side of :class:`KeyProof`: ``responses`` are t_T + 1 trustees' verified
    answers to its read; ``recipient`` its ``RecipientKey`` (y_i, Y_i)."""
    from kaires_fl.crypto.proofs import dleq_prove

    y_x = lts.X * recipient.secret
    proof = dleq_prove(
        recipient.secret, Point.base(), lts.X, WRITTEN_KEY_CONTEXT, recipient.public, y_x
    )
    return KeyProof(tuple(sorted(responses.items())), y_x, proof)


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
    key_verifier: KeyVerifier | None = field(default=None, compare=False, repr=False)

    @cached_property
    def offsets(self) -> np.ndarray:
        """Row offsets of each submission in the job's record batch (length S + 1)."""
        return np.concatenate([[0], np.cumsum([s.manifest.batch for s in self.submissions])])

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])

    def joint_rand(self, s: int) -> np.ndarray:
        """Joint randomness ``(JOINT_RAND_LEN,)`` of submission s (Fiat–Shamir on its parts)."""
        m = self.submissions[s].manifest
        return self.flp.derive_joint_rand(
            joint_rand_seed(m.job, m.provider, m.circuit, m.meas_parts)
        )

    @cached_property
    def joint_rands(self) -> np.ndarray:
        """Per-record joint randomness ``(rows, JOINT_RAND_LEN)`` (Fiat–Shamir per submission)."""
        flp = self.flp
        F = flp.field
        if not flp.JOINT_RAND_LEN:
            return F.zeros((self.rows, 0))
        per = [
            flp.derive_joint_rand(joint_rand_seed(m.job, m.provider, m.circuit, m.meas_parts))
            for m in (s.manifest for s in self.submissions)
        ]
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


# ---------------------------------------------------------------------------- messages


def _cached_body(msg: Any, compute: Any) -> bytes:
    """A message's signed digest, computed once per (immutable, in-process) message object."""
    got = msg.__dict__.get("_body")
    if got is None:
        got = compute()
        object.__setattr__(msg, "_body", got)
    return got


class _SignedMessage:
    """Mixin: the cached digest never travels (a receiver that deserialises recomputes it)."""

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_body"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


#: A disclosed part: (submission, released key, measurement blob, proof blob, and — for a
#: part that does not open — a KeyProof of the key the provider actually wrote, or None).
Disclosure = tuple[int, bytes, bytes, bytes, "KeyProof | None"]


def _disclosed(items: Sequence[Disclosure]) -> list[bytes]:
    return [
        H(str(s).encode(), k, part_hash(mb), part_hash(pb), _key_proof_bytes(kp))
        for s, k, mb, pb, kp in items
    ]


def _key_proof_bytes(kp: KeyProof | None) -> bytes:
    if kp is None:
        return b""
    parts = []
    for j, resp in kp.responses:
        parts.append(str(j).encode())
        for wid, v in resp.shares:
            parts.append(wid.encode() + v.value.to_bytes())
        bp = getattr(resp, "batch_proof", None)
        parts.append(bp.to_bytes() if bp is not None else b"")
    return H(*parts, kp.y_x.to_bytes(), kp.proof.to_bytes())


def _sig_ok(pub_hex: str, context: bytes, body: bytes, sig: bytes) -> bool:
    return is_valid(bytes.fromhex(pub_hex), context, body, sig)


@dataclass(frozen=True)
class Published(_SignedMessage):
    """Aggregator ``i``'s round-1 message: z per submission, verifier shares per record.

    ``unopened`` lists each submission it could not open with the key it was released for
    it and its two part blobs (anyone checks them against the signed manifest and retries
    the opening).
    """

    job: str
    aggregator: int
    z: np.ndarray  # (S,)
    verifier: np.ndarray  # (rows, VERIFIER_LEN)
    unopened: tuple[Disclosure, ...]
    signature: bytes = b""

    def body(self) -> bytes:
        return _cached_body(
            self,
            lambda: H(
                PUBLISH_CONTEXT,
                self.job.encode(),
                self.aggregator.to_bytes(4, "little"),
                np.ascontiguousarray(self.z).tobytes(),
                np.ascontiguousarray(self.verifier).tobytes(),
                *_disclosed(self.unopened),
            ),
        )


@dataclass(frozen=True)
class Reveal(_SignedMessage):
    """Aggregator ``i``'s justification: its released key for each disputed submission."""

    job: str
    aggregator: int
    keys: tuple[Disclosure, ...]
    signature: bytes = b""

    def body(self) -> bytes:
        return _cached_body(
            self,
            lambda: H(
                REVEAL_CONTEXT,
                self.job.encode(),
                self.aggregator.to_bytes(4, "little"),
                *_disclosed(self.keys),
            ),
        )


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


@dataclass(frozen=True)
class ResultShare(_SignedMessage):
    """Aggregator ``i``'s round-3 message: its decision and the hash of its sealed share."""

    job: str
    aggregator: int
    decision: bytes  # canonical Decision.to_obj
    share_hash: str  # hex hash of the sealed aggregate share ("" when nothing is released)
    signature: bytes = b""

    def body(self) -> bytes:
        return _cached_body(
            self,
            lambda: H(
                RESULT_CONTEXT,
                self.job.encode(),
                self.aggregator.to_bytes(4, "little"),
                self.decision,
                self.share_hash.encode(),
            ),
        )


def sealed_share_hash(blob: bytes) -> str:
    return H(b"kaires/aggregation/sealed-share", blob).hex()


def share_aad(job: str, i: int) -> bytes:
    return H(b"kaires/aggregation/aggregate-share", job.encode(), i.to_bytes(4, "little"))


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


def find_disputes(
    F: Any, n: int, t: int, z: Mapping[int, np.ndarray], opened: Mapping[int, set[int]], S: int
) -> tuple[dict[int, set[int]], set[int]]:
    """Locate z values off the degree-t polynomial of each submission.

    Pre: ``z[i]`` is ``(S,)`` for each present aggregator; ``opened[i]`` the submissions it
    opened. Post: ``(flagged, undecodable)`` where ``flagged[s]`` is the set of aggregators
    whose z for submission s is wrong, and ``undecodable`` the submissions whose z values
    are not within ``(m − t − 1) // 2`` errors of any degree-t polynomial (there, every
    aggregator holding a z is flagged: each must disclose its part).
    """
    flagged: dict[int, set[int]] = {}
    undecodable: set[int] = set()
    # Group submissions by the set of aggregators holding a z for them (usually one group).
    groups: dict[tuple[int, ...], list[int]] = {}
    for s in range(S):
        groups.setdefault(tuple(i for i in sorted(z) if s in opened[i]), []).append(s)
    for parties, subs in groups.items():
        cols = np.asarray(subs)
        Z = {i: z[i][cols] for i in parties}
        try:
            _, bad = sharing.robust_reconstruct(F, Z, n, t)
        except DecodingError:
            bad = None
        if bad is not None:
            if not bad:
                continue
            good = [i for i in parties if i not in bad][: t + 1]
            expect = _interpolate_at(F, good, np.stack([Z[i] for i in good]), bad)
            for k, j in enumerate(bad):
                for wrong_col in np.flatnonzero(expect[k] != Z[j]):
                    flagged.setdefault(int(cols[wrong_col]), set()).add(j)
            continue
        # Slow path (several errors in one submission): decode each submission alone.
        for c, s in enumerate(subs):
            col = {i: Z[i][c : c + 1] for i in parties}
            try:
                _, bad_s = sharing.robust_reconstruct(F, col, n, t)
            except DecodingError:
                undecodable.add(s)
                flagged[s] = set(parties)
                continue
            if bad_s:
                flagged[s] = set(bad_s)
    return flagged, undecodable


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


def decide_job(
    ctx: JobContext,
    coin: Coin,
    published: Mapping[int, Published],
    reveals: Mapping[int, Reveal],
) -> Decision:
    """The job's accept/reject decision from the public messages (deterministic).

    Pre: ``published``/``reveals`` hold the messages the coordinator relayed (signatures
    not yet checked: bad ones count as missing). Post: every aggregator given the same
    messages returns the same :class:`Decision`. Raises ``ProtocolError`` if more than t
    aggregators are faulty (the verifier shares cannot be opened).
    """
    flp, F, n, t = ctx.flp, ctx.flp.field, ctx.n, ctx.t
    S = len(ctx.submissions)
    faulty: dict[int, str] = {}
    pub: dict[int, Published] = {}
    for i in range(n):
        p = published.get(i)
        if p is None:
            faulty[i] = "no response"
        elif (
            p.job != ctx.job
            or p.aggregator != i
            or not _sig_ok(ctx.aggregators[i], PUBLISH_CONTEXT, p.body(), p.signature)
            or not isinstance(p.z, np.ndarray)
            or not isinstance(p.verifier, np.ndarray)
            or p.z.shape != (S,)
            or p.verifier.shape != (ctx.rows, flp.VERIFIER_LEN)
        ):
            faulty[i] = "malformed or unsigned round-1 message"
        else:
            pub[i] = p
    rejected: dict[int, str] = {}
    # Unopenable parts: provable against the signed commitment, else the aggregator's fault.
    opened = {i: set(range(S)) for i in pub}
    for i, p in pub.items():
        for s, key, mblob, pblob, kp in p.unopened:
            if not 0 <= s < S:
                faulty[i] = "malformed round-1 message"
                continue
            opened[i].discard(s)
            sub = ctx.submissions[s]
            m = sub.manifest
            if (
                part_hash(mblob).hex() != m.meas_parts[i]
                or part_hash(pblob).hex() != m.proof_parts[i]
            ):
                faulty.setdefault(i, "disclosed parts that do not match the signed manifest")
                continue
            try:
                open_part(flp, m, i, key, mblob, pblob, hashes_checked=True)
            except InvalidSubmission as exc:
                if "commitment" not in str(exc):
                    rejected[s] = REASON_UNOPENABLE  # the committed key does not open it
                elif (
                    kp is not None
                    and ctx.key_verifier is not None
                    and ctx.key_verifier.written_key(s, i, kp) == key
                ):
                    rejected[s] = REASON_WRONG_KEY  # proven: the provider wrote another key
                else:
                    faulty.setdefault(
                        i, "claimed an unopenable part with a key that is not the committed one"
                    )
            else:
                faulty.setdefault(i, "claimed an openable part was unopenable")
    for i in list(pub):
        if i in faulty:
            del pub[i]
            del opened[i]
    # Consistency of each submission's sharing (protocol.md §5.2).
    flagged, _ = find_disputes(F, n, t, {i: p.z for i, p in pub.items()}, opened, S)
    rev_keys: dict[int, dict[int, tuple[bytes, bytes, bytes]]] = {}
    for i, r in reveals.items():
        if (
            i in pub
            and r.job == ctx.job
            and r.aggregator == i
            and _sig_ok(ctx.aggregators[i], REVEAL_CONTEXT, r.body(), r.signature)
        ):
            rev_keys[i] = {d[0]: (d[1], d[2], d[3]) for d in r.keys}
    for s, js in sorted(flagged.items()):
        sub = ctx.submissions[s]
        truthful: set[int] = set()
        for j in sorted(js):
            disclosed = rev_keys.get(j, {}).get(s)
            if disclosed is None:
                faulty.setdefault(
                    j, "published a consistency value off the polynomial and did not justify it"
                )
                continue
            try:
                shares = open_part(flp, sub.manifest, j, *disclosed)
            except InvalidSubmission:
                faulty.setdefault(
                    j,
                    "published a consistency value off the polynomial; the key it disclosed "
                    "does not open its part",
                )
                continue
            if bool(np.all(consistency_value(flp, coin, sub.manifest, shares) == pub[j].z[s])):
                truthful.add(j)
            else:
                faulty.setdefault(
                    j, "published a wrong consistency value (its disclosed part gives another)"
                )
        # The z values now known to be computed from the parts as sent: the provider dealt
        # consistent shares iff they lie on one degree-t polynomial.
        known = {
            i: pub[i].z[s : s + 1] for i in pub if s in opened[i] and (i not in js or i in truthful)
        }
        if len(known) < t + 1 or not sharing.is_consistent(F, known, t):
            rejected.setdefault(s, REASON_INCONSISTENT)
    # FLP verification of the consistent submissions, on shares (protocol.md §5.3).
    live = [s for s in range(S) if s not in rejected]
    voters = [i for i in pub if i not in faulty]
    if live:
        off = ctx.offsets
        rows = np.concatenate([np.arange(off[s], off[s + 1]) for s in live])
        vshares = {i: pub[i].verifier[rows] for i in voters}
        try:
            verifier, bad = sharing.robust_reconstruct(F, vshares, n, t)
        except DecodingError as exc:
            raise ProtocolError(
                f"job {ctx.job[:16]}…: the verifier shares cannot be opened ({exc}); more than "
                f"t = {ctx.t} aggregators are faulty — rerun the job with a healthy committee"
            ) from exc
        for j in bad:
            faulty.setdefault(j, "published wrong verifier shares")
        ok = flp.decide(verifier)
        _, gad_ok = _diagnose(flp, verifier)
        start = 0
        for s in live:
            b = int(off[s + 1] - off[s])
            if not ok[start : start + b].all():
                bad_gadget = not gad_ok[start : start + b].all()
                rejected[s] = REASON_INVALID_PROOF if bad_gadget else REASON_INVALID_MEAS
            start += b
    accepted_subs = [s for s in range(S) if s not in rejected]
    by_prov = {ctx.submissions[s].manifest.provider: s for s in range(S)}
    rej = {ctx.submissions[s].manifest.provider: r for s, r in rejected.items()}
    for prov in ctx.providers:
        if prov not in by_prov:
            rej[prov] = REASON_MISSING
    accepted = sorted(ctx.submissions[s].manifest.provider for s in accepted_subs)
    status, why = "done", ""
    if len(accepted) < ctx.min_providers:
        status = "failed"
        why = (
            f"{len(accepted)} provider(s) accepted, the policies require at least "
            f"{ctx.min_providers}: nothing is released and every payment is refunded"
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
        self.shares: dict[int, PartShares] = {}
        self.unopened: dict[int, bytes] = {}
        #: Proofs of the written key for parts that do not open (set by the service).
        self.key_proofs: dict[int, KeyProof] = {}
        self.decision: Decision | None = None
        self.sealed_share: bytes | None = None

    # -- step 4: open the parts with the released keys
    def open_parts(self, keys: Mapping[int, bytes], hashes_checked: bool = False) -> None:
        """Open every submission's part ``index`` with its released key.

        ``hashes_checked``: the parts were already checked against their manifests.
        """
        ctx, i = self.ctx, self.index
        for s, sub in enumerate(ctx.submissions):
            key = keys.get(s)
            if key is None:
                raise ProtocolError(
                    f"aggregator {i} got no key for submission {s} of job {ctx.job[:16]}…; "
                    "request the key release again"
                )
            self.keys[s] = key
            try:
                self.shares[s] = open_part(
                    ctx.flp,
                    sub.manifest,
                    i,
                    key,
                    sub.meas_parts[i],
                    sub.proof_parts[i],
                    hashes_checked=hashes_checked,
                )
            except InvalidSubmission:
                self.unopened[s] = key

    # -- step 5, round 1
    def publish(self, coin: Coin) -> Published:
        """z per submission and verifier shares for all records.

        One batched ``query`` over every record (per-record joint randomness) when the
        submissions are small; one per submission (its joint randomness shared by its
        records, so the circuit's powers are computed once) when they are large.
        """
        ctx, flp = self.ctx, self.ctx.flp
        F = flp.field
        S = len(ctx.submissions)
        z = F.zeros((S,))
        for s, sh in self.shares.items():
            z[s] = consistency_value(flp, coin, ctx.submissions[s].manifest, sh)[0]
        qr = coin.query_rand(flp)
        subs = [(s, ctx.submissions[s].manifest.batch) for s in range(S)]
        if not ctx.rows:
            verifier = F.zeros((0, flp.VERIFIER_LEN))
        elif ctx.rows >= PER_SUBMISSION_QUERY * S:
            parts = []
            for s, b in subs:
                opened = self.shares.get(s)
                if opened is None:  # unopened: its rows are ignored by every decision
                    parts.append(F.zeros((b, flp.VERIFIER_LEN)))
                    continue
                jr = ctx.joint_rand(s) if flp.JOINT_RAND_LEN else None
                parts.append(flp.query(opened.meas, opened.proof, qr, jr))
            verifier = np.concatenate(parts)
        else:

            def rows(attr: str, width: int) -> np.ndarray:
                return np.concatenate(
                    [
                        getattr(self.shares[s], attr) if s in self.shares else F.zeros((b, width))
                        for s, b in subs
                    ]
                )

            jr_all = ctx.joint_rands if flp.JOINT_RAND_LEN else None
            verifier = flp.query(
                rows("meas", flp.MEAS_LEN), rows("proof", flp.PROOF_LEN), qr, jr_all
            )
        if self.byzantine:
            z = F.random(z.shape)
            verifier = F.random(verifier.shape)
        msg = Published(
            ctx.job,
            self.index,
            z,
            verifier,
            tuple(self._disclose(s, k) for s, k in sorted(self.unopened.items())),
        )
        return _signed(msg, self.identity, PUBLISH_CONTEXT)

    # -- step 5, round 2
    def reveal(self, flagged: Mapping[int, set[int]]) -> Reveal:
        """Keys of the submissions where this aggregator's z was disputed (maybe none)."""
        mine = sorted(s for s, js in flagged.items() if self.index in js)
        keys = tuple(
            self._disclose(s, secrets.token_bytes(32) if self.byzantine else self.keys[s])
            for s in mine
        )
        return _signed(Reveal(self.ctx.job, self.index, keys), self.identity, REVEAL_CONTEXT)

    def _disclose(self, s: int, key: bytes) -> Disclosure:
        sub = self.ctx.submissions[s]
        kp = self.key_proofs.get(s) if s in self.unopened else None
        return (s, key, sub.meas_parts[self.index], sub.proof_parts[self.index], kp)

    # -- step 6
    def aggregate(self, decision: Decision) -> ResultShare:
        """Sum truncated accepted shares, seal them to the consumer, report the hash."""
        ctx, flp = self.ctx, self.ctx.flp
        F = flp.field
        self.decision = decision
        share_hash = ""
        if decision.status == "done":
            total = F.zeros((flp.OUTPUT_LEN,))
            subs = [s for s in decision.accepted_subs if s in self.shares]
            if subs:
                per_sub = [F.sum(flp.valid.truncate(self.shares[s].meas), axis=0) for s in subs]
                total = F.sum(np.stack(per_sub), axis=0)
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
        return _signed(msg, self.identity, RESULT_CONTEXT)


def _signed(msg: Any, identity: Identity, context: bytes) -> Any:
    from dataclasses import replace

    return replace(msg, signature=identity.sign(context, msg.body()))


def verify_signed(msg: Any, public_hex: str, context: bytes) -> bool:
    """Whether ``msg`` (Published / Reveal / ResultShare) is signed by ``public_hex``."""
    return _sig_ok(public_hex, context, msg.body(), msg.signature)
