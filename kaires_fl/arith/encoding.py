"""Fixed-point and bounded-integer encoders of signed values into a prime field.

A value becomes a *bits*-bit unsigned integer by an offset for the sign:

    e = q + 2^(bits−1) ∈ [0, 2^bits),   q = round(x · 2^frac_bits)   (fixed point)
                                        q = x                        (integers)

so a validity circuit can range-check ``e`` by its bits. Sums of encodings are decoded by
subtracting ``count · 2^(bits−1)`` and dividing by the scale.

Bounds (all checked, :class:`~kaires_fl.errors.ConfigError` otherwise):

* **Representable range.** q ∈ [−2^(bits−1), 2^(bits−1) − 1], i.e. for fixed point
  x ∈ [−2^(bits−1−frac_bits), (2^(bits−1) − 1)·2^(−frac_bits)] after rounding.
* **No wrap-around.** ``max_summands · 2^bits ≤ p``. Every encoding a range check accepts is
  < 2^bits, so the integer sum of up to ``max_summands`` of them is < p and the field sum
  equals the integer sum: decoding is exact, even with adversarial (but range-checked) values.
* **Rounding.** Each fixed-point value is off by at most 2^−(frac_bits+1); a decoded sum of
  n values by at most n·2^−(frac_bits+1) (plus float64 rounding of the final division).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kaires_fl.arith.field import PrimeField
from kaires_fl.errors import ConfigError, EncodingError

Field = type[PrimeField]


class OffsetEncoder:
    """Signed integers q ∈ [−2^(bits−1), 2^(bits−1)) as q + 2^(bits−1) in field F.

    Parameters
    ----------
    field : the prime field (``Field64`` or ``Field128``).
    bits : width of the encoding; the circuit range-checks e < 2^bits.
    max_summands : most encodings ever added together; requires max_summands·2^bits ≤ p.
    length : if given, encode accepts only arrays whose last axis has this length.
    """

    def __init__(self, field: Field, bits: int, max_summands: int, length: int | None = None):
        if not (isinstance(field, type) and issubclass(field, PrimeField)):
            raise ConfigError(f"field must be Field64 or Field128, got {field!r}")
        if bits < 1:
            raise ConfigError(f"bits = {bits} must be at least 1")
        if max_summands < 1:
            raise ConfigError(f"max_summands = {max_summands} must be at least 1")
        if length is not None and length < 0:
            raise ConfigError(f"length = {length} must be non-negative")
        p = field.MODULUS
        if max_summands << bits > p:
            raise ConfigError(
                f"{max_summands} summands of {bits}-bit encodings could wrap {field.__name__} "
                f"(need max_summands·2^bits ≤ p); use at most {p >> bits} summands or fewer "
                f"bits{' or Field128' if p < 2**100 else ''}"
            )
        self.field = field
        self.bits = bits
        self.max_summands = max_summands
        self.length = length
        self.offset = 1 << (bits - 1)
        self.q_min = -self.offset
        self.q_max = self.offset - 1

    # ------------------------------------------------------------ integers

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if self.length is not None and (not shape or shape[-1] != self.length):
            raise ConfigError(
                f"expected a vector of length {self.length} on the last axis, got shape {shape}"
            )

    def encode_ints(self, q: Any) -> np.ndarray:
        """Field encodings of signed integers q (any integer array-like, same shape).

        Raises ConfigError naming the first value outside [q_min, q_max].
        """
        arr = np.asarray(q) if isinstance(q, np.ndarray) else np.array(q, dtype=object)
        self._check_shape(arr.shape)
        if arr.dtype.kind in "iub" and self.bits <= 62:
            qi = arr.astype(np.int64)
            bad = np.flatnonzero((qi < self.q_min) | (qi > self.q_max))
            if bad.size:
                self._out_of_range(int(bad[0]), int(qi.reshape(-1)[bad[0]]))
            return self.field.elements(qi + self.offset)
        flat = []
        for i, v in enumerate(arr.reshape(-1).tolist()):
            if not isinstance(v, int | np.integer) or isinstance(v, bool):
                raise ConfigError(f"value {i} is {v!r}, not an integer")
            if not self.q_min <= v <= self.q_max:
                self._out_of_range(i, int(v))
            flat.append(int(v) + self.offset)
        return self.field.elements(np.array(flat, dtype=object).reshape(arr.shape))

    def _out_of_range(self, index: int, value: Any) -> None:
        raise ConfigError(
            f"value {index} ({value}) is outside the representable range "
            f"[{self.q_min}, {self.q_max}] of this {self.bits}-bit encoder; clip it or "
            "configure more bits"
        )

    def decode_sum_ints(self, s: Any, count: int) -> np.ndarray:
        """Σ q of ``count`` encodings from their field sum ``s`` (exact integers).

        Returns int64 when the result fits, else an object array of Python ints. Raises
        ConfigError if count exceeds max_summands and EncodingError if ``s`` is not a sum
        count encodings can produce (a wrong count, or a contribution that was not checked).
        """
        F = self.field
        if not 0 <= count <= self.max_summands:
            raise ConfigError(
                f"count = {count} must be between 0 and max_summands = {self.max_summands}"
            )
        s = F._arr(s)
        hi = count * ((1 << self.bits) - 1)
        shift = count * self.offset
        if s.dtype == np.uint64:
            bad = np.flatnonzero(s > np.uint64(hi))
            if bad.size:
                self._impossible(int(bad[0]), int(s.reshape(-1)[bad[0]]), count, hi)
            # The true value lies in [−count·2^(bits−1), count·2^(bits−1)) ⊂ int64 because
            # count·2^bits ≤ p < 2^64, so the wrapping difference reinterpreted is exact.
            return (s - np.uint64(shift)).view(np.int64)
        flat = s.reshape(-1).tolist()
        out = []
        for i, v in enumerate(flat):
            if v > hi:
                self._impossible(i, v, count, hi)
            out.append(v - shift)
        fits = all(-(2**63) <= v < 2**63 for v in out)
        return np.array(out, dtype=np.int64 if fits else object).reshape(s.shape)

    def _impossible(self, index: int, value: int, count: int, hi: int) -> None:
        raise EncodingError(
            f"sum element {index} ({value}) exceeds {hi}, the largest sum of {count} "
            f"{self.bits}-bit encodings; the count is wrong or a contribution was not "
            "range-checked"
        )


class IntegerEncoder(OffsetEncoder):
    """Bounded signed integers x ∈ [−2^(bits−1), 2^(bits−1)) (see :class:`OffsetEncoder`)."""

    def encode(self, x: Any) -> np.ndarray:
        """Field encodings of the integers x (array-like)."""
        return self.encode_ints(x)

    def decode_sum(self, s: Any, count: int) -> np.ndarray:
        """Exact integer sum of ``count`` values from the field sum of their encodings."""
        return self.decode_sum_ints(s, count)


class FixedPointEncoder(OffsetEncoder):
    """Signed reals (scalars or vectors) in fixed point with ``frac_bits`` fractional bits.

    x ↦ round(x·2^frac_bits) + 2^(bits−1). Representable: x ∈ [x_min, x_max] with
    x_min = −2^(bits−1−frac_bits), x_max = (2^(bits−1) − 1)·2^(−frac_bits); rounding error
    ≤ 2^−(frac_bits+1) per value; no wrap for up to max_summands values (max_summands·2^bits
    ≤ p). Use :meth:`for_range` to size ``bits`` from a bound on |x|.
    """

    def __init__(
        self,
        field: Field,
        frac_bits: int,
        bits: int,
        max_summands: int,
        length: int | None = None,
    ):
        if frac_bits < 0:
            raise ConfigError(f"frac_bits = {frac_bits} must be non-negative")
        super().__init__(field, bits, max_summands, length)
        self.frac_bits = frac_bits
        self.scale = 1 << frac_bits
        self.x_min = self.q_min / self.scale
        self.x_max = self.q_max / self.scale

    @classmethod
    def for_range(
        cls,
        field: Field,
        max_abs: float,
        frac_bits: int,
        max_summands: int,
        length: int | None = None,
    ) -> FixedPointEncoder:
        """Smallest-``bits`` encoder representing every x with |x| ≤ max_abs."""
        if not (math.isfinite(max_abs) and max_abs >= 0):
            raise ConfigError(f"max_abs = {max_abs} must be a finite non-negative number")
        q_max = math.ceil(max_abs * (1 << frac_bits))
        return cls(field, frac_bits, q_max.bit_length() + 1, max_summands, length)

    @property
    def rounding_error(self) -> float:
        """Largest error of one encoded value, 2^−(frac_bits+1)."""
        return 2.0 ** -(self.frac_bits + 1)

    def quantize(self, x: Any) -> np.ndarray:
        """round(x·2^frac_bits) as int64 (bits ≤ 62) or Python ints; checks the range."""
        xf = np.asarray(x, dtype=np.float64)
        self._check_shape(xf.shape)
        if not np.all(np.isfinite(xf)):
            i = int(np.flatnonzero(~np.isfinite(xf.reshape(-1)))[0])
            raise ConfigError(f"value {i} is {xf.reshape(-1)[i]}, not a finite number")
        q = np.rint(xf * self.scale)  # exact scaling by a power of two, round half to even
        bad = np.flatnonzero(((q < self.q_min) | (q > self.q_max)).reshape(-1))
        if bad.size:
            i = int(bad[0])
            raise ConfigError(
                f"value {i} ({xf.reshape(-1)[i]}) is outside the representable range "
                f"[{self.x_min}, {self.x_max}] of this encoder ({self.bits} bits, "
                f"{self.frac_bits} fractional); clip it or configure more bits"
            )
        if self.bits <= 62:
            return q.astype(np.int64)
        out = np.empty(q.shape, dtype=object)
        out.reshape(-1)[:] = [int(v) for v in q.reshape(-1).tolist()]
        return out

    def encode(self, x: Any) -> np.ndarray:
        """Field encodings of the reals x (same shape); ConfigError if any is out of range."""
        return self.encode_ints(self.quantize(x))

    def decode_sum(self, s: Any, count: int) -> np.ndarray:
        """Σ x (float64) of ``count`` values from the field sum ``s`` of their encodings.

        Error: at most count·2^−(frac_bits+1) from quantisation (plus float64 rounding).
        """
        ints = self.decode_sum_ints(s, count)
        if ints.dtype == np.int64:
            return ints.astype(np.float64) / self.scale
        out = np.array([v / self.scale for v in ints.reshape(-1).tolist()], dtype=np.float64)
        return out.reshape(ints.shape)

    def decode(self, e: Any) -> np.ndarray:
        """The (rounded) real value of single encodings."""
        return self.decode_sum(e, 1)


__all__ = ["FixedPointEncoder", "IntegerEncoder", "OffsetEncoder"]
