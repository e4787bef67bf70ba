"""Shared machinery of the statistic kinds: the :class:`Statistic` base class, bounds,
power-of-two frames, fixed-point and record-bit sizing, exact integer decoding helpers.

See :mod:`kaires_fl.statistics` for what a statistic is.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
from threadpoolctl import ThreadpoolController

from kaires_fl.arith import circuits as _circuits
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


#: Most features (columns) a statistic takes. Parameters come from a job on the ledger —
#: anyone's — and several statistics allocate O(n_features²) when built: the cap keeps a
#: hostile job from exhausting an aggregator's memory before any check runs.
MAX_FEATURES = 4096
#: Most regression targets one job takes (same reason).
MAX_TARGETS = 1024


def _positive_int(value: Any, name: str, limit: int | None = None) -> int:
    """``value`` as an int in [1, limit]; ConfigError otherwise (checked before any use)."""
    try:
        v = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}") from None
    if v < 1 or v != value:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if limit is not None and v > limit:
        raise ConfigError(f"{name} = {v} exceeds the limit of {limit}; split the job")
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


#: Set while a noisy aggregate (differential privacy) is decoded: sums may then be negative
#: and a row count need not be an integer (:meth:`Statistic.decode_noisy`).
_NOISY: ContextVar[bool] = ContextVar("kaires_noisy_decode", default=False)


def noisy_decoding() -> bool:
    """Whether the aggregate being decoded carries differential-privacy noise."""
    return _NOISY.get()


@contextmanager
def _noisy() -> Iterator[None]:
    token = _NOISY.set(True)
    try:
        yield
    finally:
        _NOISY.reset(token)


def field_ints(F: Any, aggregate: np.ndarray) -> list[int]:
    """The aggregate's elements as Python ints: in [0, p) for an exact aggregate, centred in
    (−p/2, p/2] while a noisy one is decoded (noise can take a sum below zero)."""
    if noisy_decoding():
        return [int(v) for v in _signed_ints(F, aggregate, 0).reshape(-1)]
    return [int(v) for v in F.to_ints(np.asarray(aggregate))]


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
    M: np.ndarray, w: int, center: np.ndarray, scale: np.ndarray, weighted: bool = False
) -> tuple[Any, np.ndarray, np.ndarray]:
    """Count, means and centred scatter from an exact integer moment matrix.

    ``M`` (k+1, k+1) holds w·Σ[1, u][1, u]ᵀ over the rows (Python ints), where every
    original coordinate is x = center + scale·u. Centring is done exactly in integers
    (n·Σu_iu_j − Σu_iΣu_j), so no cancellation happens in floating point.

    Returns (n, mean (k,), C (k, k)) with C = Σ(x − mean)(x − mean)ᵀ. ``weighted``: the
    rows carried weights, M holds w·Σ ω[1, u][1, u]ᵀ and n is the weight sum Σω (a float,
    not necessarily an integer).
    """
    M00 = int(M[0, 0])
    if weighted or (noisy_decoding() and M00 % w):
        k = M.shape[0] - 1
        if M00 <= 0:  # a noisy count ≤ 0: the n-divided statistics are undefined
            return M00 / w, np.full(k, np.nan), np.full((k, k), np.nan)
        s = M[0, 1:]
        num = M[1:, 1:] * M00 - np.outer(s, s)
        Cu = np.array([float(v) for v in num.ravel()]).reshape(k, k) / (float(w) * M00)
        mean_u = np.array([float(v) for v in s]) / float(M00)
        return M00 / w, center + scale * mean_u, Cu * np.outer(scale, scale)
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


def moments_to_raw_sums(
    M: np.ndarray, w: int, center: np.ndarray, scale: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Count, Σx (k,) and Σxxᵀ (k, k) in the original units from a moment matrix ``M``
    of :func:`moments_to_stats` (x = center + scale·u).

    None of them divides by the count: they stay finite whatever the (noisy) count, so a
    consumer of a noisy aggregate can post-process them (clamp n, recentre) itself.
    """
    Mf = np.array([float(v) for v in np.asarray(M).ravel()]).reshape(M.shape) / float(w)
    n, su, suu = Mf[0, 0], Mf[0, 1:], Mf[1:, 1:]
    c, s = np.asarray(center, dtype=np.float64), np.asarray(scale, dtype=np.float64)
    ssu = s * su
    s1 = n * c + ssu
    s2 = n * np.outer(c, c) + np.outer(c, ssu) + np.outer(ssu, c) + np.outer(s, s) * suu
    return n, s1, s2


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
        from kaires_fl.statistics import from_params

        return from_params(kind, params)

    def measurements(self, X: Any, y: Any = None) -> np.ndarray:
        raise NotImplementedError

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> dict[str, Any]:
        raise NotImplementedError

    def decode_noisy(self, aggregate: np.ndarray, num_measurements: int) -> dict[str, Any]:
        """:meth:`decode` of an aggregate carrying differential-privacy noise: sums may be
        negative, counts fractional (a noisy row count is a float; clamp it if needed)."""
        with _noisy():
            return self.decode(aggregate, num_measurements)

    # differential privacy ---------------------------------------------------------

    def sensitivity(self) -> dict[str, Any]:
        """What the validity circuit proves about one privacy unit's influence.

        Returns ``{"l2", "l1", "unit", "scale"}``: the L2 / L1 norms of the largest change
        of the aggregate (in its integer field units) when ONE unit's contribution is
        replaced by any other valid one — ``unit`` is ``"provider"`` (its whole
        contribution, provider granularity) or ``"record"`` (one row, record
        granularity); the number of accepted measurements is public in the receipt, so
        neighbouring jobs differ by a replacement, not an addition. ``scale``: decoded
        units per integer unit (what ``report["privacy"]["sigma"]`` is expressed in).
        Raises ConfigError for a statistic whose circuit proves no bound.
        """
        m = np.asarray(self._replacement_bounds(), dtype=np.float64)
        return {
            "l2": float(np.sqrt(np.sum(m * m))),
            "l1": float(np.sum(m)),
            "unit": self.granularity,
            "scale": float(self.noise_scale()),
        }

    def _replacement_bounds(self) -> np.ndarray:
        """Per output coordinate, the most one measurement can move it (integer units), as
        the circuit proves: ``[0, 2^bits)`` entries for Sum / SumVec, a bit for Count."""
        c = self.circuit
        if isinstance(c, _circuits.SumVec | _circuits.Sum):
            return np.full(c.OUTPUT_LEN, float(2**c.bits - 1))
        if isinstance(c, _circuits.Count):
            return np.ones(1)
        raise ConfigError(
            f"{type(self).__name__} states no proven sensitivity: it cannot be run with "
            "differential privacy"
        )

    def noise_scale(self) -> float:
        """Decoded units per integer unit of the aggregate (1: counts)."""
        return 1.0

    def noise_blocks(self) -> list[tuple[float, ...]] | None:
        """Output blocks ``(start, stop, m)`` (covering the output in order) whose
        coordinates one unit moves by at most m each, when they differ enough that each
        block should get its own noise (σ_j ∝ m_j, a public block m = 0 none); None: one σ
        on every coordinate. Default None; statistics whose coordinates mix bounds (record
        regressions: sums 2^b − 1, products (2^b − 1)², the count fixed) override it."""
        return None

    def _blocks_of_bounds(self) -> list[tuple[float, ...]] | None:
        """The runs of equal :meth:`_replacement_bounds` as blocks (None: a single run)."""
        m = np.asarray(self._replacement_bounds(), dtype=np.float64)
        cuts = [0, *(np.flatnonzero(np.diff(m) != 0) + 1).tolist(), len(m)]
        if len(cuts) == 2:
            return None
        return [(a, b, float(m[a])) for a, b in itertools.pairwise(cuts)]

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

    def _size_params(self) -> dict[str, Any]:
        """The ``params()`` entries of :meth:`_set_sizes`: ``granularity``,
        ``max_measurements`` and ``max_rows`` (only when set)."""
        out: dict[str, Any] = {
            "granularity": self.granularity,
            "max_measurements": self.max_measurements,
        }
        if self.max_rows:
            out["max_rows"] = self.max_rows
        return out

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
