"""What the Flower layer tells its user: warnings, log lines, typed errors, summaries, and
the clients' train metrics aggregated inside the sealed, proven measurements.

In-process (:class:`flower_harness.LocalGrid`, messages serialised as over the wire) with a
real committee; one test per behaviour that used to be silent.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import flower_apps as apps
import numpy as np
import pytest
from flower_harness import LocalGrid
from flwr.app import ArrayRecord, Context, Message, RecordDict
from kaires_fl.strategies import KairesFedAvg, KairesStatsStrategy, make_kaires_mod, wire

from kaires_fl.errors import ConfigError, JobFailed, KairesWarning
from kaires_fl.simulation import LocalCommittee
from kaires_fl.statistics import LinearRegressionStats

N = 6
METRICS = {"train-loss": (0.0, 5.0), "train-acc": (0.0, 1.0)}


def _strategy(**kw) -> KairesFedAvg:
    return apps.fedavg(N, **kw)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _run(strategy: KairesFedAvg, app, rounds: int = 1) -> dict:
    """Run; return the result, the KairesWarnings and the Flower log lines."""
    handler = _Records()
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = strategy.start(
                grid=LocalGrid(app, N),
                initial_arrays=ArrayRecord(apps.task.initial_arrays()),
                num_rounds=rounds,
            )
    finally:
        flwr_logger.removeHandler(handler)
    kw = [str(w.message) for w in caught if issubclass(w.category, KairesWarning)]
    return {"result": result, "warnings": kw, "log": handler.lines, "strategy": strategy}


@pytest.fixture(scope="module")
def metrics_run() -> dict:
    """One round, every client reporting train-loss / train-acc, none clipped or capped."""
    return _run(_strategy(train_metrics=METRICS), apps.make_client_app(train_metrics=True))


@pytest.fixture(scope="module")
def squeezed_run() -> dict:
    """One round where every update exceeds clip_norm, every client exceeds the weight cap,
    and partition 0 sends an over-norm update (rejected)."""
    return _run(
        _strategy(clip_norm=1e-3, num_examples_cap=10),
        apps.make_client_app(faults={0: "over_norm"}),
    )


def test_train_metrics_are_the_weighted_average_of_the_clients(metrics_run: dict) -> None:
    """Privacy + utility: the round reports FedAvg's num-examples-weighted average of the
    clients' train metrics (fixed-point step 2^-f of the bounds per client), computed from
    the aggregate of the sealed measurements; no reply carries a metric in plaintext."""
    got = metrics_run["result"].train_metrics_clientapp[1]
    arrays = apps.task.initial_arrays()
    local = np.array([apps.local_train_metrics(arrays, p, N) for p in range(N)])
    want = np.average(local[:, 1:], axis=0, weights=local[:, 0])
    assert abs(got["train-loss"] - want[0]) < 1e-3
    assert abs(got["train-acc"] - want[1]) < 1e-4
    assert got["kaires-accepted"] == N and got["kaires-clipped"] == 0
    stat = metrics_run["strategy"].kaires_rounds[1]["statistic"]
    assert [m[0] for m in stat.params()["metrics"]] == ["train-loss", "train-acc"]


def test_no_plaintext_metric_leaves_a_client(metrics_run: dict) -> None:
    """Privacy: the clients' replies hold only the Kaires record (sealed submission and
    write), no MetricRecord and no metric value."""
    strategy = metrics_run["strategy"]
    assert strategy.kaires_rounds[1]["result"].status == "done"
    # The mod's reply is built by _reply: only the REPLY ConfigRecord.
    app = apps.make_client_app(train_metrics=True)
    grid = LocalGrid(app, N)
    s = _strategy(train_metrics=METRICS)
    s.start(grid=grid, initial_arrays=ArrayRecord(apps.task.initial_arrays()), num_rounds=1)
    train_replies = [m for m in grid.received if wire.REPLY in m.content.config_records]
    assert train_replies
    for m in train_replies:
        assert not m.content.metric_records and not m.content.array_records
        assert "train-loss" not in m.content.config_records[wire.REPLY]


def test_missing_declared_metric_refuses_that_client() -> None:
    """A declared metric the client does not report: the client refuses (says which)."""
    out = _run(_strategy(train_metrics={"f1": (0.0, 1.0)}), apps.make_client_app())
    refusals = out["strategy"].kaires_rounds[1]["refusals"]
    assert len(refusals) == N and all("'f1'" in why for why in refusals.values())


def test_custom_train_metrics_aggr_fn_is_refused() -> None:
    with pytest.raises(ConfigError, match="train_metrics="):
        KairesFedAvg(num_examples_cap=10, train_metrics_aggr_fn=lambda recs, key: None)


def test_clipped_updates_warn_with_count(squeezed_run: dict) -> None:
    """Visible: updates scaled down to clip_norm raise a KairesWarning naming how many."""
    (w,) = [w for w in squeezed_run["warnings"] if "clipped" in w]
    assert f"{N - 1} of {N - 1} accepted updates were clipped" in w and "clip_norm=0.001" in w
    assert squeezed_run["result"].train_metrics_clientapp[1]["kaires-clipped"] == N - 1


def test_capped_weights_warn_with_count(squeezed_run: dict) -> None:
    """Visible: clients over num_examples_cap raise a KairesWarning naming how many."""
    (w,) = [w for w in squeezed_run["warnings"] if "num_examples_cap" in w]
    assert f"{N - 1} of {N - 1} accepted clients" in w and "num_examples_cap=10" in w
    assert squeezed_run["result"].train_metrics_clientapp[1]["kaires-capped"] == N - 1


def test_rejected_provider_warns(squeezed_run: dict) -> None:
    (w,) = [w for w in squeezed_run["warnings"] if "rejected" in w]
    assert "1 provider(s) rejected" in w


def test_round_and_enrolment_log_lines(squeezed_run: dict) -> None:
    """Visible: INFO lines for the committee start, enrolment and each round's counts."""
    log = squeezed_run["log"]
    assert any(line.startswith("kaires: connecting to the committee") for line in log)
    assert any(re.match(rf"kaires: {N} node\(s\) enrolled", line) for line in log)
    want = f"kaires: round 1: {N} sampled, {N - 1} accepted, 1 rejected, 0 refused, {N - 1} clipped"
    assert any(line.startswith(want) for line in log), log


def test_summary_and_repr_are_readable(squeezed_run: dict) -> None:
    """The strategy summary names clip_norm, the cap and the committee; no object address."""
    s = squeezed_run["strategy"]
    text = repr(s) + "\n".join(squeezed_run["log"])
    assert "0x" not in text and "object at" not in text
    assert "clip_norm=0.001" in repr(s) and "LocalCommittee" in repr(s)
    assert any(
        "Kaires committee: LocalCommittee, 4 aggregators" in line for line in squeezed_run["log"]
    )
    stats = KairesStatsStrategy(LinearRegressionStats(2, [0.0, 1.0], [0.0, 1.0], max_rows=5))
    assert "0x" not in repr(stats) and "linear_regression" in repr(stats)


def test_stats_strategy_every_node_failing_raises_a_short_typed_error() -> None:
    """Every node fails (its handler returns no rows): JobFailed with a short message that
    counts the nodes and shortens their reasons — not coef_=None after a huge log line."""
    from flwr.clientapp import ClientApp

    app = ClientApp(mods=[make_kaires_mod(simulation=True)])

    @app.query()
    def query(msg: Message, ctx: Context) -> Message:
        raise ValueError("x" * 30_000)  # a handler failing with a huge message

    s = KairesStatsStrategy(
        LinearRegressionStats(10, [-0.3, 0.3], [0.0, 400.0], max_rows=100),
        min_nodes=3,
        min_available_nodes=3,
        committee=LocalCommittee(),
    )
    handler = _Records()
    logging.getLogger("flwr").addHandler(handler)
    try:
        with pytest.raises(JobFailed, match=r"0 of 3 node\(s\) contributed") as exc:
            s.start(LocalGrid(app, 3))
    finally:
        logging.getLogger("flwr").removeHandler(handler)
    assert len(str(exc.value)) < 1000 and "ValueError" in str(exc.value)
    assert max(len(line) for line in handler.lines) < 1000


def _doc_blocks(marker: str) -> str:
    text = (Path(__file__).resolve().parents[2] / "docs" / "flower.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (block,) = [b for b in blocks if b.startswith(f"# {marker}")]
    return block


def test_stats_handler_example_in_docs_runs() -> None:
    """docs/flower.md's KairesStatsStrategy example (client query handler + ServerApp main)
    runs as written and fits the same model as scikit-learn on the pooled rows."""
    from sklearn.linear_model import LinearRegression

    client: dict = {}
    exec(compile(_doc_blocks("client_app.py"), "client_app.py", "exec"), client)
    server: dict = {}
    exec(compile(_doc_blocks("server_app.py"), "server_app.py", "exec"), server)
    grid = LocalGrid(client["app"], 3)
    for ctx in grid.contexts.values():  # what a simulation's node config says
        ctx.node_config["kaires-simulation"] = True
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    result = server["main"](grid, ctx)
    X = np.concatenate([client["load_local_rows"](c)[0] for c in grid.contexts.values()])
    y = np.concatenate([client["load_local_rows"](c)[1] for c in grid.contexts.values()])
    ref = LinearRegression().fit(X, y)
    np.testing.assert_allclose(result.coef_, ref.coef_, rtol=1e-5, atol=1e-5)


def test_run_config_db_dir_persists_the_local_committee_ledger(tmp_path: Path) -> None:
    """kaires-db-dir reaches LocalCommittee(db_dir=...): the ledger lives in SQLite files
    a second connection with the same settings reopens at the same height."""
    from kaires_fl.strategies import CommitteeConnection

    conn = CommitteeConnection.from_run_config({"kaires-db-dir": str(tmp_path)})
    height = conn.committee.client.height
    assert height > 0 and sorted(p.name for p in tmp_path.glob("ledger-*.sqlite"))
    conn.committee.close()
    again = CommitteeConnection.from_run_config({"kaires-db-dir": str(tmp_path)})
    assert again.committee.client.height >= height
    again.committee.close()


def test_half_converted_app_gets_the_kaires_mod_hint_first() -> None:
    """A ClientApp without kaires_mod whose handler crashes on the enrolment message: the
    error (and the ERROR log line before any traceback) leads with the fix, short."""
    from flwr.clientapp import ClientApp

    app = ClientApp()  # kaires_mod forgotten

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        arrays = msg.content["arrays"]  # the enrolment message has none: KeyError
        return Message(RecordDict({"arrays": arrays}), reply_to=msg)

    handler = _Records()
    logging.getLogger("flwr").addHandler(handler)
    try:
        with pytest.raises(ConfigError) as exc:
            _strategy().start(
                grid=LocalGrid(app, N),
                initial_arrays=ArrayRecord(apps.task.initial_arrays()),
                num_rounds=1,
            )
    finally:
        logging.getLogger("flwr").removeHandler(handler)
    text = str(exc.value)
    assert "ClientApp(mods=[kaires_mod])" in text and len(text) < 600
    assert text.index("kaires_mod") < text.index("KeyError")
    assert any("ClientApp(mods=[kaires_mod])" in line for line in handler.lines[-3:])
