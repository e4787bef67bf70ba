"""Linear-regression sufficient statistics (kind ``"linear_regression"``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kaires_fl.arith import circuits
from kaires_fl.errors import ConfigError
from kaires_fl.statistics.base import (
    DEFAULT_MAX_PROVIDERS,
    DEFAULT_MAX_RECORDS,
    MAX_FEATURES,
    MAX_TARGETS,
    Statistic,
    _as_2d,
    _blas,
    _check_granularity,
    _fixed_point,
    _positive_int,
    _signed_ints,
    _triu_to_full,
    bounds_array,
    check_within,
    choose_fixed_point,
    choose_record_bits,
    field_ints,
    moments_to_raw_sums,
    moments_to_stats,
    noisy_decoding,
    pow2_frame,
)

# ------------------------------------------------------------------- linear regression


class LinearRegressionStats(Statistic):
    """Sufficient statistics of (weighted, multi-output) least squares: n, Σx, Σy, XᵀX, XᵀY,
    YᵀY (intercept by augmenting x with a constant 1).

    Parameters
    ----------
    n_features : d.
    x_bounds, y_bounds : declared bounds ([lo, hi] for every feature / target, or one pair
        per feature / per target).
    granularity : ``"provider"`` or ``"record"``.
    max_rows : the policy's row cap per provider (required in provider granularity; in
        record granularity optional, it bounds each provider's batch of records).
    max_measurements : accepted measurements the job may sum (providers, or records).
    frac_bits : (provider) fractional bits f of the fixed-point sums (None: automatic).
    bits : (record) quantisation bits b of each value (None: automatic).
    n_targets : k, the number of target columns (default 1).
    max_weight : (provider) the declared bound W on sample weights, or None (unweighted).
        With a bound, every row carries a weight ω ∈ [0, W] and the statistic is the
        weighted one (Σω[1, x, y][1, x, y]ᵀ), as scikit-learn's ``sample_weight``.

    Provider granularity: each column is mapped exactly to u = (x − c)·2^−e ∈ [−1, 1]
    (:func:`pow2_frame`), the provider computes in float64 the upper triangle of
    Σ ω̂[1, u, u_y][1, u, u_y]ᵀ over its rows (ω̂ = ω/W ∈ [0, 1], or 1 unweighted; every
    entry bounded by max_rows), and sends each entry as round(v·2^f) + 2^(bits−1),
    range-checked by ``SumVec(L, bits)`` with bits = bitlen(max_rows) + f + 1 and
    L = (d+k+1)(d+k+2)/2. What the circuit proves (for every provider, weighted or not):
    each entry of its moment vector lies in [−max_rows, max_rows] (in u units); it does not
    prove that the entries come from actual rows nor that the weights are non-negative —
    a provider's influence is bounded by its row cap, as for unweighted sums. The provider
    checks its own weights against [0, W] before sending (ConfigError otherwise). Error
    bound: every decoded moment (in u units) is exact to P·2^−(f+1) for P accepted
    providers, on top of float64 rounding of the local sums (≈ n·2^−52); centring is exact
    (integers). :meth:`decode` returns this bound as ``scatter_tol`` (see there), which
    the estimators use to decide the rank of the scatter. The decoded centred scatter
    therefore has relative error ≲ 3·P·2^−(f+1) / (n·v), v the smallest per-column variance
    in u units (v ≥ 0.01 when the data spread over a tenth of its bounds): with the default
    f = 40, P = 100 providers and n = 10^4 rows, ≤ 1.4e-12, and the fitted coefficients agree
    with scikit-learn's to ≈ cond(centred XᵀX)·1.4e-12 relative (well under 1e-6 for any
    reasonably conditioned problem). The extra bits cost little: a provider-granularity
    job's time hardly depends on the entry width.

    Record granularity (one target, no weights): every value is quantised to
    q = round((x − lo)/Δ) ∈ [0, 2^b) with Δ = (hi − lo)/(2^b − 1), and each row is one
    ``LinearRegressionRecord(d, b)`` measurement. The aggregate is exact for the quantised
    rows x̂ = lo + Δ·q (error |x − x̂| ≤ Δ/2 per value); decoding maps it back exactly
    (integers, then one affine change of coordinates). The fitted coefficients equal
    scikit-learn's on the quantised rows to float64 accuracy and differ from the fit on the
    raw rows by the quantisation error (relative ≈ cond·2^−b; at b ≥ 24 below 1e-6 for
    well-conditioned data). Products need records·(2^b − 1)² < p.
    """

    kind = "linear_regression"
    frac_bits: int | None
    _f: int = 0

    def __init__(
        self,
        n_features: int,
        x_bounds: Any,
        y_bounds: Any,
        granularity: str = "provider",
        max_rows: int | None = None,
        max_measurements: int | None = None,
        frac_bits: int | None = None,
        bits: int | None = None,
        n_targets: int = 1,
        max_weight: float | None = None,
    ) -> None:
        self.granularity = _check_granularity(granularity)
        self.n_features = d = _positive_int(n_features, "n_features", MAX_FEATURES)
        self.n_targets = k = _positive_int(n_targets, "n_targets", MAX_TARGETS)
        self.x_bounds = bounds_array(x_bounds, d, "x_bounds")
        self.y_bounds = bounds_array(y_bounds, k, "y_bounds")
        self.max_weight = None if max_weight is None else _weight_bound(max_weight)
        self._bounds = np.vstack([self.x_bounds, self.y_bounds])
        ynames = ["y"] if k == 1 else [f"target {j}" for j in range(k)]
        self._names = [f"feature {j}" for j in range(d)] + ynames
        if granularity == "provider":
            if max_rows is None:
                raise ConfigError("provider granularity needs max_rows (the policy's row cap)")
            self.max_rows = _positive_int(max_rows, "max_rows")
            self.max_measurements = _positive_int(
                max_measurements or DEFAULT_MAX_PROVIDERS, "max_measurements"
            )
            self.field, self._f, self.bits = choose_fixed_point(
                self.max_rows, self.max_measurements, frac_bits
            )
            self.frac_bits = self._f
            self._center, self._exp = pow2_frame(self._bounds)
            self._iu = np.triu_indices(d + k + 1)
        else:
            if k != 1 or self.max_weight is not None:
                raise ConfigError(
                    "record granularity proves one target per record and no sample weights; "
                    "use granularity='provider' for multi-output y or sample_weight"
                )
            self.max_rows = 0 if max_rows is None else _positive_int(max_rows, "max_rows")
            self.max_measurements = _positive_int(
                max_measurements or DEFAULT_MAX_RECORDS, "max_measurements"
            )
            self.field, self.bits = choose_record_bits(self.max_measurements, bits)
            self.frac_bits = None
            lo, hi = self._bounds[:, 0], self._bounds[:, 1]
            self._delta = (hi - lo) / float(2**self.bits - 1)

    def params(self) -> dict[str, Any]:
        yb = self.y_bounds[0].tolist() if self.n_targets == 1 else self.y_bounds.tolist()
        out: dict[str, Any] = {
            "n_features": self.n_features,
            "granularity": self.granularity,
            "x_bounds": self.x_bounds.tolist(),
            "y_bounds": yb,
            "max_measurements": self.max_measurements,
        }
        if self.granularity == "provider":
            out.update(max_rows=self.max_rows, frac_bits=self.frac_bits)
        else:
            out.update(bits=self.bits)
            if self.max_rows:
                out.update(max_rows=self.max_rows)
        if self.n_targets != 1:
            out["n_targets"] = self.n_targets
        if self.max_weight is not None:
            out["max_weight"] = self.max_weight
        return out

    def _build_circuit(self, field: Any) -> Any:
        d, k = self.n_features, self.n_targets
        if self.granularity == "provider":
            return circuits.SumVec((d + k + 1) * (d + k + 2) // 2, self.bits, field=field)
        return circuits.LinearRegressionRecord(d, self.bits, field=field)

    def _replacement_bounds(self) -> np.ndarray:
        if self.granularity == "provider":
            return super()._replacement_bounds()  # SumVec entries in [0, 2^bits)
        c = self.circuit  # z in [0, 2^b), products ≤ (2^b − 1)², the constant 1 fixed
        q = float(2**self.bits - 1)
        return np.concatenate([np.full(c.n_vars, q), np.full(c.n_prods, q * q), [0.0]])

    def noise_blocks(self) -> list[tuple[float, ...]] | None:
        """Record granularity: the sums Σz (bound 2^b − 1), the products Σzzᵀ ((2^b − 1)²)
        and the public count (no noise) as separate noise blocks."""
        return self._blocks_of_bounds() if self.granularity == "record" else None

    def noise_scale(self) -> float:
        """Provider: one integer unit is 2^−f of a moment in the u frame; record: one
        quantisation step (products: its square)."""
        return 2.0**-self._f if self.granularity == "provider" else 1.0

    def check_data(self, X: Any, y: Any, sample_weight: Any = None) -> None:
        """Raise ConfigError if any row lies outside the declared bounds (any number of rows),
        or a weight outside [0, max_weight]."""
        self._validated(X, y, one_provider=False)
        self._weights(sample_weight, np.shape(X)[0])

    def _weights(self, sample_weight: Any, n: int) -> np.ndarray | None:
        """ω/W (n,) in [0, 1], or None unweighted; ConfigError outside [0, W]."""
        if self.max_weight is None:
            if sample_weight is not None:
                raise ConfigError(
                    "this statistic is unweighted (max_weight=None) but sample weights were "
                    "given; declare max_weight (the policy's bound on the weights)"
                )
            return None
        if sample_weight is None:
            return np.full(n, 1.0 / self.max_weight)
        w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
        if w.shape[0] != n:
            raise ConfigError(f"{w.shape[0]} sample weights for {n} rows; give one per row")
        check_within(
            w[:, None],
            np.array([[0.0, self.max_weight]]),
            ["sample_weight"],
            "weights must be non-negative and at most the declared max_weight",
        )
        return w / self.max_weight

    def _validated(
        self, X: Any, y: Any, one_provider: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(X (n, d), Y (n, k)) as float64, checked against the declared bounds."""
        Xa = _as_2d(X)
        if Xa.shape[1] != self.n_features:
            raise ConfigError(f"X has {Xa.shape[1]} features; the job declares {self.n_features}")
        if y is None:
            raise ConfigError("linear regression needs targets y")
        ya = np.asarray(y, dtype=np.float64)
        if ya.ndim < 2:
            ya = ya.reshape(-1, 1)
        if ya.shape[0] != Xa.shape[0]:
            raise ConfigError(f"X has {Xa.shape[0]} rows but y has {ya.shape[0]}")
        if ya.shape[1] != self.n_targets:
            raise ConfigError(f"y has {ya.shape[1]} targets; the job declares {self.n_targets}")
        fix = "widen x_bounds / y_bounds (policy bounds)"
        d = self.n_features
        check_within(Xa, self.x_bounds, self._names[:d], fix)
        check_within(ya, self.y_bounds, self._names[d:], fix)
        if one_provider and self.granularity == "provider":
            self._check_rows(Xa.shape[0])
        return Xa, ya

    def local_moments(self, X: Any, y: Any, sample_weight: Any = None) -> np.ndarray:
        """(provider) Upper triangle of Σ ω̂[1, u][1, u]ᵀ over the rows, float64 (L,)."""
        Xa, ya = self._validated(X, y)
        w = self._weights(sample_weight, Xa.shape[0])
        d, k = self.n_features, self.n_targets
        At = np.empty((d + k + 1, Xa.shape[0]))  # [1, u]ᵀ, rows contiguous for the Gram
        At[0] = 1.0
        U = At[1:]
        np.subtract(Xa.T, self._center[:d, None], out=U[:d])
        np.subtract(ya.T, self._center[d:, None], out=U[d:])
        U *= np.ldexp(1.0, -self._exp)[:, None]
        np.clip(U, -1.0, 1.0, out=U)
        # One BLAS thread: tiny Gram matrices gain nothing from threads, and on a busy
        # machine (simulated providers beside the committee) spinning threads cost 10×.
        with _blas().limit(limits=1, user_api="blas"):
            G = At @ At.T if w is None else (At * w) @ At.T
        return G[self._iu]

    def quantise(self, X: Any, y: Any) -> np.ndarray:
        """(record) Rows as integers q ∈ [0, 2^bits) (n, d+1), features then y."""
        Xa, ya = self._validated(X, y)
        Z = np.hstack([Xa, ya])
        lo = self._bounds[:, 0]
        step = np.where(self._delta > 0, self._delta, 1.0)
        q = np.rint((Z - lo) / step)
        q = np.where(self._delta > 0, q, 0.0)
        return np.clip(q, 0, 2**self.bits - 1).astype(np.int64)

    def dequantise(self, q: np.ndarray) -> np.ndarray:
        """(record) The rows the circuit certifies: x̂ = lo + Δ·q, (n, d+1)."""
        return self._bounds[:, 0] + self._delta * np.asarray(q, dtype=np.float64)

    def measurements(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
        if self.granularity == "provider":
            v = self.local_moments(X, y, sample_weight)
            ints = _fixed_point(v, self._f, self.bits)
            return self.circuit.encode(ints[None, :])
        self._weights(sample_weight, np.shape(X)[0])  # raises if given: records are unweighted
        q = self.quantise(X, y)
        self._check_rows(q.shape[0])  # one provider's batch of records
        return self.circuit.encode(q)

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> dict[str, Any]:
        """Returns ``n`` (rows; the weight sum Σω when weighted), ``x_mean`` (d,),
        ``y_mean``, centred ``sxx`` (d, d), ``sxy`` (d,), ``syy``, and raw ``sum_x``,
        ``sum_y``, ``xtx``, ``xty``, ``yty`` — with k > 1 targets ``y_mean``, ``syy``,
        ``sum_y`` and ``yty`` are (k,), ``sxy`` and ``xty`` (d, k) — plus what the solvers
        decide the rank with:

        * ``x_scale`` (d,) and ``x_scale_raw`` (d,): per-feature scales s (the power-of-two
          half-widths 2^e; record: Δ) and s + |c| (c the bounds' centre; record: |lo|);
        * ``scatter_tol``: an absolute bound on the decoding error of every entry of
          ``sxx / outer(x_scale, x_scale)`` and of ``xtx / outer(x_scale_raw, x_scale_raw)``
          (provider: 4·W·(P·2^−(f+1) + P·max_rows·2^−52) for P providers, W the weight
          bound or 1; record: 0, the sums are exact for the quantised rows).
        """
        self._check_count(num_measurements)
        d, k = self.n_features, self.n_targets
        weighted = self.max_weight is not None
        W = self.max_weight or 1.0
        if self.granularity == "provider":
            v = _signed_ints(self.field, aggregate, num_measurements << (self.bits - 1))
            M = _triu_to_full(v, d + k + 1)
            scale = 2.0**self._exp
            n, mean, C = moments_to_stats(M, 1 << self._f, self._center, scale, weighted)
            if weighted:
                n, C = n * W, C * W
            rows = num_measurements * self.max_rows
            tol = 4.0 * W * (num_measurements * 2.0 ** -(self._f + 1) + rows * 2.0**-52)
            center = self._center
        else:
            if noisy_decoding():
                out = _record_sums(self.circuit, field_ints(self.field, aggregate))
            else:
                out = self.circuit.decode(np.asarray(aggregate), num_measurements)
            M = np.empty((d + 2, d + 2), dtype=object)
            M[0, 0] = out["count"]
            first = [*out["sum_x"], out["sum_y"]]
            M[0, 1:] = first
            M[1:, 0] = first
            M[1 : d + 1, 1 : d + 1] = np.array(out["xtx"], dtype=object).reshape(d, d)
            M[1 : d + 1, d + 1] = out["xty"]
            M[d + 1, 1 : d + 1] = out["xty"]
            M[d + 1, d + 1] = out["sum_yy"]
            if noisy_decoding():  # the record count is public (the receipt's): exact
                M[0, 0] = num_measurements
            scale, center = self._delta, self._bounds[:, 0]
            n, mean, C = moments_to_stats(M, 1, center, scale)
            tol = 0.0
        xm, ym = mean[:d], mean[d:]
        sxx, sxy, syy = C[:d, :d], C[:d, d:], np.diag(C)[d:].copy()
        res: dict[str, Any] = {
            "n": n,
            "x_mean": xm,
            "y_mean": ym,
            "sxx": sxx,
            "sxy": sxy,
            "syy": syy,
            "sum_x": n * xm,
            "sum_y": n * ym,
            "xtx": sxx + n * np.outer(xm, xm),
            "xty": sxy + n * np.outer(xm, ym),
            "yty": syy + n * ym * ym,
            "x_scale": np.asarray(scale[:d], dtype=np.float64),
            "x_scale_raw": np.asarray(scale[:d] + np.abs(center[:d]), dtype=np.float64),
            "scatter_tol": float(tol),
        }
        if noisy_decoding():  # raw sums straight from the moments: finite for any noisy n
            w, c = (1 << self._f, self._center) if self.granularity == "provider" else (1, center)
            _, s1, s2 = moments_to_raw_sums(M, w, c, scale)
            if self.granularity == "provider" and weighted:
                s1, s2 = s1 * W, s2 * W
            res.update(
                sum_x=s1[:d],
                sum_y=s1[d:],
                xtx=s2[:d, :d],
                xty=s2[:d, d:],
                yty=np.diag(s2)[d:].copy(),
            )
        if k == 1:
            for key in ("y_mean", "syy", "sum_y", "yty"):
                res[key] = float(res[key][0])
            for key in ("sxy", "xty"):
                res[key] = res[key][:, 0]
        return res


def _record_sums(circuit: Any, vals: list[int]) -> dict[str, Any]:
    """``LinearRegressionRecord.decode``'s dict from (signed) integer outputs."""
    d, nv = circuit.d, circuit.n_vars
    prods = vals[nv : nv + circuit.n_prods]
    full = [[0] * nv for _ in range(nv)]
    for (i, j), v in zip(zip(*circuit._iu, strict=True), prods, strict=True):
        full[i][j] = full[j][i] = int(v)
    return {
        "sum_x": vals[:d],
        "sum_y": vals[d],
        "xtx": [row[:d] for row in full[:d]],
        "xty": [full[i][d] for i in range(d)],
        "sum_yy": full[d][d],
        "count": vals[-1],
    }


def _weight_bound(value: Any) -> float:
    try:
        w = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"max_weight must be a positive finite number, got {value!r}") from None
    if not (np.isfinite(w) and w > 0):
        raise ConfigError(f"max_weight must be a positive finite number, got {value!r}")
    return w
