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

Every message is a :class:`kaires_fl.schema.Message` (typed, size-bounded, signed over
all its fields where it is signed); services accept the objects or their encoding.

Rounds (protocol.md §3–§6): inputs closed → :class:`StartJob` → reads committed →
:class:`ReadCommitted` (with the trustees' coin shares) → :class:`Published` →
:class:`PublishedSet` → :class:`Reveal` → :class:`RevealSet` → :class:`ResultShare` →
:class:`ReceiptDraft` → :class:`ReceiptSignature` → receipt committed → :class:`Deliver`
→ :class:`SealedShare`.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from kaires_fl import schema
from kaires_fl.aggregation.aggregator import (
    MAX_ITEMS,
    MAX_REASON,
    PUBLISH_CONTEXT,
    AggregatorJob,
    Coin,
    JobContext,
    JobId,
    Published,
    ResultShare,
    Reveal,
    Round1,
    _verify_digest,
    analyse_round1,
    check_own,
    check_round1,
    decide_job,
    published_digest,
    sealed_share_hash,
    undecided_error,
    verify_signed,
)
from kaires_fl.aggregation.submission import (
    SealedSubmission,
    fit_job_total,
    key_commit,
    max_batch,
    part_hash,
)
from kaires_fl.arith.flp import FlpBBCGGI19
from kaires_fl.crypto.elgamal import RecipientKey, recover_key
from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.crypto.group import multi_scalar_mult
from kaires_fl.crypto.sign import H, Identity, is_valid
from kaires_fl.crypto.vss import lagrange_coefficients as vss_lagrange
from kaires_fl.errors import EncodingError, InvalidSubmission, KairesError, ProtocolError
from kaires_fl.ledger.darc import darc_key
from kaires_fl.ledger.encoding import canonical, decode_canonical
from kaires_fl.ledger.jobs import job_key, receipt_key, sign_receipt
from kaires_fl.ledger.tx import Tx
from kaires_fl.privacy import DP
from kaires_fl.privacy.mechanism import (
    NoiseDeal,
    NoisePlan,
    check_deals,
    complain,
    deal_for,
    decide_noise,
    noise_disputes,
    noise_round,
    noise_total,
    open_deal,
    plan_noise,
)
from kaires_fl.schema import Blob, Hex32, Index, Signature
from kaires_fl.secret_management.coin import CoinShare
from kaires_fl.secret_management.contracts import (
    inputs_key,
    job_lts,
    lts_key,
    read_key,
    write_key,
)
from kaires_fl.secret_management.dispute import (
    DisputeShare,
    WrittenKeyProof,
    combine_dispute,
    dispute_request,
    written_key,
)
from kaires_fl.secret_management.evidence import prove_entries
from kaires_fl.secret_management.release import (
    LtsInfo,
    Refusal,
    ReleaseRequest,
    ReleaseResponse,
    SealedAnswer,
    combine_release,
    evidence_keys,
    open_answer,
    read_payload,
)
from kaires_fl.secret_management.write import WriteEntry, aggregator_slot, write_label
from kaires_fl.transport.base import Transport

# ---------------------------------------------------------------------------- statistics


_FLPS: dict[str, FlpBBCGGI19] = {}

#: Jobs whose state an aggregator keeps (the oldest is dropped beyond this: a node serving
#: thousands of jobs stays bounded; a message for a dropped job is refused as unknown).
KEEP_JOBS = 32
#: Delivered jobs (sealed share handed over against the committed receipt: nothing more is
#: asked of them) whose state an aggregator keeps; older ones are dropped when a job starts,
#: so their inputs are not held for KEEP_JOBS jobs (the ServerApp's in-process committee).
KEEP_DELIVERED = 2
#: Jobs whose messages the coordinator's log keeps.
LOG_JOBS = 4
#: How long (seconds) an aggregator waits for its own ledger replica to reach a block the
#: coordinator already saw (the job with closed inputs, the reads) before refusing; and the
#: most such early messages it holds at once (beyond it, new ones are refused at once).
LEDGER_WAIT = 15.0
MAX_WAITING = 64
#: The most early messages one sender holds in that queue. They are parked before any
#: signature check (the coordinator's key is only known from the ledger), so without a
#: per-sender share one stranger's junk StartJobs would take every slot and an honest
#: coordinator's early StartJob would be refused at once. A sender is its address up to
#: the first "/": a client may send from any ``client-<key>/…`` sub-address of its key.
MAX_WAITING_PER_SENDER = 8


class NotYetCommitted(ProtocolError):
    """What a coordinator message refers to is not (yet) in this aggregator's ledger
    replica: the message is handled again when the replica may have caught up."""


def _sender(src: str) -> str:
    """Who sent from address ``src``, for :data:`MAX_WAITING_PER_SENDER`: the address up to
    its first "/" (the TCP transport lets a client use any ``client-<key>/…`` address of
    its own key, a node only its own service addresses)."""
    return src.partition("/")[0]


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


def job_noise_plan(job: Mapping[str, Any], statistic: Any = None) -> NoisePlan | None:
    """The noise plan of a committed job with differential privacy (None without): every
    party rebuilds the same one from the job's ``privacy``, statistic and committee."""
    privacy = job.get("privacy")
    if privacy is None:
        return None
    stat = statistic if statistic is not None else job_statistic(job)
    dp = DP(float(privacy["epsilon"]), float(privacy["delta"]))
    return plan_noise(dp, stat, len(job["aggregators"]), int(job["params"]["degree"]))


def job_statistic(job: Mapping[str, Any]) -> Any:
    """Rebuild the statistic a committed job names (``params["statistic"]``)."""
    from kaires_fl.statistics import from_params

    return from_params(job["statistic"], job["params"]["statistic"])


# ---------------------------------------------------------------------------- messages

Reason = Annotated[str, msgspec.Meta(max_length=MAX_REASON)]
SignatureHex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{128}\Z")]
Submissions = Annotated[tuple[SealedSubmission, ...], msgspec.Meta(max_length=MAX_ITEMS)]


class StartJob(schema.Message, frozen=True):
    """Coordinator → aggregators: the job's submissions, in the order of the inputs.

    Like every coordinator → aggregator message, signed by the coordinator key the
    committed job names (:func:`sign_coordinator`): aggregators take a job's messages from
    that key only, so a stranger relaying first cannot take the job over.
    """

    job: JobId
    submissions: Submissions
    signature: Signature = b""


class ReadSigned(schema.Message, frozen=True):
    """Aggregator → coordinator: its signed ``calypso.read`` for all the job's writes.

    ``tx``: the transaction's ``Tx.to_obj`` form (the ledger checks its signature), or
    None when the job has no submission to read. ``noise``: in a job with differential
    privacy, its signed noise deal (:mod:`kaires_fl.privacy.mechanism`).
    """

    job: JobId
    aggregator: Index
    tx: dict[str, Any] | None = None
    noise: NoiseDeal | None = None


class ReadCommitted(schema.Message, frozen=True):
    """Coordinator → aggregators: reads committed; the trustees' coin shares; in a job
    with differential privacy, every aggregator's noise deal (each signed by its dealer)."""

    job: JobId
    coin_shares: Annotated[
        tuple[tuple[Index, CoinShare | None], ...], msgspec.Meta(max_length=MAX_ITEMS)
    ]
    noise: Annotated[tuple[NoiseDeal, ...], msgspec.Meta(max_length=MAX_ITEMS)] = ()
    signature: Signature = b""


class PublishedSet(schema.Message, frozen=True):
    """Coordinator → aggregators: the round-1 messages it relays (signed over their
    digests and signatures: :func:`relay_digest`)."""

    job: JobId
    messages: Annotated[tuple[Published, ...], msgspec.Meta(max_length=MAX_ITEMS)]
    signature: Signature = b""


class RevealSet(schema.Message, frozen=True):
    job: JobId
    messages: Annotated[tuple[Reveal, ...], msgspec.Meta(max_length=MAX_ITEMS)]
    signature: Signature = b""


class ReceiptDraft(schema.Message, frozen=True):
    """Coordinator → aggregators: the receipt to sign (its canonical encoding)."""

    job: JobId
    receipt: Blob
    signature: Signature = b""


class ReceiptSignature(schema.Message, frozen=True):
    job: JobId
    aggregator: Index
    public: Hex32
    signature: SignatureHex


class Deliver(schema.Message, frozen=True):
    job: JobId
    signature: Signature = b""


class SealedShare(schema.Message, frozen=True):
    """Aggregator → consumer (via the coordinator): its aggregate share sealed to the consumer."""

    job: JobId
    aggregator: Index
    blob: Blob


class Failed(schema.Message, frozen=True):
    """Aggregator → coordinator: it cannot go on with the job, and why."""

    job: JobId
    aggregator: Index
    reason: Reason


#: What a peer may send an aggregator as bytes (decoded and validated by the schema).
ToAggregator = StartJob | ReadCommitted | PublishedSet | RevealSet | ReceiptDraft | Deliver
#: What an aggregator sends the coordinator.
ToCoordinator = (
    ReadSigned | Published | Reveal | ResultShare | ReceiptSignature | SealedShare | Failed
)


def _failed(job: str, i: int, reason: str) -> Failed:
    return Failed(job, i, reason[:MAX_REASON])


#: Most addresses a pending answer goes to (the coordinator and replays of its message).
MAX_REPLY_ADDRESSES = 4
#: Context of the coordinator's signatures (the type tag separates the message kinds).
COORDINATOR_CONTEXT = b"kaires/aggregation/coordinator"
#: The coordinator's messages to the aggregators (each signed by the job's coordinator key).
COORDINATOR_MESSAGES = (StartJob, ReadCommitted, PublishedSet, RevealSet, ReceiptDraft, Deliver)


def relay_digest(msg: PublishedSet, digests: Sequence[bytes | None] | None = None) -> bytes | None:
    """What the coordinator signs of a :class:`PublishedSet`: its job and, in order, each
    relayed message's ``published_digest`` (every field but its signature) and signature —
    every field of the set, without hashing the multi-MB messages a second time (the
    receiver computes their digests once, for their own signatures too).

    ``digests``: the messages' digests if at hand. None when a message does not encode.
    """
    items = list(msg.messages)
    ds = list(digests) if digests is not None else [published_digest(p) for p in items]
    if len(ds) != len(items) or any(d is None for d in ds):
        return None
    h = hashlib.sha256(b"kaires/aggregation/published-set")
    h.update(schema.encode(msg.job))
    h.update(len(items).to_bytes(4, "little"))
    for p, d in zip(items, ds, strict=True):
        sig = p.signature if isinstance(p.signature, bytes) else b""
        h.update(d)  # type: ignore[arg-type]
        h.update(len(sig).to_bytes(1, "little") + sig)
    return h.digest()


def start_digest(msg: StartJob, hash_part: Callable[[bytes], bytes] = part_hash) -> bytes:
    """What the coordinator signs of a :class:`StartJob`: its job and, per submission, the
    encoded manifest, the provider's signature and the ``part_hash`` of every part blob —
    every field, each blob through its (collision-resistant) hash, which the receiver
    computes anyway to check the blob against the manifest. ``hash_part``: a memo of
    ``part_hash`` (the blobs are not hashed twice).

    Raises ``EncodingError`` (or a TypeError) for a message that does not encode.
    """
    h = hashlib.sha256(b"kaires/aggregation/start-job")
    h.update(schema.encode(msg.job))
    subs = msg.submissions
    h.update(len(subs).to_bytes(4, "little"))
    for sub in subs:
        m = schema.encode(sub.manifest)
        h.update(len(m).to_bytes(4, "little") + m)
        h.update(len(sub.signature).to_bytes(1, "little") + sub.signature)
        for parts in (sub.meas_parts, sub.proof_parts):
            h.update(len(parts).to_bytes(4, "little"))
            for blob in parts:
                h.update(hash_part(blob))
    return h.digest()


def _coordinator_digest(
    msg: Any,
    digests: Sequence[Any] | None = None,
    hash_part: Callable[[bytes], bytes] = part_hash,
) -> bytes | None:
    """The digest the coordinator's signature of ``msg`` covers (None: it does not encode)."""
    if isinstance(msg, PublishedSet):
        return relay_digest(msg, digests)
    if isinstance(msg, StartJob):
        return start_digest(msg, hash_part)
    return schema.signing_digest(msg, COORDINATOR_CONTEXT)


def sign_coordinator(
    msg: Any,
    identity: Identity,
    digests: Sequence[Any] | None = None,
    hash_part: Callable[[bytes], bytes] = part_hash,
) -> Any:
    """``msg`` (one of :data:`COORDINATOR_MESSAGES`) signed by the coordinator ``identity``:
    over every field by ``schema.sign`` — a :class:`PublishedSet` over :func:`relay_digest`,
    a :class:`StartJob` over :func:`start_digest`."""
    d = _coordinator_digest(msg, digests, hash_part)
    if d is None:
        raise ProtocolError("a round-1 set holding a message that does not encode")
    return msgspec.structs.replace(msg, signature=identity.sign(COORDINATOR_CONTEXT, d))


def verify_coordinator(
    msg: Any,
    public_hex: str,
    digests: Sequence[bytes | None] | None = None,
    hash_part: Callable[[bytes], bytes] = part_hash,
) -> bool:
    """Whether ``msg`` is signed by the coordinator key ``public_hex`` (never raises)."""
    try:
        public = bytes.fromhex(public_hex)
        if isinstance(msg, PublishedSet | StartJob):
            d = _coordinator_digest(msg, digests, hash_part)
            sig = msg.signature
            return (
                d is not None
                and isinstance(sig, bytes)
                and len(sig) == 64
                and is_valid(public, COORDINATOR_CONTEXT, d, sig)
            )
        if not isinstance(msg, COORDINATOR_MESSAGES):
            return False
        return schema.verify(msg, public, COORDINATOR_CONTEXT)
    except Exception:
        return False


def job_coordinator(job: Mapping[str, Any]) -> str:
    """The Ed25519 key (hex) the committed ``job`` names as its coordinator (the consumer's
    when the job names none)."""
    key = job.get("coordinator") or job.get("consumer")
    if not isinstance(key, str):
        raise ProtocolError("the committed job names no coordinator key")
    return key


def job_signers(job: Mapping[str, Any]) -> tuple[str, ...]:
    """The keys that signed the committed ``job`` (its consumer and co-signers): their own
    policies are not counted towards any ``min_providers`` (as ``job.create`` counts)."""
    signers = job.get("signers")
    if not isinstance(signers, list) or not all(isinstance(s, str) for s in signers):
        signers = []
    consumer = job.get("consumer")
    return tuple(dict.fromkeys([*([consumer] if isinstance(consumer, str) else []), *signers]))


# ---------------------------------------------------------------------------- the service


class AggregatorService:
    """Aggregator ``index`` of the cothority, listening on ``transport``.

    ``ledger`` is its ledger client (reads, proofs, counters); ``trustees`` the trustees'
    addresses in LTS order; ``behaviour`` None, ``"crash"`` or ``"byzantine"``.

    Service boundary: :meth:`on_message` accepts a message object or its schema encoding
    (bytes), and never dies on a peer's message — any exception is caught, the job's
    coordinator is told why (:class:`Failed`), and the service goes on. Round messages
    of other aggregators are only trusted under their own signatures; a validly signed but
    malformed one proves its signer faulty.
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
        #: Exceptions caught at the service boundary (type name, message), for diagnosis.
        self.errors: list[tuple[str, str]] = []
        #: Coordinator messages waiting for this replica to catch up: id → (sender,
        #: first-seen time); the sender as :func:`_sender` names it, for its quota.
        self.waiting: dict[int, tuple[str, float]] = {}
        transport.set_handler(self.on_message)

    @property
    def public(self) -> str:
        return self.identity.public.hex()

    def on_message(self, src: str, msg: Any, first_seen: float | None = None) -> None:
        """Handle one message from ``src`` (an object or its bytes); never raises.

        A coordinator message about a block this replica has not reached yet
        (:class:`NotYetCommitted`: the ledger nodes commit a block at slightly different
        times) is handled again with a growing delay, for up to :data:`LEDGER_WAIT`
        seconds from ``first_seen``, before it is refused.
        """
        try:
            if isinstance(msg, bytes | bytearray | memoryview):
                msg = schema.decode(bytes(msg), ToAggregator | SealedAnswer | DisputeShare)
            self._dispatch(src, msg)
        except NotYetCommitted as exc:
            with contextlib.suppress(Exception):
                self._wait_for_ledger(src, msg, exc, first_seen)
        except Exception as exc:
            with contextlib.suppress(Exception):
                self._report_failure(src, msg, exc)

    def _wait_for_ledger(
        self, src: str, msg: Any, exc: Exception, first_seen: float | None
    ) -> None:
        """Handle ``msg`` again later, or refuse it once :data:`LEDGER_WAIT` is over.

        A new message (``first_seen`` None) is refused at once when the queue holds
        :data:`MAX_WAITING` messages, or :data:`MAX_WAITING_PER_SENDER` from its sender; a
        message handled again (``first_seen`` set) left the queue when its retry ran, so it
        takes its slot back without being counted twice.
        """
        now = self.t.now()
        start = now if first_seen is None else first_seen
        key = id(msg)
        sender = _sender(src)
        if now - start >= LEDGER_WAIT or (first_seen is None and self._queue_full(sender)):
            self.waiting.pop(key, None)
            self._report_failure(src, msg, exc)
            return
        self.waiting[key] = (sender, start)
        delay = min(1.0, max(0.05, (now - start) / 2))

        def again() -> None:
            if self.waiting.pop(key, None) is not None:
                self.on_message(src, msg, start)

        self.t.call_later(delay, again)

    def _queue_full(self, sender: str) -> bool:
        """Whether the ledger-wait queue can take no new message from ``sender``."""
        if len(self.waiting) >= MAX_WAITING:
            return True
        held = sum(1 for who, _ in self.waiting.values() if who == sender)
        return held >= MAX_WAITING_PER_SENDER

    def _report_failure(self, src: str, msg: Any, exc: Exception) -> None:
        """Record ``exc`` and tell the job's coordinator (or the sender) why (:class:`Failed`)."""
        self.errors.append((type(exc).__name__, str(exc)[:MAX_REASON]))
        del self.errors[:-64]
        job = getattr(msg, "job", None)
        if not isinstance(job, str):
            job = self._job_of_answer(msg)
        if not isinstance(job, str):
            return
        st = self.jobs.get(job)
        if st is None:
            to = src  # e.g. a StartJob this aggregator refused
        elif src in self.trustees or (
            src == st.coordinator and verify_coordinator(msg, st.coordinator_key)
        ):
            to = st.coordinator  # the job's own step failed: its coordinator must know
        else:
            return  # a stranger's message about the job: nothing to tell the coordinator
        self.t.send(to, _failed(job, self.index, f"{type(exc).__name__}: {exc}"))

    def _job_of_answer(self, msg: Any) -> str | None:
        """The job a trustee's answer (naming a read or a write) belongs to, if any."""
        read = getattr(msg, "read_id", None) or getattr(msg, "read", None)
        write = getattr(msg, "write", None)
        for job, st in self.jobs.items():
            if (read is not None and read == st.read_id) or (
                write is not None and write in st.disputes
            ):
                return job
        return None

    def _dispatch(self, src: str, msg: Any) -> None:
        if isinstance(msg, StartJob):
            self._start(src, msg)
        elif isinstance(msg, ReadCommitted):
            self._release(src, msg)
        elif isinstance(msg, SealedAnswer | ReleaseResponse | Refusal):
            self._on_release(src, msg)
        elif isinstance(msg, DisputeShare):
            self._on_dispute_share(src, msg)
        elif isinstance(msg, PublishedSet):
            self._on_published(src, msg)
        elif isinstance(msg, RevealSet):
            self._on_reveals(src, msg)
        elif isinstance(msg, ReceiptDraft):
            self._on_draft(src, msg)
        elif isinstance(msg, Deliver):
            self._on_deliver(src, msg)

    def _job(self, msg: Any, src: str, digests: Sequence[bytes | None] | None = None) -> _JobState:
        """The state of the started job of coordinator message ``msg`` from ``src``.

        ``msg`` must be signed by the coordinator key the committed job names (addresses are
        not authenticated; keys are). Replies go to ``src``; asynchronous messages to
        ``st.coordinator`` (the sender of the StartJob, then of the accepted ReadCommitted),
        which a replayed message never changes. ``digests``: of a PublishedSet's messages,
        if at hand.
        """
        job = msg.job
        st = self.jobs.get(job) if isinstance(job, str) else None
        if st is None:
            raise ProtocolError(f"aggregator {self.index} has not started job {str(job)[:16]}…")
        if not verify_coordinator(msg, st.coordinator_key, digests):
            raise ProtocolError(
                f"a {type(msg).__name__} about job {job[:16]}… is not signed by the job's "
                "coordinator key: ignored"
            )
        return st

    def _replayed(self, st: _JobState, msg: Any, src: str) -> bool:
        """Whether authentic ``msg`` was already handled (the coordinator's message again,
        maybe replayed first by someone who saw it): its answer is then sent again to
        ``src`` (or, still pending, ``src`` is added to where it will go) — a replay can
        neither take a round nor its answer away from the coordinator."""
        if msg.signature not in st.answers:
            return False
        got = st.answers[msg.signature]
        if got is not None:
            self.t.send(src, got)
        elif (
            src != st.coordinator
            and src not in st.pending_to
            and len(st.pending_to) < MAX_REPLY_ADDRESSES
        ):
            st.pending_to.append(src)
        return True

    def _answer(self, st: _JobState, msg: Any, src: str, reply: Any) -> None:
        """Send ``reply`` to ``src`` and keep it as the answer to authentic ``msg``."""
        st.answers[msg.signature] = reply
        self.t.send(src, reply)

    # -- step 3/4: check the submission set against the ledger; sign the read
    def _start(self, src: str, msg: StartJob) -> None:
        if not isinstance(msg.job, str):
            raise ProtocolError("a StartJob names no job")
        st0 = self.jobs.get(msg.job)
        if st0 is not None:
            # The coordinator's StartJob again (e.g. first replayed by a stranger): answer it
            # where it now comes from; anything else about a started job is refused.
            self._job(msg, src)
            if not self._replayed(st0, msg, src):
                raise ProtocolError(f"job {msg.job[:16]}… is already started")
            return
        job = self.ledger.get(job_key(msg.job))
        inputs = self.ledger.get(inputs_key(msg.job))
        if job is not None and job["status"] != "committed":
            # A receipt ended it (e.g. a replay once the delivered job was dropped): it never
            # becomes 'committed' again, so refuse now instead of waiting for the ledger.
            raise ProtocolError(
                f"job {msg.job[:16]}… is finished (status {job['status']!r}): it is not "
                "started again"
            )
        if job is None or inputs is None:
            raise NotYetCommitted(f"job {msg.job[:16]}… is not committed with closed inputs")
        coordinator_key = job_coordinator(job)
        if job_lts(job) not in (None, self.lts_id):
            raise ProtocolError(
                f"job {msg.job[:16]}… names LTS {str(job_lts(job))[:16]}…, this aggregator's "
                f"trustees hold {self.lts_id[:16]}…"
            )
        hashes: dict[int, tuple[bytes, bytes]] = {}

        def hash_part(blob: bytes) -> bytes:  # each blob hashed once (signature and check)
            got = hashes.get(id(blob))
            if got is None or got[0] is not blob:
                got = hashes[id(blob)] = (blob, part_hash(blob))
            return got[1]

        if not verify_coordinator(msg, coordinator_key, hash_part=hash_part):
            raise ProtocolError(
                f"the StartJob of job {msg.job[:16]}… is not signed by the coordinator key the "
                "job names: whoever sends it first does not become the job's coordinator"
            )
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
        cap = max_batch(stat, job)
        # One canonical order (by manifest hash, as the inputs record them) whatever order
        # the relay chose: a relay that sent each aggregator another order would otherwise
        # misalign the z columns and make honest aggregators look off the polynomial.
        subs = tuple(msg.submissions)
        if not all(isinstance(s, SealedSubmission) for s in subs):
            raise InvalidSubmission("a StartJob carries sealed submissions only")
        subs = tuple(sorted(subs, key=lambda s: s.manifest.hash))
        for s in subs:
            s.check(n, parts=[], max_batch=cap)  # form, provider signature, batch
            m = s.manifest
            i = self.index
            if (
                hash_part(s.meas_parts[i]).hex() != m.meas_parts[i]
                or hash_part(s.proof_parts[i]).hex() != m.proof_parts[i]
            ):
                raise InvalidSubmission(
                    f"part {i} of {m.provider[:64]!r}'s submission does not match its signed "
                    "manifest: it was altered in transit"
                )
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
            if w.get("lts") != self.lts_id:
                raise InvalidSubmission(
                    f"the write of {m.provider!r} is under LTS {str(w.get('lts'))[:16]}…, not "
                    f"this committee's {self.lts_id[:16]}…: its keys cannot be released"
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
        # The same deterministic job-total rule as at admission: every honest aggregator
        # leaves out the same submissions (whose sum would exceed what the field is sized for).
        kept, over = fit_job_total(subs, stat)
        subs = tuple(kept)
        needed = int(job["params"].get("min_providers", 1))
        provider_min: list[tuple[str, int]] = []
        for p in job["providers"]:
            d = self.ledger.get(darc_key(p))
            if d is not None and d.get("terms") is not None:
                m_p = int(d["terms"]["min_providers"])
                needed = max(needed, m_p)
                provider_min.append((p, m_p))
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
            submissions=subs,
            excluded=tuple(sorted(over.items())),
            signers=job_signers(job),
            provider_min=tuple(provider_min),
            written_key=self._written_key_checker(msg.job, subs),
        )
        st = _JobState(ctx, AggregatorJob(ctx, self.index, self.identity, self.behaviour), stat)
        st.coordinator = src
        st.coordinator_key = coordinator_key
        self.jobs[msg.job] = st
        while len(self.jobs) > KEEP_JOBS:  # the oldest job is long over: bounded memory
            del self.jobs[next(iter(self.jobs))]
        for done in [j for j, o in self.jobs.items() if o.delivered][:-KEEP_DELIVERED]:
            del self.jobs[done]
        deal = None
        if job.get("privacy") is not None:
            # Differential privacy: this aggregator's own noise, dealt like an input.
            plan = st.noise_plan = job_noise_plan(job, stat)
            assert plan is not None
            boxes = [bytes.fromhex(b) for b in job["params"]["aggregator_keys"]]
            st.noise_boxes = boxes
            deal = deal_for(plan, msg.job, self.index, self.identity, boxes, self.behaviour)
        writes = [s.manifest.write for s in subs]
        if writes:
            payload = read_payload(
                self.lts_id, msg.job, aggregator_slot(self.index), self.keypair, writes
            )
            tx = self.ledger.sign(self.identity, "calypso.read", payload)
            st.read_id = tx.id
            read_signed = ReadSigned(msg.job, self.index, tx.to_obj(), deal)
        else:
            read_signed = ReadSigned(msg.job, self.index, None, deal)
        self._answer(st, msg, src, read_signed)

    def _written_key_checker(
        self, job_id: str, subs: Sequence[SealedSubmission]
    ) -> Callable[[int, int, bytes], bytes | None]:
        """``(s, i, proof blob) → key``: checks a disclosed single-slot WrittenKeyProof."""

        def check(s: int, i: int, blob: bytes) -> bytes | None:
            try:
                proof: WrittenKeyProof = schema.decode(bytes(blob), WrittenKeyProof)
                m = subs[s].manifest
                if proof.write != m.write or proof.slot != aggregator_slot(i):
                    return None
                lts = LtsInfo.from_entry(self.ledger.get(lts_key(self.lts_id)))
                return written_key(proof, lts, self.ledger.get(write_key(m.write)), job_id)
            except Exception:
                return None

        return check

    # -- step 4/5.1: key release and coin
    def _release(self, src: str, msg: ReadCommitted) -> None:
        st = self._job(msg, src)
        if self._replayed(st, msg, src):
            return
        if st.announced:
            raise ProtocolError(f"job {msg.job[:16]}…: the reads were already announced")
        if st.read_id is not None and self.ledger.get(read_key(st.read_id)) is None:
            raise NotYetCommitted(f"read {st.read_id[:16]}… is not committed on the ledger")
        st.announced = True
        st.coordinator = src  # where its round-1 message goes
        st.answers[msg.signature] = None  # pending: the round-1 message (``_publish``)
        st.announce_signature = msg.signature
        st.coin_shares = dict(msg.coin_shares)
        if st.noise_plan is not None:
            st.deals = check_deals(st.noise_plan, msg.job, msg.noise, st.ctx.aggregators)
            if len(st.deals) != st.ctx.n:
                # Every aggregator's deal is needed: a relay that left out honest deals
                # would otherwise take their noise away (the n − t honest ones give σ²).
                missing = sorted(set(range(st.ctx.n)) - {d.dealer for d in st.deals})
                raise ProtocolError(
                    f"job {msg.job[:16]}… has differential privacy but the noise deals of "
                    f"aggregators {missing} are missing or not signed by them: nothing is "
                    "published; rerun the job when every aggregator answers"
                )
        if st.read_id is None:
            self._opened(st, {})
            return
        writes = [s.manifest.write for s in st.ctx.submissions]
        st.lts = LtsInfo.from_entry(self.ledger.get(lts_key(self.lts_id)))
        ev = prove_entries(self.ledger, evidence_keys(self.lts_id, st.read_id, msg.job, writes))
        req = ReleaseRequest(st.read_id, ev)
        self.t.broadcast(self.trustees, req)
        st.release_timer = self.t.call_later(self.release_timeout, lambda: self._combine(st))

    def _on_release(self, src: str, msg: SealedAnswer | ReleaseResponse | Refusal) -> None:
        if src not in self.trustees:
            return
        if isinstance(msg, SealedAnswer):
            if not any(st.read_id == msg.read and not st.released for st in self.jobs.values()):
                return  # no read of ours awaits it (e.g. the fast path has the keys): unopened
            msg = open_answer(msg, self.keypair)
        j = self.trustees.index(src)
        if msg.trustee != j:
            return
        for st in self.jobs.values():
            if st.read_id == msg.read_id and not st.released:
                st.responses.setdefault(j, msg)
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
            self.t.send(st.coordinator, _failed(st.ctx.job, self.index, f"key release: {exc}"))
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
        st.lts = st.lts or lts
        st.work.open_parts(keys, hashes_checked=True, coin=st.coin)
        # A part whose released key is not the committed one: the provider wrote another
        # key. Ask the trustees for a single-slot decryption proving it (interface A), then
        # publish (or publish unproven when they do not answer in time).
        for s, key in sorted(st.work.unopened.items()):
            m = ctx.submissions[s].manifest
            if key_commit(m.job, m.provider, self.index, key).hex() == m.key_commits[self.index]:
                continue
            try:
                req = dispute_request(
                    self.ledger,
                    self.identity,
                    self.lts_id,
                    ctx.job,
                    st.read_id or "",
                    m.write,
                    aggregator_slot(self.index),
                )
            except Exception:  # no evidence at hand: the claim stays unproven
                continue
            st.disputes[m.write] = (s, {})
            self.t.broadcast(self.trustees, req)
        if st.disputes:
            st.dispute_timer = self.t.call_later(self.release_timeout, lambda: self._publish(st))
            return
        self._publish(st)

    def _on_dispute_share(self, src: str, msg: DisputeShare) -> None:
        if src not in self.trustees or msg.trustee != self.trustees.index(src):
            return
        for st in self.jobs.values():
            pending = st.disputes.get(msg.write)
            if pending is None or st.sent_published is not None:
                continue
            s, shares = pending
            shares.setdefault(msg.trustee, msg)
            if len(shares) < st.lts.t + 1:
                return
            try:
                proof, key, _ = combine_dispute(
                    shares,
                    st.lts,
                    self.ledger.get(write_key(msg.write)),
                    st.ctx.job,
                    msg.write,
                    aggregator_slot(self.index),
                )
            except KairesError:
                if len(shares) < len(self.trustees):
                    return  # wait for more answers
            else:
                if key == st.work.keys.get(s):
                    st.work.written_proofs[s] = schema.encode(proof)
            del st.disputes[msg.write]
            if not st.disputes:
                self._publish(st)
            return

    def _publish(self, st: _JobState) -> None:
        """Round 1: send this aggregator's signed z and verifier shares (once)."""
        if st.sent_published is not None:
            return
        if st.dispute_timer is not None:
            st.dispute_timer.cancel()
        assert st.coin is not None
        if st.noise_plan is not None:
            self._open_noise(st)
        st.sent_published = st.work.publish(st.coin)
        st.answers[st.announce_signature] = st.sent_published
        for to in [st.coordinator, *st.pending_to]:
            self.t.send(to, st.sent_published)

    def _open_noise(self, st: _JobState) -> None:
        """Open this aggregator's part of every noise deal; its round-1 noise values."""
        plan = st.noise_plan
        assert plan is not None and st.coin is not None
        for d in st.deals:
            with contextlib.suppress(KairesError, ValueError):
                st.noise_shares[d.dealer] = open_deal(plan, d, self.index, self.recipient)
        st.work.noise_round = noise_round(plan, st.coin.value, st.deals, st.noise_shares)

    # -- step 5.2: disputes
    def _on_published(self, src: str, msg: PublishedSet) -> None:
        """Check the relayed round-1 set; disclose only where the provider is at fault.

        Nothing is disclosed (a :class:`Failed` goes back instead) when this aggregator's
        own message is missing or altered, when fewer than n − t valid messages are
        present, or when a submission's z are inconsistent with too few values present to
        tell whose fault it is.
        """
        own = None
        if isinstance(msg.job, str) and msg.job in self.jobs:
            own = self.jobs[msg.job].sent_published
        # each relayed message's digest, computed once: for the coordinator's signature, its
        # signer's, and the own-message check (the own one is known from signing it)
        digests = [
            self.jobs[msg.job].work.sent_digest if p is own else published_digest(p)
            for p in msg.messages
        ]
        st = self._job(msg, src, digests)
        if self._replayed(st, msg, src):
            return
        if st.sent_published is None or st.sent_reveal is not None:
            raise ProtocolError(f"job {msg.job[:16]}…: round-1 set out of turn")
        ctx = st.ctx
        r1 = check_round1(
            ctx,
            msg.messages,
            own=st.sent_published,
            digests=digests,
            own_digest=st.work.sent_digest,
        )
        check_own(r1, st.sent_published)
        analysis = analyse_round1(ctx, r1)
        if analysis.disputes.undecided:
            raise undecided_error(ctx, analysis.disputes.undecided)
        st.round1 = r1
        if st.noise_plan is not None:
            # In question for a faulty dealer's deal: prove the key of this part.
            disputes = noise_disputes(
                st.noise_plan, st.deals, {i: p.noise for i, p in r1.messages.items()}
            )
            complaints = []
            for d in st.deals:
                if self.index in disputes.get(d.dealer, set()):
                    with contextlib.suppress(KairesError, ValueError):  # e.g. a bad E
                        complaints.append(complain(st.noise_plan, d, self.index, self.recipient))
            st.work.noise_complaints = tuple(complaints)
        st.sent_reveal = st.work.reveal(analysis.disputes.flagged)
        self._answer(st, msg, src, st.sent_reveal)

    # -- step 5.3/6: decide, aggregate
    def _on_reveals(self, src: str, msg: RevealSet) -> None:
        st = self._job(msg, src)
        if self._replayed(st, msg, src):
            return
        if st.round1 is None or st.sent_reveal is None or st.decision is not None:
            raise ProtocolError(f"job {msg.job[:16]}…: reveal set out of turn")
        assert st.coin is not None
        honest = self.behaviour != "byzantine"
        sent = [st.sent_published] + ([st.sent_reveal] if st.sent_reveal.keys else [])
        decision = decide_job(
            st.ctx,
            st.coin,
            st.round1,
            msg.messages,
            me=self.index if honest else None,
            sent=sent if honest else (),
        )
        st.decision = decision
        if st.noise_plan is not None and st.round1 is not None:
            rounds = {i: p.noise for i, p in st.round1.messages.items()}
            complaints = [c for r in msg.messages if isinstance(r, Reveal) for c in r.noise]
            st.noise_accepted, _ = decide_noise(
                st.noise_plan, st.deals, rounds, st.coin.value, complaints, st.noise_boxes
            )
            st.work.noise_share = noise_total(st.noise_plan, st.noise_accepted, st.noise_shares)
        self._answer(st, msg, src, st.work.aggregate(decision))

    def _on_draft(self, src: str, msg: ReceiptDraft) -> None:
        st = self._job(msg, src)
        if self._replayed(st, msg, src):
            return
        if st.decision is None:
            raise ProtocolError(f"job {msg.job[:16]}…: no decision to sign a receipt for")
        r = decode_canonical(bytes(msg.receipt))
        if not isinstance(r, dict):
            raise ProtocolError("a receipt draft is a canonical JSON object")
        if not self._receipt_is_mine(st, r):
            raise ProtocolError("the receipt draft does not match this aggregator's decision")
        if self.behaviour == "byzantine":
            return
        pub, sig = sign_receipt(self.identity, self.ledger.chain, msg.job, r)
        self._answer(st, msg, src, ReceiptSignature(msg.job, self.index, pub, sig))

    def _receipt_is_mine(self, st: _JobState, r: Mapping[str, Any]) -> bool:
        """Whether receipt ``r`` states this aggregator's decision (status, accepted,
        rejected with reasons, faulty, counts) and names its sealed share's hash, and its
        result hash is the hash of the shares it names."""
        mine = st.decision.to_obj(st.ctx)
        shares = r.get("shares", {})
        if not isinstance(shares, dict):
            return False
        share_ok = shares.get(self.public, "") == st.share_hash()
        hash_ok = r.get("result_hash") == H(b"kaires/aggregation/result", canonical(shares)).hex()
        return {k: r.get(k) for k in mine} == mine and share_ok and hash_ok

    def _on_deliver(self, src: str, msg: Deliver) -> None:
        """Hand over the sealed share only against a committed receipt that is exactly this
        aggregator's decision, names its share, and carries the committee's quorum."""
        st = self._job(msg, src)
        rec = self.ledger.get(receipt_key(msg.job))
        if rec is None or rec["receipt"]["status"] != "done":
            raise ProtocolError(
                f"job {msg.job[:16]}… has no committed 'done' receipt: nothing is released"
            )
        blob = st.work.sealed_share
        if blob is None or st.decision is None or not self._receipt_is_mine(st, rec["receipt"]):
            raise ProtocolError(
                "the committed receipt is not this aggregator's decision or does not name its "
                "share: its share is not delivered"
            )
        quorum = 2 * st.ctx.t + 1
        signers = set(rec.get("signatures", {})) & set(st.ctx.aggregators)
        if len(signers) < quorum:
            raise ProtocolError(
                f"the committed receipt has {len(signers)} committee signatures, the "
                f"committee's quorum is 2t + 1 = {quorum}: its share is not delivered"
            )
        if self.behaviour == "byzantine":
            blob = blob[:-1] + bytes([blob[-1] ^ 1])
        st.delivered = True
        self.t.send(src, SealedShare(msg.job, self.index, blob))


@dataclass
class _JobState:
    ctx: JobContext
    work: AggregatorJob
    statistic: Any
    read_id: str | None = None
    #: Address of the StartJob's, then of the accepted ReadCommitted's sender (where
    #: asynchronous messages go; replies go to the sender of what they answer).
    coordinator: str = ""
    #: The coordinator key the committed job names (every coordinator message is signed).
    coordinator_key: str = ""
    #: Coordinator signature → the answer sent to that message (None while pending): a
    #: replay of an authentic message is answered again, never handled twice.
    answers: dict[bytes, Any] = field(default_factory=dict)
    #: Further addresses the pending round-1 message goes to (replays of ReadCommitted).
    pending_to: list[str] = field(default_factory=list)
    announce_signature: bytes = b""
    announced: bool = False
    coin_shares: dict[int, Any] = field(default_factory=dict)
    responses: dict[int, Any] = field(default_factory=dict)
    released: bool = False
    fast_tried: bool = False
    lts: Any = None
    release_timer: Any = None
    faulty_trustees: dict[int, str] = field(default_factory=dict)
    coin: Coin | None = None
    #: Pending single-slot disputes: write id → (submission, {trustee: DisputeShare}).
    disputes: dict[str, tuple[int, dict[int, Any]]] = field(default_factory=dict)
    dispute_timer: Any = None
    sent_published: Published | None = None
    sent_reveal: Reveal | None = None
    round1: Round1 | None = None
    decision: Any = None
    #: Differential privacy: the job's noise plan, the checked deals (by dealer), this
    #: aggregator's opened shares of them and the dealers the decision accepted.
    noise_plan: NoisePlan | None = None
    noise_boxes: list[bytes] = field(default_factory=list)
    deals: list[NoiseDeal] = field(default_factory=list)
    noise_shares: dict[int, Any] = field(default_factory=dict)
    noise_accepted: list[int] = field(default_factory=list)
    #: The sealed share was handed over (KEEP_DELIVERED).
    delivered: bool = False

    def share_hash(self) -> str:
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
        lts_id: str | None = None,
        quorum_timeout: float | None = None,
    ) -> None:
        self.aggregator_keys: list[str] = []
        #: The LTS of the committee's trustees: a write under another cannot be released.
        self.lts_id = lts_id
        self.t = transport
        self.network = network
        self.ledger = ledger
        self.aggregators = list(aggregators)
        self.trustees = list(trustees)
        self.identity = identity
        self.round_timeout = round_timeout
        #: How long a round may wait for the answers it cannot go on without (n − t round
        #: messages, a receipt quorum): the round timeout bounds the wait for the rest only.
        #: Default ``max(60 s, 30 × round_timeout)``: verification of a large job takes far
        #: longer than one round trip on a real network.
        self.quorum_timeout = (
            quorum_timeout if quorum_timeout is not None else max(60.0, 30 * round_timeout)
        )
        #: Everything the coordinator handled during its last :data:`LOG_JOBS` jobs (older
        #: entries are dropped when a job starts: a long-running coordinator stays bounded).
        self.log: list[LogEntry] = []
        self._log_starts: list[int] = []
        #: id → (round-1 message, its digest), for the messages of the current job.
        self._digests: dict[int, tuple[Any, bytes | None]] = {}
        #: id → (part blob, its part_hash), for the submissions of the current job.
        self._part_hashes: dict[int, tuple[bytes, bytes]] = {}
        self.failures: dict[int, str] = {}
        self.inbox: list[tuple[str, Any]] = []
        transport.set_handler(self._on_message)

    def _trim_log(self) -> None:
        """Keep the log of the last :data:`LOG_JOBS` jobs (this one's included)."""
        if len(self._log_starts) >= LOG_JOBS:
            cut = self._log_starts[-(LOG_JOBS - 1)] if LOG_JOBS > 1 else len(self.log)
            # Entries noted before this run (its job, writes, submissions) are kept: they
            # come after the previous run's start.
            del self.log[:cut]
            self._log_starts = [i - cut for i in self._log_starts[-(LOG_JOBS - 1) :]]
        self._log_starts.append(len(self.log))

    def _on_message(self, src: str, msg: Any) -> None:
        if isinstance(msg, bytes | bytearray | memoryview):
            try:
                msg = schema.decode(bytes(msg), ToCoordinator)
            except EncodingError:
                return
        self.log.append(LogEntry(self.t.now(), "in", src, msg))
        self.inbox.append((src, msg))

    def send(self, dst: str, msg: Any) -> None:
        """Send ``msg`` to ``dst`` (logged); a message to an aggregator is signed with the
        coordinator's key (the one the job names) unless it already is."""
        if isinstance(msg, COORDINATOR_MESSAGES) and not msg.signature:
            digests = None
            if isinstance(msg, PublishedSet):
                digests = [self._digest_of(p) for p in msg.messages]
            msg = sign_coordinator(msg, self.identity, digests, self._hash_part)
        self.log.append(LogEntry(self.t.now(), "out", dst, msg))
        self.t.send(dst, msg)

    def _hash_part(self, blob: bytes) -> bytes:
        """``part_hash(blob)``, each blob of the current job hashed once (admission and
        the StartJob signatures)."""
        got = self._part_hashes.get(id(blob))
        if got is None or got[0] is not blob:
            got = self._part_hashes[id(blob)] = (blob, part_hash(blob))
        return got[1]

    def _digest_of(self, p: Any) -> bytes | None:
        """``published_digest(p)``, from the cache :meth:`_authentic` filled when possible."""
        got = self._digests.get(id(p))
        if got is not None and got[0] is p:
            return got[1]
        return published_digest(p)

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
        need: int = 0,
        ask: Callable[[set[int]], None] | None = None,
    ) -> dict[Any, Any]:
        """Drive the network until ``expected`` distinct answers of ``kind`` for ``job`` came
        (or the round timed out); returns them by ``key`` (first authentic answer wins).

        ``need``: the answers the next step cannot go on without. The round timeout
        (``timeout``, default :attr:`round_timeout`) only bounds the wait for answers beyond
        ``need`` (counted from the start, or from when a late ``need``-th answer came);
        while fewer than ``need`` came and the missing ones may still come (their senders
        did not report a failure), the wait goes on up to :attr:`quorum_timeout`.
        Slow aggregators (a large job on a real network) are then waited for instead of the
        round going on with none. ``ask(indices)``: sends the round's (small) request again
        to those aggregators, with a doubling interval while the wait goes on — an
        aggregator answers a coordinator message it already handled from its cache, so a
        lost answer (or a connection the answer was to go back on, lost with a restarted
        node) is sent again.

        Only authentic answers count (:meth:`_authentic`): from the claimed aggregator's
        address and, for signed round messages, under its signature — so a forged early
        message never displaces the real one.
        """
        got: dict[Any, Any] = {}
        failed: dict[int, str] = {}

        def scan() -> bool:
            while self.inbox:
                src, m = self.inbox.pop(0)
                try:
                    mj = getattr(m, "job", None)
                    if not isinstance(mj, str) or mj != job or not self._authentic(src, m):
                        continue
                    if isinstance(m, Failed):
                        failed.setdefault(m.aggregator, str(m.reason)[:MAX_REASON])
                    elif isinstance(m, kind):
                        got.setdefault(key(m), m)
                except Exception:  # a peer's malformed object: dropped
                    continue
            return len(got) + len(failed) >= expected

        round_timeout = timeout if timeout is not None else self.round_timeout
        self.network.run_until(scan, round_timeout)
        scan()

        def quorum_settled() -> bool:
            # ``need`` answers came, or they cannot come any more (too many failed)
            return scan() or len(got) >= need or expected - len(failed) < need

        waited, step = round_timeout, max(round_timeout, 1e-3)
        while not quorum_settled() and waited < self.quorum_timeout:
            if ask is not None:
                # ask again (the same signed message: answered from the cache, never handled
                # twice) those that neither answered nor failed — their answer may be lost
                ask({i for i in range(len(self.aggregators))} - set(got) - set(failed))
            step = min(2 * step, self.quorum_timeout - waited)  # backoff: big answers
            self.network.run_until(quorum_settled, step)
            waited += step
        if waited > round_timeout:
            if len(got) >= need and not scan():
                # the quorum came late: the rest (as slow, not faulty) get a round timeout more
                self.network.run_until(scan, round_timeout)
            scan()
        self.failures.update(failed)
        return got

    def _again(self, msg: Any, asked: set[int]) -> Callable[[set[int]], None]:
        """``ask`` for :meth:`collect`: send the signed ``msg`` again to the aggregators in
        ``asked`` that are still missing (a small request; never a StartJob or round-1 set)."""

        def ask(missing: set[int]) -> None:
            for i in sorted(missing & asked):
                self.send(self.aggregators[i], msg)

        return ask

    def _short(self, job_id: str, step: str, got: Mapping[Any, Any], need: int, asked: int) -> None:
        """Raise ``ProtocolError`` when a round got fewer than the ``need`` answers the next
        step cannot go on without (saying which step, who failed and why)."""
        if len(got) >= need:
            return
        raise ProtocolError(
            f"job {job_id[:16]}…: {len(got)} of the {asked} aggregator(s) asked answered "
            f"{step} within {self.quorum_timeout:g} s, {need} are needed (failures: "
            f"{self.failures or 'none reported'}). More aggregators are faulty than the "
            "committee tolerates, or they are slower than the timeout: raise quorum_timeout "
            "(round_timeout) for large jobs. Nothing was released"
        )

    def _authentic(self, src: str, m: Any) -> bool:
        """Whether ``m`` comes from the aggregator it names: sent from its address and, for a
        signed message, signed by its key (the job's committee key ``aggregator_keys``)."""
        i = getattr(m, "aggregator", None)
        if type(i) is not int or not 0 <= i < len(self.aggregators) or src != self.aggregators[i]:
            return False
        if isinstance(m, Published):
            d = published_digest(m)
            self._digests[id(m)] = (m, d)
            return (
                d is not None
                and i < len(self.aggregator_keys)
                and _verify_digest(d, m.signature, self.aggregator_keys[i], PUBLISH_CONTEXT)
            )
        if isinstance(m, Reveal | ResultShare):
            return i < len(self.aggregator_keys) and verify_signed(m, self.aggregator_keys[i])
        if isinstance(m, ReceiptSignature):
            return i < len(self.aggregator_keys) and m.public == self.aggregator_keys[i]
        return True

    # -- admission
    def admit(
        self, job: Mapping[str, Any], submissions: Sequence[SealedSubmission]
    ) -> tuple[list[SealedSubmission], dict[str, str]]:
        """The submissions to put in the inputs, and the dropped ones (provider → reason).

        Run after the writes are committed and before the inputs close: a submission must be
        signed, its parts must match its manifest, its write must be on the ledger under its
        provider's policy and written by the manifest's signer, and it must be the
        provider's only one; its write must be under the job's LTS (the one the job names,
        else the coordinator's ``lts_id``). What an aggregator later finds wrong can then
        only be the fault of the provider's data, shares or proof — or of the relay.
        """
        n = len(job["aggregators"])
        cap = max_batch(job_statistic(job), job)
        lts = job_lts(job) or self.lts_id
        ok: list[SealedSubmission] = []
        dropped: dict[str, str] = {}
        seen: set[str] = set()
        self._part_hashes = {}
        for sub in submissions:
            m = sub.manifest
            try:
                sub.check(n, parts=[], max_batch=cap)  # form, provider signature, batch
                for i in range(n):  # every part against the manifest (hashes kept for run)
                    if self._hash_part(sub.meas_parts[i]).hex() != m.meas_parts[i] or (
                        self._hash_part(sub.proof_parts[i]).hex() != m.proof_parts[i]
                    ):
                        raise InvalidSubmission(
                            f"part {i} does not match its signed manifest: it was altered"
                        )
                w = self.ledger.get(write_key(m.write))
                if w is None or w["policy"] != m.provider or m.signer not in w["signers"]:
                    raise InvalidSubmission("its write is not the provider's committed write")
                if lts is not None and w.get("lts") != lts:
                    raise InvalidSubmission(
                        f"its write is under LTS {str(w.get('lts'))[:16]}…, the job's is "
                        f"{lts[:16]}…: the job's trustees cannot release its keys (the "
                        "ledger takes a job's inputs under one LTS)"
                    )
                if m.job != job["id"] or m.provider not in job["providers"] or m.provider in seen:
                    raise InvalidSubmission("not for this job, or a second submission")
            except InvalidSubmission as exc:
                dropped[m.provider] = f"submission refused: {exc}"
                continue
            seen.add(m.provider)
            ok.append(sub)
        ok, over = fit_job_total(ok, job_statistic(job))
        dropped.update(over)
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
        self._digests = {}
        self._trim_log()
        job_rec = self.ledger.get(job_key(job_id))
        if job_rec is None:
            raise ProtocolError(f"job {job_id[:16]}… is not on the ledger: commit it first")
        if job_coordinator(job_rec) != self.identity.public.hex():
            raise ProtocolError(
                f"job {job_id[:16]}… names another coordinator key: the aggregators take its "
                "messages only from that key; commit the job with job_payload(..., "
                "coordinator=<this coordinator's key>)"
            )
        # The committee's keys and quorum come from the committed job, never from a caller.
        self.aggregator_keys = list(job_rec["aggregators"])
        if list(aggregator_keys) != self.aggregator_keys:
            raise ProtocolError(
                f"job {job_id[:16]}…: the aggregator keys given are not the job's committee"
            )
        quorum = int(job_rec["threshold"])
        timings: dict[str, float] = {}
        n = len(self.aggregators)
        # What each round cannot go on without: n − t round messages (every decision rests
        # on them), a receipt quorum of results and signatures.
        t = int(job_rec["params"].get("degree", (n - 1) // 3))
        need = n - t
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[name] = timings.get(name, 0.0) + now - clock
            clock = now

        for i, a in enumerate(self.aggregators):
            self.send(a, StartJob(job_id, tuple(s.only(i) for s in submissions)))
        self._part_hashes = {}
        reads = self.collect(ReadSigned, job_id, n, need=need)
        self._short(job_id, "with a signed read", reads, need, n)
        txs = []
        for i, m in sorted(reads.items()):
            if m.tx is None:
                continue
            try:
                tx = Tx.from_obj(m.tx)
            except Exception:  # a malformed tx from a peer: not relayed
                continue
            if tx.signers and tx.signers[0] == self.aggregator_keys[i]:
                txs.append(tx)
        for tx in txs:
            self.note("relay-tx", tx)
        if txs:
            self.ledger.submit_many(txs)
            self.ledger.wait([tx.id for tx in txs], proof=False)
        lap("key_release_request")
        shares = coin_shares()
        lap("coin")
        deals = tuple(m.noise for _, m in sorted(reads.items()) if m.noise is not None)
        announce = sign_coordinator(
            ReadCommitted(job_id, tuple(sorted(shares.items())), deals), self.identity
        )
        for i in reads:
            self.send(self.aggregators[i], announce)
        published = self.collect(
            Published, job_id, len(reads), need=need, ask=self._again(announce, set(reads))
        )
        self._short(job_id, "round 1 (Published)", published, need, len(reads))
        lap("release_and_verify")
        pubset = PublishedSet(job_id, tuple(published[i] for i in sorted(published)))
        for i in published:
            self.send(self.aggregators[i], pubset)
        reveals = self.collect(Reveal, job_id, len(published), need=need)
        self._short(job_id, "round 2 (Reveal)", reveals, need, len(published))
        revset = sign_coordinator(
            RevealSet(job_id, tuple(r for _, r in sorted(reveals.items()))), self.identity
        )
        for i in published:
            self.send(self.aggregators[i], revset)
        results = self.collect(
            ResultShare,
            job_id,
            len(published),
            need=quorum,
            ask=self._again(revset, set(published)),
        )
        self._short(job_id, "round 3 (ResultShare)", results, quorum, len(published))
        lap("decide_and_aggregate")
        receipt, agreeing = self._draft(job_id, results)
        draft = sign_coordinator(ReceiptDraft(job_id, canonical(receipt)), self.identity)
        for i in agreeing:
            self.send(self.aggregators[i], draft)
        sigs = self.collect(
            ReceiptSignature,
            job_id,
            len(agreeing),
            need=quorum,
            ask=self._again(draft, set(agreeing)),
        )
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
            got = self.collect(SealedShare, job_id, len(agreeing), need=t + 1)
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
        receipt: Any = None
        agreeing: list[int] = []
        for body, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            try:
                receipt = decode_canonical(bytes(body))
            except Exception:  # a (Byzantine) decision that is not a receipt body
                continue
            if isinstance(receipt, dict):
                agreeing = members
                break
        if not isinstance(receipt, dict):
            raise ProtocolError(f"job {job_id[:16]}…: no aggregator produced a valid decision")
        shares = {
            self.aggregator_keys[i]: results[i].share_hash
            for i in sorted(agreeing)
            if results[i].share_hash
        }
        receipt["shares"] = shares
        receipt["result_hash"] = H(b"kaires/aggregation/result", canonical(shares)).hex()
        return receipt, sorted(agreeing)
