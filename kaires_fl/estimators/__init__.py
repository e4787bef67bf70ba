"""scikit-learn estimators fitted through whole Kaires jobs, one module per family:
:mod:`.base` (provider splits, bounds, the committee a fit runs on), :mod:`.linear`
(:class:`KairesLinearRegression`, :class:`KairesRidge`).
"""

from __future__ import annotations

from kaires_fl.estimators.base import (
    AUTO_MARGIN,
    KairesEstimatorMixin,
    auto_bounds,
    split_rows,
)
from kaires_fl.estimators.decomposition import KairesPCA
from kaires_fl.estimators.linear import (
    KairesLinearRegression,
    KairesRidge,
    solve_normal_equations,
)
from kaires_fl.estimators.logistic import KairesLogisticRegression
from kaires_fl.estimators.preprocessing import KairesStandardScaler

__all__ = [
    "AUTO_MARGIN",
    "KairesEstimatorMixin",
    "KairesLinearRegression",
    "KairesLogisticRegression",
    "KairesPCA",
    "KairesRidge",
    "KairesStandardScaler",
    "auto_bounds",
    "solve_normal_equations",
    "split_rows",
]
