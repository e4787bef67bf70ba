"""Statistic kinds: what a job computes, how a provider encodes its rows, how it is decoded.

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

import math
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
from threadpoolctl import ThreadpoolController

from kaires_fl.arith import circuits
from kaires_fl.arith.field import Field64, Field128
from kaires_fl.errors import ConfigError, DecodingError

GRANULARITIES: tuple[str, ...] = ("provider", "record")

#: Fractional bits of provider-granularity sums when not given (capped by the field).
DEFAULT_FRAC_BITS = 40
#: Least fractional bits the automatic choice accepts in Field64 before moving to Field128.
MIN_AUTO_FRAC_BITS = 24
#: Quantisation bits of record-granularity values when not given (capped by the field).
DEFAULT_RECORD_BITS = 28
#: Least record bits the automatic choice accepts in Field64 before moving to Field128.
MIN_AUTO_RECORD_BITS = 12
#: Default job sizes (accepted measurements) when a statistic is built without one.
DEFAULT_MAX_PROVIDERS = 1024
DEFAULT_MAX_RECORDS = 1 << 20

_FIELDS: tuple[Any, ...] = (Field64, Field128)
# _bits_of in the circuits decomposes uint64 values, and the circuits need bits < log2(p) − 1.
_MAX_VEC_BITS = 62
# LinearRegressionRecord multiplies values in uint64.
_MAX_RECORD_BITS = 31


# ---------------------------------------------------------------------------- helpers


def _check_granularity(granularity: str) -> str:
    if granularity not in GRANULARITIES:
        raise ConfigError(
            f"granularity must be one of {GRANULARITIES}, got {granularity!r}: 'provider' "
            "submits each provider's local sums, 'record' one proved measurement per row"
        )
    return granularity


def _positive_int(value: Any, name: str) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}") from None
    if v < 1 or v != value:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return v


def bounds_array(bounds: Any, k: int, what: str) -> np.ndarray:
    """Bounds ``(k, 2)`` (lo, hi) from ``[lo, hi]`` (every column) or ``[[lo, hi]] * k``.

    Raises ConfigError unless every bound is finite with lo ≤ hi.
    """
    try:
        b = np.asarray(bounds, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be [lo, hi] or a list of {k} [lo, hi] pairs") from None
    if b.shape == (2,):
        b = np.tile(b, (k, 1))
    if b.shape != (k, 2):
        raise ConfigError(
            f"{what} must be [lo, hi] or a list of {k} [lo, hi] pairs, got shape {b.shape}"
        )
    if not np.all(np.isfinite(b)) or np.any(b[:, 0] > b[:, 1]):
        raise ConfigError(f"{what} must be finite with lo ≤ hi, got {b.tolist()}")
    return b


def check_within(values: np.ndarray, bounds: np.ndarray, names: list[str], fix: str) -> None:
    """Raise ConfigError naming the first column with a value outside ``bounds`` (or non-finite).

    values ``(n, k)``, bounds ``(k, 2)``; ``fix`` says which parameter to change.
    """
    if np.all((values >= bounds[:, 0]) & (values <= bounds[:, 1])):  # NaN compares False
        return
    bad = ~np.isfinite(values)
    if np.any(bad):
        i, j = np.argwhere(bad)[0]
        raise ConfigError(f"{names[j]} has a non-finite value in row {i}; clean the data first")
    out = (values < bounds[:, 0]) | (values > bounds[:, 1])
    if np.any(out):
        i, j = np.argwhere(out)[0]
        lo, hi = bounds[j]
        raise ConfigError(
            f"{names[j]} has value {float(values[i, j])!r} (row {i}) outside its declared "
            f"bounds [{float(lo)!r}, {float(hi)!r}]; {fix}"
        )


def pow2_frame(bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre c and exponent e per column so that u = (x − c)·2^−e lies in [−1, 1].

    c is the midpoint of the bounds, 2^e the least power of two ≥ the half-width (e = 0 for a
    constant column). Scaling by powers of two is exact in float64.
    """
    lo, hi = bounds[:, 0], bounds[:, 1]
    c = lo + (hi - lo) / 2
    h = np.maximum(hi - c, c - lo)
    m, E = np.frexp(h)
    e = np.where(m == 0.5, E - 1, E)
    return c, np.where(h > 0, e, 0).astype(np.int64)


def _vec_bits_cap(F: Any, max_measurements: int) -> int:
    """Largest b with max_measurements·(2^b − 1) < p, within the circuits' limits."""
    b = ((F.MODULUS - 1) // max_measurements + 1).bit_length() - 1
    return min(b, _MAX_VEC_BITS, F.MODULUS.bit_length() - 2)


def _record_bits_cap(F: Any, max_measurements: int) -> int:
    """Largest b with max_measurements·(2^b − 1)² < p, within the circuit's limits."""
    lim = (F.MODULUS - 1) // max_measurements
    b = (math.isqrt(lim) + 1).bit_length() - 1
    return min(b, _MAX_RECORD_BITS, (F.MODULUS.bit_length() - 2) // 2)


def choose_fixed_point(
    max_rows: int, max_measurements: int, frac_bits: int | None
) -> tuple[Any, int, int]:
    """Field, fractional bits f and entry bits for signed sums bounded by ``max_rows``.

    An entry v with |v| ≤ max_rows is sent as round(v·2^f) + 2^(bits−1) ∈ [0, 2^bits), with
    bits = bitlen(max_rows) + f + 1; ``max_measurements`` of them must not wrap the field.
    ``frac_bits=None`` takes DEFAULT_FRAC_BITS, or fewer if Field64 cannot hold them (but at
    least MIN_AUTO_FRAC_BITS, else Field128). Raises ConfigError if no field can.
    """
    r = max_rows.bit_length()
    for F in _FIELDS:
        cap = _vec_bits_cap(F, max_measurements)
        if frac_bits is None:
            f = min(DEFAULT_FRAC_BITS, cap - r - 1)
            if f >= MIN_AUTO_FRAC_BITS:
                return F, f, r + f + 1
        elif frac_bits >= 0 and r + frac_bits + 1 <= cap:
            return F, frac_bits, r + frac_bits + 1
    best = _vec_bits_cap(Field128, max_measurements) - r - 1
    raise ConfigError(
        f"sums of {max_measurements} measurements of up to {max_rows} rows with "
        f"frac_bits={frac_bits} could wrap every field; use frac_bits ≤ {max(best, 0)}, a "
        "smaller max_rows (policy row cap) or fewer providers per job"
    )


def choose_record_bits(max_measurements: int, bits: int | None) -> tuple[Any, int]:
    """Field and quantisation bits b so that max_measurements·(2^b − 1)² cannot wrap."""
    for F in _FIELDS:
        cap = _record_bits_cap(F, max_measurements)
        if bits is None:
            b = min(DEFAULT_RECORD_BITS, cap)
            if b >= MIN_AUTO_RECORD_BITS:
                return F, b
        elif 1 <= bits <= cap:
            return F, bits
    best = _record_bits_cap(Field128, max_measurements)
    raise ConfigError(
        f"record sums over {max_measurements} records with bits={bits} could wrap every field "
        f"(products need records·(2^bits − 1)² < p); use bits ≤ {best} or fewer records per job"
    )


def _signed_ints(F: Any, aggregate: np.ndarray, offset: int) -> np.ndarray:
    """Field sums minus ``offset``, as Python ints in (−p/2, p/2] (object array)."""
    p = F.MODULUS
    out = np.empty(np.shape(aggregate), dtype=object)
    flat = out.reshape(-1)
    for k, v in enumerate(np.asarray(F.to_ints(np.asarray(aggregate)), dtype=object).ravel()):
        s = (int(v) - offset) % p
        flat[k] = s - p if s > p // 2 else s
    return out


def _triu_to_full(entries: np.ndarray, m: int) -> np.ndarray:
    """Symmetric (m, m) object matrix from its upper triangle in ``np.triu_indices`` order."""
    full = np.empty((m, m), dtype=object)
    iu = np.triu_indices(m)
    full[iu] = entries
    full[(iu[1], iu[0])] = entries
    return full


def moments_to_stats(
    M: np.ndarray, w: int, center: np.ndarray, scale: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray]:
    """Count, means and centred scatter from an exact integer moment matrix.

    ``M`` (k+1, k+1) holds w·Σ[1, u][1, u]ᵀ over the rows (Python ints), where every
    original coordinate is x = center + scale·u. Centring is done exactly in integers
    (n·Σu_iu_j − Σu_iΣu_j), so no cancellation happens in floating point.

    Returns (n, mean (k,), C (k, k)) with C = Σ(x − mean)(x − mean)ᵀ.
    """
    M00 = int(M[0, 0])
    if M00 % w:
        raise DecodingError(
            "the decoded row count is not an integer: the aggregate does not match this "
            "statistic; check that every party rebuilt it from the job's (kind, params)"
        )
    n = M00 // w
    k = M.shape[0] - 1
    if n <= 0:
        return 0, np.full(k, np.nan), np.full((k, k), np.nan)
    s = M[0, 1:]
    num = M[1:, 1:] * M00 - np.outer(s, s)
    Cu = np.array([float(v) for v in num.ravel()]).reshape(k, k) / float(w * M00)
    mean_u = np.array([float(v) for v in s]) / float(M00)
    C = Cu * np.outer(scale, scale)
    return n, center + scale * mean_u, C


# --------------------------------------------------------------------------- base class


class Statistic:
    """A statistic kind (see the module docstring). Subclasses set ``kind`` and build
    ``field`` and ``circuit`` in ``__init__``; ``params()`` returns what ``from_params``
    needs to rebuild an identical statistic."""

    kind: ClassVar[str]
    granularity: str
    field: Any
    max_measurements: int

    @cached_property
    def circuit(self) -> Any:
        return self._build_circuit(self.field)

    def _build_circuit(self, field: Any) -> Any:
        raise NotImplementedError

    @property
    def output_len(self) -> int:
        return int(self.circuit.OUTPUT_LEN)

    @property
    def meas_len(self) -> int:
        return int(self.circuit.MEAS_LEN)

    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def spec(self) -> tuple[str, dict[str, Any]]:
        """``(kind, params)`` as recorded in a job."""
        return self.kind, self.params()

    @classmethod
    def from_params(cls, kind: str, params: dict[str, Any]) -> Statistic:
        """Rebuild a statistic from a job's ``(kind, params)``."""
        return from_params(kind, params)

    def measurements(self, X: Any, y: Any = None) -> np.ndarray:
        raise NotImplementedError

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> dict[str, Any]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Statistic) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(repr(self.spec()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    # shared checks ----------------------------------------------------------------

    def _set_sizes(
        self, granularity: str, max_rows: int | None, max_measurements: int | None
    ) -> None:
        """Set ``granularity``, ``max_rows`` (the policy's row cap per provider: required in
        provider granularity, optional in record granularity, where it bounds each
        provider's batch) and ``max_measurements`` (default: providers or records per job)."""
        self.granularity = _check_granularity(granularity)
        if granularity == "provider":
            if max_rows is None:
                raise ConfigError("provider granularity needs max_rows (the policy's row cap)")
            self.max_rows = _positive_int(max_rows, "max_rows")
            default = DEFAULT_MAX_PROVIDERS
        else:
            self.max_rows = 0 if max_rows is None else _positive_int(max_rows, "max_rows")
            default = DEFAULT_MAX_RECORDS
        self.max_measurements = _positive_int(max_measurements or default, "max_measurements")

    def _fit_field(self, sizes: Any) -> Any:
        """First field whose circuit can sum ``max_measurements`` outputs without wrapping."""
        for F in _FIELDS:
            if self._build_circuit(F).max_measurements() >= self.max_measurements:
                return F
        raise ConfigError(
            f"{self.kind}: sums of {self.max_measurements} measurements ({sizes}) could wrap "
            "the field; lower max_measurements or max_rows"
        )

    def _check_count(self, num_measurements: int) -> None:
        if not 0 <= num_measurements <= self.max_measurements:
            raise ConfigError(
                f"{num_measurements} measurements were aggregated but the statistic was sized "
                f"for at most max_measurements={self.max_measurements}; rebuild it with a "
                "larger max_measurements"
            )

    def _check_rows(self, n: int) -> None:
        if self.granularity == "provider" and n > self.max_rows:
            raise ConfigError(
                f"a provider has {n} rows but the policy's row cap is max_rows={self.max_rows}; "
                "raise max_rows (the bound every provider-level sum is range-checked against)"
            )
        if self.granularity == "record" and n > self.max_batch:
            raise ConfigError(
                f"a provider has {n} rows but a job of this statistic admits at most "
                f"{self.max_batch} records per provider (max_rows={self.max_rows or None}, "
                f"max_measurements={self.max_measurements}); raise them or split the data"
            )

    @property
    def max_batch(self) -> int:
        """Most measurements ONE provider may submit: 1 in provider granularity (its local
        statistic counts once), else its row cap ``max_rows`` (when set) and never more
        than ``max_measurements``. Aggregators refuse a larger batch
        (:func:`kaires_fl.aggregation.submission.max_batch`)."""
        if self.granularity != "record":
            return 1
        if self.max_rows:
            return min(self.max_rows, self.max_measurements)
        return self.max_measurements

    #: The policy's row cap per provider (0: none, record granularity only).
    max_rows: int = 0


def _as_2d(X: Any, what: str = "X") -> np.ndarray:
    a = np.asarray(X, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ConfigError(f"{what} must be 1-D or 2-D, got shape {a.shape}")
    return a


# ------------------------------------------------------------------- linear regression


class LinearRegressionStats(Statistic):
    """Sufficient statistics of least squares: n, Σx, Σy, XᵀX, Xᵀy, yᵀy (intercept by
    augmenting x with a constant 1).

    Parameters
    ----------
    n_features : d.
    x_bounds, y_bounds : declared bounds ([lo, hi] for every feature, or one pair per feature).
    granularity : ``"provider"`` or ``"record"``.
    max_rows : the policy's row cap per provider (required in provider granularity; in
        record granularity optional, it bounds each provider's batch of records).
    max_measurements : accepted measurements the job may sum (providers, or records).
    frac_bits : (provider) fractional bits f of the fixed-point sums (None: automatic).
    bits : (record) quantisation bits b of each value (None: automatic).

    Provider granularity: each column is mapped exactly to u = (x − c)·2^−e ∈ [−1, 1]
    (:func:`pow2_frame`), the provider computes in float64 the upper triangle of
    Σ[1, u, u_y][1, u, u_y]ᵀ over its rows (every entry bounded by max_rows), and sends each
    entry as round(v·2^f) + 2^(bits−1), range-checked by ``SumVec(L, bits)`` with
    bits = bitlen(max_rows) + f + 1 and L = (d+2)(d+3)/2. Error bound: every decoded moment
    (in u units) is exact to P·2^−(f+1) for P accepted providers, on top of float64 rounding
    of the local sums; centring is exact (integers). The decoded centred scatter therefore
    has relative error ≲ 3·P·2^−(f+1) / (n·v), v the smallest per-column variance in u units
    (v ≥ 0.01 when the data spread over a tenth of its bounds): with the default f = 40,
    P = 100 providers and n = 10^4 rows, ≤ 1.4e-12, and the fitted coefficients agree with
    scikit-learn's to ≈ cond(centred XᵀX)·1.4e-12 relative (well under 1e-6 for any
    reasonably conditioned problem). The extra bits cost little: a provider-granularity
    job's time hardly depends on the entry width.

    Record granularity: every value is quantised to q = round((x − lo)/Δ) ∈ [0, 2^b) with
    Δ = (hi − lo)/(2^b − 1), and each row is one ``LinearRegressionRecord(d, b)``
    measurement. The aggregate is exact for the quantised rows x̂ = lo + Δ·q (error
    |x − x̂| ≤ Δ/2 per value); decoding maps it back exactly (integers, then one affine
    change of coordinates). The fitted coefficients equal scikit-learn's on the quantised
    rows to float64 accuracy and differ from the fit on the raw rows by the quantisation
    error (relative ≈ cond·2^−b; at b ≥ 24 below 1e-6 for well-conditioned
    data). Products need records·(2^b − 1)² < p.
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
    ) -> None:
        self.granularity = _check_granularity(granularity)
        self.n_features = d = _positive_int(n_features, "n_features")
        self.x_bounds = bounds_array(x_bounds, d, "x_bounds")
        self.y_bounds = bounds_array(y_bounds, 1, "y_bounds")
        self._bounds = np.vstack([self.x_bounds, self.y_bounds])
        self._names = [f"feature {j}" for j in range(d)] + ["y"]
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
            self._iu = np.triu_indices(d + 2)
        else:
            self.max_rows = 0 if max_rows is None else _positive_int(max_rows, "max_rows")
            self.max_measurements = _positive_int(
                max_measurements or DEFAULT_MAX_RECORDS, "max_measurements"
            )
            self.field, self.bits = choose_record_bits(self.max_measurements, bits)
            self.frac_bits = None
            lo, hi = self._bounds[:, 0], self._bounds[:, 1]
            self._delta = (hi - lo) / float(2**self.bits - 1)

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n_features": self.n_features,
            "granularity": self.granularity,
            "x_bounds": self.x_bounds.tolist(),
            "y_bounds": self.y_bounds[0].tolist(),
            "max_measurements": self.max_measurements,
        }
        if self.granularity == "provider":
            out.update(max_rows=self.max_rows, frac_bits=self.frac_bits)
        else:
            out.update(bits=self.bits)
            if self.max_rows:
                out.update(max_rows=self.max_rows)
        return out

    def _build_circuit(self, field: Any) -> Any:
        d = self.n_features
        if self.granularity == "provider":
            return circuits.SumVec((d + 2) * (d + 3) // 2, self.bits, field=field)
        return circuits.LinearRegressionRecord(d, self.bits, field=field)

    def check_data(self, X: Any, y: Any) -> None:
        """Raise ConfigError if any row lies outside the declared bounds (any number of rows)."""
        self._validated(X, y, one_provider=False)

    def _validated(
        self, X: Any, y: Any, one_provider: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(X (n, d), y (n,)) as float64, checked against the declared bounds."""
        Xa = _as_2d(X)
        if Xa.shape[1] != self.n_features:
            raise ConfigError(f"X has {Xa.shape[1]} features; the job declares {self.n_features}")
        if y is None:
            raise ConfigError("linear regression needs targets y")
        ya = np.asarray(y, dtype=np.float64).reshape(-1)
        if ya.shape[0] != Xa.shape[0]:
            raise ConfigError(f"X has {Xa.shape[0]} rows but y has {ya.shape[0]}")
        fix = "widen x_bounds / y_bounds (policy bounds)"
        check_within(Xa, self.x_bounds, self._names[:-1], fix)
        check_within(ya[:, None], self.y_bounds, self._names[-1:], fix)
        if one_provider and self.granularity == "provider":
            self._check_rows(Xa.shape[0])
        return Xa, ya

    def local_moments(self, X: Any, y: Any) -> np.ndarray:
        """(provider) Upper triangle of Σ[1, u][1, u]ᵀ over the rows, float64 (L,)."""
        Xa, ya = self._validated(X, y)
        d = self.n_features
        At = np.empty((d + 2, Xa.shape[0]))  # [1, u]ᵀ, rows contiguous for the Gram
        At[0] = 1.0
        U = At[1:]
        np.subtract(Xa.T, self._center[:d, None], out=U[:d])
        np.subtract(ya, self._center[d], out=U[d])
        U *= np.ldexp(1.0, -self._exp)[:, None]
        np.clip(U, -1.0, 1.0, out=U)
        # One BLAS thread: tiny Gram matrices gain nothing from threads, and on a busy
        # machine (simulated providers beside the committee) spinning threads cost 10×.
        with _blas().limit(limits=1, user_api="blas"):
            G = At @ At.T
        return G[self._iu]

    def quantise(self, X: Any, y: Any) -> np.ndarray:
        """(record) Rows as integers q ∈ [0, 2^bits) (n, d+1), features then y."""
        Xa, ya = self._validated(X, y)
        Z = np.hstack([Xa, ya[:, None]])
        lo = self._bounds[:, 0]
        step = np.where(self._delta > 0, self._delta, 1.0)
        q = np.rint((Z - lo) / step)
        q = np.where(self._delta > 0, q, 0.0)
        return np.clip(q, 0, 2**self.bits - 1).astype(np.int64)

    def dequantise(self, q: np.ndarray) -> np.ndarray:
        """(record) The rows the circuit certifies: x̂ = lo + Δ·q, (n, d+1)."""
        return self._bounds[:, 0] + self._delta * np.asarray(q, dtype=np.float64)

    def measurements(self, X: Any, y: Any = None) -> np.ndarray:
        if self.granularity == "provider":
            v = self.local_moments(X, y)
            ints = _fixed_point(v, self._f, self.bits)
            return self.circuit.encode(ints[None, :])
        q = self.quantise(X, y)
        self._check_rows(q.shape[0])  # one provider's batch of records
        return self.circuit.encode(q)

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> dict[str, Any]:
        """Returns ``n``, ``x_mean`` (d,), ``y_mean``, centred ``sxx`` (d, d), ``sxy`` (d,),
        ``syy``, and raw ``sum_x``, ``sum_y``, ``xtx``, ``xty``, ``yty``."""
        self._check_count(num_measurements)
        d = self.n_features
        if self.granularity == "provider":
            v = _signed_ints(self.field, aggregate, num_measurements << (self.bits - 1))
            M = _triu_to_full(v, d + 2)
            n, mean, C = moments_to_stats(M, 1 << self._f, self._center, 2.0**self._exp)
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
            n, mean, C = moments_to_stats(M, 1, self._bounds[:, 0], self._delta)
        xm, ym = mean[:d], float(mean[d])
        sxx, sxy, syy = C[:d, :d], C[:d, d], float(C[d, d])
        return {
            "n": n,
            "x_mean": xm,
            "y_mean": ym,
            "sxx": sxx,
            "sxy": sxy,
            "syy": syy,
            "sum_x": n * xm,
            "sum_y": n * ym,
            "xtx": sxx + n * np.outer(xm, xm),
            "xty": sxy + n * xm * ym,
            "yty": syy + n * ym * ym,
        }


_BLAS: list[ThreadpoolController] = []


def _blas() -> ThreadpoolController:
    """The process's BLAS thread pools (scanned once: a scan costs ~15 ms)."""
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0]


def _fixed_point(v: np.ndarray, frac_bits: int, bits: int) -> np.ndarray:
    """round(v·2^f) + 2^(bits−1) as int64 (bits ≤ 62, so it fits)."""
    ints = np.rint(np.ldexp(v, frac_bits)).astype(np.int64) + np.int64(1 << (bits - 1))
    if np.any(ints < 0) or np.any(ints >= (1 << bits)):
        raise ConfigError("a local sum exceeds max_rows × bounds; raise max_rows")
    return ints


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
        out: dict[str, Any] = {
            "granularity": self.granularity,
            "max_measurements": self.max_measurements,
        }
        if self.max_rows:
            out["max_rows"] = self.max_rows
        return out

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
        return {"count": int(self.circuit.decode(np.asarray(aggregate), num_measurements))}


# ---------------------------------------------------------------------- mean, variance


class MeanVarianceStats(Statistic):
    """Count, mean and variance (ddof = 0) of every column, from n, Σx, Σx².

    ``"provider"``: [n, Σu, Σu²] in the exact power-of-two frame of
    :class:`LinearRegressionStats` as a fixed-point ``SumVec`` (same error bound).
    ``"record"``: each row quantised to ``bits`` and proved as a ``LinearRegressionRecord``
    with y ≡ 0 (its XᵀX diagonal is Σx², proved consistent with x); exact for the
    quantised rows.
    """

    kind = "mean_variance"
    _f: int = 0

    def __init__(
        self,
        n_features: int,
        bounds: Any,
        granularity: str = "provider",
        max_rows: int | None = None,
        max_measurements: int | None = None,
        frac_bits: int | None = None,
        bits: int | None = None,
    ) -> None:
        self.n_features = _positive_int(n_features, "n_features")
        self.bounds = bounds_array(bounds, self.n_features, "bounds")
        self.granularity = _check_granularity(granularity)
        # Record granularity reuses the regression encoding with a constant target.
        self._reg = LinearRegressionStats(
            self.n_features,
            self.bounds,
            [0.0, 0.0],
            granularity,
            max_rows,
            max_measurements,
            frac_bits,
            bits,
        )
        self.max_measurements = self._reg.max_measurements
        self.field = self._reg.field
        self.max_rows = self._reg.max_rows
        if granularity == "provider":
            self._f, self.bits = self._reg._f, self._reg.bits
            self._center, self._exp = pow2_frame(self.bounds)
        else:
            self.bits = self._reg.bits

    def params(self) -> dict[str, Any]:
        p = self._reg.params()
        p.pop("y_bounds")
        p["bounds"] = p.pop("x_bounds")
        return p

    def _build_circuit(self, field: Any) -> Any:
        if self.granularity == "provider":
            return circuits.SumVec(2 * self.n_features + 1, self.bits, field=field)
        return self._reg._build_circuit(field)

    def measurements(self, X: Any, y: Any = None) -> np.ndarray:
        Xa = _as_2d(X)
        zeros = np.zeros(Xa.shape[0])
        if self.granularity == "record":
            return self._reg.measurements(Xa, zeros)
        Z = self._reg._validated(Xa, zeros)[0]
        U = np.clip((Z - self._center) * np.ldexp(1.0, -self._exp), -1.0, 1.0)
        v = np.concatenate([[U.shape[0]], U.sum(axis=0), (U * U).sum(axis=0)])
        return self.circuit.encode(_fixed_point(v, self._f, self.bits)[None, :])

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> dict[str, Any]:
        """Returns ``n``, ``mean`` (d,), ``var`` (d,, ddof = 0), ``sum`` and ``sum_sq`` (d,)."""
        self._check_count(num_measurements)
        d = self.n_features
        if self.granularity == "record":
            r = self._reg.decode(aggregate, num_measurements)
            n, mean, var = r["n"], r["x_mean"], np.diag(r["sxx"]) / max(r["n"], 1)
        else:
            v = _signed_ints(self.field, aggregate, num_measurements << (self.bits - 1))
            M = np.empty((d + 1, d + 1), dtype=object)
            M[...] = 0  # off-diagonal cross moments are not collected
            M[0, 0] = v[0]
            M[0, 1:] = v[1 : d + 1]
            M[1:, 0] = v[1 : d + 1]
            M[np.arange(1, d + 1), np.arange(1, d + 1)] = v[d + 1 :]
            n, mean, C = moments_to_stats(M, 1 << self._f, self._center, 2.0**self._exp)
            var = np.diag(C) / max(n, 1)
        if n == 0:
            var = np.full(d, np.nan)
        return {
            "n": n,
            "mean": mean,
            "var": var,
            "sum": n * mean,
            "sum_sq": n * (var + mean * mean),
        }


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
        out: dict[str, Any] = {
            "edges": self.edges.tolist(),
            "column": self.column,
            "granularity": self.granularity,
            "max_measurements": self.max_measurements,
        }
        if self.max_rows:
            out["max_rows"] = self.max_rows
        return out

    def _build_circuit(self, field: Any) -> Any:
        if self.granularity == "provider":
            return circuits.SumVec(self.bins, self.max_rows.bit_length(), field=field)
        return circuits.Histogram(self.bins, field=field)

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
        counts = np.array(self.circuit.decode(np.asarray(aggregate), num_measurements))
        return {
            "counts": counts.astype(np.int64),
            "edges": self.edges.copy(),
            "n": int(counts.sum()),
        }


# ----------------------------------------------------------------------------- registry

KINDS: dict[str, type[Statistic]] = {
    cls.kind: cls for cls in (LinearRegressionStats, CountStats, MeanVarianceStats, HistogramStats)
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
