"""Ed25519's prime-order group (order L) through libsodium, with explicit identity.

:class:`Scalar` is an element of Z/L (arithmetic on Python ints: measured ~0.4 µs per
multiplication against ~2.3 µs per libsodium call). :class:`Point` is an element of the
prime-order subgroup, held as its canonical 32-byte encoding; group operations call
``crypto_core_ed25519_*`` and ``crypto_scalarmult_ed25519_*_noclamp``.

libsodium refuses the identity in scalar multiplication (and rejects it as a "small
order" point in ``is_valid_point``), so the identity is handled here explicitly:
``Point.identity() + P == P``, ``0 * P == identity``, ``s * identity == identity``.

Every decoding validates: scalars must be canonical (< L), points canonical, on the
curve and in the prime-order subgroup; anything else raises :class:`EncodingError`. An
encoding that passed the check is remembered (bounded, by its exact 32 bytes) and not
checked again: :mod:`kaires_fl.crypto.memo`.

``H_POINT`` is a second generator obtained by hashing to the curve, so nobody knows
its discrete logarithm to ``Point.base()`` (needed by Pedersen commitments).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence

from nacl import bindings as _nb
from nacl.exceptions import RuntimeError as _NaclRuntimeError

from kaires_fl.crypto.memo import PassedChecks
from kaires_fl.errors import EncodingError

#: Order of the prime-order subgroup of Ed25519.
L: int = 2**252 + 27742317777372353535851937790883648493
SCALAR_SIZE = 32
POINT_SIZE = 32
_IDENTITY_BYTES = b"\x01" + b"\x00" * 31


class Scalar:
    """An integer modulo L. Immutable; ``int(s)`` gives its canonical representative.

    Construct with ``Scalar(v)`` (any int, reduced mod L), :meth:`random`,
    :meth:`from_bytes` (canonical only) or :func:`hash_to_scalar`.
    """

    __slots__ = ("value",)
    value: int

    def __init__(self, value: int) -> None:
        object.__setattr__(self, "value", int(value) % L)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Scalar is immutable")

    # -- constructors ---------------------------------------------------------------
    @classmethod
    def random(cls) -> Scalar:
        """Uniform in [0, L) from the OS CSPRNG (64 bytes reduced: bias < 2^-250)."""
        return cls(int.from_bytes(secrets.token_bytes(64), "little"))

    @classmethod
    def random_nonzero(cls) -> Scalar:
        """Uniform in [1, L)."""
        while True:
            s = cls.random()
            if s.value:
                return s

    @classmethod
    def from_bytes(cls, data: bytes) -> Scalar:
        """Decode 32 little-endian bytes; raises EncodingError unless the value is < L."""
        if len(data) != SCALAR_SIZE:
            raise EncodingError(
                f"a scalar is {SCALAR_SIZE} bytes, got {len(data)}; pass Scalar.to_bytes() output"
            )
        v = int.from_bytes(data, "little")
        if v >= L:
            raise EncodingError(
                "non-canonical scalar: value is >= the group order L; the sender must reduce "
                "it mod L (reject this message)"
            )
        return cls(v)

    def to_bytes(self) -> bytes:
        """Canonical 32-byte little-endian encoding."""
        return self.value.to_bytes(SCALAR_SIZE, "little")

    # -- arithmetic -----------------------------------------------------------------
    def __add__(self, other: Scalar | int) -> Scalar:
        return Scalar(self.value + _int(other))

    __radd__ = __add__

    def __sub__(self, other: Scalar | int) -> Scalar:
        return Scalar(self.value - _int(other))

    def __rsub__(self, other: Scalar | int) -> Scalar:
        return Scalar(_int(other) - self.value)

    def __neg__(self) -> Scalar:
        return Scalar(-self.value)

    def __mul__(self, other: object) -> Scalar:
        if isinstance(other, Scalar):
            return Scalar(self.value * other.value)
        if isinstance(other, int):
            return Scalar(self.value * other)
        return NotImplemented

    def __rmul__(self, other: object) -> Scalar:
        return self.__mul__(other)

    def inverse(self) -> Scalar:
        """Multiplicative inverse; raises ZeroDivisionError for 0."""
        if self.value == 0:
            raise ZeroDivisionError("the scalar 0 has no inverse mod L")
        return Scalar(pow(self.value, -1, L))

    def __truediv__(self, other: Scalar | int) -> Scalar:
        return self * Scalar(_int(other)).inverse()

    def __pow__(self, e: int) -> Scalar:
        return Scalar(pow(self.value, e, L))

    # -- comparisons ----------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if isinstance(other, Scalar):
            return self.value == other.value
        if isinstance(other, int):
            return self.value == other % L
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.value)  # consistent with __eq__ against ints

    def __int__(self) -> int:
        return self.value

    def __bool__(self) -> bool:
        return self.value != 0

    def __repr__(self) -> str:
        return f"Scalar({self.value:#x})"


def _int(x: Scalar | int) -> int:
    if isinstance(x, Scalar):
        return x.value
    if isinstance(x, int):
        return x
    raise TypeError(f"expected a Scalar or int, got {type(x).__name__}")


class Point:
    """An element of Ed25519's prime-order subgroup, held as its canonical encoding.

    Construct with :meth:`from_bytes` (validating), :meth:`base`, :meth:`identity`,
    :func:`hash_to_point` or arithmetic. ``s * P`` / ``P * s`` multiply by a Scalar.
    """

    __slots__ = ("_b",)
    _b: bytes

    def __init__(self, encoding: bytes, *, _trusted: bool = False) -> None:
        if not _trusted:
            raise TypeError("use Point.from_bytes(...) to decode a point (it validates)")
        object.__setattr__(self, "_b", encoding)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Point is immutable")

    # -- constructors ---------------------------------------------------------------
    @classmethod
    def from_bytes(
        cls, data: bytes, *, allow_identity: bool = True, subgroup_check: bool = True
    ) -> Point:
        """Decode and validate 32 bytes.

        ``subgroup_check=False`` skips the (costly: about half a scalar multiplication)
        curve and subgroup check. Only for a point that is multiplied by a scalar before
        anything else uses it: libsodium's scalar multiplication itself refuses a point
        that is off the curve, of small order or outside the prime-order subgroup (then
        ``P * s`` raises EncodingError), so nothing is computed on a bad point — a trustee
        uses this for U + Y, which it multiplies by its share right away.

        Raises
        ------
        EncodingError
            wrong length; non-canonical encoding (y >= 2^255-19, or a second encoding of
            the identity); not on the curve; of small order or outside the prime-order
            subgroup; or the identity when ``allow_identity`` is False.
        """
        data = bytes(data)
        if len(data) != POINT_SIZE:
            raise EncodingError(
                f"a group element is {POINT_SIZE} bytes, got {len(data)}; pass Point.to_bytes()"
            )
        if data == _IDENTITY_BYTES:
            if not allow_identity:
                raise EncodingError(
                    "the identity point is not allowed here (e.g. as a public key); "
                    "the sender must use a non-trivial element"
                )
            return _IDENTITY
        if not subgroup_check or _VALID_POINTS.passed(data):
            return cls(data, _trusted=True)
        if not _nb.crypto_core_ed25519_is_valid_point(data):
            raise EncodingError(
                f"invalid group element {data.hex()[:16]}…: not a canonical encoding of a point "
                "in Ed25519's prime-order subgroup (non-canonical y, off the curve, small order or "
                "with a torsion component); reject the message that carried it"
            )
        _VALID_POINTS.remember(data)
        return cls(data, _trusted=True)

    @classmethod
    def base(cls) -> Point:
        """The standard Ed25519 base point G."""
        return _BASE

    @classmethod
    def identity(cls) -> Point:
        """The neutral element."""
        return _IDENTITY

    def to_bytes(self) -> bytes:
        """Canonical 32-byte encoding."""
        return self._b

    def is_identity(self) -> bool:
        return self._b == _IDENTITY_BYTES

    # -- group law ------------------------------------------------------------------
    def __add__(self, other: Point) -> Point:
        if not isinstance(other, Point):
            return NotImplemented
        if self.is_identity():
            return other
        if other.is_identity():
            return self
        try:
            return Point(_nb.crypto_core_ed25519_add(self._b, other._b), _trusted=True)
        except _NaclRuntimeError as exc:  # only for points decoded without subgroup_check
            raise EncodingError(f"not a point on the curve: {exc}") from exc

    def __neg__(self) -> Point:
        if self.is_identity():
            return self
        # Points of prime order have x != 0, so negation flips the sign bit of x.
        return Point(self._b[:31] + bytes([self._b[31] ^ 0x80]), _trusted=True)

    def __sub__(self, other: Point) -> Point:
        if not isinstance(other, Point):
            return NotImplemented
        if other.is_identity():
            return self
        if self.is_identity():
            return -other
        try:
            return Point(_nb.crypto_core_ed25519_sub(self._b, other._b), _trusted=True)
        except _NaclRuntimeError as exc:  # only for points decoded without subgroup_check
            raise EncodingError(f"not a point on the curve: {exc}") from exc

    def __mul__(self, s: object) -> Point:
        if isinstance(s, int) and not isinstance(s, bool):
            s = Scalar(s)
        if not isinstance(s, Scalar):
            return NotImplemented
        if s.value == 0 or self.is_identity():
            return _IDENTITY
        sb = s.to_bytes()
        try:
            if self._b == _BASE_BYTES:
                out = _nb.crypto_scalarmult_ed25519_base_noclamp(sb)
            else:
                out = _nb.crypto_scalarmult_ed25519_noclamp(sb, self._b)
        except _NaclRuntimeError as exc:  # a point decoded without subgroup_check
            raise EncodingError(
                "libsodium refused the scalar multiplication: the point is off the curve, of "
                "small order or outside the prime-order subgroup; reject the message"
            ) from exc
        return Point(out, _trusted=True)

    __rmul__ = __mul__

    # -- comparisons ----------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Point):
            return NotImplemented
        return self._b == other._b

    def __hash__(self) -> int:
        return hash(("Point", self._b))

    def __repr__(self) -> str:
        return "Point(identity)" if self.is_identity() else f"Point({self._b.hex()[:16]}…)"


#: Encodings that passed the curve and subgroup check (the same public keys and commitments
#: arrive in every message of a round; see kaires_fl.crypto.memo for why this is safe).
_VALID_POINTS = PassedChecks("point validation", 1 << 16)
_IDENTITY = Point(_IDENTITY_BYTES, _trusted=True)
_BASE_BYTES = _nb.crypto_scalarmult_ed25519_base_noclamp((1).to_bytes(32, "little"))
_BASE = Point(_BASE_BYTES, _trusted=True)


def _frame(context: bytes, parts: Iterable[bytes | Point | Scalar]) -> bytes:
    out = [len(context).to_bytes(8, "little"), context]
    for p in parts:
        raw = p.to_bytes() if isinstance(p, Point | Scalar) else bytes(p)
        out.append(len(raw).to_bytes(8, "little"))
        out.append(raw)
    return b"".join(out)


def hash_to_scalar(*parts: bytes | Point | Scalar, context: bytes) -> Scalar:
    """Scalar from SHA-512 over the length-prefixed ``context`` and ``parts``, reduced mod L.

    The 64-byte (wide) reduction makes the result statistically uniform (bias < 2^-250).
    """
    digest = hashlib.sha512(_frame(b"kaires-fl/h2s/" + context, parts)).digest()
    return Scalar(int.from_bytes(digest, "little"))


def hash_to_point(label: bytes) -> Point:
    """A point of the prime-order subgroup with unknown discrete log, from ``label``.

    Uses libsodium's ``crypto_core_ed25519_from_uniform`` (Elligator 2, cofactor
    cleared) on a SHA-512-derived 32-byte string; retries with a counter in the
    negligible case the map lands on the identity.
    """
    for ctr in range(256):
        u = hashlib.sha512(_frame(b"kaires-fl/h2p", [label, bytes([ctr])])).digest()[:32]
        enc = _nb.crypto_core_ed25519_from_uniform(u)
        if enc != _IDENTITY_BYTES:
            return Point(enc, _trusted=True)
    raise EncodingError("hash_to_point: no non-identity point found")  # pragma: no cover


#: Second generator for Pedersen commitments; log_G(H_POINT) is unknown to everyone.
H_POINT: Point = hash_to_point(b"kaires-fl/group/second-generator/v1")


#: A scalar ±k is multiplied by double-and-add when that takes at most this many group
#: additions (one addition costs ~1/7 of a libsodium scalar multiplication).
_SMALL_MULT_ADDS = 4


def _small_signed(v: int) -> int | None:
    """The signed representative ±k of ``v`` if k·P is cheaper by additions, else None."""
    k = v if v <= L // 2 else v - L
    a = abs(k)
    if a and a.bit_length() + a.bit_count() - 2 <= _SMALL_MULT_ADDS:
        return k
    return None


def _mult_small(p: Point, k: int) -> Point:
    """k·P by double-and-add (k ≠ 0 small; see _small_signed)."""
    a = abs(k)
    acc = p
    for bit in bin(a)[3:]:
        acc = acc + acc
        if bit == "1":
            acc = acc + p
    return -acc if k < 0 else acc


def multi_scalar_mult(scalars: Sequence[Scalar], points: Sequence[Point]) -> Point:
    """Σ scalars[i] · points[i] (e.g. Lagrange interpolation in the exponent).

    Scalars whose signed value is small (the Lagrange coefficients of consecutive parties,
    e.g. 2 and −1 for parties 1 and 2) are applied by a few additions instead of a scalar
    multiplication; so the time depends on the scalars: use it for public scalars.
    Precondition: equal lengths (ValueError otherwise); ``points`` are valid (checked)
    points. Returns the identity when empty.
    """
    if len(scalars) != len(points):
        raise ValueError(f"multi_scalar_mult: {len(scalars)} scalars for {len(points)} points")
    acc = _IDENTITY
    for s, p in zip(scalars, points, strict=True):
        k = _small_signed(s.value)
        acc = acc + (p * s if k is None else _mult_small(p, k))
    return acc


def lagrange_at_zero(xs: Sequence[int]) -> list[Scalar]:
    """Lagrange coefficients λ_j with f(0) = Σ λ_j f(xs[j]) for any polynomial of degree < len(xs).

    ``xs`` are evaluation points (party i, 0-based, sits at x = i + 1); they must be
    distinct and non-zero mod L (ValueError otherwise).
    """
    xv = [x % L for x in xs]
    if len(set(xv)) != len(xv) or 0 in xv:
        raise ValueError(f"Lagrange points must be distinct and non-zero, got {list(xs)}")
    out = []
    for j, xj in enumerate(xv):
        num, den = 1, 1
        for m, xm in enumerate(xv):
            if m != j:
                num = num * xm % L
                den = den * (xm - xj) % L
        out.append(Scalar(num * pow(den, -1, L)))
    return out
