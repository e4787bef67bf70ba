"""Numba kernels for arithmetic modulo the Goldilocks prime p = 2^64 − 2^32 + 1.

Every kernel works on canonical ``uint64`` values (in ``[0, p)``) held in flat, C-contiguous
arrays and writes canonical values. The 64×64→128-bit product is formed from 32-bit halves
and reduced with 2^64 ≡ 2^32 − 1 and 2^96 ≡ −1 (mod p), so no floating point and no Python
integers are involved. Kernels are compiled lazily on first call and cached on disk
(``cache=True``), so importing this module does not compile anything. They release the GIL
(``nogil=True``): parties simulated on threads of one process run them in parallel.

The vector kernels are :class:`Tiered`: while a kernel is cold (not yet compiled or loaded in
this process) its small calls run an exact numpy twin (:mod:`kaires_fl.arith._twins`)
instead. A kernel whose machine code is in numba's disk cache loads on a background thread
from its first call on, and takes over once loaded; one that is not compiles on its first
large call, or once its small calls add up to more work than the compilation would cost.
A short process (``kaires demo``) thus compiles nothing: its cold start is its warm start;
a long-lived one (a Flower client, a ServerApp) runs compiled kernels from its first
moments.

All constants are ``np.uint64``: mixing ``uint64`` with a signed literal would make numba
promote to ``float64`` and silently lose precision.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, typeof, types
from numba.extending import intrinsic as _numba_intrinsic

from kaires_fl.arith import _twins
from kaires_fl.errors import ConfigError

P = np.uint64(0xFFFFFFFF00000001)
EPS = np.uint64(0xFFFFFFFF)  # 2^64 − p = 2^32 − 1
M32 = np.uint64(0xFFFFFFFF)
S32 = np.uint64(32)
ZERO = np.uint64(0)
ONE = np.uint64(1)
#: numba's decorator, typed ``Any`` for mypy: an intrinsic is declared with a leading
#: ``typingctx`` that the kernels calling it do not pass.
intrinsic: Any = _numba_intrinsic
#: Column tile of ``matmul3`` (accumulators of 2·8·MATMUL_TILE bytes).
MATMUL_TILE = 1024
#: Up to this inner dimension ``matmul3`` accumulates with addmod (about 2× faster there).
MATMUL_SMALL_K = 8


# ---------------------------------------------------------------- tiered dispatch

#: A cold kernel's call whose largest array has at most this many elements runs the twin.
TWIN_MAX_ELEMENTS = 1 << 16
#: A kernel that is not in numba's disk cache compiles once its twin has run this many
#: calls or elements (whichever first): about the cost of compiling it (0.1–1 s), so a hot
#: kernel never loses more than that. (A cached kernel loads in the background instead:
#: :class:`_Loader`.)
TWIN_HOT_CALLS = 2048
TWIN_HOT_ELEMENTS = 1 << 24
#: "auto" (the rule above), "numba" (always the kernel) or "numpy" (always the twin, any
#: size: for tests of the twins through the whole stack). Set with :func:`set_tiering`, or
#: for a whole process with the environment variable KAIRES_KERNELS.
_TIERING = os.environ.get("KAIRES_KERNELS", "auto")
if _TIERING not in ("auto", "numba", "numpy"):
    raise ConfigError(f"KAIRES_KERNELS must be 'auto', 'numba' or 'numpy', not {_TIERING!r}")
_TIERED: list[Tiered] = []
#: Bumped by :func:`set_tiering`: a background load requested before that does not promote.
_GENERATION = 0


class Tiered:
    """A numba kernel and its numpy twin (same arguments, same results), called alike.

    While the kernel is cold, a call whose arrays all have at most ``TWIN_MAX_ELEMENTS``
    elements runs the twin; a larger call makes the kernel hot for good (it compiles, or
    loads from numba's cache, on that call). Between small calls:

    - a kernel whose machine code is in numba's on-disk cache is cheap to buy (a few ms,
      after ≈ 0.3 s for numba's first load in the process), and buying it pays in any
      process that calls it a few hundred times: its first call asks :class:`_Loader` to
      load it on a background thread, the twin serves the calls meanwhile, and the kernel
      is hot once loaded (the caller never waits for numba);
    - one that is not in the cache would cost a compilation (0.1–1 s, holding the GIL):
      it compiles on the call after ``TWIN_HOT_CALLS`` calls / ``TWIN_HOT_ELEMENTS``
      elements through the twin (rent until the rent paid equals the price).

    Attribute lookups other than ``kernel``/``twin`` go to the kernel (``signatures``,
    ``py_func``).
    """

    __slots__ = (
        "__name__",
        "cached",
        "calls",
        "elements",
        "home",
        "hot",
        "kernel",
        "loading",
        "twin",
    )

    def __init__(self, kernel: Any, twin: Any, home: dict[str, Any] | None = None) -> None:
        self.kernel = kernel
        self.twin = twin
        self.__name__ = kernel.__name__
        self.home = home  # the module namespace binding this object under __name__, if any
        self.hot = False
        self.cached: bool | None = None  # in numba's disk cache (checked on the first call)
        self.calls = 0
        self.elements = 0
        self.loading = False  # a background load was requested (cached kernels)
        _TIERED.append(self)
        if _TIERING == "numba":
            self._promote()

    def _promote(self) -> None:
        """Hot for good: the module name now binds the kernel itself (no wrapper call on
        the hot path; :func:`set_tiering` binds this object again)."""
        self.hot = True
        if self.home is not None:
            self.home[self.__name__] = self.kernel

    def __call__(self, *args: Any) -> Any:
        if self.hot:
            return self.kernel(*args)
        return self._cold_call(args)

    def _cold_call(self, args: tuple[Any, ...]) -> Any:
        if _TIERING == "numpy":
            return self.twin(*args)
        n = 0
        for a in args:
            if type(a) is np.ndarray and a.size > n:
                n = a.size
        if n > TWIN_MAX_ELEMENTS or _TIERING == "numba":
            self._promote()
            return self.kernel(*args)
        if self.cached is None:
            self.cached = _cached_on_disk(self.kernel)
        self.calls += 1
        self.elements += n
        if self.cached:
            if not self.loading:
                self.loading = True
                _LOADER.request(self, tuple(typeof(a) for a in args))
        elif self.calls >= TWIN_HOT_CALLS or self.elements >= TWIN_HOT_ELEMENTS:
            self._promote()
        return self.twin(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kernel, name)

    def __repr__(self) -> str:
        return f"Tiered({self.__name__}, {'hot' if self.hot else 'cold'})"


class _Loader:
    """One daemon thread that loads cached kernels from numba's disk cache, in the order
    of their first calls, and makes each hot once loaded (:class:`Tiered`).

    ``lock`` is held while a kernel loads: a ``fork`` waits for the load in progress (a
    child never inherits numba's compiler lock held by a thread it does not have) and
    the child starts with no loader; at exit the interpreter waits for the load in
    progress and starts no other.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: queue.SimpleQueue[tuple[Tiered, tuple[Any, ...], int]] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.stopped = False
        self.idle = threading.Condition()  # notified when no load is queued or running
        self.pending = 0

    def request(self, kernel: Tiered, signature: tuple[Any, ...]) -> None:
        """Queue ``kernel`` to load for ``signature`` (the numba types of a call's
        arguments); it becomes hot when loaded, unless :func:`set_tiering` ran since."""
        with self.idle:
            self.pending += 1
        self.requests.put((kernel, signature, _GENERATION))
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="kaires-kernels", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while True:
            kernel, signature, generation = self.requests.get()
            try:
                with self.lock:
                    if self.stopped:
                        return
                    try:
                        kernel.kernel.compile(signature)
                    except Exception:  # e.g. a stale cache entry numba cannot type: the
                        kernel.cached = False  # caller compiles it on its own budget
                        continue
                    if generation == _GENERATION and _TIERING == "auto" and not kernel.hot:
                        kernel._promote()
            finally:
                with self.idle:
                    self.pending -= 1
                    self.idle.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no load is queued or running; False if ``timeout`` ran out first."""
        with self.idle:
            return self.idle.wait_for(lambda: self.pending == 0, timeout)

    def stop(self) -> None:
        """At exit: wait for the load in progress; load nothing more."""
        with self.lock:
            self.stopped = True

    def after_fork_in_child(self) -> None:
        """The child has no loader thread: start afresh (cold kernels ask again)."""
        self.lock = threading.Lock()
        self.requests = queue.SimpleQueue()
        self.thread = None
        self.idle = threading.Condition()
        self.pending = 0
        for t in _TIERED:
            if not t.hot:
                t.loading = False


_LOADER = _Loader()
atexit.register(_LOADER.stop)
os.register_at_fork(
    before=lambda: _LOADER.lock.acquire(),
    after_in_parent=lambda: _LOADER.lock.release(),
    after_in_child=_LOADER.after_fork_in_child,
)


def wait_loaded(timeout: float | None = None) -> bool:
    """Block until no kernel is queued or loading in the background (:class:`_Loader`):
    a benchmark or a memory measurement after its warm-up then sees no loader at work.
    Returns False if ``timeout`` (seconds) ran out first."""
    return _LOADER.wait_idle(timeout)


def tier(home: dict[str, Any], twins: dict[str, Any]) -> None:
    """Bind each kernel ``home[name]`` of a module namespace to a :class:`Tiered` object
    with the numpy twin ``twins[name]`` (type checkers keep seeing the kernel)."""
    for name, twin in twins.items():
        t = Tiered(home[name], twin, home)
        home[name] = t.kernel if t.hot else t  # hot from the start under KAIRES_KERNELS=numba


def tiered(name: str) -> Tiered:
    """The :class:`Tiered` object of the kernel ``name`` (its module name may bind the bare
    kernel once it is hot)."""
    for t in _TIERED:
        if t.__name__ == name and t.home is not None:
            return t
    raise KeyError(f"no tiered kernel named {name!r}")


def _cached_on_disk(kernel: Any) -> bool:
    """Whether numba's cache holds an index for this kernel (it may still be stale: then
    the kernel compiles, as it would have anyway)."""
    try:
        return os.path.exists(kernel._cache._cache_file._index_path)
    except AttributeError:  # numba's internals moved: treat the kernel as not cached
        return False


def set_tiering(mode: str) -> str:
    """Set the dispatch of every :class:`Tiered` kernel ("auto", "numba" or "numpy") and
    reset their counters; returns the previous mode."""
    global _TIERING
    if mode not in ("auto", "numba", "numpy"):
        raise ConfigError(f"tiering mode must be 'auto', 'numba' or 'numpy', not {mode!r}")
    global _GENERATION
    with _LOADER.lock:  # no background load promotes a kernel in the middle of this
        previous, _TIERING = _TIERING, mode
        _GENERATION += 1
        for t in _TIERED:
            t.hot = t.loading = False
            t.calls = t.elements = 0
            if t.home is not None:
                t.home[t.__name__] = t
            if mode == "numba":
                t._promote()
    return previous


# ---------------------------------------------------------------- scalar arithmetic
# The scalar operations are numba intrinsics: they emit their LLVM instructions straight
# into the calling kernel, where LLVM vectorises the loops around them. (As inlined numba
# functions, inline="always", numba re-typed a copy of their IR at every call site: most of
# the compilation time of a cold start.) Branches are selects, so the vectorised loops
# carry no control flow. Each builder mirrors the arithmetic in its docstring.

_I64 = ir.IntType(64)
_U64x2 = types.uint64(types.uint64, types.uint64)


def _const(v: int) -> ir.Constant:
    return ir.Constant(_I64, v)


def _ir_reduce128(b: ir.IRBuilder, hi: ir.Value, lo: ir.Value) -> ir.Value:
    """hi·2^64 + lo mod p, canonical: with hh = hi >> 32, hl = hi mod 2^32,
    hi·2^64 ≡ hl·(2^32 − 1) − hh (2^64 ≡ 2^32 − 1, 2^96 ≡ −1), so
    t0 = lo − hh (a borrow wraps by 2^64 ≡ EPS: subtract EPS), t2 = t0 + hl·EPS
    (hl·EPS < 2^64; a carry adds 2^64 ≡ EPS, no second overflow), then t2 − p if t2 ≥ p."""
    eps = _const(int(EPS))
    hh = b.lshr(hi, _const(32))
    hl = b.and_(hi, _const(int(M32)))
    t0 = b.sub(lo, hh)
    t0 = b.select(b.icmp_unsigned("<", lo, hh), b.sub(t0, eps), t0)
    t1 = b.mul(hl, eps)
    t2 = b.add(t0, t1)
    t2 = b.select(b.icmp_unsigned("<", t2, t1), b.add(t2, eps), t2)
    p = _const(int(P))
    return b.select(b.icmp_unsigned(">=", t2, p), b.sub(t2, p), t2)


def _ir_mulmod(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    """x·y mod p: the 128-bit product from 32-bit halves (x = x1·2^32 + x0, likewise y),
    mid = (x0·y0 >> 32) + low halves of x0·y1 and x1·y0 (< 3·2^32), then reduce128."""
    m32, s32 = _const(int(M32)), _const(32)
    x0, x1 = b.and_(x, m32), b.lshr(x, s32)
    y0, y1 = b.and_(y, m32), b.lshr(y, s32)
    p00, p01, p10, p11 = b.mul(x0, y0), b.mul(x0, y1), b.mul(x1, y0), b.mul(x1, y1)
    mid = b.add(b.add(b.lshr(p00, s32), b.and_(p01, m32)), b.and_(p10, m32))
    lo = b.or_(b.shl(mid, s32), b.and_(p00, m32))
    hi = b.add(b.add(b.add(p11, b.lshr(p01, s32)), b.lshr(p10, s32)), b.lshr(mid, s32))
    return _ir_reduce128(b, hi, lo)


def _ir_combine_split(b: ir.IRBuilder, sl: ir.Value, sh: ir.Value) -> ir.Value:
    """sh·2^32 + sl mod p: lo = (sh << 32) + sl with its carry into hi = sh >> 32."""
    lo = b.add(b.shl(sh, _const(32)), sl)
    carry = b.zext(b.icmp_unsigned("<", lo, sl), _I64)
    return _ir_reduce128(b, b.add(b.lshr(sh, _const(32)), carry), lo)


@intrinsic
def reduce128(typingctx: Any, hi: Any, lo: Any) -> Any:
    """Canonical residue of hi·2^64 + lo modulo p (any hi, lo < 2^64)."""
    return _U64x2, lambda context, builder, sig, args: _ir_reduce128(builder, *args)


@intrinsic
def mulmod(typingctx: Any, a: Any, b: Any) -> Any:
    """a·b mod p for any a, b < 2^64; the result is canonical."""
    return _U64x2, lambda context, builder, sig, args: _ir_mulmod(builder, *args)


def _ir_addmod(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    """s = x + y; a carry wraps by 2^64 ≡ EPS (add EPS), else s − p if s ≥ p."""
    s = b.add(x, y)
    p = _const(int(P))
    reduced = b.select(b.icmp_unsigned(">=", s, p), b.sub(s, p), s)
    return b.select(b.icmp_unsigned("<", s, x), b.add(s, _const(int(EPS))), reduced)


def _ir_submod(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    """d = x − y; a borrow (x < y) leaves x − y + 2^64, and x − y + p = d − EPS."""
    d = b.sub(x, y)
    return b.select(b.icmp_unsigned("<", x, y), b.sub(d, _const(int(EPS))), d)


@intrinsic
def addmod(typingctx: Any, a: Any, b: Any) -> Any:
    """a + b mod p for canonical a, b."""
    return _U64x2, lambda context, builder, sig, args: _ir_addmod(builder, *args)


@intrinsic
def submod(typingctx: Any, a: Any, b: Any) -> Any:
    """a − b mod p for canonical a, b."""
    return _U64x2, lambda context, builder, sig, args: _ir_submod(builder, *args)


@intrinsic
def combine_split(typingctx: Any, sl: Any, sh: Any) -> Any:
    """(sh·2^32 + sl) mod p for split sums sl = Σ low halves, sh = Σ high halves.

    Summing the 32-bit halves of canonical values separately needs no carry handling (so
    the loops vectorise) and is exact for fewer than 2^32 terms.
    """
    return _U64x2, lambda context, builder, sig, args: _ir_combine_split(builder, *args)


@intrinsic
def reduce_split_sums(typingctx: Any, hi32: Any, lo32: Any) -> Any:
    """Σ c mod p from hi32 = Σ (c >> 32) and lo32 = Σ (c & (2^32 − 1)): ``combine_split``
    with the high sum first (fewer than 2^32 terms)."""
    return _U64x2, lambda context, builder, sig, args: _ir_combine_split(builder, *args[::-1])


@njit(cache=True, nogil=True)
def powmod(x: np.uint64, e: np.uint64) -> np.uint64:
    """x^e mod p by square-and-multiply (0^0 = 1)."""
    r = ONE
    while e > ZERO:
        if e & ONE:
            r = mulmod(r, x)
        x = mulmod(x, x)
        e >>= ONE
    return r


# ---------------------------------------------------------------- elementwise kernels
# Scalars are passed as 1-element arrays: numba dispatches arrays faster than numpy scalars.


@njit(cache=True, nogil=True)
def add_vv(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    for i in range(a.shape[0]):
        out[i] = addmod(a[i], b[i])


@njit(cache=True, nogil=True)
def add_vs(a: np.ndarray, b1: np.ndarray, out: np.ndarray) -> None:
    b = b1[0]
    for i in range(a.shape[0]):
        out[i] = addmod(a[i], b)


@njit(cache=True, nogil=True)
def sub_vv(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    for i in range(a.shape[0]):
        out[i] = submod(a[i], b[i])


@njit(cache=True, nogil=True)
def sub_vs(a: np.ndarray, b1: np.ndarray, out: np.ndarray) -> None:
    b = b1[0]
    for i in range(a.shape[0]):
        out[i] = submod(a[i], b)


@njit(cache=True, nogil=True)
def sub_sv(a1: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    a = a1[0]
    for i in range(b.shape[0]):
        out[i] = submod(a, b[i])


@njit(cache=True, nogil=True)
def neg_v(a: np.ndarray, out: np.ndarray) -> None:
    for i in range(a.shape[0]):
        out[i] = submod(ZERO, a[i])


@njit(cache=True, nogil=True)
def mul_vv(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    for i in range(a.shape[0]):
        out[i] = mulmod(a[i], b[i])


@njit(cache=True, nogil=True)
def mul_vs(a: np.ndarray, b1: np.ndarray, out: np.ndarray) -> None:
    b = b1[0]
    for i in range(a.shape[0]):
        out[i] = mulmod(a[i], b)


@njit(cache=True, nogil=True)
def pow_vs(a: np.ndarray, e1: np.ndarray, out: np.ndarray) -> None:
    e = e1[0]
    for i in range(a.shape[0]):
        out[i] = powmod(a[i], e)


@njit(cache=True, nogil=True)
def reduce_v(a: np.ndarray, out: np.ndarray) -> None:
    """Canonical residues of arbitrary uint64 values."""
    for i in range(a.shape[0]):
        x = a[i]
        out[i] = x - P if x >= P else x


@njit(cache=True, nogil=True)
def inv_batch(a: np.ndarray, out: np.ndarray) -> None:
    """Montgomery batch inversion: 3 multiplications per element and one exponentiation.

    Pre: no element of ``a`` is 0 (checked by the caller).
    """
    n = a.shape[0]
    acc = ONE
    for i in range(n):
        out[i] = acc  # product of a[0..i-1]
        acc = mulmod(acc, a[i])
    inv = powmod(acc, P - np.uint64(2))
    for i in range(n - 1, -1, -1):
        t = mulmod(out[i], inv)
        inv = mulmod(inv, a[i])
        out[i] = t


# ---------------------------------------------------------------- reductions


@njit(cache=True, nogil=True)
def sum_rows(a: np.ndarray, out: np.ndarray) -> None:
    """out[r] = Σ_j a[r, j] mod p, exactly (split 32-bit half sums, one reduction)."""
    m, n = a.shape
    for r in range(m):
        sl = ZERO
        sh = ZERO
        for j in range(n):
            x = a[r, j]
            sl += x & M32
            sh += x >> S32
        out[r] = combine_split(sl, sh)


@njit(cache=True, nogil=True)
def prod_rows(a: np.ndarray, out: np.ndarray) -> None:
    """out[r] = Π_j a[r, j] mod p."""
    m, n = a.shape
    for r in range(m):
        acc = ONE
        for j in range(n):
            acc = mulmod(acc, a[r, j])
        out[r] = acc


def matmul3(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out[s] = a[s] @ b[s] mod p for stacks a (S, M, K), b (S, K, N), out (S, M, N).

    Each shape takes its own kernel (compiled on first use only: a process that never
    multiplies wide matrices never compiles the tiled one).
    """
    n = b.shape[2]
    k = a.shape[2]
    if n <= 4:
        matmul_dots(a, b, out)
    elif 1 <= k <= MATMUL_SMALL_K:
        matmul_few_terms(a, b, out)
    else:
        matmul_tiled(a, b, out)


@njit(cache=True, nogil=True)
def matmul_dots(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``matmul3`` for few columns (matrix-vector): one dot product per output entry; the
    products' 32-bit halves are accumulated separately (exact for K < 2^32), reduced once."""
    s_, m, k = a.shape
    n = b.shape[2]
    for s in range(s_):
        for i in range(m):
            for j in range(n):
                sl = ZERO
                sh = ZERO
                for t in range(k):
                    c = mulmod(a[s, i, t], b[s, t, j])
                    sl += c & M32
                    sh += c >> S32
                out[s, i, j] = combine_split(sl, sh)


@njit(cache=True, nogil=True)
def matmul_few_terms(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``matmul3`` for few terms (Shamir sharing and reconstruction: K = t + 1): accumulate
    with addmod straight into the output rows — vectorises, no split accumulators."""
    s_, m, k = a.shape
    n = b.shape[2]
    for s in range(s_):
        for i in range(m):
            o = out[s, i]
            x = a[s, i, 0]
            b0 = b[s, 0]
            if x == ONE:  # Vandermonde rows start with 1: a copy
                for j in range(n):  # (a loop: o[:] = b0 would compile numba's
                    o[j] = b0[j]  # shape-mismatch error formatting, ~1.4 s cold)
            else:
                for j in range(n):
                    o[j] = mulmod(x, b0[j])
            for t in range(1, k):
                x = a[s, i, t]
                bt = b[s, t]
                if x == ONE:
                    for j in range(n):
                        o[j] = addmod(o[j], bt[j])
                else:
                    for j in range(n):
                        o[j] = addmod(o[j], mulmod(x, bt[j]))


@njit(cache=True, nogil=True)
def matmul_tiled(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``matmul3`` in column tiles: the accumulators and the tile of b stay in L1 even for
    very wide b (Shamir sharing multiplies a small Vandermonde matrix by ~10^6 columns)."""
    s_, m, k = a.shape
    n = b.shape[2]
    tile = min(n, MATMUL_TILE)
    acc_l = np.empty(tile, dtype=np.uint64)
    acc_h = np.empty(tile, dtype=np.uint64)
    for s in range(s_):
        for j0 in range(0, n, tile):
            w = min(tile, n - j0)
            for i in range(m):
                acc_l[:w] = ZERO
                acc_h[:w] = ZERO
                for t in range(k):
                    x = a[s, i, t]
                    if x == ZERO:
                        continue
                    for j in range(w):
                        c = mulmod(x, b[s, t, j0 + j])
                        acc_l[j] += c & M32
                        acc_h[j] += c >> S32
                for j in range(w):
                    out[s, i, j0 + j] = combine_split(acc_l[j], acc_h[j])


# ---------------------------------------------------------------- polynomials


@njit(cache=True, nogil=True)
def ntt_rows(a: np.ndarray, tw: np.ndarray, rev: np.ndarray) -> None:
    """In-place iterative radix-2 NTT of every row of ``a`` (m, n).

    ``tw[k] = w^k`` for k < n/2 with w a principal n-th root of unity and ``rev`` the
    bit-reversal permutation of range(n). Post: a[r, k] = Σ_j a_old[r, j]·w^(jk).
    """
    m, n = a.shape
    for r in range(m):
        for i in range(n):
            j = rev[i]
            if i < j:
                t = a[r, i]
                a[r, i] = a[r, j]
                a[r, j] = t
        h = 1
        while h < n:
            step = n // (2 * h)
            for start in range(0, n, 2 * h):
                for k in range(h):
                    w = tw[k * step]
                    u = a[r, start + k]
                    v = mulmod(a[r, start + k + h], w)
                    a[r, start + k] = addmod(u, v)
                    a[r, start + k + h] = submod(u, v)
            h *= 2


@njit(cache=True, nogil=True)
def horner_rows(c: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out[r] = Σ_i c[r, i]·x[r]^i (Horner) for c (m, d+1), x (m,)."""
    m, d1 = c.shape
    for r in range(m):
        acc = ZERO
        xr = x[r]
        for i in range(d1 - 1, -1, -1):
            acc = addmod(mulmod(acc, xr), c[r, i])
        out[r] = acc


@njit(cache=True, nogil=True)
def horner_one(c: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out[r] = Σ_i c[i]·x[r]^i for one polynomial c (d+1,) at many points x (m,)."""
    d1 = c.shape[0]
    for r in range(x.shape[0]):
        acc = ZERO
        xr = x[r]
        for i in range(d1 - 1, -1, -1):
            acc = addmod(mulmod(acc, xr), c[i])
        out[r] = acc


# ---------------------------------------------------------------- opening Shamir shares

#: Column tile of ``open_shares`` (its accumulators stay in L1).
OPEN_TILE = 8192


@njit(cache=True, nogil=True)
def open_shares(ys: Any, W: np.ndarray, out: np.ndarray) -> bool:
    """Interpolate and check Shamir shares in one pass: out = Σ_k W[0, k]·ys[k] and
    whether Σ_k W[i, k]·ys[k] = ys[T − 1 + i] for every i ≥ 1, everywhere (T = W.shape[1]).

    ``ys``: a tuple of 1-D arrays of one length, the T base shares then the checked ones;
    ``W`` (1 + checked, T): Lagrange weights at 0 and at the checked parties' points.
    Stops at the first tile that disagrees (``out`` is then unspecified). Two base shares
    (t = 1, the default committee) take a loop that forms each value in registers.
    """
    T = W.shape[1]
    R = W.shape[0]
    n = out.shape[0]
    acc = np.empty(OPEN_TILE, dtype=np.uint64)
    for j0 in range(0, n, OPEN_TILE):
        w = min(OPEN_TILE, n - j0)
        for i in range(R):
            a = out[j0 : j0 + w] if i == 0 else acc[:w]
            if T == 2:
                y0 = ys[0][j0 : j0 + w]
                y1 = ys[1][j0 : j0 + w]
                c0 = W[i, 0]
                c1 = W[i, 1]
                for j in range(w):
                    a[j] = addmod(mulmod(y0[j], c0), mulmod(y1[j], c1))
            else:
                y = ys[0][j0 : j0 + w]
                c = W[i, 0]
                for j in range(w):
                    a[j] = mulmod(y[j], c)
                for k in range(1, T):
                    y = ys[k][j0 : j0 + w]
                    c = W[i, k]
                    for j in range(w):
                        a[j] = addmod(a[j], mulmod(y[j], c))
            if i > 0:
                y = ys[T - 1 + i][j0 : j0 + w]
                diff = ZERO
                for j in range(w):
                    diff |= a[j] ^ y[j]
                if diff != ZERO:
                    return False
    return True


# ---------------------------------------------------------------- tiering
# Callers (field, poly, flp) look the kernels up here at call time: a Tiered object while
# the kernel is cold, the kernel itself once hot. No kernel calls these names (numba would
# not accept a Tiered object).
tier(
    globals(),
    {
        "add_vv": _twins.add_vv,
        "add_vs": _twins.add_vs,
        "sub_vv": _twins.sub_vv,
        "sub_vs": _twins.sub_vs,
        "sub_sv": _twins.sub_sv,
        "neg_v": _twins.neg_v,
        "mul_vv": _twins.mul_vv,
        "mul_vs": _twins.mul_vs,
        "pow_vs": _twins.pow_vs,
        "reduce_v": _twins.reduce_v,
        "inv_batch": _twins.inv_batch,
        "sum_rows": _twins.sum_rows,
        "prod_rows": _twins.prod_rows,
        "matmul_dots": _twins.matmul,
        "matmul_few_terms": _twins.matmul,
        "matmul_tiled": _twins.matmul,
        "ntt_rows": _twins.ntt_rows,
        "open_shares": _twins.open_shares,
    },
)


# ---------------------------------------------------------------- seeded Shamir sharing

#: Column tile of ``complete_rows`` (one output tile stays in L1 across its terms).
COMPLETE_TILE = 1024


@njit(cache=True, nogil=True)
def complete_rows(
    w: np.ndarray,
    secret: np.ndarray,
    rows: np.ndarray,
    col0: int,
    src: np.ndarray,
    dst: np.ndarray,
) -> None:
    """rows[dst[r], col0 + j] = w[r, 0]·secret[j] + Σ_k w[r, k + 1]·rows[src[k], col0 + j]
    mod p, for j < len(secret).

    The full shares of a seeded Shamir sharing in one pass (``sharing.share_seeded``):
    ``rows`` (n, width) holds the seeded shares in rows ``src`` (t of them) and receives the
    others in rows ``dst`` (disjoint from ``src``), all in columns col0 .. col0 + len(secret);
    ``w`` (len(dst), t + 1) are the Lagrange weights from the points (0, secret) and
    (src + 1, seeded share).
    """
    L = secret.shape[0]
    t = src.shape[0]
    # The inner loops index tile slices from 0: numba then knows the index is ≥ 0 (no
    # negative-index wraparound select) and LLVM vectorises them (≈ 5× faster).
    for j0 in range(0, L, COMPLETE_TILE):
        j1 = min(j0 + COMPLETE_TILE, L)
        x = secret[j0:j1]
        for r in range(dst.shape[0]):
            out = rows[dst[r], col0 + j0 : col0 + j1]
            w0 = w[r, 0]
            for j in range(j1 - j0):
                out[j] = mulmod(w0, x[j])
            for k in range(t):
                wk = w[r, k + 1]
                s = rows[src[k], col0 + j0 : col0 + j1]
                for j in range(j1 - j0):
                    out[j] = addmod(out[j], mulmod(wk, s[j]))


tier(globals(), {"complete_rows": _twins.complete_rows})
