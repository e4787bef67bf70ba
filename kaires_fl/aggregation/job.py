"""One job through the aggregation cothority: the aggregator service and the job driver.

:class:`AggregatorService` is aggregator i as a network service: it answers the
coordinator's messages, checks everything it is told against its own view of the ledger,
fetches its keys from the trustees itself (one batched ``calypso.read`` per job) and runs
:class:`~kaires_fl.aggregation.aggregator.AggregatorJob`.

:class:`Coordinator` is the untrusted job driver (the Flower ServerApp's role): it only
moves messages — sealed submissions to the aggregators, their public round messages to
each other, the receipt to the ledger, the sealed aggregate shares to the consumer — and
keeps a log of everything it saw (:attr:`Coordinator.log`), so a test can check that the
coordinator's view holds no provider plaintext. It cannot forge anything: submissions
are signed by providers, round messages and receipt signatures by aggregators, and the
aggregators re-check the ledger before acting on what it says.

Rounds (protocol.md §3–§6): inputs closed → :class:`StartJob` → reads committed →
:class:`ReadCommitted` (with the trustees' coin shares) → :class:`Published` →
:class:`PublishedSet` → :class:`Reveal` → :class:`RevealSet` → :class:`ResultShare` →
:class:`ReceiptDraft` → :class:`ReceiptSignature` → receipt committed → :class:`Deliver`
→ :class:`SealedShare`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kaires_fl.aggregation.aggregator import (
    PUBLISH_CONTEXT,
    REVEAL_CONTEXT,
    AggregatorJob,
    Coin,
    JobContext,
    KeyProof,
    KeyVerifier,
    Published,
    ResultShare,
    Reveal,
    decide_job,
    find_disputes,
    prove_written_key,
    verify_signed,
)
from kaires_fl.aggregation.submission import SealedSubmission, key_commit
from kaires_fl.arith.flp import FlpBBCGGI19
from kaires_fl.crypto.elgamal import RecipientKey, recover_key
from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.crypto.group import multi_scalar_mult
from kaires_fl.crypto.sign import H, Identity
from kaires_fl.crypto.vss import lagrange_coefficients as vss_lagrange
from kaires_fl.errors import InvalidSubmission, KairesError, ProtocolError
from kaires_fl.ledger.darc import darc_key
from kaires_fl.ledger.encoding import canonical, decode_canonical
from kaires_fl.ledger.jobs import job_key, receipt_key, sign_receipt
from kaires_fl.ledger.tx import Tx
from kaires_fl.secret_management.contracts import inputs_key, lts_key, read_key, write_key
from kaires_fl.secret_management.evidence import prove_entries
from kaires_fl.secret_management.release import (
    LtsInfo,
    Refusal,
    ReleaseRequest,
    ReleaseResponse,
    combine_release,
    evidence_keys,
    read_payload,
)
from kaires_fl.secret_management.write import WriteEntry, aggregator_slot, write_label
from kaires_fl.transport.base import Transport

# ---------------------------------------------------------------------------- statistics


_FLPS: dict[str, FlpBBCGGI19] = {}


def circuit_id(kind: str, params: Mapping[str, Any]) -> str:
    """The id of a statistic's circuit: what the manifests and the job agree on."""
    return H(b"kaires/aggregation/circuit", kind.encode(), canonical(dict(params))).hex()


def flp_for(statistic: Any) -> FlpBBCGGI19:
    """The FLP of a statistic's validity circuit (cached per circuit id)."""
    kind, params = statistic.spec()
    cid = circuit_id(kind, params)
    flp = _FLPS.get(cid)
    if flp is None:
        circ = statistic.circuit
        flp = circ if isinstance(circ, FlpBBCGGI19) else FlpBBCGGI19(circ)
        _FLPS[cid] = flp
    return flp


def job_statistic(job: Mapping[str, Any]) -> Any:
    """Rebuild the statistic a committed job names (``params["statistic"]``)."""
    from kaires_fl.statistics import from_params

    return from_params(job["statistic"], job["params"]["statistic"])


# ---------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class StartJob:
    """Coordinator → aggregators: the job's submissions, in the order of the inputs."""

    job: str
    submissions: tuple[SealedSubmission, ...]


@dataclass(frozen=True)
class ReadSigned:
    """Aggregator → coordinator: its signed ``calypso.read`` for all the job's writes."""

    job: str
    aggregator: int
    tx: Tx | None  # None when the job has no submission to read


@dataclass(frozen=True)
class ReadCommitted:
    """Coordinator → aggregators: reads committed; the trustees' coin shares."""

    job: str
    coin_shares: tuple[tuple[int, Any], ...]


@dataclass(frozen=True)
class PublishedSet:
    job: str
    messages: tuple[Published, ...]


@dataclass(frozen=True)
class RevealSet:
    job: str
    messages: tuple[Reveal, ...]


@dataclass(frozen=True)
class ReceiptDraft:
    job: str
    receipt: Any


@dataclass(frozen=True)
class ReceiptSignature:
    job: str
    aggregator: int
    public: str
    signature: str


@dataclass(frozen=True)
class Deliver:
    job: str


@dataclass(frozen=True)
class SealedShare:
    """Aggregator → consumer (via the coordinator): its aggregate share sealed to the consumer."""

    job: str
    aggregator: int
    blob: bytes


@dataclass(frozen=True)
class Failed:
    """Aggregator → coordinator: it cannot go on with the job, and why."""

    job: str
    aggregator: int
    reason: str


# ---------------------------------------------------------------------------- the service


class AggregatorService:
    """Aggregator ``index`` of the cothority, listening on ``transport``.

    ``ledger`` is its ledger client (reads, proofs, counters); ``trustees`` the trustees'
    addresses in LTS order; ``behaviour`` None, ``"crash"`` or ``"byzantine"``.
    """

    def __init__(
        self,
        index: int,
        identity: Identity,
        keypair: EnvelopeKeyPair,
        transport: Transport,
        ledger: Any,
        trustees: Sequence[str],
        lts_id: str,
        behaviour: str | None = None,
        release_timeout: float = 1.0,
    ) -> None:
        self.index = index
        self.identity = identity
        self.keypair = keypair
        self.recipient = RecipientKey.from_x25519(keypair)
        self.t = transport
        self.ledger = ledger
        self.trustees = list(trustees)
        self.lts_id = lts_id
        self.behaviour = behaviour
        self.release_timeout = release_timeout
        self.jobs: dict[str, _JobState] = {}
        transport.set_handler(self.on_message)

    @property
    def public(self) -> str:
        return self.identity.public.hex()

    def on_message(self, src: str, msg: Any) -> None:
        job = getattr(msg, "job", None)
        try:
            self._dispatch(src, msg)
        except KairesError as exc:
            if isinstance(job, str):
                self.t.send(src, Failed(job, self.index, f"{type(exc).__name__}: {exc}"))

    def _dispatch(self, src: str, msg: Any) -> None:
        if isinstance(msg, StartJob):
            self._start(src, msg)
        elif isinstance(msg, ReadCommitted):
            self._release(src, msg)
        elif isinstance(msg, ReleaseResponse | Refusal):
            self._on_release(src, msg)
        elif isinstance(msg, PublishedSet):
            self._on_published(src, msg)
        elif isinstance(msg, RevealSet):
            self._on_reveals(src, msg)
        elif isinstance(msg, ReceiptDraft):
            self._on_draft(src, msg)
        elif isinstance(msg, Deliver):
            self._on_deliver(src, msg)

    # -- step 3/4: check the submission set against the ledger; sign the read
    def _start(self, src: str, msg: StartJob) -> None:
        job = self.ledger.get(job_key(msg.job))
        inputs = self.ledger.get(inputs_key(msg.job))
        if job is None or job["status"] != "committed" or inputs is None:
            raise ProtocolError(f"job {msg.job[:16]}… is not committed with closed inputs")
        if (
            self.public not in job["aggregators"]
            or job["aggregators"].index(self.public) != self.index
        ):
            raise ProtocolError(
                f"aggregator {self.index} is not aggregator {self.index} of the job"
            )
        stat = job_statistic(job)
        flp = flp_for(stat)
        cid = circuit_id(job["statistic"], job["params"]["statistic"])
        n, t = len(job["aggregators"]), int(job["params"]["degree"])
        subs = msg.submissions
        for s in subs:
            s.check(n, parts=[self.index])
            m = s.manifest
            if m.job != msg.job or m.circuit != cid or m.provider not in job["providers"]:
                raise InvalidSubmission(
                    f"submission of {m.provider!r} is not for this job, circuit or provider set"
                )
            w = self.ledger.get(write_key(m.write))
            if w is None or w["policy"] != m.provider or m.signer not in w["signers"]:
                # Only the policy's owner can write under it: a manifest signed by anyone
                # else (claiming another provider's write) is refused here.
                raise InvalidSubmission(
                    f"the manifest of {m.provider!r} is not signed by the writer of its keys"
                )
        if (
            sorted(s.manifest.hash.hex() for s in subs) != inputs["manifests"]
            or sorted(s.manifest.write for s in subs) != inputs["writes"]
        ):
            raise ProtocolError(
                f"the submissions sent for job {msg.job[:16]}… are not the closed inputs on "
                "the ledger"
            )
        if len({s.manifest.provider for s in subs}) != len(subs):
            raise ProtocolError("two submissions of one provider in the closed inputs")
        needed = int(job["params"].get("min_providers", 1))
        for p in job["providers"]:
            d = self.ledger.get(darc_key(p))
            if d is not None and d.get("terms") is not None:
                needed = max(needed, int(d["terms"]["min_providers"]))
        ctx = JobContext(
            job=msg.job,
            chain=self.ledger.chain,
            flp=flp,
            circuit=cid,
            n=n,
            t=t,
            aggregators=tuple(job["aggregators"]),
            consumer_key=bytes.fromhex(job["consumer_key"]),
            providers=tuple(job["providers"]),
            min_providers=needed,
            submissions=tuple(subs),
            key_verifier=KeyVerifier(
                LtsInfo.from_entry(self.ledger.get(lts_key(self.lts_id))),
                msg.job,
                [(s.manifest.write, self.ledger.get(write_key(s.manifest.write))) for s in subs],
                job["params"]["aggregator_keys"],
            ),
        )
        st = _JobState(ctx, AggregatorJob(ctx, self.index, self.identity, self.behaviour), stat)
        self.jobs[msg.job] = st
        writes = [s.manifest.write for s in subs]
        if writes:
            payload = read_payload(
                self.lts_id, msg.job, aggregator_slot(self.index), self.keypair.public, writes
            )
            tx = self.ledger.sign(self.identity, "calypso.read", payload)
            st.read_id = tx.id
            self.t.send(src, ReadSigned(msg.job, self.index, tx))
        else:
            self.t.send(src, ReadSigned(msg.job, self.index, None))

    # -- step 4/5.1: key release and coin
    def _release(self, src: str, msg: ReadCommitted) -> None:
        st = self.jobs[msg.job]
        st.coordinator = src
        st.coin_shares = dict(msg.coin_shares)
        if st.read_id is None:
            self._opened(st, {})
            return
        if self.ledger.get(read_key(st.read_id)) is None:
            raise ProtocolError(f"read {st.read_id[:16]}… is not committed on the ledger")
        writes = [s.manifest.write for s in st.ctx.submissions]
        st.lts = LtsInfo.from_entry(self.ledger.get(lts_key(self.lts_id)))
        ev = prove_entries(self.ledger, evidence_keys(self.lts_id, st.read_id, msg.job, writes))
        req = ReleaseRequest(st.read_id, ev)
        self.t.broadcast(self.trustees, req)
        st.release_timer = self.t.call_later(self.release_timeout, lambda: self._combine(st))

    def _on_release(self, src: str, msg: ReleaseResponse | Refusal) -> None:
        if src not in self.trustees:
            return
        for st in self.jobs.values():
            if st.read_id == msg.read_id and not st.released:
                st.responses.setdefault(self.trustees.index(src), msg)
                answered = [r for r in st.responses.values() if isinstance(r, ReleaseResponse)]
                if len(answered) == st.lts.t + 1 and not st.fast_tried:
                    st.fast_tried = True
                    keys = self._fast_keys(st)
                    if keys is not None:
                        self._finish_release(st, keys)
                        return
                if len(st.responses) == len(self.trustees):
                    self._combine(st)
                return

    def _my_writes(self, st: _JobState) -> dict[str, WriteEntry]:
        """The job's writes, decoding only this aggregator's slot (one point check each)."""
        slot = aggregator_slot(self.index)
        out = {}
        for s in st.ctx.submissions:
            e = self.ledger.get(write_key(s.manifest.write))
            out[s.manifest.write] = WriteEntry.from_payload(
                {
                    "lts": e["lts"],
                    "policy": e["policy"],
                    "version": e["version"],
                    "job": e["job"],
                    "keys": [k for k in e["keys"] if k[0] == slot],
                }
            )
        return out

    def _fast_keys(self, st: _JobState) -> dict[int, bytes] | None:
        """Keys from the first t + 1 answers without checking their DLEQ proofs.

        Sound because every recovered key is checked against the provider's signed key
        commitment; any mismatch (a wrong share, or a provider that wrote another key)
        falls back to :func:`combine_release`, which verifies every share and names the
        faulty trustees.
        """
        lts = st.lts
        chosen = sorted(j for j, r in st.responses.items() if isinstance(r, ReleaseResponse))[
            : lts.t + 1
        ]
        lam = vss_lagrange(chosen)
        shares = [dict(st.responses[j].shares) for j in chosen]
        xy = lts.X * self.recipient.secret
        slot = aggregator_slot(self.index)
        writes = self._my_writes(st)
        keys: dict[int, bytes] = {}
        try:
            for s, sub in enumerate(st.ctx.submissions):
                m = sub.manifest
                w = writes[m.write]
                xb = multi_scalar_mult(lam, [sh[m.write].value for sh in shares])
                label = write_label(w.lts, w.policy, w.version, w.job, slot)
                key = recover_key(w.slot(slot), xb - xy, label)
                if (
                    key_commit(m.job, m.provider, self.index, key).hex()
                    != m.key_commits[self.index]
                ):
                    return None
                keys[s] = key
        except (KeyError, KairesError, ValueError):
            return None
        return keys

    def _key_proof(self, st: _JobState, s: int) -> KeyProof | None:
        """Proof of the key written for this aggregator's part s (when it does not open)."""
        good = {
            j: r
            for j, r in sorted(st.responses.items())
            if isinstance(r, ReleaseResponse) and j not in st.faulty_trustees
        }
        if st.lts is None or len(good) < st.lts.t + 1:
            return None
        chosen = dict(list(good.items())[: st.lts.t + 1])
        return prove_written_key(self.recipient, st.lts, chosen)

    def _combine(self, st: _JobState) -> None:
        if st.released:
            return
        assert st.read_id is not None
        read = self.ledger.get(read_key(st.read_id))
        try:
            res = combine_release(
                {j: st.responses.get(j) for j in range(st.lts.n)},
                st.read_id,
                read,
                self._my_writes(st),
                st.lts,
                self.recipient,
            )
        except KairesError as exc:
            st.released = True
            self.t.send(st.coordinator, Failed(st.ctx.job, self.index, f"key release: {exc}"))
            return
        st.faulty_trustees = dict(res.faulty)
        keys = {s: res.keys[sub.manifest.write] for s, sub in enumerate(st.ctx.submissions)}
        self._finish_release(st, keys)

    def _finish_release(self, st: _JobState, keys: Mapping[int, bytes]) -> None:
        st.released = True
        if st.release_timer is not None:
            st.release_timer.cancel()
        self._opened(st, keys)

    def _opened(self, st: _JobState, keys: Mapping[int, bytes]) -> None:
        from kaires_fl.secret_management.coin import combine_coin

        ctx = st.ctx
        inputs = self.ledger.get(inputs_key(ctx.job))
        lts = LtsInfo.from_entry(self.ledger.get(lts_key(self.lts_id)))
        seed, _bad = combine_coin(
            {j: st.coin_shares.get(j) for j in range(lts.n)},
            dict(enumerate(lts.public_shares)),
            lts.t,
            self.lts_id,
            ctx.job,
            inputs["root"],
        )
        st.coin = Coin(seed)
        st.work.open_parts(keys, hashes_checked=True)
        for s in st.work.unopened:
            kp = self._key_proof(st, s)
            if kp is not None:
                st.work.key_proofs[s] = kp
        self.t.send(st.coordinator, st.work.publish(st.coin))

    # -- step 5.2: disputes
    def _on_published(self, src: str, msg: PublishedSet) -> None:
        st = self.jobs[msg.job]
        ctx = st.ctx
        st.published = {
            p.aggregator: p
            for p in msg.messages
            if 0 <= p.aggregator < ctx.n
            and verify_signed(p, ctx.aggregators[p.aggregator], PUBLISH_CONTEXT)
        }
        opened = {
            i: set(range(len(ctx.submissions))) - {d[0] for d in p.unopened}
            for i, p in st.published.items()
        }
        good = {
            i: p.z
            for i, p in st.published.items()
            if isinstance(p.z, np.ndarray) and p.z.shape == (len(ctx.submissions),)
        }
        flagged, _ = find_disputes(
            ctx.flp.field, ctx.n, ctx.t, good, {i: opened[i] for i in good}, len(ctx.submissions)
        )
        self.t.send(src, st.work.reveal(flagged))

    # -- step 5.3/6: decide, aggregate
    def _on_reveals(self, src: str, msg: RevealSet) -> None:
        st = self.jobs[msg.job]
        ctx = st.ctx
        reveals = {
            r.aggregator: r
            for r in msg.messages
            if 0 <= r.aggregator < ctx.n
            and verify_signed(r, ctx.aggregators[r.aggregator], REVEAL_CONTEXT)
        }
        assert st.coin is not None
        decision = decide_job(ctx, st.coin, st.published, reveals)
        st.decision = decision
        self.t.send(src, st.work.aggregate(decision))

    def _on_draft(self, src: str, msg: ReceiptDraft) -> None:
        st = self.jobs[msg.job]
        r = msg.receipt
        mine = decode_canonical(st.work_result_decision())
        own = {k: r.get(k) for k in mine}
        shares = r.get("shares", {})
        share_ok = shares.get(self.public, "") == st.share_hash()
        # The result hash it signs must be the one the shares give (the ledger does not check).
        hash_ok = r.get("result_hash") == H(b"kaires/aggregation/result", canonical(shares)).hex()
        if own != mine or not share_ok or not hash_ok:
            raise ProtocolError("the receipt draft does not match this aggregator's decision")
        if self.behaviour == "byzantine":
            return
        pub, sig = sign_receipt(self.identity, self.ledger.chain, msg.job, r)
        self.t.send(src, ReceiptSignature(msg.job, self.index, pub, sig))

    def _on_deliver(self, src: str, msg: Deliver) -> None:
        st = self.jobs[msg.job]
        rec = self.ledger.get(receipt_key(msg.job))
        if rec is None or rec["receipt"]["status"] != "done":
            raise ProtocolError(
                f"job {msg.job[:16]}… has no committed 'done' receipt: nothing is released"
            )
        blob = st.work.sealed_share
        if blob is None or rec["receipt"].get("shares", {}).get(self.public) != st.share_hash():
            raise ProtocolError("this aggregator's share is not the one the receipt names")
        if self.behaviour == "byzantine":
            blob = blob[:-1] + bytes([blob[-1] ^ 1])
        self.t.send(src, SealedShare(msg.job, self.index, blob))


@dataclass
class _JobState:
    ctx: JobContext
    work: AggregatorJob
    statistic: Any
    read_id: str | None = None
    coordinator: str = ""
    coin_shares: dict[int, Any] = field(default_factory=dict)
    responses: dict[int, Any] = field(default_factory=dict)
    released: bool = False
    fast_tried: bool = False
    lts: Any = None
    release_timer: Any = None
    faulty_trustees: dict[int, str] = field(default_factory=dict)
    coin: Coin | None = None
    published: dict[int, Published] = field(default_factory=dict)
    decision: Any = None

    def work_result_decision(self) -> bytes:
        return canonical(self.decision.to_obj(self.ctx))

    def share_hash(self) -> str:
        from kaires_fl.aggregation.aggregator import sealed_share_hash

        blob = self.work.sealed_share
        return sealed_share_hash(blob) if blob is not None else ""


# ---------------------------------------------------------------------------- the driver


@dataclass
class LogEntry:
    """One message the coordinator handled: ``direction`` is "in" or "out"."""

    time: float
    direction: str
    peer: str
    message: Any


class Coordinator:
    """The untrusted job driver: moves messages between the parties and logs them all.

    ``aggregators``/``trustees`` are addresses in job order; ``ledger`` a ledger client
    (it submits transactions others signed, and its own receipt submission).
    """

    def __init__(
        self,
        transport: Transport,
        network: Any,
        ledger: Any,
        aggregators: Sequence[str],
        trustees: Sequence[str],
        identity: Identity,
        round_timeout: float = 2.0,
    ) -> None:
        self.aggregator_keys: list[str] = []
        self.t = transport
        self.network = network
        self.ledger = ledger
        self.aggregators = list(aggregators)
        self.trustees = list(trustees)
        self.identity = identity
        self.round_timeout = round_timeout
        self.log: list[LogEntry] = []
        self.failures: dict[int, str] = {}
        self.inbox: list[tuple[str, Any]] = []
        transport.set_handler(self._on_message)

    def _on_message(self, src: str, msg: Any) -> None:
        self.log.append(LogEntry(self.t.now(), "in", src, msg))
        self.inbox.append((src, msg))

    def send(self, dst: str, msg: Any) -> None:
        self.log.append(LogEntry(self.t.now(), "out", dst, msg))
        self.t.send(dst, msg)

    def note(self, what: str, obj: Any) -> None:
        """Record something the coordinator handled outside the network (txs it relays)."""
        self.log.append(LogEntry(self.t.now(), what, "", obj))

    def collect(
        self,
        kind: type | tuple[type, ...],
        job: str,
        expected: int,
        timeout: float | None = None,
        key: Callable[[Any], Any] = lambda m: m.aggregator,
    ) -> dict[Any, Any]:
        """Drive the network until ``expected`` distinct answers of ``kind`` for ``job`` came
        (or the round timed out); returns them by ``key`` (first answer wins)."""
        got: dict[Any, Any] = {}
        failed: dict[int, str] = {}

        def scan() -> bool:
            while self.inbox:
                _src, m = self.inbox.pop(0)
                if getattr(m, "job", None) != job:
                    continue
                if isinstance(m, Failed):
                    failed.setdefault(m.aggregator, m.reason)
                elif isinstance(m, kind):
                    got.setdefault(key(m), m)
            return len(got) + len(failed) >= expected

        self.network.run_until(scan, timeout if timeout is not None else self.round_timeout)
        scan()
        self.failures.update(failed)
        return got

    # -- admission
    def admit(
        self, job: Mapping[str, Any], submissions: Sequence[SealedSubmission]
    ) -> tuple[list[SealedSubmission], dict[str, str]]:
        """The submissions to put in the inputs, and the dropped ones (provider → reason).

        Run after the writes are committed and before the inputs close: a submission must be
        signed, its parts must match its manifest, its write must be on the ledger under its
        provider's policy and written by the manifest's signer, and it must be the
        provider's only one. What an aggregator later finds wrong can then only be the
        fault of the provider's data, shares or proof — or of the relay.
        """
        n = len(job["aggregators"])
        ok: list[SealedSubmission] = []
        dropped: dict[str, str] = {}
        seen: set[str] = set()
        for sub in submissions:
            m = sub.manifest
            try:
                sub.check(n)
                w = self.ledger.get(write_key(m.write))
                if w is None or w["policy"] != m.provider or m.signer not in w["signers"]:
                    raise InvalidSubmission("its write is not the provider's committed write")
                if m.job != job["id"] or m.provider not in job["providers"] or m.provider in seen:
                    raise InvalidSubmission("not for this job, or a second submission")
            except InvalidSubmission as exc:
                dropped[m.provider] = f"submission refused: {exc}"
                continue
            seen.add(m.provider)
            ok.append(sub)
        return ok, dropped

    # -- the job
    def run(
        self,
        job_id: str,
        aggregator_keys: Sequence[str],
        submissions: Sequence[SealedSubmission],
        coin_shares: Callable[[], dict[int, Any]],
    ) -> dict[str, Any]:
        """Steps 4–6 for a job whose inputs are closed; returns what the consumer needs.

        Returns ``{"receipt": ledger receipt entry, "shares": {i: sealed blob},
        "failures": {...}, "timings": {...}}``.
        """
        self.failures = {}
        self.aggregator_keys = list(aggregator_keys)
        timings: dict[str, float] = {}
        n = len(self.aggregators)
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[name] = timings.get(name, 0.0) + now - clock
            clock = now

        for i, a in enumerate(self.aggregators):
            self.send(a, StartJob(job_id, tuple(s.only(i) for s in submissions)))
        reads = self.collect(ReadSigned, job_id, n)
        txs = [m.tx for m in reads.values() if m.tx is not None]
        for tx in txs:
            self.note("relay-tx", tx)
        if txs:
            self.ledger.submit_many(txs)
            self.ledger.wait([tx.id for tx in txs], proof=False)
        lap("key_release_request")
        shares = coin_shares()
        lap("coin")
        for i in reads:
            self.send(self.aggregators[i], ReadCommitted(job_id, tuple(sorted(shares.items()))))
        published = self.collect(Published, job_id, len(reads))
        lap("release_and_verify")
        pubset = PublishedSet(job_id, tuple(published[i] for i in sorted(published)))
        for i in published:
            self.send(self.aggregators[i], pubset)
        reveals = self.collect(Reveal, job_id, len(published))
        revset = RevealSet(job_id, tuple(r for _, r in sorted(reveals.items()) if r.keys))
        for i in published:
            self.send(self.aggregators[i], revset)
        results = self.collect(ResultShare, job_id, len(published))
        lap("decide_and_aggregate")
        receipt, agreeing = self._draft(job_id, results)
        draft = ReceiptDraft(job_id, receipt)
        for i in agreeing:
            self.send(self.aggregators[i], draft)
        sigs = self.collect(ReceiptSignature, job_id, len(agreeing))
        job_rec = self.ledger.get(job_key(job_id))
        quorum = int(job_rec["threshold"]) if job_rec else len(self.aggregators)
        if len(sigs) < quorum:
            raise ProtocolError(
                f"job {job_id[:16]}…: only {len(sigs)} aggregator(s) signed the receipt, "
                f"{quorum} are needed; more aggregators are faulty than the committee "
                f"tolerates (failures: {self.failures}). Nothing was released"
            )
        tx = self.ledger.sign(
            self.identity,
            "job.receipt",
            {
                "job": job_id,
                "receipt": receipt,
                "signatures": {s.public: s.signature for s in sigs.values()},
            },
        )
        self.note("relay-tx", tx)
        committed = self.ledger.submit_and_wait(tx, proof=False)
        lap("receipt")
        blobs: dict[int, bytes] = {}
        if receipt["status"] == "done":
            for i in agreeing:
                self.send(self.aggregators[i], Deliver(job_id))
            got = self.collect(SealedShare, job_id, len(agreeing))
            blobs = {i: m.blob for i, m in got.items()}
        lap("deliver")
        return {
            "receipt": self.ledger.get(receipt_key(job_id)),
            "receipt_height": committed.height,
            "shares": blobs,
            "failures": dict(self.failures),
            "timings": timings,
            "results": results,
        }

    def _draft(
        self, job_id: str, results: Mapping[int, ResultShare]
    ) -> tuple[dict[str, Any], list[int]]:
        """The receipt the most aggregators agree on, with their sealed-share hashes."""
        groups: dict[bytes, list[int]] = {}
        for i, r in results.items():
            groups.setdefault(r.decision, []).append(i)
        if not groups:
            raise ProtocolError(
                f"job {job_id[:16]}…: no aggregator produced a result; failures: {self.failures}"
            )
        body, agreeing = max(groups.items(), key=lambda kv: len(kv[1]))
        receipt = decode_canonical(body)
        shares = {
            self.aggregator_keys[i]: results[i].share_hash
            for i in sorted(agreeing)
            if results[i].share_hash
        }
        receipt["shares"] = shares
        receipt["result_hash"] = H(b"kaires/aggregation/result", canonical(shares)).hex()
        return receipt, sorted(agreeing)
