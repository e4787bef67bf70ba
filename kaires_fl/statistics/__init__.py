"""Statistic kinds: what a job computes, how a provider encodes its rows, how it is decoded.

One module per kind (as Flower keeps one strategy per file): :mod:`.base` (the
:class:`Statistic` base class and shared helpers), :mod:`.linear_regression`, :mod:`.count`,
:mod:`.mean_variance`, :mod:`.histogram`.

A job names its statistic on the ledger as ``(kind, params)`` (``params`` is JSON-ready), and
every party rebuilds the same object with :func:`from_params`. A statistic fixes

* ``field`` and ``circuit`` — the FLP validity circuit every measurement is proved against;
* ``measurements(X, y)`` — ONE provider's rows as ``(B, MEAS_LEN)`` field elements: B = 1 in
  ``"provider"`` granularity (the provider's local sufficient statistics, range-bounded by
  the policy's row cap), B = rows in ``"record"`` granularity (one proved record per row);
* ``decode(aggregate, num_measurements)`` — the sum of ``circuit.truncate`` over the accepted
  measurements (``output_len`` field elements) back to real numbers.

Kinds: :class:`LinearRegressionStats` (``"linear_regression"``), :class:`CountStats`
(``"count"``), :class:`MeanVarianceStats` (``"mean_variance"``), :class:`HistogramStats`
(``"histogram"``).

Declared bounds are public (in a deployment they come from the providers' policies). Data
outside them raise :class:`ConfigError` naming the column, the bound and the parameter to
change. Every statistic is sized for at most ``max_measurements`` accepted measurements
(providers, or records); its constructor raises :class:`ConfigError` when a sum of that
many could wrap the field, and picks Field64 unless only Field128 can hold the sums.
"""

from __future__ import annotations

from typing import Any

from kaires_fl.errors import ConfigError
from kaires_fl.statistics.base import (
    DEFAULT_FRAC_BITS,
    DEFAULT_MAX_PROVIDERS,
    DEFAULT_MAX_RECORDS,
    DEFAULT_RECORD_BITS,
    GRANULARITIES,
    MIN_AUTO_FRAC_BITS,
    MIN_AUTO_RECORD_BITS,
    Statistic,
    bounds_array,
    check_within,
    choose_fixed_point,
    choose_record_bits,
    moments_to_stats,
    pow2_frame,
)
from kaires_fl.statistics.count import CountStats
from kaires_fl.statistics.covariance import CovarianceStats
from kaires_fl.statistics.histogram import HistogramStats
from kaires_fl.statistics.linear_regression import LinearRegressionStats
from kaires_fl.statistics.logistic import LogisticRegressionStats
from kaires_fl.statistics.mean_variance import MeanVarianceStats

# ----------------------------------------------------------------------------- registry

KINDS: dict[str, type[Statistic]] = {
    cls.kind: cls
    for cls in (
        LinearRegressionStats,
        CountStats,
        MeanVarianceStats,
        HistogramStats,
        CovarianceStats,
        LogisticRegressionStats,
    )
}


#: Kinds the package defines outside this module, by the module that registers them: a
#: node process (an aggregator rebuilding a job's statistic from the ledger) knows them
#: without importing the front end that uses them (e.g. the Flower strategies).
SHIPPED_KINDS: dict[str, str] = {"model_update": "kaires_fl.strategies.update"}


def from_params(kind: str, params: dict[str, Any]) -> Statistic:
    """The statistic a job names by ``(kind, params)``; ConfigError for an unknown kind or
    parameters the kind does not take."""
    if kind not in KINDS and kind in SHIPPED_KINDS:
        import importlib

        importlib.import_module(SHIPPED_KINDS[kind])  # registers the kind in KINDS
    try:
        cls = KINDS[kind]
    except KeyError:
        raise ConfigError(f"unknown statistic kind {kind!r}; known: {sorted(KINDS)}") from None
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for statistic {kind!r}: {exc}") from None


__all__ = [
    "DEFAULT_FRAC_BITS",
    "DEFAULT_MAX_PROVIDERS",
    "DEFAULT_MAX_RECORDS",
    "DEFAULT_RECORD_BITS",
    "GRANULARITIES",
    "KINDS",
    "MIN_AUTO_FRAC_BITS",
    "MIN_AUTO_RECORD_BITS",
    "SHIPPED_KINDS",
    "CountStats",
    "CovarianceStats",
    "HistogramStats",
    "LinearRegressionStats",
    "LogisticRegressionStats",
    "MeanVarianceStats",
    "Statistic",
    "bounds_array",
    "check_within",
    "choose_fixed_point",
    "choose_record_bits",
    "from_params",
    "moments_to_stats",
    "pow2_frame",
]
