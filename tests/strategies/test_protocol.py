"""KairesFedAvg / KairesStatsStrategy / kaires_mod through a real ClientApp and committee.

The ClientApp runs in-process on :class:`flower_harness.LocalGrid` (messages
serialised as over the wire); the Ray-backed ``run_simulation`` runs are in
``test_flower_simulation.py``.
"""

from __future__ import annotations

import dataclasses

import flower_apps as apps
import numpy as np
import pytest
from flower_harness import LocalGrid
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from kaires_fl.strategies import KairesFedAvg, KairesStatsStrategy, ProviderPolicy, wire
from kaires_fl.strategies.fedavg import KairesFlowerBase
from sklearn.linear_model import LinearRegression, Ridge

from kaires_fl.errors import LedgerError
from kaires_fl.simulation import LocalCommittee
from kaires_fl.statistics import LinearRegressionStats

N = apps.NUM_NODES


def _fedavg(committee: LocalCommittee, **kw) -> KairesFedAvg:
    return apps.fedavg(N, committee, **kw)


def _run(strategy: KairesFedAvg, grid: LocalGrid, rounds: int) -> list[np.ndarray]:
    res = strategy.start(
        grid=grid, initial_arrays=ArrayRecord(apps.task.initial_arrays()), num_rounds=rounds
    )
    return res.arrays.to_numpy_ndarrays()


@pytest.fixture(scope="module")
def faulty_runs() -> dict:
    """Two rounds with provider 0 sending an over-norm update: honest committee, and a
    committee with one Byzantine aggregator."""
    out = {}
    for name, faults in (("honest", None), ("byzantine", {"aggregator": {2: "byzantine"}})):
        committee = LocalCommittee(faults=faults)
        grid = LocalGrid(apps.make_client_app(faults={0: "over_norm"}), N)
        s = _fedavg(committee)
        out[name] = (s, grid, _run(s, grid, 2))
    return out


def test_over_norm_client_rejected_every_round_others_aggregated(faulty_runs: dict) -> None:
    s, _, final = faulty_runs["honest"]
    for r in (1, 2):
        res = s.kaires_rounds[r]["result"]
        assert set(res.rejected) == {apps.policy_id(0)}
        assert len(res.accepted) == N - 1 and res.status == "done"
    # The result is FedAvg over the nine honest clients (fixed point: step C·2^-f).
    arrays = apps.task.initial_arrays()
    for _ in range(2):
        arrays = apps.plain_fedavg(arrays, list(range(1, N)))
    for a, b in zip(final, arrays, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_byzantine_aggregator_changes_nothing(faulty_runs: dict) -> None:
    honest = faulty_runs["honest"][2]
    s, _, byz = faulty_runs["byzantine"]
    for a, b in zip(honest, byz, strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(2 in s.kaires_rounds[r]["result"].faulty_aggregators for r in (1, 2))


def test_server_never_holds_an_individual_update(faulty_runs: dict) -> None:
    _, grid, _ = faulty_runs["honest"]
    replies = [m for m in grid.received if m.metadata.message_type == MessageType.TRAIN]
    assert replies and all(not m.content.array_records for m in replies if m.has_content())
    arrays = apps.task.initial_arrays()  # round 1's global model
    blobs = b"".join(
        b"".join(
            bytes(b)
            for v in rec.values()
            for b in (v if isinstance(v, list) else [v])
            if isinstance(b, bytes)
        )
        for m in replies
        if m.has_content()
        for rec in m.content.config_records.values()
    )
    for p in range(1, N):
        update = apps.plain_update(arrays, p)
        for dtype in (np.float64, np.float32):
            assert update.astype(dtype)[:8].tobytes() not in blobs


def _refusals(strategy: KairesFlowerBase, grid: LocalGrid, rounds: int = 1) -> dict[int, str]:
    _run(strategy, grid, rounds)
    return strategy.kaires_rounds[rounds]["refusals"]


class _Tamper(KairesFedAvg):
    """A coordinator that alters what it sends (one way per ``how``)."""

    def __init__(self, how: str, other: LocalCommittee | None = None, **kw) -> None:
        super().__init__(**kw)
        self.how, self.other = how, other

    def job_messages(self, *a, **kw) -> list[Message]:
        msgs = super().job_messages(*a, **kw)
        for m in msgs:
            cfg = m.content["config"]
            if self.how == "proof-bytes":
                # The job proof's claimed value altered (one field), re-encoded: a well-formed
                # proof of a value the ledger does not hold. (Flipping a byte of the encoded
                # bundle sometimes hit a JSON delimiter of one node's bundle: a malformed
                # proof, refused for another reason — the test was flaky.)
                proofs = wire.decode_proofs(bytes(cfg[wire.PROOFS]))
                job = proofs["job"]
                value = {**job.value, "height": int(job.value["height"]) + 1}
                proofs["job"] = dataclasses.replace(job, value=value)
                cfg[wire.PROOFS] = wire.encode_proofs(proofs)
            elif self.how == "other-job":  # a proof of another (real) job
                cfg[wire.JOB] = "00" * 32
            elif self.how == "other-ledger":
                cfg[wire.GENESIS] = bytes(self.other.ledger.genesis.encode())
            elif self.how == "rogue-committee":
                desc = wire.decode_committee(cfg[wire.COMMITTEE])
                desc["lts"] = self.other.lts_id
                cfg[wire.COMMITTEE] = wire.encode_committee(desc)
            elif self.how == "no-proof":
                del cfg[wire.PROOFS]
        return msgs


@pytest.mark.parametrize(
    "how", ["proof-bytes", "other-job", "other-ledger", "rogue-committee", "no-proof"]
)
def test_job_without_valid_ledger_proof_refused_by_every_client(how: str) -> None:
    other = LocalCommittee(seed=7) if how in ("other-ledger", "rogue-committee") else None
    s = _Tamper(
        how,
        other,
        fraction_evaluate=0.0,
        min_available_nodes=N,
        min_train_nodes=N,
        committee=LocalCommittee(),
        num_examples_cap=apps.NUM_EXAMPLES_CAP,
    )
    grid = LocalGrid(apps.make_client_app(), N)
    refusals = _refusals(s, grid)
    assert set(refusals) == set(grid.contexts)
    assert all("kaires_mod refused" in why for why in refusals.values())
    expected = {
        "proof-bytes": "does not hold the claimed value",
        "other-job": "proof is about",
        "other-ledger": "this provider trusts ledger",
        "rogue-committee": "names an LTS this provider does not trust",
        "no-proof": "without its ledger proofs",
    }[how]
    assert all(expected in why for why in refusals.values()), refusals
    assert s.kaires_rounds[1]["result"].aggregate is None
    assert not any(
        m.content.config_records.get(wire.REPLY) for m in grid.received[N:] if m.has_content()
    )


def test_plain_train_message_refused() -> None:
    grid = LocalGrid(apps.make_client_app(), 2)
    msg = Message(
        content=RecordDict(
            {"arrays": ArrayRecord(apps.task.initial_arrays()), "config": ConfigRecord()}
        ),
        message_type=MessageType.TRAIN,
        dst_node_id=1,
    )
    (reply,) = grid.send_and_receive([msg])
    assert reply.has_error() and "without a Kaires job" in reply.error.reason


def test_policy_not_granting_consumer_sends_nothing_and_says_why() -> None:
    committee = LocalCommittee()
    grants = {"9": [apps.STRANGER]}
    app = apps.make_client_app(policies={9: lambda: ProviderPolicy(grants=grants["9"])})
    grid = LocalGrid(app, N)
    s = _fedavg(committee)
    _run(s, grid, 1)
    info = s.kaires_rounds[1]
    assert apps.policy_id(9) in info["job"]["excluded"]
    (why,) = [
        w for n, w in info["refusals"].items() if grid.contexts[n].node_config["partition-id"] == 9
    ]
    assert "does not allow this consumer" in why
    assert len(info["result"].accepted) == N - 1
    # A provider whose local policy changed after enrolment refuses at once, even though
    # the ledger still has its old grant.
    grants["9"] = []
    app2 = apps.make_client_app(policies={3: lambda: ProviderPolicy(grants=[apps.STRANGER])})
    grid.client_app = app2
    s2 = _fedavg(committee)
    s2.enrolled = dict(s.enrolled)
    _run(s2, grid, 1)
    (why,) = [
        w
        for n, w in s2.kaires_rounds[1]["refusals"].items()
        if grid.contexts[n].node_config["partition-id"] == 3
    ]
    assert "does not grant consumer" in why


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_stats_strategy_linear_regression_equals_sklearn(alpha: float) -> None:
    X, y = apps.diabetes_partition(0, 1)
    stat = LinearRegressionStats(10, [-0.3, 0.3], [0.0, 400.0], max_rows=100)
    s = KairesStatsStrategy(
        stat, alpha=alpha, min_nodes=N, min_available_nodes=N, committee=LocalCommittee()
    )
    out = s.start(LocalGrid(apps.make_client_app(), N))
    ref = (Ridge(alpha=alpha) if alpha else LinearRegression()).fit(X, y)
    np.testing.assert_allclose(out.coef_, ref.coef_, rtol=1e-6, atol=1e-6 * np.abs(ref.coef_).max())
    assert abs(out.intercept_ - ref.intercept_) <= 1e-6 * abs(ref.intercept_)
    assert len(out.report.accepted) == N and out.aggregate["n"] == len(y)
    np.testing.assert_allclose(out.predict(X[:5]), ref.predict(X[:5]), rtol=1e-6)


def test_evaluate_passes_through_and_plain_client_app_cannot_enrol() -> None:
    from flwr.app import Context, MetricRecord
    from flwr.clientapp import ClientApp

    from kaires_fl.errors import ConfigError

    app = apps.make_client_app()

    @app.evaluate()
    def evaluate(msg: Message, ctx: Context) -> Message:
        return Message(RecordDict({"metrics": MetricRecord({"acc": 0.5})}), reply_to=msg)

    grid = LocalGrid(app, 2)
    msg = Message(
        content=RecordDict({"arrays": ArrayRecord(apps.task.initial_arrays())}),
        message_type=MessageType.EVALUATE,
        dst_node_id=1,
    )
    (reply,) = grid.send_and_receive([msg])
    assert not reply.has_error() and reply.content["metrics"]["acc"] == 0.5

    plain = ClientApp()  # no kaires_mod: its handler would answer with plaintext arrays

    @plain.train()
    def train(msg: Message, ctx: Context) -> Message:
        return Message(RecordDict({"arrays": msg.content["arrays"]}), reply_to=msg)

    s = _fedavg(LocalCommittee())
    with pytest.raises(ConfigError, match="kaires_mod"):
        _run(s, LocalGrid(plain, 3), 1)


def test_committee_from_run_config() -> None:
    from kaires_fl.strategies import CommitteeConnection

    from kaires_fl.errors import ConfigError

    conn = CommitteeConnection.from_run_config({"kaires-aggregators": 7, "kaires-threshold": 2})
    assert len(conn.description["aggregators"]) == 7 and conn.description["degree"] == 2
    with pytest.raises(ConfigError, match="not found"):  # a deployed committee's group file
        CommitteeConnection.from_run_config({"kaires-committee": "deploy/group.toml"})
    with pytest.raises(ConfigError):
        CommitteeConnection.from_run_config({"kaires-committee": "remote"})
    with pytest.raises(ConfigError):
        CommitteeConnection.from_run_config({"kaires-threshold": "one"})
    assert CommitteeConnection.from_run_config({}).committee.workers == 1
    assert CommitteeConnection.from_run_config({"kaires-workers": 2}).committee.workers == 2
    with pytest.raises(ConfigError, match="workers"):
        CommitteeConnection.from_run_config({"kaires-workers": 0})


def test_committee_on_two_threads_gives_the_bit_identical_model() -> None:
    """LocalCommittee(workers=2): aggregators and trustees side by side, the same round."""
    from kaires_fl.errors import KairesWarning

    models, accepted = [], []
    for workers in (1, 2):
        s = _fedavg(LocalCommittee(workers=workers))
        with pytest.warns(KairesWarning, match="1 provider"):
            grid = LocalGrid(apps.make_client_app(faults={1: "over_norm"}), N)
            models.append(_run(s, grid, 1))
        res = s.kaires_rounds[1]["result"]
        accepted.append((sorted(res.accepted), sorted(res.rejected)))
    assert accepted[0] == accepted[1] and len(accepted[0][1]) == 1
    for a, b in zip(*models, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_too_many_faulty_aggregators_fail_the_round_not_the_run() -> None:
    committee = LocalCommittee()
    for address in committee.aggregator_addresses[:2]:  # t = 1 tolerates one
        committee.network.crash(address)
    s = _fedavg(committee)
    res = s.start(
        grid=LocalGrid(apps.make_client_app(), N),
        initial_arrays=ArrayRecord(apps.task.initial_arrays()),
        num_rounds=1,
    )
    r = s.kaires_rounds[1]["result"]
    assert r.status == "failed" and r.aggregate is None and r.why
    assert len(res.arrays) == 0  # the global model was never replaced by anything


def test_stats_strategy_mean_variance_histogram_count() -> None:
    from kaires_fl.statistics import CountStats, HistogramStats, MeanVarianceStats

    X, _ = apps.diabetes_partition(0, 1)
    committee = LocalCommittee()
    grid = LocalGrid(apps.make_client_app(), N)
    mv = KairesStatsStrategy(
        MeanVarianceStats(10, [-0.3, 0.3], max_rows=100),
        min_nodes=N,
        min_available_nodes=N,
        committee=committee,
    ).start(grid)
    np.testing.assert_allclose(mv.aggregate["mean"], X.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mv.aggregate["var"], X.var(axis=0), rtol=1e-6)
    edges = np.linspace(-0.3, 0.3, 9)
    hist = KairesStatsStrategy(
        HistogramStats(edges, column=2), min_nodes=N, min_available_nodes=N, committee=committee
    ).start(grid)
    np.testing.assert_array_equal(hist.aggregate["counts"], np.histogram(X[:, 2], edges)[0])
    count = KairesStatsStrategy(
        CountStats(), min_nodes=N, min_available_nodes=N, committee=committee
    ).start(grid)
    assert count.aggregate["count"] == len(X) and count.coef_ is None


class _BadWriteGrid(LocalGrid):
    """Flips a byte of node 1's write signature in every train reply (a faulty relay)."""

    def send_and_receive(self, messages, *, timeout=None):
        replies = list(super().send_and_receive(messages, timeout=timeout))
        for r in replies:
            rec = r.content.config_records.get(wire.REPLY) if r.has_content() else None
            if r.metadata.src_node_id == 1 and rec is not None and "write-tx" in rec:
                tx = wire.decode_tx(rec["write-tx"])
                sig = bytearray(bytes.fromhex(tx.signatures[0]))
                sig[0] ^= 1
                rec["write-tx"] = wire.encode_tx(
                    dataclasses.replace(tx, signatures=(sig.hex(), *tx.signatures[1:]))
                )
        return replies


def test_badly_signed_write_refused_others_aggregated() -> None:
    s = _fedavg(LocalCommittee())
    grid = _BadWriteGrid(apps.make_client_app(), N)
    _run(s, grid, 1)
    res = s.kaires_rounds[1]["result"]
    assert set(res.refused) == {apps.policy_id(0)}, res.refused
    assert "signature" in res.refused[apps.policy_id(0)].lower()
    assert res.status == "done" and len(res.accepted) == N - 1


def test_replayed_or_second_write_refused_before_relay() -> None:
    committee = LocalCommittee()
    s = _fedavg(committee)
    grid = LocalGrid(apps.make_client_app(), N)
    _run(s, grid, 1)
    recs = [m.content.config_records.get(wire.REPLY) for m in grid.received if m.has_content()]
    old = wire.decode_tx(next(r["write-tx"] for r in recs if r and "write-tx" in r))
    conn = s.committee
    with pytest.raises(LedgerError, match="replayed or out of order"):
        conn.admit_write(old, set())  # its counter is already used on the ledger
    fresh = dataclasses.replace(old, counter=old.counter + 1)
    with pytest.raises(LedgerError, match="signature"):
        conn.admit_write(fresh, set())  # re-countered without the signer: bad signature
    with pytest.raises(LedgerError, match="already wrote"):
        conn.admit_write(old, {old.sender})


def test_round_with_the_registration_allow_list_on() -> None:
    """A LocalCommittee with the allow-list on: the simulation's roster admits the Flower
    providers it enrols (their policies would be refused otherwise) and the round runs."""
    committee = LocalCommittee(registration=True)
    s = apps.fedavg(3, committee)
    _run(s, LocalGrid(apps.make_client_app(), 3), 1)
    res = s.kaires_rounds[1]["result"]
    assert res.status == "done" and len(res.accepted) == 3 and not s.enrol_refusals
