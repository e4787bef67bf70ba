"""Row and event counts (kind ``"count"``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kaires_fl.arith import circuits
from kaires_fl.errors import ConfigError
from kaires_fl.statistics.base import Statistic, field_ints, noisy_decoding

# ------------------------------------------------------------------------------ count


class CountStats(Statistic):
    """Number of rows (X 2-D) or of true entries (X 1-D booleans / 0-1).

    ``"record"``: one ``Count`` bit per row. ``"provider"``: the provider's count, at most
    ``max_rows``, as ``Sum(bitlen(max_rows))``. Exact.
    """

    kind = "count"

    def __init__(
        self,
        granularity: str = "record",
        max_rows: int | None = None,
        max_measurements: int | None = None,
    ) -> None:
        self._set_sizes(granularity, max_rows, max_measurements)
        self.field = self._fit_field(f"max_rows={self.max_rows}")

    def params(self) -> dict[str, Any]:
        return self._size_params()

    def _build_circuit(self, field: Any) -> Any:
        if self.granularity == "provider":
            return circuits.Sum(self.max_rows.bit_length(), field=field)
        return circuits.Count(field=field)

    def _bits(self, X: Any) -> np.ndarray:
        a = np.asarray(X)
        if a.ndim == 2:
            return np.ones(a.shape[0], dtype=np.int64)
        if a.ndim != 1:
            raise ConfigError(f"count takes 2-D rows or a 1-D 0/1 vector, got shape {a.shape}")
        if a.dtype != bool and not np.all((a == 0) | (a == 1)):
            raise ConfigError("a 1-D count vector must hold booleans or 0/1 values")
        return a.astype(np.int64)

    def measurements(self, X: Any, y: Any = None) -> np.ndarray:
        b = self._bits(X)
        self._check_rows(b.shape[0])
        if self.granularity == "provider":
            return self.circuit.encode(np.array([int(b.sum())]))
        return self.circuit.encode(b)

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> dict[str, Any]:
        self._check_count(num_measurements)
        if noisy_decoding():  # the noise may take the sum below zero
            return {"count": field_ints(self.field, aggregate)[0]}
        return {"count": int(self.circuit.decode(np.asarray(aggregate), num_measurements))}
