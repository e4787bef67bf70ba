"""``KairesStatsStrategy``: one-shot federated statistics and closed-form models over Flower.

One job, one exchange: the strategy enrols the nodes, commits a job for a
:mod:`kaires_fl.statistics` statistic (linear regression moments, count, mean/variance,
histogram), sends each node the job with its proofs in a **query** message, and the
nodes' ``kaires_mod`` seals their local data under the job's circuit. The user's query
handler returns the node's local rows (an ArrayRecord with ``"X"`` and, for regression,
``"y"``); those rows never leave the mod in plaintext. The ServerApp gets only the
aggregate, and for ``linear_regression`` solves the normal equations (ordinary least
squares, or ridge with ``alpha``) exactly as :class:`kaires_fl.KairesLinearRegression`.

::

    strategy = KairesStatsStrategy(LinearRegressionStats(d, x_bounds, y_bounds, max_rows=500))
    result = strategy.start(grid)          # in the ServerApp's main
    result.coef_, result.intercept_, result.aggregate, result.report
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.strategy_utils import sample_nodes
from flwr.supercore import log

from .fedavg import KairesFlowerBase
from .fedavg import _short as shorten


@dataclass
class StatsResult:
    """The consumer's result: the decoded ``aggregate``; for linear regression the fitted
    ``coef_`` / ``intercept_``; the job's ``report`` (RoundResult) and the nodes'
    ``refusals`` (node id → reason)."""

    aggregate: dict[str, Any] | None
    report: Any
    refusals: dict[int, str] = field(default_factory=dict)
    coef_: np.ndarray | None = None
    intercept_: float | None = None

    def predict(self, X: Any) -> np.ndarray:
        """Predictions of the fitted linear model."""
        if self.coef_ is None:
            from kaires_fl.errors import ConfigError

            raise ConfigError("this statistic fitted no model (only linear_regression does)")
        return np.asarray(X, dtype=np.float64) @ self.coef_ + float(self.intercept_ or 0.0)


class KairesStatsStrategy(KairesFlowerBase, Strategy):
    """One-shot Kaires statistic over Flower (module docstring).

    Parameters
    ----------
    statistic:
        A :class:`kaires_fl.statistics.Statistic` (e.g. ``LinearRegressionStats``).
    alpha:
        Ridge penalty for ``linear_regression`` (0: ordinary least squares).
    fit_intercept:
        Fit an intercept (``linear_regression``).
    fraction, min_nodes, min_available_nodes:
        Sampling, as FedAvg's ``fraction_train`` / ``min_train_nodes``.
    committee:
        A ``CommitteeConnection`` or a :class:`~kaires_fl.committee.Committee` (a
        ``LocalCommittee`` or ``kaires_fl.connect("group.toml")``; default: a fresh local one).
    message_type:
        The Flower message type of the job (default ``"query"``: register the data handler
        with ``@app.query()``).
    """

    def __init__(
        self,
        statistic: Any,
        *,
        alpha: float = 0.0,
        fit_intercept: bool = True,
        fraction: float = 1.0,
        min_nodes: int = 2,
        min_available_nodes: int = 2,
        committee: Any | None = None,
        configrecord_key: str = "config",
        message_type: str = MessageType.QUERY,
        enrol_timeout: float = 3600,
    ) -> None:
        self.statistic = statistic
        self.alpha = float(alpha)
        self.fit_intercept = bool(fit_intercept)
        self.fraction = fraction
        self.min_nodes = min_nodes
        self.min_available_nodes = min_available_nodes
        self.configrecord_key = configrecord_key
        self.arrayrecord_key = "arrays"
        self.message_type = message_type
        self._init_kaires(committee, enrol_timeout)
        self.enrol_message_type = message_type

    def __repr__(self) -> str:
        return (
            f"KairesStatsStrategy(statistic={self.statistic.kind!r}, fraction={self.fraction}, "
            f"min_nodes={self.min_nodes}, committee: {self.committee_summary()})"
        )

    def summary(self) -> None:
        log(INFO, "\t├──> Kaires statistic: %s %s", self.statistic.kind, self.statistic.params())
        log(INFO, "\t├──> Sampling: fraction %.2f, min nodes %d", self.fraction, self.min_nodes)
        log(INFO, "\t└──> Kaires committee: %s", self.committee_summary())

    def start(  # type: ignore[override]
        self, grid: Grid, config: ConfigRecord | None = None, timeout: float = 3600
    ) -> StatsResult:
        """Enrol, run the job, open the aggregate, fit; returns a :class:`StatsResult`.

        Raises
        ------
        JobFailed
            if the job produced no aggregate (no job committed, every node refused or
            failed, too few accepted); the message counts the nodes and gives the first
            reasons, shortened (all of them: ``kaires_rounds[1]``).
        """
        log(INFO, "Starting %s:", type(self).__name__)
        self.summary()
        msgs = list(self.configure_train(1, ArrayRecord(), config or ConfigRecord(), grid))
        replies = grid.send_and_receive(msgs, timeout=timeout) if msgs else []
        self.aggregate_train(1, replies)
        info = self.kaires_rounds[1]
        res = info.get("result")
        aggregate = None if res is None else res.aggregate
        if aggregate is None:
            raise _job_failed(info, len(msgs))
        out = StatsResult(aggregate, res, dict(info.get("refusals", {})))
        if aggregate is not None and self.statistic.kind == "linear_regression":
            from kaires_fl.estimators import solve_normal_equations

            coef, intercept = solve_normal_equations(aggregate, self.fit_intercept, self.alpha)
            out.coef_, out.intercept_ = coef, intercept
        return out

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Enrol the nodes, commit the job, build one query message per node."""
        n_all = len(list(grid.get_node_ids()))
        sample_size = max(int(n_all * self.fraction), self.min_nodes)
        node_ids, _ = sample_nodes(grid, self.min_available_nodes, sample_size)
        self.enrol_nodes(grid, node_ids)
        base = RecordDict({self.configrecord_key: config})
        return self.job_messages(self.statistic, node_ids, base, self.message_type, server_round)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Relay the sealed submissions; the result is kept in ``kaires_rounds``."""
        info = self.kaires_rounds.get(server_round)
        if info is None or info.get("job") is None:
            return None, None
        subs, _, refusals = self.collect(server_round, replies)
        res = self.aggregate_job(server_round, self.statistic, subs)
        log(
            INFO,
            "kaires statistic: %s sampled, %s accepted, %s rejected, %s refused",
            len(info.get("nodes", {})),
            len(res.accepted),
            len(res.rejected),
            len(res.refused) + len(refusals),
        )
        for who, why in {**res.rejected, **res.refused, **refusals}.items():
            log(INFO, "\t> %s: %s", who, shorten(why))
        if res.rejected:
            import warnings

            from kaires_fl.errors import KairesWarning

            warnings.warn(
                f"{len(res.rejected)} provider(s) rejected by the committee (their proofs "
                f"failed: data out of the statistic's bounds or malformed): "
                f"{ {k: shorten(v, 80) for k, v in res.rejected.items()} }; the aggregate "
                "covers the accepted ones",
                KairesWarning,
                stacklevel=2,
            )
        return None, MetricRecord({"kaires-accepted": len(res.accepted)})

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return []

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return None


def _job_failed(info: dict[str, Any], sent: int) -> Exception:
    """The :class:`~kaires_fl.errors.JobFailed` of a round without an aggregate."""
    from kaires_fl.errors import JobFailed

    if info.get("job") is None:
        return JobFailed(f"no job was committed: {shorten(info.get('why', ''))}")
    res = info.get("result")
    reasons = dict(info.get("refusals", {}))
    if res is not None:
        reasons.update({**res.rejected, **res.refused})
    first = "; ".join(f"{k}: {shorten(v, 120)}" for k, v in list(reasons.items())[:3])
    more = f" (+{len(reasons) - 3} more)" if len(reasons) > 3 else ""
    why = "" if res is None or not res.why else f" Committee: {shorten(res.why, 120)}."
    return JobFailed(
        f"the job produced no aggregate: {0 if res is None else len(res.accepted)} of "
        f"{sent} node(s) contributed.{why} Reasons: {first or 'none reported'}{more}. "
        "Every node's reason: strategy.kaires_rounds[1]"
    )


__all__ = ["KairesStatsStrategy", "StatsResult", "shorten"]
