"""One column's histogram (kind ``"histogram"``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kaires_fl.arith import circuits
from kaires_fl.errors import ConfigError
from kaires_fl.statistics.base import Statistic, _as_2d, check_within, field_ints, noisy_decoding

# ---------------------------------------------------------------------------- histogram


class HistogramStats(Statistic):
    """Counts of one column's values in the bins ``edges`` (right edge of the last bin
    included, as ``numpy.histogram``).

    ``"record"``: one ``Histogram(bins)`` one-hot per row. ``"provider"``: the provider's bin
    counts, each at most ``max_rows``, as ``SumVec(bins, bitlen(max_rows))``. Exact.
    """

    kind = "histogram"

    def __init__(
        self,
        edges: Any,
        column: int = 0,
        granularity: str = "record",
        max_rows: int | None = None,
        max_measurements: int | None = None,
    ) -> None:
        e = np.asarray(edges, dtype=np.float64).reshape(-1)
        if e.size < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
            raise ConfigError("edges must be ≥ 2 finite, strictly increasing bin edges")
        self.edges = e
        self.column = int(column)
        if self.column < 0:
            raise ConfigError(f"column must be ≥ 0, got {column!r}")
        self._set_sizes(granularity, max_rows, max_measurements)
        self.field = self._fit_field(f"{e.size - 1} bins, max_rows={self.max_rows}")

    @property
    def bins(self) -> int:
        return int(self.edges.size - 1)

    def params(self) -> dict[str, Any]:
        return {"edges": self.edges.tolist(), "column": self.column, **self._size_params()}

    def _build_circuit(self, field: Any) -> Any:
        if self.granularity == "provider":
            return circuits.SumVec(self.bins, self.max_rows.bit_length(), field=field)
        return circuits.Histogram(self.bins, field=field)

    def _replacement_bounds(self) -> np.ndarray:
        if self.granularity == "record":
            return np.ones(2)  # a one-hot row replaced: one bin −1, another +1
        return super()._replacement_bounds()

    def bin_indices(self, X: Any) -> np.ndarray:
        """Bin of every row's value in ``column``; ConfigError outside [edges[0], edges[-1]]."""
        Xa = _as_2d(X)
        if self.column >= Xa.shape[1]:
            raise ConfigError(f"column {self.column} does not exist: X has {Xa.shape[1]} columns")
        x = Xa[:, self.column : self.column + 1]
        rng = np.array([[self.edges[0], self.edges[-1]]])
        check_within(x, rng, [f"column {self.column}"], "widen the histogram's edges")
        idx = np.searchsorted(self.edges, x[:, 0], side="right") - 1
        return np.minimum(idx, self.bins - 1)

    def measurements(self, X: Any, y: Any = None) -> np.ndarray:
        idx = self.bin_indices(X)
        self._check_rows(idx.shape[0])
        if self.granularity == "provider":
            return self.circuit.encode(np.bincount(idx, minlength=self.bins)[None, :])
        return self.circuit.encode(idx)

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> dict[str, Any]:
        """Returns ``counts`` (bins,), ``edges`` and ``n``."""
        self._check_count(num_measurements)
        if noisy_decoding():  # the noise may take a bin below zero
            counts = np.array(field_ints(self.field, aggregate))
        else:
            counts = np.array(self.circuit.decode(np.asarray(aggregate), num_measurements))
        return {
            "counts": counts.astype(np.int64),
            "edges": self.edges.copy(),
            "n": int(counts.sum()),
        }
