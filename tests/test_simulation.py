"""The whole Kaires flow on LocalCommittee: results, faults, access, payments, privacy."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from kaires_fl.aggregation.job import SealedShare
from kaires_fl.errors import AccessDenied, ConfigError, LedgerError, ProtocolError
from kaires_fl.ledger.consensus import TxGossip
from kaires_fl.ledger.jobs import receipt_key
from kaires_fl.secret_management.coin import CoinShare
from kaires_fl.secret_management.release import ReleaseResponse
from kaires_fl.simulation import LocalCommittee
from kaires_fl.statistics import LinearRegressionStats

D = 2
STAT = LinearRegressionStats(
    D, [-1, 1], [-1, 1], granularity="provider", max_rows=100, max_measurements=32
)


def _data(n: int = 6, rows: int = 20, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {f"p{i}": (rng.uniform(-1, 1, (rows, D)), rng.uniform(-1, 1, rows)) for i in range(n)}


DATA = _data()


def _plain(labels: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    X = np.concatenate([DATA[k][0] for k in labels])
    y = np.concatenate([DATA[k][1] for k in labels])
    return X.T @ X, X.T @ y, len(y)


def _check_sums(agg: dict, labels: list[str]) -> None:
    xtx, xty, n = _plain(labels)
    assert agg["n"] == n
    np.testing.assert_allclose(np.array(agg["xtx"], dtype=float), xtx, atol=1e-8)
    np.testing.assert_allclose(np.array(agg["xty"], dtype=float), xty, atol=1e-8)


@pytest.fixture(scope="module")
def committee() -> LocalCommittee:
    c = LocalCommittee()
    yield c
    c.close()


@pytest.fixture(scope="module")
def happy(committee: LocalCommittee):
    return committee.run_job(STAT, DATA)


def test_happy_path_equals_numpy_and_the_chain_verifies(committee, happy) -> None:
    _check_sums(happy.aggregate, sorted(DATA))
    rep = happy.report
    assert rep["accepted"] == sorted(DATA) and rep["rejected"] == {}
    assert rep["faulty_aggregators"] == {} and rep["status"] == "done"
    assert set(rep["timings"]) >= {"seal", "write", "release_and_verify", "receipt", "result"}
    assert committee.ledger.verify() >= rep["receipt_height"]
    # A second job on the same committee reuses the set-up and gives the same sums.
    again = committee.run_job(STAT, DATA)
    _check_sums(again.aggregate, sorted(DATA))
    assert again.report["job"] != rep["job"]


def test_receipt_is_on_the_ledger_before_any_share_reaches_the_consumer(committee, happy) -> None:
    log = committee.coordinator.log
    rec = committee.client.get(receipt_key(happy.report["job"]))
    assert rec is not None and rec["receipt"]["status"] == "done"
    assert happy.report["receipt_height"] > happy.report["job_height"]
    job = happy.report["job"]
    receipt_at = max(
        k
        for k, e in enumerate(log)
        if e.direction == "relay-tx"
        and e.message.kind == "job.receipt"
        and e.message.payload["job"] == job
    )
    shares_at = [
        k for k, e in enumerate(log) if isinstance(e.message, SealedShare) and e.message.job == job
    ]
    assert shares_at and min(shares_at) > receipt_at
    # every delivered share is the one the committed receipt names
    named = set(rec["receipt"]["shares"].values())
    assert len(named) == committee.n_aggregators


def test_coordinator_view_holds_no_provider_plaintext(committee, happy) -> None:
    record = LinearRegressionStats(D, [-1, 1], [-1, 1], granularity="record", max_measurements=500)
    committee.run_job(record, DATA)
    seen = b"".join(pickle.dumps(e.message) for e in committee.coordinator.log)
    for X, y in DATA.values():
        assert X.tobytes()[:64] not in seen and y.tobytes()[:64] not in seen
        assert STAT.local_moments(X, y).tobytes()[:64] not in seen
        assert STAT.field.encode(STAT.measurements(X, y)) not in seen
        enc = record.field.encode(record.measurements(X, y))
        for row in range(0, len(enc), 8 * record.meas_len):
            assert enc[row : row + 8 * record.meas_len] not in seen
    assert len(committee.coordinator.log) > 20  # the log really holds the traffic


def test_byzantine_aggregator_result_identical_and_named(happy) -> None:
    c = LocalCommittee(faults={"aggregator": {2: "byzantine"}})
    r = c.run_job(STAT, DATA)
    assert np.array_equal(r.raw_aggregate, happy.raw_aggregate)
    assert list(r.report["faulty_aggregators"]) == [2]
    assert r.report["accepted"] == sorted(DATA)
    c.close()


def test_crashed_aggregator_result_identical_and_named(happy) -> None:
    c = LocalCommittee(faults={"aggregator": {1: "crash"}})
    r = c.run_job(STAT, DATA)
    assert np.array_equal(r.raw_aggregate, happy.raw_aggregate)
    assert list(r.report["faulty_aggregators"]) == [1]
    c.close()


def test_faulty_ledger_node_and_trustee_change_nothing(happy) -> None:
    c = LocalCommittee(faults={"ledger": {3: "crash"}, "trustee": {0: "byzantine"}})
    r = c.run_job(STAT, DATA)
    assert (
        np.array_equal(r.raw_aggregate, happy.raw_aggregate)
        and r.report["faulty_aggregators"] == {}
    )
    assert c.ledger.verify() >= r.report["receipt_height"]
    assert list(r.report["faulty_trustees"]) == [0]
    c.close()


def test_each_provider_fault_is_rejected_and_the_rest_aggregated() -> None:
    faults = {"provider": {0: "out_of_range", 2: "inconsistent_shares", 4: "bad_proof"}}
    c = LocalCommittee(faults=faults)
    r = c.run_job(STAT, DATA)
    assert r.report["rejected"] == {
        "p0": "invalid_measurement",
        "p2": "inconsistent_shares",
        "p4": "invalid_proof",
    }
    assert r.report["faulty_aggregators"] == {}, "an honest aggregator was blamed"
    _check_sums(r.aggregate, ["p1", "p3", "p5"])
    c.close()


def test_parties_on_threads_give_the_sequential_result() -> None:
    # Providers seal, aggregators and trustees handle messages on `workers` threads:
    # rejections, blame, sums and the ledger are those of one thread, and a provider's
    # encoding error is raised as sequentially.
    faults = {
        "provider": {1: "bad_proof", 3: "inconsistent_shares"},
        "aggregator": {2: "byzantine"},
    }
    wild = {**DATA, "p4": (DATA["p4"][0] * 10, DATA["p4"][1])}
    heights = []
    for workers in (1, 3):
        c = LocalCommittee(faults=faults, workers=workers)
        r = c.run_job(STAT, DATA)
        assert r.report["rejected"] == {"p1": "invalid_proof", "p3": "inconsistent_shares"}
        assert list(r.report["faulty_aggregators"]) == [2]
        _check_sums(r.aggregate, ["p0", "p2", "p4", "p5"])
        with pytest.raises(ConfigError, match="bounds"):
            c.run_job(STAT, wild)
        heights.append(c.client.height)
        c.ledger.verify()
        c.close()
    assert heights[0] == heights[1]
    with pytest.raises(ConfigError, match="workers"):
        LocalCommittee(workers=0)


def test_inconsistent_shares_with_byzantine_aggregator_blame_only_the_guilty() -> None:
    # the inconsistent share goes to the last aggregator (honest here)
    c = LocalCommittee(
        faults={"provider": {1: "inconsistent_shares"}, "aggregator": {0: "byzantine"}}
    )
    r = c.run_job(STAT, DATA)
    assert r.report["rejected"] == {"p1": "inconsistent_shares"}
    assert list(r.report["faulty_aggregators"]) == [0]
    _check_sums(r.aggregate, [k for k in sorted(DATA) if k != "p1"])
    c.close()


def test_no_grant_is_denied_and_nothing_is_released(committee) -> None:
    released: list[object] = []

    def spy(env) -> bool:
        if isinstance(env.payload, ReleaseResponse | CoinShare | SealedShare):
            released.append(env.payload)
        return True

    remove = committee.network.add_filter(spy)
    eve = committee.new_consumer("eve", balance=1000)
    try:
        with pytest.raises(AccessDenied, match="use"):
            committee.run_job(STAT, DATA, consumer=eve)
    finally:
        remove()
    assert released == []
    state = committee.client.ledger.best_node().state
    jobs = [state.get(k) for k in state.keys("job/")]
    assert jobs and all(j["consumer"] != eve.public for j in jobs)


def test_revoked_provider_is_excluded_from_later_jobs() -> None:
    c = LocalCommittee()
    first = c.run_job(STAT, DATA)
    assert "p3" in first.report["accepted"]
    c.revoke("p3")
    later = c.run_job(STAT, DATA)
    assert "p3" not in later.report["accepted"] and "p3" in later.report["excluded"]
    assert "does not allow this consumer" in later.report["excluded"]["p3"]
    _check_sums(later.aggregate, [k for k in sorted(DATA) if k != "p3"])
    c.close()


def test_payments_follow_the_receipt() -> None:
    c = LocalCommittee(price=7, faults={"provider": {1: "bad_proof"}})
    provs = c.ensure_providers(sorted(DATA))
    before = c.balance(c.consumer)
    paid_before = {p.label: c.balance(p.public) for p in provs}
    r = c.run_job(STAT, DATA)
    assert r.report["rejected"] == {"p1": "invalid_proof"}
    assert c.balance(c.consumer) == before - 7 * 5
    for p in provs:
        gain = c.balance(p.public) - paid_before[p.label]
        assert gain == (0 if p.label == "p1" else 7)
    # a consumer without the balance cannot commit the job
    poor = c.new_consumer("poor", balance=10)
    for lb in DATA:
        c.set_policy(lb, [c.consumer, poor])
    with pytest.raises(LedgerError, match="balance"):
        c.run_job(STAT, DATA, consumer=poor)
    c.close()


def test_below_min_providers_nothing_is_released_and_all_refunded() -> None:
    faults = {"provider": {0: "bad_proof", 1: "out_of_range"}}
    c = LocalCommittee(price=3, min_providers=5, faults=faults)
    before = c.balance(c.consumer)
    r = c.run_job(STAT, DATA)
    assert r.aggregate is None and r.report["status"] == "failed"
    assert "at least 5" in r.report["why"]
    assert c.balance(c.consumer) == before
    assert not any(isinstance(e.message, SealedShare) for e in c.coordinator.log)
    c.close()


def test_receipt_that_never_commits_releases_nothing() -> None:
    c = LocalCommittee()
    c.network.add_filter(
        lambda env: (
            not (
                isinstance(env.payload, TxGossip)
                and any(getattr(tx, "kind", "") == "job.receipt" for tx in env.payload.txs)
            )
        )
    )
    with pytest.raises(ProtocolError, match="not committed"):
        c.run_job(STAT, DATA)
    assert not any(isinstance(e.message, SealedShare) for e in c.coordinator.log)
    c.close()


def test_bad_configurations_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="3t"):
        LocalCommittee(n_aggregators=3, threshold=1)
    with pytest.raises(ConfigError, match="exceed"):
        LocalCommittee(faults={"aggregator": {0: "crash", 1: "byzantine"}})
    with pytest.raises(ConfigError, match="behaviour"):
        LocalCommittee(faults={"provider": {0: "lazy"}})
    with pytest.raises(ConfigError, match="role"):
        LocalCommittee(faults={"oracle": {0: "crash"}})


def test_data_outside_the_bounds_fail_before_anything_is_committed(committee) -> None:
    height = committee.client.height
    balance = committee.balance(committee.consumer)
    wild = {**DATA, "p0": (DATA["p0"][0] * 10, DATA["p0"][1])}
    with pytest.raises(ConfigError, match="bounds"):
        committee.run_job(STAT, wild)
    assert committee.client.height == height and committee.balance(committee.consumer) == balance


def test_more_faulty_aggregators_than_tolerated_release_nothing() -> None:
    c = LocalCommittee(faults={"aggregator": {0: "byzantine"}})
    c.aggregators[1].behaviour = "byzantine"  # a second one, beyond t = 1
    with pytest.raises(ProtocolError, match="faulty"):
        c.run_job(STAT, DATA)
    assert not any(isinstance(e.message, SealedShare) for e in c.coordinator.log)
    c.close()


def test_submission_not_matching_its_manifest_is_dropped_before_the_inputs_close() -> None:
    c = LocalCommittee()
    victim = c.provider("p2")
    honest_submit = victim.submit

    def tampering_submit(*args, **kwargs):
        tx, sub = honest_submit(*args, **kwargs)
        parts = list(sub.proof_parts)
        parts[1] = parts[1][:-1] + bytes([parts[1][-1] ^ 1])
        return tx, type(sub)(sub.manifest, sub.signature, sub.meas_parts, tuple(parts))

    victim.submit = tampering_submit  # type: ignore[method-assign]
    r = c.run_job(STAT, DATA)
    assert "does not match its signed manifest" in r.report["rejected"]["p2"]
    assert r.report["faulty_aggregators"] == {}
    _check_sums(r.aggregate, [k for k in sorted(DATA) if k != "p2"])
    c.close()


def test_descriptive_statistics_through_the_whole_flow(committee) -> None:
    from kaires_fl.statistics import CountStats, HistogramStats, MeanVarianceStats

    X = np.concatenate([DATA[k][0] for k in sorted(DATA)])
    edges = [-1, -0.5, 0, 0.5, 1]
    count = committee.run_job(CountStats(max_measurements=1000), DATA).aggregate
    assert count["count"] == len(X)
    hist = committee.run_job(HistogramStats(edges, max_measurements=1000), DATA).aggregate
    assert hist["counts"].tolist() == np.histogram(X[:, 0], edges)[0].tolist()
    mv = MeanVarianceStats(D, [-1, 1], granularity="provider", max_rows=100, max_measurements=10)
    got = committee.run_job(mv, DATA).aggregate
    np.testing.assert_allclose(got["mean"], X.mean(axis=0), atol=1e-8)
    np.testing.assert_allclose(got["var"], X.var(axis=0), atol=1e-8)


def test_provider_writing_another_key_than_committed_is_rejected_not_the_aggregator() -> None:
    import secrets

    from kaires_fl.aggregation import submission
    from kaires_fl.roles import provider as provider_mod

    c = LocalCommittee()
    cheat = c.provider("p4")
    real_seal = submission.seal_parts

    def seal_with_a_wrong_key(*args, **kwargs):
        keys = list(kwargs["keys"])
        keys[1] = secrets.token_bytes(32)  # committed and used, but not the one written
        return real_seal(*args, **{**kwargs, "keys": keys})

    honest_submit = cheat.submit

    def cheating_submit(*args, **kwargs):
        provider_mod.seal_parts = seal_with_a_wrong_key
        try:
            return honest_submit(*args, **kwargs)
        finally:
            provider_mod.seal_parts = real_seal

    cheat.submit = cheating_submit  # type: ignore[method-assign]
    r = c.run_job(STAT, DATA)
    assert r.report["rejected"] == {"p4": "wrong_key_written"}
    assert r.report["faulty_aggregators"] == {}, "the honest aggregator 1 was blamed"
    _check_sums(r.aggregate, [k for k in sorted(DATA) if k != "p4"])
    # The proof is what protects aggregator 1: forged or partial proofs prove nothing.
    # It is a single-slot WrittenKeyProof (no y_i·X, no batched answers in it).
    import msgspec

    from kaires_fl import schema
    from kaires_fl.secret_management.dispute import WrittenKeyProof

    work = c.aggregators[1].jobs[r.report["job"]].work
    ((s, blob),) = work.written_proofs.items()
    written_key = work.ctx.written_key
    assert written_key(s, 1, blob) == work.unopened[s]
    kp = schema.decode(blob, WrittenKeyProof)
    short = msgspec.structs.replace(kp, shares=kp.shares[:1])
    assert written_key(s, 1, schema.encode(short)) is None
    assert written_key(s, 2, blob) is None
    c.close()


def test_committee_is_registered_named_and_the_allow_list_admits_its_parties() -> None:
    """Privacy (interface C, finding 13): LocalCommittee registers its aggregation committee
    at set-up and names it in its policies; the committed job carries the registry's
    members, keys, degree and quorum (2t + 1), not numbers the consumer chose. With the
    allow-list on, the committee admits its own parties and a consumer the roster did not
    admit is refused even with a grant and a balance."""
    c = LocalCommittee(registration=True)
    try:
        small = {k: DATA[k] for k in ("p0", "p1", "p2")}
        r = c.run_job(STAT, small)
        _check_sums(r.aggregate, sorted(small))
        job = c.client.get(f"job/{r.report['job']}")
        assert job["committee"] == c.committee_id and job["threshold"] == 2 * c.threshold + 1
        assert job["aggregators"] == [a.public.hex() for a in c.aggregator_ids]
        assert job["params"]["aggregator_keys"] == [k.public.hex() for k in c.aggregator_keys]
        assert job["params"]["degree"] == c.threshold
        terms = c.client.get(f"darc/{c.provider('p0').policy_id}")["terms"]
        assert terms["committees"] == [c.committee_id]
        assert terms["min_providers"] >= 2 and terms["max_jobs"] is not None
        mallory = c.new_consumer("mallory", balance=1000, admit=False)
        for lb in small:
            c.set_policy(lb, [c.consumer, mallory])
        with pytest.raises(AccessDenied, match="allow-list"):
            c.run_job(STAT, small, consumer=mallory)
    finally:
        c.close()


def test_long_running_services_keep_bounded_per_job_state(monkeypatch) -> None:
    """Robustness (deployed nodes, soak): an aggregator keeps the state of its last KEEP_JOBS
    jobs and the coordinator's log the messages of its last LOG_JOBS jobs, so memory does
    not grow with the number of jobs served; jobs keep working after older state is dropped."""
    from kaires_fl.aggregation import job as job_mod

    monkeypatch.setattr(job_mod, "KEEP_JOBS", 2)
    monkeypatch.setattr(job_mod, "LOG_JOBS", 2)
    c = LocalCommittee()
    jobs = [c.run_job(STAT, DATA).report["job"] for _ in range(4)]
    for svc in c.aggregators:
        assert list(svc.jobs) == jobs[-2:]
    logged = {getattr(e.message, "job", None) for e in c.coordinator.log}
    assert jobs[-1] in logged and jobs[-2] in logged
    assert jobs[0] not in logged and jobs[1] not in logged
    c.close()
