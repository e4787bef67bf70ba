"""Prime fields of Prio3: :class:`Field64` (the hot path) and :class:`Field128`.

Fields are used through classmethods, never instantiated, so protocol code is generic over
``F`` (``F.add(a, b)``, ``F.random(shape)``, ...). Elements are numpy arrays; every
operation is vectorised and broadcasts like numpy, leading axes being batch axes.

* :class:`Field64`: p = 2^64 − 2^32 + 1 (Goldilocks). Elements are ``uint64`` arrays of
  canonical residues; arithmetic runs in numba kernels (:mod:`kaires_fl.arith._kernels`).
* :class:`Field128`: p = 2^66·4611686018427387897 + 1 (Prio3's Field128, for sums that could
  overflow 64 bits). Elements are numpy ``object`` arrays of Python ints in ``[0, p)``:
  exact and simple, roughly 20–50× slower than Field64.

Precondition of every arithmetic operation: its array arguments are elements of the field
(as produced by ``elements``, ``random``, ``decode``, or another operation). Arrays of any
other dtype are first reduced through :meth:`elements`. Integer results are always canonical.
"""

from __future__ import annotations

import hashlib
import math
import operator
import os
import sys
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.lib.array_utils import normalize_axis_tuple

from kaires_fl.arith import _kernels as kern
from kaires_fl.errors import ConfigError, EncodingError

Shape = int | tuple[int, ...] | Sequence[int]

_XOF_DST = b"kaires-fl/field/from_seed/v1"
_PRG_DST = b"kaires-fl/field/expand_seed/aes256-ctr/v1"
_PRG_SEED_SIZE = 32


def _prg_stream(name: bytes, context: bytes, seed: bytes) -> Any:
    """AES-256-CTR keystream encryptor of :meth:`PrimeField.expand_seed` (counter from 0)."""
    h = hashlib.sha256()
    for part in (_PRG_DST, name, context, seed):
        h.update(len(part).to_bytes(4, "little") + part)
    return Cipher(algorithms.AES(h.digest()), modes.CTR(bytes(16))).encryptor()


_U64 = np.dtype(np.uint64)
_LITTLE_ENDIAN = sys.byteorder == "little"
#: Zeros the keystream is made from, a chunk at a time (a small buffer stays in cache, and
#: the output never doubles as the input: no in-place call into the cipher).
_ZEROS = memoryview(bytes(1 << 18))


def _keystream_into(stream: Any, buf: memoryview, size: int) -> None:
    """The next ``size`` keystream bytes of ``stream`` into ``buf[:size]`` (``buf`` has at
    least 15 more bytes: the cipher's slack for update_into)."""
    for pos in range(0, size, len(_ZEROS)):
        k = min(len(_ZEROS), size - pos)
        stream.update_into(_ZEROS[:k], buf[pos : pos + k + 15])


#: Requests up to this size are served by os.urandom directly.
_URANDOM_MAX = 4096


def csprng_bytes(n: int) -> bytes:
    """n uniformly random bytes from a CSPRNG: the ChaCha20 keystream under a fresh 256-bit
    key from ``os.urandom`` (the construction of the kernel's own generator, ~3× faster than
    ``os.urandom`` for the megabytes of wire seeds and sharing coefficients a batch needs).

    Each call draws its own key, so the zero nonce is never reused; one keystream may give
    2^32 64-byte blocks, far above any request here. Small requests use os.urandom.
    """
    if n <= _URANDOM_MAX:
        return os.urandom(n)
    enc = Cipher(algorithms.ChaCha20(os.urandom(32), bytes(16)), mode=None).encryptor()
    return enc.update(bytes(n))


def _flat(x: np.ndarray) -> np.ndarray:
    """1-D C-contiguous view (or copy) of x; free for 1-D contiguous arrays."""
    if x.flags.c_contiguous:
        return x if x.ndim == 1 else x.reshape(-1)  # a view: writes to it reach x
    return np.ascontiguousarray(x).reshape(-1)


#: Largest read-only kernel input ``_kin`` copies (elements); larger ones are passed as they are.
KIN_COPY_MAX = 1 << 16


def _kin(x: np.ndarray) -> np.ndarray:
    """``_flat(x)`` as a kernel input, writable-flagged unless it is large.

    numba compiles one specialisation per read-only flag of each argument (up to a second
    of compilation per kernel on a cold cache) and dispatches read-only arrays on a slow
    path (~4 µs a call). A small read-only input (a cached table) is therefore copied; a
    large one (decoded shares) is not: its copy would cost more than its dispatch.
    """
    f = _flat(x)
    return f if f.flags.writeable or f.size > KIN_COPY_MAX else f.copy()


def _readonly(x: np.ndarray) -> np.ndarray:
    """A read-only view of x (``matmul3``'s inputs, typed read-only like ``_kin``'s)."""
    if not x.flags.writeable:
        return x
    v = x.view()
    v.flags.writeable = False
    return v


def _shape(shape: Shape) -> tuple[int, ...]:
    if isinstance(shape, int | np.integer):
        return (int(shape),)
    return tuple(int(s) for s in shape)


def _int_or_error(v: Any) -> int:
    try:
        return operator.index(v)
    except TypeError:
        raise EncodingError(
            f"field elements must be integers, got {type(v).__name__} {v!r}; "
            "convert real values with kaires_fl.arith.encoding first"
        ) from None


class PrimeField:
    """Common API of the prime fields (classmethods only; see the module docstring)."""

    MODULUS: ClassVar[int]
    ENCODED_SIZE: ClassVar[int]
    DTYPE: ClassVar[Any]
    GEN_ORDER: ClassVar[int]
    #: Generator of the subgroup of order GEN_ORDER.
    GENERATOR: ClassVar[int]
    NAME: ClassVar[bytes]

    # ------------------------------------------------------------ construction

    @classmethod
    def elements(cls, values: Any) -> np.ndarray:
        """Field elements from integers of any sign and size (reduced mod p).

        Accepts Python ints, nested sequences of them, numpy integer or bool arrays, and
        object arrays of ints. Floats raise :class:`EncodingError`.
        """
        raise NotImplementedError

    @classmethod
    def zeros(cls, shape: Shape) -> np.ndarray:
        """Array of zeros of the given shape."""
        return cls.elements(np.zeros(_shape(shape), dtype=np.uint64))

    @classmethod
    def ones(cls, shape: Shape) -> np.ndarray:
        """Array of ones of the given shape."""
        return cls.elements(np.ones(_shape(shape), dtype=np.uint64))

    @classmethod
    def to_ints(cls, a: np.ndarray) -> Any:
        """Python ints (``int`` for a 0-d array, nested lists otherwise)."""
        a = cls._arr(a)
        out = a.tolist()
        return int(out) if a.ndim == 0 else out

    @classmethod
    def _arr(cls, a: Any) -> np.ndarray:
        """``a`` as an array of this field's dtype (reducing anything else via elements)."""
        if isinstance(a, np.ndarray) and a.dtype == cls.DTYPE:
            return a
        return cls.elements(a)

    # ------------------------------------------------------------ arithmetic (abstract)

    @classmethod
    def add(cls, a: Any, b: Any) -> np.ndarray:
        """a + b (broadcasting)."""
        raise NotImplementedError

    @classmethod
    def sub(cls, a: Any, b: Any) -> np.ndarray:
        """a − b (broadcasting)."""
        raise NotImplementedError

    @classmethod
    def neg(cls, a: Any) -> np.ndarray:
        """−a."""
        raise NotImplementedError

    @classmethod
    def mul(cls, a: Any, b: Any) -> np.ndarray:
        """a · b (broadcasting)."""
        raise NotImplementedError

    @classmethod
    def inv(cls, a: Any) -> np.ndarray:
        """Elementwise inverse; raises ZeroDivisionError if any element is 0."""
        raise NotImplementedError

    @classmethod
    def _pow_nonneg(cls, a: np.ndarray, e: int) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def pow(cls, a: Any, e: int) -> np.ndarray:
        """a^e elementwise for an integer e of any sign (0^0 = 1; 0^e for e < 0 raises)."""
        e = operator.index(e)
        a = cls._arr(a)
        if e < 0:
            return cls.pow(cls.inv(a), -e)
        if e > 0:
            # a^e = a^((e−1) mod (p−1) + 1) for every a, including 0.
            e = (e - 1) % (cls.MODULUS - 1) + 1
        return cls._pow_nonneg(a, e)

    @classmethod
    def sum(cls, a: Any, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
        """Σ along ``axis`` (all axes if None); returns an array (0-d for a full sum)."""
        raise NotImplementedError

    @classmethod
    def prod(cls, a: Any, axis: int | None = None) -> np.ndarray:
        """Π along ``axis`` (all axes if None)."""
        raise NotImplementedError

    @classmethod
    def dot(cls, a: Any, b: Any) -> np.ndarray:
        """Contract the last axis of a with the first of b (``np.tensordot(a, b, 1)``).

        For 1-D and 2-D operands this is ``np.dot``. Result shape a.shape[:-1] + b.shape[1:].
        """
        a = cls._arr(a)
        b = cls._arr(b)
        if a.ndim == 0 or b.ndim == 0:
            return cls.mul(a, b)
        if a.shape[-1] != b.shape[0]:
            raise ConfigError(
                f"dot: last axis of a ({a.shape[-1]}) must equal first axis of b ({b.shape[0]})"
            )
        k = a.shape[-1]
        out = cls.matmul(a.reshape(-1, k), b.reshape(k, -1))
        return out.reshape(a.shape[:-1] + b.shape[1:])

    @classmethod
    def matmul(cls, A: Any, B: Any) -> np.ndarray:
        """Matrix product with ``np.matmul`` semantics (stacked, batch axes broadcast)."""
        A = cls._arr(A)
        B = cls._arr(B)
        if A.ndim == 0 or B.ndim == 0:
            raise ConfigError("matmul: operands must have at least one axis; use mul")
        squeeze_a = A.ndim == 1
        squeeze_b = B.ndim == 1
        if squeeze_a:
            A = A[None, :]
        if squeeze_b:
            B = B[:, None]
        if A.shape[-1] != B.shape[-2]:
            raise ConfigError(
                f"matmul: inner dimensions differ ({A.shape} @ {B.shape}); "
                "A's last axis must equal B's second-to-last"
            )
        batch = np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        out = cls._matmul3(A, B, batch)
        if squeeze_a:
            out = out[..., 0, :]
        if squeeze_b:
            out = out[..., 0]
        return out

    @classmethod
    def _matmul3(cls, A: np.ndarray, B: np.ndarray, batch: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------ randomness

    @classmethod
    def _accept(cls, buf: bytes) -> np.ndarray:
        """Field elements from the ENCODED_SIZE-byte chunks of buf that are < p, in order."""
        raise NotImplementedError

    @classmethod
    def random(cls, shape: Shape, rng: np.random.Generator | None = None) -> np.ndarray:
        """Uniform elements from the OS CSPRNG (``rng``: a numpy Generator, for tests only)."""
        shape = _shape(shape)
        n = math.prod(shape)
        if rng is not None:
            return cls._random_rng(shape, rng)
        parts: list[np.ndarray] = []
        have = 0
        while have < n:
            got = cls._accept(csprng_bytes(cls.ENCODED_SIZE * (n - have + 4)))[: n - have]
            parts.append(got)
            have += len(got)
        flat = np.concatenate(parts) if parts else cls.elements(np.zeros(0, np.uint64))
        return flat.reshape(shape)

    @classmethod
    def _random_rng(cls, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def from_seed(cls, seed: bytes, shape: Shape, context: bytes = b"") -> np.ndarray:
        """Deterministic uniform elements expanded from ``seed`` by SHAKE-128.

        The XOF input binds a domain tag, the field, the context and the seed (each
        length-prefixed); chunks ≥ p are rejected, so the output is uniform and reproducible.
        Different contexts give independent streams.
        """
        shape = _shape(shape)
        n = math.prod(shape)
        xof = hashlib.shake_128()
        for part in (_XOF_DST, cls.NAME, bytes(context), bytes(seed)):
            xof.update(len(part).to_bytes(4, "little") + part)
        length = cls.ENCODED_SIZE * (n + 4)
        while True:
            got = cls._accept(xof.digest(length))
            if len(got) >= n:
                return got[:n].reshape(shape)
            length *= 2  # the XOF output is prefix-consistent: longer digest extends the stream

    @classmethod
    def expand_seed(cls, seed: bytes, shape: Shape, context: bytes = b"") -> np.ndarray:
        """Deterministic uniform elements expanded from a *secret* 32-byte ``seed`` by
        AES-256-CTR: the fast PRG of seeded Shamir shares (several GB/s with AES-NI,
        about 15× SHAKE-128's speed).

        The AES key is SHA-256 over the domain tag, the field, the context and the seed
        (each length-prefixed), the counter block starts at 0; the keystream is read as
        ENCODED_SIZE-byte little-endian chunks and chunks ≥ p are rejected, so the output
        is uniform (up to AES's indistinguishability from a random function) and
        prefix-consistent. A distinct (field, context, seed) gives a distinct key, so no
        (key, counter) pair is ever used for two streams. Only for secret seeds: public
        seeds (Fiat–Shamir, coins) go through :meth:`from_seed`.
        """
        if len(seed) != _PRG_SEED_SIZE:
            raise EncodingError(f"a PRG seed has {_PRG_SEED_SIZE} bytes, got {len(seed)}")
        shape = _shape(shape)
        stream = _prg_stream(cls.NAME, bytes(context), bytes(seed))
        return cls._expand(stream, math.prod(shape)).reshape(shape)

    @classmethod
    def _expand(cls, stream: Any, n: int) -> np.ndarray:
        """The next ``n`` accepted elements of a keystream encryptor (1-D, writable)."""
        parts: list[np.ndarray] = [cls._accept(b"")]
        have = 0
        while have < n:
            got = cls._accept(stream.update(bytes(cls.ENCODED_SIZE * (n - have))))
            parts.append(got[: n - have])
            have += len(parts[-1])
        return np.concatenate(parts) if len(parts) > 2 else parts[-1]

    # ------------------------------------------------------------ encoding

    @classmethod
    def encode(cls, a: Any) -> bytes:
        """Little-endian canonical encoding, ENCODED_SIZE bytes per element, C order."""
        raise NotImplementedError

    @classmethod
    def decode(cls, data: bytes, shape: Shape | None = None) -> np.ndarray:
        """Inverse of :meth:`encode`; raises :class:`EncodingError` on a wrong length or a
        non-canonical element (value ≥ p), naming the first offending index."""
        data = bytes(data)
        size = cls.ENCODED_SIZE
        if len(data) % size:
            raise EncodingError(
                f"{cls.__name__}.decode: {len(data)} bytes is not a multiple of the "
                f"{size}-byte element size"
            )
        n = len(data) // size
        if shape is not None:
            shape = _shape(shape)
            if math.prod(shape) != n:
                raise EncodingError(
                    f"{cls.__name__}.decode: expected {math.prod(shape) * size} bytes for "
                    f"shape {shape}, got {len(data)}"
                )
        else:
            shape = (n,)
        return cls._decode_flat(data, n).reshape(shape)

    @classmethod
    def decode_view(cls, buf: memoryview, shape: Shape) -> np.ndarray:
        """:meth:`decode` of a buffer the caller hands over (same checks, same errors).

        Field64 on a little-endian machine returns a writable view of ``buf`` when it is
        writable and 8-byte aligned (a decrypted part: no copy); the caller must not reuse
        ``buf``. Otherwise (another field, or a buffer that cannot be viewed) a copy.
        """
        return cls.decode(bytes(buf), shape)

    @classmethod
    def _decode_flat(cls, data: bytes, n: int) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def _noncanonical(cls, index: int, value: int) -> EncodingError:
        return EncodingError(
            f"{cls.__name__}.decode: element {index} is not canonical "
            f"(value {value} ≥ modulus {cls.MODULUS}); the bytes were tampered with or "
            "produced by a different field"
        )

    # ------------------------------------------------------------ roots of unity

    @classmethod
    def root_of_unity(cls, n: int) -> np.ndarray:
        """Principal n-th root of unity (0-d element) for n a power of two ≤ GEN_ORDER."""
        n = operator.index(n)
        if n < 1 or n & (n - 1) or n > cls.GEN_ORDER:
            raise ConfigError(
                f"{cls.__name__}.root_of_unity: n = {n} must be a power of two "
                f"between 1 and {cls.GEN_ORDER}"
            )
        return cls.elements(pow(cls.GENERATOR, cls.GEN_ORDER // n, cls.MODULUS))


def _integer_array(values: Any) -> np.ndarray:
    """``values`` as a numpy array of integer dtype (bool/int/uint) or of Python objects.

    Lists of ints that fit 64 bits become integer arrays (the vectorised path); anything
    numpy would turn into floats (a real float, or ints mixing signs beyond int64) becomes
    an object array, checked element by element by the caller. Raises EncodingError for
    arrays of any other dtype.
    """
    if isinstance(values, np.ndarray | np.generic):
        arr = np.asarray(values)
        if arr.dtype.kind not in "biuO":
            raise EncodingError(
                f"field elements must be integers, got dtype {arr.dtype}; "
                "convert real values with kaires_fl.arith.encoding first"
            )
        return arr
    try:
        guess = np.asarray(values)
    except (ValueError, OverflowError):
        guess = None
    if guess is not None and guess.dtype.kind in "biu":
        return guess
    return np.array(values, dtype=object)


class Field64(PrimeField):
    """p = 2^64 − 2^32 + 1 (Goldilocks), ``uint64`` elements, numba kernels."""

    MODULUS: ClassVar[int] = 2**64 - 2**32 + 1
    ENCODED_SIZE: ClassVar[int] = 8
    DTYPE: ClassVar[Any] = np.dtype(np.uint64)
    GEN_ORDER: ClassVar[int] = 2**32
    GENERATOR: ClassVar[int] = pow(7, (2**64 - 2**32) // 2**32, 2**64 - 2**32 + 1)
    NAME: ClassVar[bytes] = b"Field64"

    @classmethod
    def elements(cls, values: Any) -> np.ndarray:
        p = cls.MODULUS
        if type(values) is int:
            return np.array(values % p, dtype=_U64)
        if type(values) is np.uint64:
            return np.array(int(values) % p, dtype=_U64)
        arr = _integer_array(values)
        if arr.dtype.kind == "u" and arr.dtype.itemsize == 8:  # also non-native byte order
            out = np.empty(arr.shape, np.uint64)
            kern.reduce_v(_flat(arr.astype(np.uint64, copy=False)), _flat(out))
            return out
        if arr.dtype.kind in "bu":
            return arr.astype(np.uint64)
        if arr.dtype.kind == "i":
            a64 = arr.astype(np.int64)
            # 2^64 + x − EPS = p + x for negative x (|x| ≤ 2^63 < p).
            u = a64.astype(np.uint64)
            return np.where(a64 < 0, u - kern.EPS, u)
        flat = [_int_or_error(v) % p for v in arr.reshape(-1)]
        return np.array(flat, dtype=np.uint64).reshape(arr.shape)

    # ------------------------------------------------------------ arithmetic

    @classmethod
    def _binary(cls, kvv: Any, kvs: Any, ksv: Any, a: Any, b: Any) -> np.ndarray:
        # Hot path: avoid every avoidable numpy call (small arrays are dominated by overhead).
        if type(a) is not np.ndarray or a.dtype != _U64:
            a = cls.elements(a)
        if type(b) is not np.ndarray or b.dtype != _U64:
            b = cls.elements(b)
        sa, sb = a.shape, b.shape
        if sa == sb:
            out = np.empty(sa, _U64)
            kvv(_kin(a), _kin(b), _flat(out))
            return out
        if b.ndim == 0 or (b.size == 1 and b.ndim <= a.ndim):
            shape = np.broadcast_shapes(sa, sb) if b.ndim else sa
            if shape == sa:
                out = np.empty(sa, _U64)
                kvs(_kin(a), _kin(b), _flat(out))
                return out
        if ksv is not None and (a.ndim == 0 or (a.size == 1 and a.ndim <= b.ndim)):
            shape = np.broadcast_shapes(sa, sb) if a.ndim else sb
            if shape == sb:
                out = np.empty(sb, _U64)
                ksv(_kin(a), _kin(b), _flat(out))
                return out
        shape = np.broadcast_shapes(sa, sb)
        out = np.empty(shape, _U64)
        a2 = a if sa == shape else np.broadcast_to(a, shape)  # _kin copies a broadcast view
        b2 = b if sb == shape else np.broadcast_to(b, shape)
        kvv(_kin(a2), _kin(b2), _flat(out))
        return out

    @classmethod
    def add(cls, a: Any, b: Any) -> np.ndarray:
        return cls._binary(kern.add_vv, kern.add_vs, _ADD_SV, a, b)

    @classmethod
    def sub(cls, a: Any, b: Any) -> np.ndarray:
        return cls._binary(kern.sub_vv, kern.sub_vs, kern.sub_sv, a, b)

    @classmethod
    def mul(cls, a: Any, b: Any) -> np.ndarray:
        return cls._binary(kern.mul_vv, kern.mul_vs, _MUL_SV, a, b)

    @classmethod
    def neg(cls, a: Any) -> np.ndarray:
        a = cls._arr(a)
        out = np.empty(a.shape, _U64)
        kern.neg_v(_kin(a), _flat(out))
        return out

    @classmethod
    def inv(cls, a: Any) -> np.ndarray:
        a = cls._arr(a)
        if np.any(a == 0):
            raise ZeroDivisionError(
                f"{cls.__name__}.inv: element {int(np.flatnonzero(a.reshape(-1) == 0)[0])} "
                "is zero and has no inverse"
            )
        out = np.empty(a.shape, np.uint64)
        kern.inv_batch(_kin(a), out.reshape(-1))
        return out

    @classmethod
    def _pow_nonneg(cls, a: np.ndarray, e: int) -> np.ndarray:
        out = np.empty(a.shape, np.uint64)
        kern.pow_vs(_kin(a), np.array([e], _U64), _flat(out))
        return out

    @classmethod
    def _rows(cls, kernel: Any, a: np.ndarray, axis: int | tuple[int, ...] | None) -> np.ndarray:
        if a.flags.c_contiguous and a.ndim >= 1:
            # Fast paths: reducing everything, or the last axis, needs no transpose.
            if axis is None or (a.ndim == 1 and axis in (0, -1)):
                out = np.empty((), _U64)
                kernel(_kin(a).reshape(1, -1), out.reshape(1))
                return out
            if axis == -1 or axis == a.ndim - 1:
                out = np.empty(a.shape[:-1], _U64)
                rows = _kin(a).reshape(math.prod(a.shape[:-1]), a.shape[-1])
                kernel(rows, out.reshape(-1))
                return out
        if axis is None:
            axes = tuple(range(a.ndim))
        elif isinstance(axis, int | np.integer):
            axes = (int(axis),)
        else:
            axes = tuple(int(x) for x in axis)
        axes = tuple(normalize_axis_tuple(axes, a.ndim))
        keep = [i for i in range(a.ndim) if i not in axes]
        moved = np.transpose(a, keep + list(axes))
        out_shape = tuple(a.shape[i] for i in keep)
        red = math.prod(a.shape[i] for i in axes)
        rows = np.ascontiguousarray(moved).reshape(math.prod(out_shape), red)
        out = np.empty(out_shape, np.uint64)
        kernel(rows, out.reshape(-1))
        return out

    @classmethod
    def sum(cls, a: Any, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
        return cls._rows(kern.sum_rows, cls._arr(a), axis)

    @classmethod
    def prod(cls, a: Any, axis: int | None = None) -> np.ndarray:
        return cls._rows(kern.prod_rows, cls._arr(a), axis)

    @classmethod
    def _matmul3(cls, A: np.ndarray, B: np.ndarray, batch: tuple[int, ...]) -> np.ndarray:
        m, k = A.shape[-2:]
        n = B.shape[-1]
        s = math.prod(batch)
        A3 = np.ascontiguousarray(np.broadcast_to(A, (*batch, m, k))).reshape(s, m, k)
        B3 = np.ascontiguousarray(np.broadcast_to(B, (*batch, k, n))).reshape(s, k, n)
        out = np.empty((s, m, n), np.uint64)
        kern.matmul3(_readonly(A3), _readonly(B3), out)
        return out.reshape((*batch, m, n))

    # ------------------------------------------------------------ randomness / encoding

    @classmethod
    def _accept(cls, buf: bytes) -> np.ndarray:
        vals = np.frombuffer(buf, dtype="<u8").astype(np.uint64)
        return vals[vals < kern.P]

    @classmethod
    def _expand(cls, stream: Any, n: int) -> np.ndarray:
        # The keystream (encrypted zeros) is written straight into the output, read as
        # native uint64: little-endian machines only (else the generic path).
        if not _LITTLE_ENDIAN:
            return super()._expand(stream, n)
        out = np.empty(n + 2, np.uint64)  # + 2 words: update_into wants 15 bytes of slack
        have = 0
        while have < n:
            _keystream_into(stream, out[have:].data.cast("B"), 8 * (n - have))
            chunk = out[have:n]
            if int(chunk.max()) < int(kern.P):  # all accepted (a word is ≥ p w.p. 2^-32)
                break
            kept = chunk[chunk < kern.P]  # rejection sampling, in stream order
            out[have : have + len(kept)] = kept
            have += len(kept)
        return out[:n]

    @classmethod
    def _random_rng(cls, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, cls.MODULUS, size=shape, dtype=np.uint64)

    @classmethod
    def encode(cls, a: Any) -> bytes:
        a = cls._arr(a)
        return np.ascontiguousarray(a, dtype="<u8").tobytes()

    @classmethod
    def decode_view(cls, buf: memoryview, shape: Shape) -> np.ndarray:
        shape = _shape(shape)
        n = math.prod(shape)
        view = memoryview(buf)
        if not _LITTLE_ENDIAN or view.readonly or len(view) != 8 * n:
            return super().decode_view(buf, shape)
        vals = np.frombuffer(view, dtype=np.uint64)
        if not vals.flags.aligned:
            return super().decode_view(buf, shape)
        cls._check_canonical(vals)
        return vals.reshape(shape)

    @classmethod
    def _decode_flat(cls, data: bytes, n: int) -> np.ndarray:
        vals = np.frombuffer(data, dtype="<u8").astype(np.uint64)
        cls._check_canonical(vals)
        return vals

    @classmethod
    def _check_canonical(cls, vals: np.ndarray) -> None:
        """Raise the decode error of the first element ≥ p of ``vals`` (1-D uint64)."""
        if vals.size and int(vals.max()) >= int(kern.P):  # one pass; the index only on failure
            bad = int(np.flatnonzero(vals >= kern.P)[0])
            raise cls._noncanonical(bad, int(vals[bad]))


def _swap(kvs: Any) -> Any:
    """Scalar-first variant of a commutative vector-scalar kernel."""

    def ksv(s: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        kvs(b, s, out)

    return ksv


_ADD_SV = _swap(kern.add_vs)
_MUL_SV = _swap(kern.mul_vs)


_P128 = 2**66 * 4611686018427387897 + 1


class Field128(PrimeField):
    """Prio3's Field128, p = 2^66·4611686018427387897 + 1; ``object`` arrays of Python ints."""

    MODULUS: ClassVar[int] = _P128
    ENCODED_SIZE: ClassVar[int] = 16
    DTYPE: ClassVar[Any] = np.dtype(object)
    GEN_ORDER: ClassVar[int] = 2**66
    GENERATOR: ClassVar[int] = pow(7, 4611686018427387897, _P128)
    NAME: ClassVar[bytes] = b"Field128"

    @classmethod
    def elements(cls, values: Any) -> np.ndarray:
        p = cls.MODULUS
        arr = _integer_array(values)
        if arr.dtype.kind in "biu":
            return np.asarray(arr.astype(object) % p, dtype=object).reshape(arr.shape)
        out = np.empty(arr.shape, dtype=object)
        out.reshape(-1)[:] = [_int_or_error(v) % p for v in arr.reshape(-1)]
        return out

    @classmethod
    def _wrap(cls, x: Any) -> np.ndarray:
        """Object array from a numpy op on object arrays (which may return a bare int)."""
        if isinstance(x, np.ndarray):
            return x
        out = np.empty((), dtype=object)
        out[()] = x
        return out

    @classmethod
    def add(cls, a: Any, b: Any) -> np.ndarray:
        return cls._wrap((cls._arr(a) + cls._arr(b)) % cls.MODULUS)

    @classmethod
    def sub(cls, a: Any, b: Any) -> np.ndarray:
        return cls._wrap((cls._arr(a) - cls._arr(b)) % cls.MODULUS)

    @classmethod
    def neg(cls, a: Any) -> np.ndarray:
        return cls._wrap((-cls._arr(a)) % cls.MODULUS)

    @classmethod
    def mul(cls, a: Any, b: Any) -> np.ndarray:
        return cls._wrap((cls._arr(a) * cls._arr(b)) % cls.MODULUS)

    @classmethod
    def inv(cls, a: Any) -> np.ndarray:
        a = cls._arr(a)
        p = cls.MODULUS
        flat = a.reshape(-1).tolist()
        for i, x in enumerate(flat):
            if x == 0:
                raise ZeroDivisionError(
                    f"{cls.__name__}.inv: element {i} is zero and has no inverse"
                )
        # Montgomery batch inversion: one modular exponentiation for the whole array.
        prefix = []
        acc = 1
        for x in flat:
            prefix.append(acc)
            acc = acc * x % p
        inv = pow(acc, -1, p) if flat else 1
        res = [0] * len(flat)
        for i in range(len(flat) - 1, -1, -1):
            res[i] = prefix[i] * inv % p
            inv = inv * flat[i] % p
        out = np.empty(a.shape, dtype=object)
        out.reshape(-1)[:] = res
        return out

    @classmethod
    def _pow_nonneg(cls, a: np.ndarray, e: int) -> np.ndarray:
        p = cls.MODULUS
        out = np.empty(a.shape, dtype=object)
        out.reshape(-1)[:] = [pow(x, e, p) for x in a.reshape(-1).tolist()]
        return out

    @classmethod
    def sum(cls, a: Any, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
        a = cls._arr(a)
        s = np.sum(a, axis=axis, dtype=object)
        return cls._wrap(s % cls.MODULUS)

    @classmethod
    def prod(cls, a: Any, axis: int | None = None) -> np.ndarray:
        a = cls._arr(a)
        if axis is None:
            a = a.reshape(-1)
            axis = 0
        a = np.moveaxis(a, axis, -1)
        acc = cls.ones(a.shape[:-1])
        for j in range(a.shape[-1]):
            acc = cls.mul(acc, a[..., j])
        return acc

    @classmethod
    def _matmul3(cls, A: np.ndarray, B: np.ndarray, batch: tuple[int, ...]) -> np.ndarray:
        m = A.shape[-2]
        n = B.shape[-1]
        if A.shape[-1] == 0:
            return cls.zeros((*batch, m, n))
        return cls._wrap(np.matmul(A, B) % cls.MODULUS)

    @classmethod
    def _accept(cls, buf: bytes) -> np.ndarray:
        vals = cls._decode_raw(buf)
        return vals[vals < cls.MODULUS]

    @classmethod
    def _decode_raw(cls, buf: bytes) -> np.ndarray:
        limbs = np.frombuffer(buf, dtype="<u8").reshape(-1, 2)
        lo = limbs[:, 0].astype(object)
        hi = limbs[:, 1].astype(object)
        return np.asarray(lo + (hi << 64), dtype=object).reshape(-1)

    @classmethod
    def _random_rng(cls, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        n = math.prod(shape)
        out: list[np.ndarray] = []
        have = 0
        while have < n:
            got = cls._accept(rng.bytes(16 * (n - have + 4)))[: n - have]
            out.append(got)
            have += len(got)
        flat = np.concatenate(out) if out else np.zeros(0, dtype=object)
        return flat.reshape(shape)

    @classmethod
    def encode(cls, a: Any) -> bytes:
        a = cls._arr(a)
        flat = a.reshape(-1)
        limbs = np.empty((flat.size, 2), dtype="<u8")
        limbs[:, 0] = (flat & (2**64 - 1)).astype(np.uint64)
        limbs[:, 1] = (flat >> 64).astype(np.uint64)
        return limbs.tobytes()

    @classmethod
    def _decode_flat(cls, data: bytes, n: int) -> np.ndarray:
        vals = cls._decode_raw(data)
        bad = np.flatnonzero(vals >= cls.MODULUS)
        if bad.size:
            raise cls._noncanonical(int(bad[0]), int(vals[bad[0]]))
        return vals


__all__ = ["Field64", "Field128", "PrimeField"]
