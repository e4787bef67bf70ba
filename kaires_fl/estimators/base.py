"""Shared machinery of the Kaires estimators: provider splits, declared bounds, the
committee a fit runs on, and fitting one statistic through one Kaires job.

Every estimator (linear, logistic, preprocessing, decomposition) builds a
:class:`~kaires_fl.statistics.Statistic`, splits the rows among providers with
:func:`split_rows` and calls :func:`run_job` (through :class:`KairesEstimatorMixin`), which
runs the whole protocol on the estimator's committee and returns the decoded aggregate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import column_or_1d

from kaires_fl.committee import Committee, default_committee
from kaires_fl.errors import ConfigError, ProtocolError
from kaires_fl.statistics import Statistic

#: Margin added on each side of the data's range by ``bounds="auto"`` (fraction of the range).
AUTO_MARGIN = 0.05


def auto_bounds(values: np.ndarray, margin: float = AUTO_MARGIN) -> np.ndarray:
    """Per-column [lo, hi] from the data, widened by ``margin`` × range (±1 if constant).

    A convenience for simulation only: bounds computed from the data reveal its range. In a
    deployment they are public policy parameters, fixed before any data is seen.
    """
    lo, hi = values.min(axis=0), values.max(axis=0)
    pad = np.where(hi > lo, (hi - lo) * margin, np.maximum(np.abs(hi) * margin, 1.0))
    return np.stack([lo - pad, hi + pad], axis=1)


def split_rows(
    n_samples: int, n_providers: int, provider: Any = None
) -> tuple[list[str], list[np.ndarray]]:
    """Provider labels and row indices: the groups of ``provider`` or
    ``min(n_providers, n_samples)`` contiguous blocks labelled ``provider-000`` …

    Labels are compared as strings and sorted as strings, which is how the committee orders
    providers (and indexes ``faults``): labels 1, 2, 10 become "1", "10", "2".
    """
    if provider is None:
        if not isinstance(n_providers, int | np.integer) or n_providers < 1:
            raise ConfigError(f"n_providers must be a positive integer, got {n_providers!r}")
        k = min(int(n_providers), n_samples)
        blocks = np.array_split(np.arange(n_samples), k)
        return [f"provider-{i:03d}" for i in range(k)], blocks
    labels = column_or_1d(np.asarray(provider), warn=True).astype(str)
    if labels.shape[0] != n_samples:
        raise ConfigError(
            f"provider has {labels.shape[0]} labels for {n_samples} rows; give one per row"
        )
    uniq, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(uniq)))[:-1]
    return [str(u) for u in uniq], np.split(order, bounds)


def _default_committee() -> Committee:
    return default_committee()


class KairesEstimatorMixin:
    """Committee handling shared by every Kaires estimator (``committee`` and ``progress``
    parameters): running a job and keeping the committee across clones and pickles."""

    committee: Committee | None
    progress: bool | str

    def _run_job(
        self, stat: Statistic, labels: list[str], data: dict[str, Any], n_samples: int
    ) -> Any:
        """Run one job of ``stat`` over ``data`` (label → the provider's rows) on the
        estimator's committee (a fresh default one when ``committee`` is None, closed after).

        Returns the job result, whose ``aggregate`` is the decoded statistic. Raises
        ConfigError when fewer providers than the policies' ``min_providers`` are given,
        ProtocolError when the job released no result.
        """
        committee = self.committee if self.committee is not None else _default_committee()
        needed = int(getattr(committee, "min_providers", 1))
        if len(labels) < needed:
            if self.committee is None:
                committee.close()
            raise ConfigError(
                f"{len(labels)} provider(s) from n_samples = {n_samples}: every Kaires "
                f"aggregate needs at least {needed} providers (the policies' min_providers), "
                "so no single provider's data is released alone; pass more samples or more "
                "provider labels"
            )
        try:
            result = committee.run_job(stat, data, progress=self.progress)
        finally:
            if self.committee is None:
                committee.close()
        if result.aggregate is None:
            rep = result.report
            raise ProtocolError(
                f"the Kaires job {str(rep.get('job', ''))[:16]}… released no result "
                f"({rep.get('status')}: {rep.get('why') or 'see the report'}); rejected "
                f"providers: {rep.get('rejected')}. Fewer providers were accepted than the "
                "policies' minimum, or the committee failed"
            )
        return result

    def __sklearn_clone__(self) -> Any:
        # A committee is a running service, not a hyper-parameter: clones share it (sklearn
        # would otherwise deep-copy it, databases and all).
        committee = self.committee
        try:
            self.committee = None
            new = super().__sklearn_clone__()
        finally:
            self.committee = committee
        new.committee = committee
        return new

    def __getstate__(self) -> dict[str, Any]:
        # A pickled model keeps what it learned, not the connection to a running committee.
        state = dict(super().__getstate__())
        state["committee"] = None
        return state
