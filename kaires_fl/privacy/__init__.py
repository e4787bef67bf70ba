"""Differential privacy without a trusted party (issue 13).

A job run with ``dp=DP(ε, δ)`` releases its aggregate plus integer Skellam noise dealt by
the aggregators themselves (:mod:`.mechanism`): each aggregator deals its noise vector as a
Shamir-shared, range-proven input, so the n − t honest aggregators alone supply the target
variance and a Byzantine aggregator can neither remove the honest noise nor add more than
its proven bound. The noise is calibrated (:mod:`.accounting`) from the sensitivity the
statistic's validity circuit proves (``Statistic.sensitivity``).

:class:`DP` is the privacy target ``(ε, δ)`` of one job (``kaires_fl.DP``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kaires_fl.errors import ConfigError

__all__ = ["DP", "MAX_EPSILON"]

#: Largest ε a job may ask for (beyond it the guarantee means nothing).
MAX_EPSILON = 100.0


@dataclass(frozen=True)
class DP:
    """An (ε, δ)-differential-privacy target for one release.

    Pre: ``0 < epsilon ≤ 100`` and ``0 < delta < 1`` (finite floats); ConfigError otherwise.
    """

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        for name in ("epsilon", "delta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"DP {name} must be a finite number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if not 0 < self.epsilon <= MAX_EPSILON:
            raise ConfigError(
                f"DP epsilon must lie in (0, {MAX_EPSILON:g}], got {self.epsilon!r}; "
                "typical values are 0.1 to 10"
            )
        if not 0 < self.delta < 1:
            raise ConfigError(
                f"DP delta must lie in (0, 1), got {self.delta!r}; take it well below "
                "1 / (number of records), e.g. 1e-6"
            )

    def to_obj(self) -> dict[str, float]:
        """``{"epsilon": ε, "delta": δ}`` (what a job and a budget record)."""
        return {"epsilon": self.epsilon, "delta": self.delta}
