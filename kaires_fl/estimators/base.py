"""Shared machinery of the Kaires estimators: provider splits, declared bounds, the
committee a fit runs on, and fitting one statistic through one Kaires job.

Every estimator (linear, logistic, preprocessing, decomposition) builds a
:class:`~kaires_fl.statistics.Statistic`, splits the rows among providers with
:func:`split_rows` and calls :func:`run_job` (through :class:`KairesEstimatorMixin`), which
runs the whole protocol on the estimator's committee and returns the decoded aggregate.

Differential privacy (``epsilon``/``delta`` parameters, :meth:`KairesEstimatorMixin.dp`):
the job runs with ``dp=DP(ε, δ)``, so the committee's aggregators add calibrated noise to
the sufficient statistics before anyone sees them (sufficient-statistics perturbation);
the estimators post-process the noisy statistics (:func:`noisy_psd`) and report the
guarantee in ``kaires_report_["privacy"]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
import weakref
from typing import Any

import numpy as np
from sklearn.utils.validation import column_or_1d

from kaires_fl.committee import Committee, default_committee
from kaires_fl.errors import ConfigError, KairesWarning, ProtocolError
from kaires_fl.statistics import Statistic

#: Margin added on each side of the data's range by ``bounds="auto"`` (fraction of the range).
AUTO_MARGIN = 0.05
#: δ of a fit given ``epsilon`` but no ``delta``.
DEFAULT_DELTA = 1e-6
#: Fixed-point bits of a differentially private fit's statistic when ``frac_bits`` is None
#: (provider: fractional bits; record: quantisation bits): the noise is far above this
#: precision, and finer sums would need noise beyond the sampler's range.
DP_FRAC_BITS = {"provider": 16, "record": 4}
#: Eigenvalue floor of a noisy scatter, in units of the noise's spectral norm: a symmetric
#: d×d matrix of independent entries of std σ has spectral norm ≈ 2σ√d (Wigner).
NOISE_FLOOR = 1.0


def noisy_psd(A: np.ndarray, sigma: float) -> np.ndarray:
    """Post-process a noisy scatter (or Hessian) ``A`` released with entry noise std
    ``sigma``: its symmetric part, with every eigenvalue raised to at least the noise's
    spectral norm ``NOISE_FLOOR · 2σ√d`` (0 when ``sigma`` is 0: the nearest PSD matrix).

    Post: symmetric positive semi-definite (definite when ``sigma > 0``). Directions whose
    signal is below the noise are shrunk as by a ridge of that size (cf. AdaSSP, Wang 2018),
    instead of being inverted through a noise-sized or negative eigenvalue.
    """
    S = (np.asarray(A, dtype=np.float64) + np.asarray(A, dtype=np.float64).T) / 2
    if not np.all(np.isfinite(S)):
        raise ProtocolError(
            "the released statistics are not finite: the job's noise overflowed the "
            "decoding; raise epsilon or tighten the declared bounds"
        )
    lam, V = np.linalg.eigh(S)
    floor = NOISE_FLOOR * 2.0 * float(sigma) * np.sqrt(S.shape[0])
    return np.asarray((V * np.maximum(lam, floor)) @ V.T)


def privacy_sigma(report: dict[str, Any]) -> float:
    """The noise std of each released coordinate, in the statistic's scaled frame, from a
    job's ``report["privacy"]`` (``sigma_scaled`` if the statistic reports it, else
    ``sigma``); 0.0 for a job without differential privacy. With per-block noise
    (``sigma`` a list, one per block) the largest: the block of the second moments, which
    the scatter's floor is about (the sums' far smaller noise reaches the centred scatter
    only through the means)."""
    priv = report.get("privacy") or {}
    v = priv.get("sigma_scaled", priv.get("sigma", 0.0)) or 0.0
    if isinstance(v, list | tuple):
        return float(max(v, default=0.0))
    return float(v)


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
    epsilon: float | None
    delta: float | None

    def dp(self, jobs: int = 1) -> Any:
        """The differential privacy of each of ``jobs`` jobs, as a :class:`kaires_fl.DP`,
        or None when ``epsilon`` is None (an exact fit).

        The fit's ``(epsilon, delta)`` (δ default :data:`DEFAULT_DELTA`) is split evenly
        over its jobs (basic composition, as the ledger's budgets count them).

        Raises ConfigError for an invalid ε or δ, or a δ without ε.
        """
        eps = getattr(self, "epsilon", None)
        delta = getattr(self, "delta", None)
        if eps is None:
            if delta is not None:
                raise ConfigError(
                    f"delta={delta!r} without epsilon: give epsilon too (differential privacy "
                    "is (epsilon, delta)), or neither for an exact fit"
                )
            return None
        from kaires_fl.privacy import DP

        full = DP(eps, DEFAULT_DELTA if delta is None else delta)  # validates both
        return DP(full.epsilon / jobs, full.delta / jobs)

    def _frac_bits(self, granularity: str) -> int | None:
        """``frac_bits``, or :data:`DP_FRAC_BITS` for a differentially private fit."""
        bits = getattr(self, "frac_bits", None)
        if bits is None and getattr(self, "epsilon", None) is not None:
            return DP_FRAC_BITS.get(granularity)
        return bits

    def _warn_auto_bounds(self) -> None:
        """Warn that ``bounds="auto"`` reads the data's range, which the fit's differential
        privacy does not cover."""
        bounds = getattr(self, "bounds", None)
        if isinstance(bounds, str) and bounds == "auto":
            warnings.warn(
                "bounds='auto' computes the declared bounds from the data: the range of the "
                "data is then public and not covered by epsilon/delta. Declare bounds (the "
                "providers' policy bounds) for a differentially private fit",
                KairesWarning,
                stacklevel=4,
            )

    def _run_job(
        self, stat: Statistic, labels: list[str], data: dict[str, Any], n_samples: int
    ) -> Any:
        """Run one job of ``stat`` over ``data`` (label → the provider's rows) on the
        estimator's committee (a fresh default one when ``committee`` is None, closed after).

        Returns the job result, whose ``aggregate`` is the decoded statistic. Raises
        ConfigError when fewer providers than the policies' ``min_providers`` are given,
        ProtocolError when the job released no result.
        """
        dp = self.dp()  # invalid ε or δ: ConfigError before any committee or job
        if dp is not None:
            self._warn_auto_bounds()
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
            result = run_with_dp(committee, stat, data, self.progress, dp)
        finally:
            if self.committee is None:
                committee.close()
        warn_rejected(result.report, stacklevel=4)
        return check_released(result)

    def __sklearn_clone__(self) -> Any:
        # A committee is a running service, not a hyper-parameter: clones share it (sklearn
        # would otherwise deep-copy it, databases and all).
        committee = self.committee
        try:
            self.committee = None
            new = super().__sklearn_clone__()  # type: ignore[misc]
        finally:
            self.committee = committee
        new.committee = committee
        return new

    def __getstate__(self) -> dict[str, Any]:
        # A pickled model keeps the committee by its description (another process
        # reconnects to it), or pickling fails with a clear error: never a silent
        # substitute with fresh defaults.
        state: dict[str, Any] = dict(super().__getstate__())  # type: ignore[call-overload]
        if state.get("committee") is not None:
            state["committee"] = CommitteeDescription(describe_committee(state["committee"]))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if isinstance(state.get("committee"), CommitteeDescription):
            state["committee"] = reconnect(state["committee"].description)
        super().__setstate__(state)  # type: ignore[misc]


def run_with_dp(committee: Committee, stat: Statistic, data: Any, progress: Any, dp: Any) -> Any:
    """``committee.run_job(stat, data, progress=progress, dp=dp)``, without ``dp`` for an
    exact job (a committee that predates differential privacy still runs it)."""
    kwargs: dict[str, Any] = {"progress": progress}
    if dp is not None:
        kwargs["dp"] = dp
    return committee.run_job(stat, data, **kwargs)


def check_released(result: Any) -> Any:
    """Return a job's ``result`` if it released an aggregate.

    Pre: ``result`` is what ``Committee.run_job`` returned. Post: ``result.aggregate`` is not
    None; otherwise ProtocolError naming the job, its status and the rejected providers.
    """
    if result.aggregate is None:
        rep = result.report
        raise ProtocolError(
            f"the Kaires job {str(rep.get('job', ''))[:16]}… released no result "
            f"({rep.get('status')}: {rep.get('why') or 'see the report'}); rejected "
            f"providers: {rep.get('rejected')}. Fewer providers were accepted than the "
            "policies' minimum, or the committee failed"
        )
    return result


def warn_rejected(report: dict[str, Any], stacklevel: int = 3) -> None:
    """Warn :class:`KairesWarning` when a job left providers out (rejected submissions or
    providers excluded from the job), naming how many and why: their rows are not in the
    result."""
    out = {str(k): str(v) for k, v in dict(report.get("rejected") or {}).items()}
    out.update({str(k): str(v) for k, v in dict(report.get("excluded") or {}).items()})
    if not out:
        return
    total = len(out) + len(report.get("accepted") or [])
    by_reason: dict[str, list[str]] = {}
    for label, why in sorted(out.items()):
        by_reason.setdefault(why[:200], []).append(label)
    reasons = "; ".join(
        f"{len(labs)} × {why} ({', '.join(labs[:5])}{', …' if len(labs) > 5 else ''})"
        for why, labs in by_reason.items()
    )
    warnings.warn(
        f"{len(out)} of {total} providers were rejected and their rows are not in the fit: "
        f"{reasons}. See kaires_report_['rejected'] for each provider's reason",
        KairesWarning,
        stacklevel=stacklevel,
    )


# ----------------------------------------------------------- committees across processes


class CommitteeDescription:
    """A committee as it crosses a process boundary: its JSON-ready description."""

    def __init__(self, description: dict[str, Any]) -> None:
        self.description = description

    def __repr__(self) -> str:
        return f"CommitteeDescription({self.description!r})"


#: Live committees by description, so that a pickle read back in the process holding the
#: committee (or a second estimator in a worker) gets the same object.
_LIVE: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def _key(description: dict[str, Any]) -> str:
    """A description without its process and instance: what a worker rebuilds once."""
    d = {k: v for k, v in description.items() if k not in ("pid", "instance")}
    return json.dumps(d, sort_keys=True, default=str)


def describe_committee(committee: Any) -> dict[str, Any]:
    """The description another process reconnects ``committee`` by (its ``describe()``:
    a :class:`~kaires_fl.simulation.LocalCommittee`'s constructor parameters and
    ``db_dir``; a committee from :func:`kaires_fl.connect` on a group file, that path).

    Raises ConfigError for a committee that has no description (it cannot be rebuilt
    elsewhere, and a fresh default committee would silently change the result).
    """
    describe = getattr(committee, "describe", None)
    desc = describe() if callable(describe) else getattr(committee, "description", None)
    if not isinstance(desc, dict):
        raise ConfigError(
            f"the estimator's committee ({type(committee).__name__}) cannot cross a process "
            "boundary: it has no description to reconnect by (describe()). Use a "
            "LocalCommittee, a committee from kaires_fl.connect('group.toml'), or keep the "
            "fit in this process (n_jobs=1, no pickling)"
        )
    desc = {**desc, "pid": os.getpid(), "instance": id(committee)}
    with contextlib.suppress(TypeError):  # not weak-referenceable: reconnect rebuilds it
        _LIVE[json.dumps(desc, sort_keys=True, default=str)] = committee
    return desc


def reconnect(description: dict[str, Any]) -> Any:
    """The committee ``description`` names: the live one in this process if any, else one
    rebuilt from it (once per process).

    Raises ConfigError for an unknown kind, and for a LocalCommittee persisted in a
    ``db_dir`` when this is not the process that created it (two processes would append
    to the same ledger files).
    """
    live = _LIVE.get(json.dumps(description, sort_keys=True, default=str))
    if live is None:
        live = _LIVE.get(_key(description))
    if live is not None:
        return live
    key = _key(description)
    kind = description.get("kind")
    if kind == "LocalCommittee":
        params = dict(description.get("params") or {})
        if params.get("db_dir") and description.get("pid") != os.getpid():
            raise ConfigError(
                f"a LocalCommittee persisted in db_dir={params['db_dir']!r} cannot be used "
                "from another process (both would append to the same ledger files): use "
                "db_dir=None for parallel searches (GridSearchCV n_jobs>1), or n_jobs=1"
            )
        from kaires_fl.simulation import LocalCommittee

        committee: Any = LocalCommittee(**params)
    elif kind == "connect":
        from kaires_fl.node.client import connect

        committee = connect(
            description["group"], key=description.get("key"), **description.get("options", {})
        )
    else:
        raise ConfigError(
            f"cannot reconnect to a committee of kind {kind!r}: known kinds are "
            "'LocalCommittee' and 'connect'"
        )
    _LIVE[key] = committee
    _KEEP.append(committee)
    return committee


#: Committees rebuilt in this process stay up for its lifetime (a worker reuses them).
_KEEP: list[Any] = []
