"""Adversarial tests of BFT Prio aggregation (issue 9: findings 1, 3, 4, 5, 7, 9/10, and the
coordinator's first-wins collection).

Each attacker plays with its role's capabilities only: the coordinator relays, drops,
relabels and reorders messages; a Byzantine aggregator signs whatever it likes with its own
key; a consumer drives the job and drafts receipts. Honest aggregators run unchanged code.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaires_fl import schema
from kaires_fl.aggregation import job as job_mod
from kaires_fl.aggregation.aggregator import (
    REASON_INVALID_MEAS,
    AggregatorJob,
    Coin,
    JobContext,
    Published,
    Reveal,
    analyse_round1,
    decide_job,
    sign_message,
)
from kaires_fl.aggregation.job import (
    Deliver,
    PublishedSet,
    ReceiptSignature,
    RevealSet,
    SealedShare,
)
from kaires_fl.aggregation.submission import seal_parts, sign_manifest
from kaires_fl.arith.circuits import SumVec
from kaires_fl.arith.flp import FlpBBCGGI19
from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.crypto.sign import Identity
from kaires_fl.errors import KairesError, ProtocolError
from kaires_fl.ledger.jobs import sign_receipt
from kaires_fl.schema import Elements
from kaires_fl.simulation import LocalCommittee
from kaires_fl.statistics import LinearRegressionStats

D = 2
STAT = LinearRegressionStats(
    D, [-1, 1], [-1, 1], granularity="provider", max_rows=100, max_measurements=32
)
RNG = np.random.default_rng(9)
DATA = {f"p{i}": (RNG.uniform(-1, 1, (8, D)), RNG.uniform(-1, 1, 8)) for i in range(5)}


def _sums(labels: list[str]) -> np.ndarray:
    X = np.concatenate([DATA[k][0] for k in labels])
    return X.T @ X


def _disclosures(c: LocalCommittee) -> list[Any]:
    """Every key an aggregator disclosed through the coordinator (round 1 or 2)."""
    out = []
    for e in c.coordinator.log:
        m = e.message
        if isinstance(m, Reveal):
            out.extend(m.keys)
        elif isinstance(m, Published):
            out.extend(m.unopened)
    return out


def _relay(c: LocalCommittee, rewrite: Any) -> None:
    """Make the coordinator rewrite what it sends: ``rewrite(dst, msg) -> msg | None``."""
    real = c.coordinator.send

    def send(dst: str, msg: Any) -> None:
        msg = rewrite(dst, msg)
        if msg is not None:
            real(dst, msg)

    c.coordinator.send = send  # type: ignore[method-assign]


# ----------------------------------------------------------------------------- finding 1


def test_coordinator_relabelling_round1_messages_discloses_nothing_and_blames_no_one() -> None:
    """Privacy (finding 1): the coordinator alone relays two honest round-1 messages with
    their z relabelled (another shape, same bytes). The signature covers field, shape and
    bytes, so the relabelled messages are not signed: with fewer than n − t valid messages
    no honest aggregator decides, flags itself, or discloses a key."""
    c = LocalCommittee()

    def relabel(dst: str, msg: Any) -> Any:
        if not isinstance(msg, PublishedSet):
            return msg
        out = []
        for p in msg.messages:
            if p.aggregator in (1, 2):
                z = p.z
                p = msgspec.structs.replace(p, z=Elements(z.field, (*z.shape, 1), z.data))
            out.append(p)
        return PublishedSet(msg.job, tuple(out))

    _relay(c, relabel)
    with pytest.raises(ProtocolError):
        c.run_job(STAT, DATA)
    assert _disclosures(c) == [], "an honest aggregator disclosed a key"
    for svc in c.aggregators:
        for st_ in svc.jobs.values():
            assert st_.decision is None
            assert st_.sent_reveal is None
    c.close()


def test_coordinator_reordering_submissions_for_one_aggregator_discloses_nothing() -> None:
    """Privacy: the coordinator sends aggregator 3 the job's submissions in another order.
    Every aggregator sorts them canonically (as the closed inputs list them), so the z
    columns stay aligned: nobody is flagged, nothing is disclosed, the result is right."""
    c = LocalCommittee()
    victim = c.coordinator.aggregators[3]

    def reorder(dst: str, msg: Any) -> Any:
        if isinstance(msg, job_mod.StartJob) and dst == victim:
            return job_mod.StartJob(msg.job, tuple(reversed(msg.submissions)))
        return msg

    _relay(c, reorder)
    r = c.run_job(STAT, DATA)
    assert _disclosures(c) == [] and r.report["faulty_aggregators"] == {}
    np.testing.assert_allclose(np.array(r.aggregate["xtx"], float), _sums(sorted(DATA)), atol=1e-8)
    c.close()


# ----------------------------------------------------------------------------- finding 4


def test_coordinator_and_a_byzantine_aggregator_withholding_and_corrupting_disclose_nothing() -> (
    None
):
    """Privacy (finding 4): the coordinator withholds honest aggregator 3's round-1 message
    and Byzantine aggregator 0 (signing with its own key) corrupts its z for the victim's
    submission. The victim's column is inconsistent with only n − t values present: nobody
    can be blamed, so nothing is decided and no honest holder discloses its key."""
    c = LocalCommittee()
    byz = c.aggregators[0]
    victim = c.provider("p2").policy_id

    def attack(dst: str, msg: Any) -> Any:
        if not isinstance(msg, PublishedSet):
            return msg
        out = []
        for p in msg.messages:
            if p.aggregator == 3:
                continue  # withheld
            if p.aggregator == 0:
                st_ = byz.jobs[msg.job]
                s = [x.manifest.provider for x in st_.ctx.submissions].index(victim)
                F = st_.ctx.flp.field
                z = p.z.array(F)
                z[s] = F.add(z[s], F.ones(()))
                p = sign_message(msgspec.structs.replace(p, z=Elements.of(F, z)), byz.identity)
            out.append(p)
        return PublishedSet(msg.job, tuple(out))

    _relay(c, attack)
    with pytest.raises(ProtocolError):
        c.run_job(STAT, DATA)
    assert _disclosures(c) == [], "an honest aggregator disclosed the victim's key"
    assert not any(isinstance(e.message, SealedShare) for e in c.coordinator.log)
    c.close()


# ----------------------------------------------------------------------------- finding 5


def _core_job(faults: dict[int, str] | None = None) -> tuple[JobContext, list, list]:
    flp = FlpBBCGGI19(SumVec(3, 4))
    aggs = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(4)]
    subs, keys = [], []
    for p in range(4):
        v = np.random.default_rng(p).integers(0, 16, (2, 3))
        parts = seal_parts(
            flp,
            flp.valid.encode(v),
            job="job",
            provider=f"p{p}",
            circuit="c",
            n=4,
            t=1,
            fault=(faults or {}).get(p),
        )
        subs.append(
            sign_manifest(
                Identity.generate(), parts, job="job", provider=f"p{p}", circuit="c", write=f"w{p}"
            )
        )
        keys.append(parts.keys)
    ctx = JobContext(
        job="job",
        chain="chain",
        flp=flp,
        circuit="c",
        n=4,
        t=1,
        aggregators=tuple(a.public.hex() for a in aggs),
        consumer_key=EnvelopeKeyPair.generate().public,
        providers=tuple(f"p{p}" for p in range(4)),
        min_providers=1,
        submissions=tuple(subs),
    )
    return ctx, keys, aggs


def test_decisions_from_t_plus_one_messages_are_refused() -> None:
    """Robustness (finding 5): the coordinator relays only t + 1 = 2 round-1 messages — an
    honest one and a Byzantine one whose verifier shares it chose so that the out-of-range
    provider's rows open to a passing verifier. Honest aggregators refuse to decide from
    fewer than n − t messages instead of accepting the out-of-range value."""
    ctx, keys, aggs = _core_job({1: "out_of_range"})
    coin = Coin(b"coin" * 8)
    F = ctx.flp.field
    jobs = {i: AggregatorJob(ctx, i, aggs[i]) for i in range(4)}
    for i, j in jobs.items():
        j.open_parts({s: keys[s][i] for s in range(4)})
    pubs = {i: j.publish(coin) for i, j in jobs.items()}
    # Byzantine aggregator 0: its verifier share on the line through (x=2, honest 1's share)
    # and (x=0, zero), so that the two shares open to the zero verifier, which passes.
    v1 = pubs[1].verifier.array(F)
    forged = F.mul(v1, F.inv(F.elements(2)))  # q(1) = v1 / 2
    relayed = {
        0: sign_message(msgspec.structs.replace(pubs[0], verifier=Elements.of(F, forged)), aggs[0]),
        1: pubs[1],
    }
    assert ctx.flp.decide(F.zeros((2, ctx.flp.VERIFIER_LEN))).all()
    with pytest.raises(ProtocolError, match="n − t"):
        decide_job(ctx, coin, relayed, {}, me=1)
    with pytest.raises(ProtocolError, match="n − t"):
        analyse_round1(ctx, relayed)
    # With every message the out-of-range provider is rejected and the liar named.
    allp = {**pubs, 0: relayed[0]}
    d = decide_job(ctx, coin, allp, {}, me=1)
    assert dict(d.rejected)["p1"] == REASON_INVALID_MEAS and [i for i, _ in d.faulty] == [0]


def test_two_byzantine_aggregators_forging_a_passing_verifier_get_no_result() -> None:
    """Robustness (finding 5, honest coordinator): Byzantine aggregators 0 and 1 send early
    round-1 messages claiming to be aggregators 2 and 3 (to displace theirs, first-wins) and
    zero verifier shares for an out-of-range provider's rows. The coordinator keeps only
    authentic messages, so all four real ones are opened together: the forgery is beyond
    the code's reach and the job gives no result rather than a wrong one."""
    c = LocalCommittee(faults={"provider": {1: "out_of_range"}})
    bad = c.provider("p1").policy_id
    for k in (0, 1):
        svc = c.aggregators[k]
        real_release = svc._release

        def release(src: str, msg: Any, svc: Any = svc, real: Any = real_release) -> None:
            real(src, msg)
            st_ = svc.jobs[msg.job]
            F, flp = st_.ctx.flp.field, st_.ctx.flp
            S = len(st_.ctx.submissions)
            for victim in (2, 3):
                fake = Published(
                    msg.job,
                    victim,
                    Elements.of(F, F.zeros((S,))),
                    Elements.of(F, F.zeros((st_.ctx.rows, flp.VERIFIER_LEN))),
                )
                svc.t.send(src, sign_message(fake, svc.identity))

        def publish(st_: Any, svc: Any = svc) -> None:
            if st_.sent_published is not None:
                return
            p = st_.work.publish(st_.coin)
            F = st_.ctx.flp.field
            s = [x.manifest.provider for x in st_.ctx.submissions].index(bad)
            off = st_.ctx.offsets
            v = p.verifier.array(F)
            v[off[s] : off[s + 1]] = 0
            st_.sent_published = sign_message(
                msgspec.structs.replace(p, verifier=Elements.of(F, v)), svc.identity
            )
            svc.t.send(st_.coordinator, st_.sent_published)

        svc._release = release  # type: ignore[method-assign]
        svc._publish = publish  # type: ignore[method-assign]
    try:
        r = c.run_job(STAT, DATA)
    except ProtocolError:
        r = None
    if r is not None:  # only acceptable if the out-of-range provider was still rejected
        assert "p1" in r.report["rejected"]
    c.close()


# ----------------------------------------------------------------------------- collection


def test_forged_early_message_does_not_displace_the_real_one() -> None:
    """Robustness: aggregator 0 sends the coordinator an early round-1 message claiming to
    be aggregator 2's, signed with its own key. The coordinator keeps only messages signed
    by the aggregator they name, so aggregator 2's real message is used and nobody is
    blamed (first-wins by claimed index used to make aggregator 2 'not respond')."""
    c = LocalCommittee()
    svc = c.aggregators[0]
    real_release = svc._release

    def release(src: str, msg: Any) -> None:
        real_release(src, msg)
        st_ = svc.jobs[msg.job]
        F, flp = st_.ctx.flp.field, st_.ctx.flp
        fake = Published(
            msg.job,
            2,
            Elements.of(F, F.zeros((len(st_.ctx.submissions),))),
            Elements.of(F, F.zeros((st_.ctx.rows, flp.VERIFIER_LEN))),
        )
        svc.t.send(src, sign_message(fake, svc.identity))

    svc._release = release  # type: ignore[method-assign]
    r = c.run_job(STAT, DATA)
    assert r.report["faulty_aggregators"] == {} and r.report["status"] == "done"
    np.testing.assert_allclose(np.array(r.aggregate["xtx"], float), _sums(sorted(DATA)), atol=1e-8)
    c.close()


# ----------------------------------------------------------------------------- finding 7


def test_no_share_is_delivered_against_a_receipt_that_is_not_the_own_decision() -> None:
    """Fairness (finding 7): the consumer (driving the job) gives aggregators 2 and 3 a
    round-1 set without aggregator 0's message, so their decision names 0 as silent, gets
    it signed by them and by colluding aggregator 0, names honest aggregator 1's share in
    it, commits it and asks 1 to deliver. Aggregator 1's decision is not that receipt: it
    hands over nothing."""
    c = LocalCommittee()
    coord = c.coordinator
    byz = c.aggregators[0]
    h1 = c.aggregators[1]
    state: dict[str, Any] = {}

    def split(dst: str, msg: Any) -> Any:
        if isinstance(msg, PublishedSet) and dst in (coord.aggregators[2], coord.aggregators[3]):
            return PublishedSet(msg.job, tuple(p for p in msg.messages if p.aggregator != 0))
        if isinstance(msg, RevealSet) and dst == coord.aggregators[0]:
            return None  # aggregator 0 sits out the vote, so 2 and 3 form the majority
        if isinstance(msg, Deliver) and dst == coord.aggregators[2]:
            # also ask aggregator 1 (signed with the coordinator key the job names)
            coord.t.send(coord.aggregators[1], job_mod.sign_coordinator(msg, coord.identity))
        return msg

    real_draft, real_collect = coord._draft, coord.collect

    def draft(job_id: str, results: Any) -> Any:
        receipt, agreeing = real_draft(job_id, results)
        # name aggregator 1's share too (its hash came in its ResultShare)
        shares = dict(receipt["shares"])
        shares[coord.aggregator_keys[1]] = results[1].share_hash
        from kaires_fl.crypto.sign import H
        from kaires_fl.ledger.encoding import canonical

        receipt["shares"] = shares
        receipt["result_hash"] = H(b"kaires/aggregation/result", canonical(shares)).hex()
        state["receipt"] = receipt
        return receipt, agreeing

    def collect(kind: Any, job: str, expected: int, **kw: Any) -> Any:
        got = real_collect(kind, job, expected, **kw)
        if kind is ReceiptSignature:  # the colluding aggregator signs the consumer's receipt
            pub, sig = sign_receipt(byz.identity, c.client.chain, job, state["receipt"])
            got[0] = ReceiptSignature(job, 0, pub, sig)
        return got

    _relay(c, split)
    coord._draft = draft  # type: ignore[method-assign]
    coord.collect = collect  # type: ignore[method-assign]
    # (the consumer may then lack shares: aggregator 1's refusal ends its collection early)
    with pytest.raises(ProtocolError):
        c.run_job(STAT, DATA)
    c.network.run_until(lambda: False, 1.0)
    assert state["receipt"]["status"] == "done"
    delivered = {
        e.message.aggregator
        for e in coord.log
        if e.direction == "in" and isinstance(e.message, SealedShare)
    }
    assert 1 not in delivered, "aggregator 1 delivered against a receipt it did not decide"
    assert any("not this aggregator's decision" in why for _, why in h1.errors)
    c.close()


# ----------------------------------------------------------------------------- findings 9/10


def test_validly_signed_round1_message_with_a_wrongly_typed_field_blames_only_its_signer() -> None:
    """Robustness (finding 10): Byzantine aggregator 0 signs a round-1 message whose
    ``aggregator`` is the string "0" and another whose verifier is a list. Every honest
    aggregator's decision goes on; the well-typed liar is named, the others ignored."""
    ctx, keys, aggs = _core_job()
    coin = Coin(b"coin" * 8)
    F = ctx.flp.field
    jobs = {i: AggregatorJob(ctx, i, aggs[i]) for i in range(4)}
    for i, j in jobs.items():
        j.open_parts({s: keys[s][i] for s in range(4)})
    pubs = {i: j.publish(coin) for i, j in jobs.items()}
    typed = sign_message(msgspec.structs.replace(pubs[0], aggregator="0"), aggs[0])
    listy = sign_message(
        msgspec.structs.replace(pubs[0], verifier=pubs[0].verifier.array(F).tolist()), aggs[0]
    )
    for bad in (typed, listy):
        msgs = [bad, pubs[1], pubs[2], pubs[3]]
        d = decide_job(ctx, coin, msgs, [], me=1)
        assert d.accepted == ("p0", "p1", "p2", "p3") and [i for i, _ in d.faulty] == [0]


@pytest.fixture(scope="module")
def served() -> Any:
    """A committee that ran one job, with the encoded messages its aggregators received."""
    c = LocalCommittee()
    r = c.run_job(STAT, DATA)
    sent = [
        schema.encode(e.message)
        for e in c.coordinator.log
        if e.direction == "out" and isinstance(e.message, job_mod.ToAggregator)
    ]
    yield c, r, sent
    c.close()


def _survives(c: LocalCommittee) -> None:
    r = c.run_job(STAT, DATA)
    assert r.report["status"] == "done" and r.report["faulty_aggregators"] == {}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzz_aggregator_on_message_never_dies(served: Any, data: Any) -> None:
    """Robustness (findings 9/10): arbitrary bytes, mutated encodings of real coordinator
    messages and arbitrary objects never raise out of ``AggregatorService.on_message``."""
    c, _, sent = served
    svc = c.aggregators[data.draw(st.integers(0, len(c.aggregators) - 1))]
    kind = data.draw(st.sampled_from(["bytes", "mutated", "object"]))
    if kind == "bytes":
        payload: Any = data.draw(st.binary(max_size=512))
    elif kind == "mutated":
        raw = bytearray(data.draw(st.sampled_from(sent)))
        for _ in range(data.draw(st.integers(1, 8))):
            k = data.draw(st.integers(0, len(raw) - 1))
            raw[k] = data.draw(st.integers(0, 255))
        payload = bytes(raw[: data.draw(st.integers(0, len(raw)))])
    else:
        job = data.draw(st.sampled_from([*svc.jobs, "x", 5, None]))
        payload = data.draw(
            st.sampled_from(
                [
                    PublishedSet(job, (None, 3, "z")),  # type: ignore[arg-type]
                    RevealSet(job, ({"a": 1},)),  # type: ignore[arg-type]
                    job_mod.ReceiptDraft(job, b"\xff\x00"),
                    job_mod.ReceiptDraft(job, b"[1, 2]"),
                    Deliver(job),
                    job_mod.StartJob(job, (b"junk",)),  # type: ignore[arg-type]
                    job_mod.ReadCommitted(job, ((0, "share"),)),
                    object(),
                ]
            )
        )
    src = data.draw(st.sampled_from(["coordinator", c.coordinator.aggregators[0]]))
    svc.on_message(src, payload)  # must not raise


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzz_coordinator_signed_messages_never_kill_the_handler(served: Any, data: Any) -> None:
    """Robustness (coordinator binding): the coordinator itself signs, with the key the job
    names, mutated versions of its real messages (whatever still decodes) and junk bodies;
    ``AggregatorService.on_message`` never raises on them, as objects or as bytes."""
    c, _, sent = served
    svc = c.aggregators[data.draw(st.integers(0, len(c.aggregators) - 1))]
    raw = bytearray(data.draw(st.sampled_from(sent)))
    for _ in range(data.draw(st.integers(0, 6))):
        k = data.draw(st.integers(0, len(raw) - 1))
        raw[k] = data.draw(st.integers(0, 255))
    try:
        msg = schema.decode(bytes(raw), job_mod.ToAggregator)
    except KairesError:
        job = next(iter(svc.jobs))
        msg = data.draw(
            st.sampled_from(
                [
                    job_mod.ReceiptDraft(job, b"[1, 2]"),
                    job_mod.ReceiptDraft(job, b'{"status": "done"}'),
                    job_mod.ReadCommitted(job, ((0, None), (70, None))),
                    PublishedSet(job, ()),
                    RevealSet(job, ()),
                    Deliver(job),
                    job_mod.StartJob(job, ()),
                ]
            )
        )
    signed = job_mod.sign_coordinator(
        msgspec.structs.replace(msg, signature=b""), c.coordinator.identity
    )
    svc.on_message("coordinator", signed)  # must not raise
    svc.on_message("coordinator", schema.encode(signed))


def test_the_service_still_works_after_the_fuzz(served: Any) -> None:
    """Robustness: after hostile messages, the aggregators still run a job correctly."""
    c, _, sent = served
    for svc in c.aggregators:
        for raw in sent:
            svc.on_message("coordinator", raw[: len(raw) // 2])
            svc.on_message("coordinator", raw)  # a replayed message of a finished job
    _survives(c)


def test_decoding_peer_bytes_raises_only_typed_errors() -> None:
    """Robustness: the aggregation schema decodes hostile bytes into EncodingError only."""

    @given(st.binary(max_size=256))
    @settings(max_examples=200, deadline=None)
    def run(raw: bytes) -> None:
        for t in (job_mod.ToAggregator, job_mod.ToCoordinator):
            with contextlib.suppress(KairesError):  # anything else fails the test
                schema.decode(raw, t)

    run()


def test_coordinator_survives_junk_from_a_byzantine_aggregator() -> None:
    """Robustness: Byzantine aggregator 0 floods the coordinator with junk — raw bytes,
    wrongly typed fields, messages naming other aggregators or no job — while the job
    runs. The coordinator drops what is not authentic and the job is unaffected."""
    c = LocalCommittee()
    svc = c.aggregators[0]
    real_release = svc._release

    def release(src: str, msg: Any) -> None:
        real_release(src, msg)
        junk: list[Any] = [
            b"\xc1\xff",
            schema.encode(job_mod.Failed(msg.job, 2, "forged")),
            job_mod.Failed(msg.job, "2", 5),  # type: ignore[arg-type]
            job_mod.Failed(np.arange(3), 0, "x"),  # type: ignore[arg-type]
            job_mod.ReadSigned(msg.job, 0, {"not": "a tx"}),
            object(),
            None,
        ]
        for j in junk:
            svc.t.send(src, j)

    svc._release = release  # type: ignore[method-assign]
    r = c.run_job(STAT, DATA)
    assert r.report["status"] == "done"
    np.testing.assert_allclose(np.array(r.aggregate["xtx"], float), _sums(sorted(DATA)), atol=1e-8)
    c.close()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=64), st.integers(), st.none()), max_size=5))
def test_fuzz_coordinator_collect_never_dies(junk: list[Any]) -> None:
    """Robustness: whatever reaches the coordinator's inbox, ``collect`` returns."""
    from kaires_fl.transport.memory import MemoryNetwork

    net = MemoryNetwork()
    coord = job_mod.Coordinator(
        net.endpoint("coordinator"), net, None, ["a0", "a1"], [], Identity.generate(), 0.01
    )
    coord.aggregator_keys = [Identity.generate().public.hex()] * 2
    for k, j in enumerate(junk):
        coord._on_message("a0" if k % 2 else "x", j)
        coord._on_message("a1", job_mod.Failed("ab" * 32, 1, j))  # type: ignore[arg-type]
    got = coord.collect(Published, "ab" * 32, 2)
    assert got == {}


def test_inputs_over_the_job_total_are_left_out_by_every_aggregator() -> None:
    """Robustness (finding 6): the consumer closes the inputs with every submission although
    their batches sum past what the statistic's field is sized for. Every aggregator applies
    the same job-total rule to the closed inputs: the largest batches are left out (and
    named), the rest is summed exactly."""
    from kaires_fl.statistics import CountStats

    stat = CountStats("record", max_rows=100, max_measurements=30)
    rows = {f"p{i}": 10 + i for i in range(4)}
    data = {k: (np.zeros((r, 2)), None) for k, r in rows.items()}
    c = LocalCommittee()
    real_admit = c.coordinator.admit

    def admit_everything(job: Any, subs: Any) -> Any:
        real_admit(job, subs)
        return list(subs), {}

    c.coordinator.admit = admit_everything  # type: ignore[method-assign]
    r = c.run_job(stat, data)
    assert r.report["rejected"] == {"p3": "over_job_total", "p2": "over_job_total"}
    assert r.aggregate["count"] == 21 and r.report["faulty_aggregators"] == {}
    c.close()


_CORE = _core_job()


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_fuzz_decide_job_on_signed_mutated_messages(data: Any) -> None:
    """Robustness (findings 9/10): Byzantine aggregator 0 signs round-1 and reveal messages
    with arbitrary fields (indices, shapes, fields, disclosures); honest aggregator 1's
    decision either stands without blaming an honest aggregator or is a ProtocolError —
    never another exception."""
    from kaires_fl.aggregation.aggregator import Disclosure

    ctx, keys, aggs = _CORE
    coin = Coin(b"coin" * 8)
    jobs = {i: AggregatorJob(ctx, i, aggs[i]) for i in range(4)}
    for i, j in jobs.items():
        j.open_parts({s: keys[s][i] for s in range(4)})
    pubs = {i: j.publish(coin) for i, j in jobs.items()}
    p = pubs[0]
    field = data.draw(st.sampled_from(["z", "verifier", "unopened", "aggregator", "job"]))
    if field in ("z", "verifier"):
        shape = tuple(data.draw(st.lists(st.integers(0, 5), max_size=3)))
        n = int(np.prod(shape)) if shape else 1
        raw = data.draw(st.binary(min_size=8 * n, max_size=8 * n))
        p = msgspec.structs.replace(p, **{field: Elements("Field64", shape, raw)})
    elif field == "unopened":
        d = Disclosure(
            data.draw(st.integers(0, 10)),
            data.draw(st.binary(min_size=32, max_size=32)),
            data.draw(st.binary(max_size=40)),
            data.draw(st.binary(max_size=40)),
            data.draw(st.binary(max_size=40)),
        )
        p = msgspec.structs.replace(p, unopened=(d,) * data.draw(st.integers(1, 2)))
    elif field == "aggregator":
        p = msgspec.structs.replace(p, aggregator=data.draw(st.integers(0, 7)))
    else:
        p = msgspec.structs.replace(p, job=data.draw(st.text(max_size=8)))
    forged = sign_message(p, aggs[0])
    rev = sign_message(
        Reveal(
            ctx.job,
            0,
            tuple(
                Disclosure(s, b"\x00" * 32, b"", b"")
                for s in data.draw(st.lists(st.integers(0, 6), max_size=3))
            ),
        ),
        aggs[0],
    )
    try:
        d = decide_job(ctx, coin, [forged, pubs[1], pubs[2], pubs[3]], [rev], me=1)
    except ProtocolError:
        return
    assert {i for i, _ in d.faulty} <= {0}
    assert d.accepted == ("p0", "p1", "p2", "p3")


def test_equivocating_aggregator_is_proven_faulty_and_changes_nothing() -> None:
    """Robustness: Byzantine aggregator 0 signs two different round-1 messages and the
    relay passes both on. Two signatures of one key prove it faulty; the honest
    aggregators decide without it and accept every honest provider."""
    ctx, keys, aggs = _core_job()
    coin = Coin(b"coin" * 8)
    F = ctx.flp.field
    jobs = {i: AggregatorJob(ctx, i, aggs[i]) for i in range(4)}
    for i, j in jobs.items():
        j.open_parts({s: keys[s][i] for s in range(4)})
    pubs = {i: j.publish(coin) for i, j in jobs.items()}
    z = pubs[0].z.array(F)
    z[0] = F.add(z[0], F.ones(()))
    other = sign_message(msgspec.structs.replace(pubs[0], z=Elements.of(F, z)), aggs[0])
    d = decide_job(ctx, coin, [pubs[0], other, pubs[1], pubs[2], pubs[3]], [], me=2)
    assert dict(d.faulty) == {0: "signed two different round-1 messages"}
    assert d.accepted == ("p0", "p1", "p2", "p3")


# ----------------------------------------------------------------------------- coordinator binding


def test_a_stranger_relaying_first_does_not_become_the_coordinator() -> None:
    """Robustness (coordinator binding): a stranger with its own Ed25519 key and network
    address gets every coordinator message to the aggregators first — a StartJob with the
    job's valid submissions, then a round-1 set of only n − t messages — signed with its
    key. The committed job names the coordinator's key, so the aggregators ignore the
    stranger (the first StartJob used to make its sender the job's coordinator and stall
    the real one). It also replays, ahead of the coordinator, every message the
    coordinator signs (the observed bytes, from its own address): a replayed message is
    answered again wherever it comes from, so the coordinator still gets every answer.
    The job completes with nobody blamed."""
    c = LocalCommittee()
    mallory = Identity.from_seed(b"m" * 32)
    stranger = c.network.endpoint("stranger")
    heard: list[Any] = []
    stranger.set_handler(lambda src, m: heard.append(m))

    def first(dst: str, msg: Any) -> Any:
        if isinstance(msg, job_mod.StartJob):
            stranger.send(dst, job_mod.sign_coordinator(msg, mallory))  # its own key
        elif isinstance(msg, PublishedSet):
            part = PublishedSet(msg.job, msg.messages[1:])  # n − t: a different set
            stranger.send(dst, job_mod.sign_coordinator(part, mallory))
        if isinstance(msg, job_mod.COORDINATOR_MESSAGES):
            # the real coordinator's signed bytes (Ed25519 is deterministic), replayed first
            stranger.send(dst, job_mod.sign_coordinator(msg, c.coordinator.identity))
        return msg

    _relay(c, first)
    r = c.run_job(STAT, DATA)
    assert r.report["status"] == "done" and r.report["faulty_aggregators"] == {}
    np.testing.assert_allclose(np.array(r.aggregate["xtx"], float), _sums(sorted(DATA)), atol=1e-8)
    for svc in c.aggregators:
        assert any("not signed by the coordinator key" in why for _, why in svc.errors)
    assert any(isinstance(m, job_mod.Failed) for m in heard)  # told why
    assert sum(isinstance(m, Published) for m in heard) == 4  # the replays' answers
    c.close()


def test_a_job_names_its_coordinator_key() -> None:
    """Robustness (coordinator binding): the ledger records the coordinator key of a job
    (default: the consumer's own); a coordinator holding another key refuses to drive it,
    and no aggregator starts a job from a StartJob signed by another key."""
    c = LocalCommittee()
    r = c.run_job(STAT, DATA)
    job = c.client.get(job_mod.job_key(r.report["job"]))
    assert job["coordinator"] == c.coordinator.identity.public.hex()
    payload = c.consumer.job_payload(STAT, ["a" * 64], c.committee_id)
    assert "coordinator" not in payload  # the ledger then records the consumer's key
    assert job_mod.job_coordinator({**job, "coordinator": None}) == job["consumer"]
    other = job_mod.Coordinator(
        c.network.endpoint("other"),
        c.network,
        c.client,
        c.aggregator_addresses,
        c.trustees.addresses,
        Identity.from_seed(b"o" * 32),
    )
    with pytest.raises(ProtocolError, match="another coordinator key"):
        other.run(r.report["job"], job["aggregators"], [], dict)
    c.close()


# ----------------------------------------------------------------------------- own messages


def _no_disclosure_by(c: LocalCommittee, i: int) -> None:
    for e in c.coordinator.log:
        m = e.message
        if e.direction == "in" and isinstance(m, Reveal | Published) and m.aggregator == i:
            assert not getattr(m, "keys", ()) and not getattr(m, "unopened", ())


def test_own_round1_message_altered_or_dropped_in_the_relayed_set() -> None:
    """Privacy/Robustness: the coordinator relays to honest aggregator 1 a round-1 set in
    which 1's OWN message is altered (a z changed, its signature kept) — and, in a second
    job, dropped. Aggregator 1 sees its message is not the one it sent: it reveals and
    decides nothing (no disclosure, no decision naming anybody), while the others, given
    the true set, complete the job and blame nobody."""
    for mode in ("alter", "drop"):
        c = LocalCommittee()
        victim = c.coordinator.aggregators[1]

        def attack(dst: str, msg: Any, mode: str = mode, victim: str = victim, c: Any = c) -> Any:
            if not isinstance(msg, PublishedSet) or dst != victim:
                return msg
            out = []
            for p in msg.messages:
                if p.aggregator == 1:
                    if mode == "drop":
                        continue
                    F = c.aggregators[1].jobs[msg.job].ctx.flp.field
                    z = p.z.array(F)
                    z[0] = F.add(z[0], F.ones(()))
                    p = msgspec.structs.replace(p, z=Elements.of(F, z))
                out.append(p)
            return PublishedSet(msg.job, tuple(out))

        _relay(c, attack)
        r = c.run_job(STAT, DATA)
        st1 = next(iter(c.aggregators[1].jobs.values()))
        assert st1.sent_reveal is None and st1.decision is None
        assert any("own Published is missing or altered" in w for _, w in c.aggregators[1].errors)
        _no_disclosure_by(c, 1)
        for k in (0, 2, 3):
            d = next(iter(c.aggregators[k].jobs.values())).decision
            assert d is not None and d.faulty == () and d.status == "done"
        assert r.report["status"] == "done"
        c.close()


def test_own_reveal_altered_or_dropped_in_the_relayed_set() -> None:
    """Robustness: a provider deals aggregator 2 an inconsistent share, so 2 is flagged and
    reveals its key for that submission (the provider is at fault). The coordinator then
    relays to 2 a reveal set with 2's OWN reveal altered (its disclosure emptied, the
    signature kept) — or dropped. Aggregator 2 decides nothing rather than blame itself
    for not justifying; the others decide from the true reveals, reject the provider and
    blame nobody."""
    for mode in ("alter", "drop"):
        c = LocalCommittee(faults={"provider": {1: "inconsistent_shares"}})
        bad = c.provider("p1").policy_id
        addr = c.coordinator.aggregators

        def attack(dst: str, msg: Any, mode: str = mode, addr: Any = addr) -> Any:
            if not isinstance(msg, RevealSet):
                return msg
            keyed = [r for r in msg.messages if r.keys]
            if not keyed or dst != addr[keyed[0].aggregator]:
                return msg
            out = []
            for r in msg.messages:
                if r.keys:
                    if mode == "drop":
                        continue
                    r = msgspec.structs.replace(r, keys=())
                out.append(r)
            return RevealSet(msg.job, tuple(out))

        _relay(c, attack)
        r = c.run_job(STAT, DATA)
        revealed = [
            e.message.aggregator
            for e in c.coordinator.log
            if e.direction == "in" and isinstance(e.message, Reveal) and e.message.keys
        ]
        assert len(revealed) == 1, "the provider's inconsistent share flags one aggregator"
        j = revealed[0]
        stj = next(iter(c.aggregators[j].jobs.values()))
        assert stj.decision is None
        assert any("own Reveal is missing or altered" in w for _, w in c.aggregators[j].errors)
        for k in set(range(4)) - {j}:
            d = next(iter(c.aggregators[k].jobs.values())).decision
            assert d is not None and d.faulty == ()
            assert dict(d.rejected)[bad] == "inconsistent_shares"
        assert r.report["status"] == "done"
        assert r.report["rejected"] == {"p1": "inconsistent_shares"}
        c.close()


# ----------------------------------------------------------------------------- finding 3


def _bytes_of(m: Any) -> bytes:
    """Every byte of an observed object (schema messages, txs, anything else by repr)."""
    from kaires_fl.ledger.encoding import canonical

    with contextlib.suppress(Exception):
        return schema.encode(m)
    with contextlib.suppress(Exception):
        return canonical(m.to_obj())
    return repr(m).encode()


def _observed(c: LocalCommittee, tap: list[Any]) -> list[bytes]:
    out = [_bytes_of(e.payload) for e in tap]
    out += [_bytes_of(e.message) for e in c.coordinator.log]
    return out


def test_a_wrong_key_commitment_discloses_one_slot_of_one_write_and_nothing_else(
    monkeypatch: Any,
) -> None:
    """Privacy (finding 3): provider p2 signs, for aggregator 1's slot, a key commitment
    (and a part) under a key other than the one it wrote. Aggregator 1 proves it with a
    single-slot WrittenKeyProof and p2 is rejected. What is published — the coordinator's
    log and every message a passive observer sees on the network in this job and in a
    later one — holds no y_i·X of any aggregator and no plaintext trustee answer; the
    proof covers exactly (p2's write, aggregator 1's slot); trustees refuse, while the job
    runs, a dispute for another slot, for a write outside the job, or from a non-member;
    and nothing seen in either job opens aggregator 1's parts of the later job."""
    from kaires_fl.aggregation.aggregator import REASON_WRONG_KEY
    from kaires_fl.aggregation.submission import open_part
    from kaires_fl.roles import provider as provider_mod
    from kaires_fl.secret_management.dispute import WrittenKeyProof, dispute_request
    from kaires_fl.secret_management.release import ReleaseResponse

    c = LocalCommittee()
    tap: list[Any] = []
    c.network.add_filter(lambda env: tap.append(env) or True)  # a passive observer
    cheat = c.provider("p2").policy_id
    real_seal = provider_mod.seal_parts
    rounds = {"n": 0}

    def seal(flp: Any, meas: Any, *, provider: str, keys: Any, **kw: Any) -> Any:
        if provider == cheat and rounds["n"] == 0:  # the cheat only in the first job
            keys = list(keys)
            keys[1] = bytes(32 * [7])  # commits and seals under a key it did not write
        return real_seal(flp, meas, provider=provider, keys=keys, **kw)

    monkeypatch.setattr(provider_mod, "seal_parts", seal)
    agg1, trustees = c.aggregators[1], [n.trustee for n in c.trustees.nodes]
    real_opened = agg1._opened
    refusals: list[str] = []
    first_write: dict[str, str] = {}

    def opened(st_: Any, keys: Any) -> None:
        real_opened(st_, keys)  # its genuine dispute request goes out
        job = st_.ctx.job
        w = next(s.manifest.write for s in st_.ctx.submissions if s.manifest.provider == cheat)
        first_write.setdefault("w", w)
        mallory = Identity.from_seed(b"s" * 32)
        rogue = [
            dispute_request(c.client, agg1.identity, c.lts_id, job, st_.read_id, w, "aggregator:2"),
            dispute_request(c.client, mallory, c.lts_id, job, st_.read_id, w, "aggregator:1"),
        ]
        if rounds["n"] == 1:  # the first job's disputed write, asked for in the later job
            rogue.append(
                dispute_request(
                    c.client,
                    agg1.identity,
                    c.lts_id,
                    job,
                    st_.read_id,
                    first_write["w"],
                    "aggregator:1",
                )
            )
        for req in rogue:
            for tr in trustees:
                with pytest.raises(KairesError) as exc:
                    tr.dispute(req)
                refusals.append(type(exc.value).__name__)

    agg1._opened = opened  # type: ignore[method-assign]
    r1 = c.run_job(STAT, DATA)
    assert r1.report["rejected"] == {"p2": REASON_WRONG_KEY}
    assert r1.report["faulty_aggregators"] == {}
    proofs = [
        d.written
        for e in c.coordinator.log
        if isinstance(e.message, Published)
        for d in e.message.unopened
        if d.written
    ]
    assert len(proofs) == 1
    proof = schema.decode(proofs[0], WrittenKeyProof)
    assert (proof.write, proof.slot) == (first_write["w"], "aggregator:1")
    assert {(s.write, s.slot) for s in proof.shares} == {(proof.write, proof.slot)}
    # a later job of the same committee over the same providers
    rounds["n"] = 1
    tap_before = len(tap)
    r2 = c.run_job(STAT, DATA)
    assert r2.report["status"] == "done" and r2.report["rejected"] == {}
    assert refusals and len(refusals) == len(trustees) * 5
    seen = _observed(c, tap)
    assert len(tap) > tap_before
    lts = c.trustees.lts
    for svc in c.aggregators:
        yx = svc.recipient.shared_with(lts.X).to_bytes()
        assert not any(yx in b or yx.hex().encode() in b for b in seen), "y_i·X published"
    assert not any(isinstance(e.payload, ReleaseResponse) for e in tap)
    # aggregator 1's parts of the later job: their keys appear nowhere, and nothing
    # disclosed in either job opens them
    st2 = agg1.jobs[r2.report["job"]]
    disclosed = [
        d.key
        for e in c.coordinator.log
        if isinstance(e.message, Published)
        for d in e.message.unopened
    ]
    disclosed += [
        d.key for e in c.coordinator.log if isinstance(e.message, Reveal) for d in e.message.keys
    ]
    for s, key in st2.work.keys.items():
        assert not any(key in b or key.hex().encode() in b for b in seen)
        m = st2.ctx.submissions[s]
        for k in disclosed:
            with pytest.raises(Exception):  # noqa: B017 — any failure to open
                open_part(st2.ctx.flp, m.manifest, 1, k, m.meas_parts[1], m.proof_parts[1])
    c.close()


# ----------------------------------------------------------------------------- t + coordinator


def _adversary_view(flp: Any, v: np.ndarray, leak: bool) -> dict[str, np.ndarray]:
    """What the coordinator (every round message) and aggregator 0 (its key and opened
    shares) see of one honest provider's submission of ``v``, as field-element features:
    aggregator 0's shares, every public z, the opened verifier, and what reconstruction
    from the shares it holds gives (degree k − 1 through its k share vectors). ``leak``:
    the adversary also holds honest aggregator 1's shares (the control: t + 1 shares)."""
    from kaires_fl.arith import sharing
    from kaires_fl.arith.poly import lagrange_coefficients

    F, n, t = flp.field, 4, 1
    aggs = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(n)]
    parts = seal_parts(flp, flp.valid.encode(v), job="job", provider="p", circuit="c", n=n, t=t)
    sub = sign_manifest(Identity.generate(), parts, job="job", provider="p", circuit="c", write="w")
    ctx = JobContext(
        job="job",
        chain="chain",
        flp=flp,
        circuit="c",
        n=n,
        t=t,
        aggregators=tuple(a.public.hex() for a in aggs),
        consumer_key=EnvelopeKeyPair.generate().public,
        providers=("p",),
        min_providers=1,
        submissions=(sub,),
    )
    coin = Coin(np.random.default_rng().bytes(32))
    jobs = [AggregatorJob(ctx, i, aggs[i]) for i in range(n)]
    for i, j in enumerate(jobs):
        j.open_parts({0: parts.keys[i]})
    pubs = [j.publish(coin) for j in jobs]
    verifier = sharing.reconstruct(F, {i: p.verifier.array(F) for i, p in enumerate(pubs)}, t)
    held = [0, 1] if leak else [0]
    meas = np.stack([jobs[i].shares[0].meas for i in held])
    lam = lagrange_coefficients(F, F.elements([i + 1 for i in held]), F.elements(0))
    return {
        "meas share": jobs[0].shares[0].meas.ravel(),
        "proof share": jobs[0].shares[0].proof.ravel(),
        "z": np.concatenate([p.z.array(F) for p in pubs]),
        "verifier": verifier.ravel(),
        "reconstruction": F.sum(F.mul(lam.reshape(-1, 1, 1), meas), axis=0).ravel(),
    }


def _view_differs(flp: Any, a: np.ndarray, b: np.ndarray, leak: bool, trials: int) -> list[str]:
    """Features whose distribution differs between the two measurements (two-sample
    chi-square per coordinate over 8 buckets of the field, Bonferroni at 10^-4)."""
    from scipy.stats import chi2_contingency

    p = int(flp.field.MODULUS)
    va = [_adversary_view(flp, a, leak) for _ in range(trials)]
    vb = [_adversary_view(flp, b, leak) for _ in range(trials)]
    coords = sum(x.size for x in va[0].values())
    out = []
    for name in va[0]:
        A = np.stack([x[name] for x in va]).astype(object)
        B = np.stack([x[name] for x in vb]).astype(object)
        for k in range(A.shape[1]):
            ba = np.array([int(x) * 8 // p for x in A[:, k]])
            bb = np.array([int(x) * 8 // p for x in B[:, k]])
            if len(set(A[:, k])) == 1 and len(set(B[:, k])) == 1:
                if A[0, k] != B[0, k]:
                    out.append(f"{name}[{k}] constant, differs")
                continue
            table = np.array([np.bincount(ba, minlength=8), np.bincount(bb, minlength=8)])
            table = table[:, table.sum(axis=0) > 0]
            if table.shape[1] < 2:
                continue
            if chi2_contingency(table).pvalue < 1e-4 / coords:
                out.append(f"{name}[{k}]")
    return out


def test_t_aggregators_and_the_coordinator_learn_nothing_of_an_honest_measurement() -> None:
    """Privacy (t aggregators + coordinator): the coordinator's full log (every z, every
    verifier share, hence the opened verifier) and aggregator 0's state (its released key,
    its opened shares) for an honest provider measuring (0, 0, 0) or (15, 15, 15) are
    identically distributed: every feature the adversary can compute — its shares, the z
    values, the opened verifier, reconstruction from the shares it holds — passes a
    two-sample chi-square test between the two. The control, the same adversary also
    holding one honest aggregator's shares (t + 1), is told apart at once."""
    flp = FlpBBCGGI19(SumVec(3, 4))
    a, b = np.zeros((1, 3), int), np.full((1, 3), 15)
    assert _view_differs(flp, a, b, leak=False, trials=250) == []
    leaked = _view_differs(flp, a, b, leak=True, trials=20)
    assert leaked and all(x.startswith("reconstruction") for x in leaked)


# ----------------------------------------------------------------------------- min_providers


def _owned_providers(c: LocalCommittee, owner: Identity, labels: list[str]) -> None:
    """Policies ``labels`` all owned by ``owner`` (granting the committee's consumer)."""
    from kaires_fl.roles.provider import Provider

    txs = []
    for lb in labels:
        p = Provider(lb, owner)
        c.providers[lb] = p
        payload = p.policy_payload(
            [c.consumer.public],
            min_providers=c.min_providers,
            max_jobs=c.max_jobs,
            committees=[c.committee_id],
        )
        txs.append(c.client.sign(owner, "darc.create", payload))
    c._commit(txs)


@pytest.mark.parametrize("owner", ["consumer", "colluder"])
def test_min_providers_counts_owners_other_than_the_signers_at_decision(owner: str) -> None:
    """Privacy (finding 13, at the aggregators): the victim's policy asks for
    ``min_providers`` distinct providers. The consumer names the victim, an honest provider
    and two policies of one key — its own (min 2), or one colluder's (min 3) — so the
    ledger, counting distinct owners other than the job's signers, allows the job. As the
    coordinator it then drops the honest provider's submission and closes the inputs with
    the victim and the two policies of one key. Counting accepted *policies*, the
    aggregators released the sum: the consumer subtracted what it (or its colluder) sent
    and read the victim's data alone. They now count distinct owners other than the
    job's signers, as the ledger does: the job fails, nothing is released."""
    need = 2 if owner == "consumer" else 3
    c = LocalCommittee(min_providers=need)
    key = c.consumer.identity if owner == "consumer" else Identity.from_seed(b"colluder" * 4)
    _owned_providers(c, key, ["x1", "x2"])
    honest = c.provider("h").policy_id
    real_admit = c.coordinator.admit

    def drop_honest(job: Any, subs: Any) -> Any:
        ok, dropped = real_admit(job, subs)
        return [s for s in ok if s.manifest.provider != honest], dropped

    c.coordinator.admit = drop_honest  # type: ignore[method-assign]
    data = {k: DATA[f"p{i}"] for i, k in enumerate(["v", "h", "x1", "x2"])}
    r = c.run_job(STAT, data)
    assert sorted(r.report["accepted"]) == ["v", "x1", "x2"]
    assert r.report["status"] == "failed" and "distinct provider" in r.report["why"]
    assert r.aggregate is None
    assert not any(isinstance(e.message, SealedShare) for e in c.coordinator.log)
    c.close()


def test_min_providers_counts_policies_of_others_normally() -> None:
    """Fairness: the owner count does not refuse honest jobs — two policies of one
    provider key next to another provider's, none owned by the consumer, give a result."""
    c = LocalCommittee(min_providers=2)
    _owned_providers(c, Identity.from_seed(b"two-policies" * 2 + b"12345678"), ["x1", "x2"])
    data = {k: DATA[f"p{i}"] for i, k in enumerate(["v", "x1", "x2"])}
    r = c.run_job(STAT, data)
    assert r.report["status"] == "done" and sorted(r.report["accepted"]) == ["v", "x1", "x2"]
    c.close()


# ----------------------------------------------------------------------------- one spelling


def test_share_hash_and_signature_hex_have_one_spelling_on_the_wire() -> None:
    """Robustness (canonical messages): msgspec matches patterns with ``re.search``, where
    ``$`` also matches before a final newline, so "<64 hex>\\n" passed as a ResultShare's
    share hash and "<128 hex>\\n" as a receipt signature — a second spelling of one value
    past every check that compares strings. Both now decode to an EncodingError."""
    from kaires_fl.aggregation.aggregator import ResultShare
    from kaires_fl.errors import EncodingError

    h, sig, k = "ab" * 32, "cd" * 64, "ef" * 32
    good = ResultShare("job", 0, b"{}", h)
    assert schema.decode(schema.encode(good), ResultShare) == good
    assert schema.decode(schema.encode(ResultShare("job", 0, b"{}", "")), ResultShare)
    rs = ReceiptSignature("job", 0, k, sig)
    assert schema.decode(schema.encode(rs), ReceiptSignature) == rs
    for bad, typ in (
        (ResultShare("job", 0, b"{}", h + "\n"), ResultShare),
        (ResultShare("job", 0, b"{}", "\n"), ResultShare),
        (ReceiptSignature("job", 0, k, sig + "\n"), ReceiptSignature),
    ):
        with pytest.raises(EncodingError):
            schema.decode(schema.encode(bad), typ)


# ----------------------------------------------------------------------------- one LTS


def test_a_write_under_the_providers_own_lts_is_dropped_and_the_job_completes() -> None:
    """Robustness against a provider: provider p2 registers an LTS of its own (n = 1, it is
    the only trustee) and writes its job keys under it. The ledger takes a job's inputs
    under one LTS only, so inputs holding that write were refused and the job stalled at
    closing. The coordinator now drops such a submission at admission, with the reason,
    and the job completes for the other providers."""
    from kaires_fl.crypto.group import Point, Scalar
    from kaires_fl.secret_management.contracts import LTS_KIND

    c = LocalCommittee()
    mallory = c.provider("p2")
    X_own = Point.base() * Scalar.random_nonzero()
    own = {
        "n": 1,
        "t": 0,
        "X": X_own.to_bytes().hex(),
        "shares": [X_own.to_bytes().hex()],
        "trustees": [mallory.public],
        "transcript": "00" * 32,
    }
    own_tx = c.client.sign(mallory.identity, LTS_KIND, own)
    c._commit([own_tx])
    own_id = own_tx.id
    assert c.client.get(f"calypso/lts/{own_id}") is not None
    real_submit = mallory.submit

    def submit_under_own_lts(client: Any, job: Any, stat: Any, meas: Any, lts_id: str) -> Any:
        return real_submit(client, job, stat, meas, own_id)

    mallory.submit = submit_under_own_lts  # type: ignore[method-assign]
    r = c.run_job(STAT, DATA)
    assert r.report["status"] == "done"
    assert "p2" not in r.report["accepted"] and "under LTS" in r.report["rejected"]["p2"]
    others = sorted(k for k in DATA if k != "p2")
    np.testing.assert_allclose(np.array(r.aggregate["xtx"], float), _sums(others), atol=1e-8)
    # A consumer closing the inputs with that write alone (one LTS: the ledger takes it):
    # every aggregator refuses the StartJob, saying why, and signs no read.
    real_admit = c.coordinator.admit

    def admit_only_mallory(job: Any, subs: Any) -> Any:
        real_admit(job, subs)
        return [s for s in subs if s.manifest.provider == mallory.policy_id], {}

    c.coordinator.admit = admit_only_mallory  # type: ignore[method-assign]
    seen = len(c.coordinator.log)
    with pytest.raises(ProtocolError, match="not this committee's"):
        c.run_job(STAT, DATA)
    assert not any(
        isinstance(e.message, job_mod.ReadSigned) and e.message.tx is not None
        for e in c.coordinator.log[seen:]
        if e.direction == "in"
    )
    c.close()


# ----------------------------------------------------------------------------- slow rounds


def test_aggregators_slower_than_the_round_timeout_are_waited_for() -> None:
    """Robustness (liveness on a real network): every aggregator's answers reach the
    coordinator 3 s after they are sent, longer than the 2 s round timeout (tuned for the
    simulated clock) — as when verifying a 200k-row job on a real network. Before, each
    round went on with whatever had come: none, then "expected 0" answers in every later
    round, and the job ended in "no aggregator produced a result; failures: {}". A round
    now waits (up to ``quorum_timeout``) for the n − t answers it cannot go on without,
    and the job completes; when they cannot come, the error names the round."""
    from kaires_fl.transport.memory import LinkFaults

    c = LocalCommittee()
    for a in c.coordinator.aggregators:
        c.network.set_faults(LinkFaults(delay=(3.0, 3.0)), src=a, dst="coordinator")
    r = c.run_job(STAT, DATA)
    assert r.report["status"] == "done" and r.report["faulty_aggregators"] == {}
    np.testing.assert_allclose(np.array(r.aggregate["xtx"], float), _sums(sorted(DATA)), atol=1e-8)
    # Slower than quorum_timeout: the job fails at the first round, saying which and why.
    c.coordinator.quorum_timeout = 2.5
    with pytest.raises(ProtocolError, match=r"with a signed read.*raise quorum_timeout"):
        c.run_job(STAT, DATA)
    c.close()


def test_lost_round_answers_are_asked_for_again_and_answered_from_the_cache() -> None:
    """Robustness (liveness): every aggregator's round-1 message and result are lost once
    on the way to the coordinator (a dropped connection, a restarted node the answer was
    to go back through). Before, the rounds went on with none and the job ended in "no
    aggregator produced a result; failures: {}". The coordinator now asks again — the same
    signed ReadCommitted / RevealSet, which an aggregator answers from its cache without
    handling it twice — and the job completes with nobody blamed."""
    c = LocalCommittee()
    lost: dict[tuple[str, type], int] = {}

    def lose_first(env: Any) -> bool:
        if env.dst != "coordinator" or not isinstance(env.payload, Published | job_mod.ResultShare):
            return True
        k = (env.src, type(env.payload))
        lost[k] = lost.get(k, 0) + 1
        return lost[k] > 1

    c.network.add_filter(lose_first)
    r = c.run_job(STAT, DATA)
    assert r.report["status"] == "done" and r.report["faulty_aggregators"] == {}
    np.testing.assert_allclose(np.array(r.aggregate["xtx"], float), _sums(sorted(DATA)), atol=1e-8)
    assert set(lost.values()) == {2}, "each answer was lost once and sent once more"
    assert all(svc.errors == [] for svc in c.aggregators), "a repeated request was re-handled"
    c.close()


def test_a_withheld_signed_read_does_not_jam_the_aggregator_in_later_jobs() -> None:
    """Robustness (servers): the coordinator withholds aggregator 0's signed calypso.read in
    one job (a counter it reserved is then never used). That job completes without it (≤ t
    faulty); in the next job, with an honest coordinator, aggregator 0's next read commits —
    a skipped counter does not block its signer — and no aggregator is faulty."""
    c = LocalCommittee()
    real_submit, real_wait = c.client.submit_many, c.client.wait
    mine = c.aggregator_ids[0].public.hex()
    withheld: set[str] = set()

    def submit_many(txs: Any, *a: Any, **k: Any) -> Any:
        withheld.update(tx.id for tx in txs if tx.sender == mine and tx.kind == "calypso.read")
        return real_submit([tx for tx in txs if tx.id not in withheld], *a, **k)

    def wait(ids: Any, *a: Any, **k: Any) -> Any:
        return real_wait([i for i in ids if i not in withheld], *a, **k)

    c.client.submit_many = submit_many  # type: ignore[method-assign]
    c.client.wait = wait  # type: ignore[method-assign]
    first = c.run_job(STAT, DATA)
    assert first.report["status"] == "done"
    assert 0 in first.report["faulty_aggregators"]
    assert withheld, "the attack withheld nothing"
    c.client.submit_many, c.client.wait = real_submit, real_wait  # type: ignore[method-assign]
    second = c.run_job(STAT, DATA)
    assert second.report["status"] == "done"
    assert second.report["faulty_aggregators"] == {}
    c.close()
