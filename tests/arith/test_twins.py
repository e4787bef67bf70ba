"""The numpy twins of the numba kernels (kaires_fl/arith/_twins.py) and their dispatch.

Every twin must write exactly what its kernel writes: checked against the kernel and
against Python integers on arrays rich in edge values (0, 1, p − 1, 2^32 ± 1, ...), and
through the whole FLP (prove / query / decide) with either tier forced. The dispatch
(``_kernels.Tiered``): small calls of a cold kernel take the twin, a large call or enough
small ones make it hot; and a cold ``kaires demo`` compiles no kernel at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twin_checks import EDGES, edge_array, kernel_and_twin

from kaires_fl.arith import _kernels as kern
from kaires_fl.arith import _twins, flp, poly
from kaires_fl.arith import circuits as cc
from kaires_fl.arith.field import Field64
from kaires_fl.arith.flp import FlpBBCGGI19
from kaires_fl.errors import ConfigError

F = Field64
p = F.MODULUS
U64 = st.integers(0, 2**64 - 1)
CANON = st.integers(0, p - 1)


def _ints(a: np.ndarray) -> Any:
    return np.asarray(a, dtype=object).tolist()


@pytest.fixture
def tiering() -> Iterator[None]:
    previous = kern.set_tiering("auto")
    yield
    kern.set_tiering(previous)


# ------------------------------------------------------------ scalar arithmetic vs ints


@settings(max_examples=300, deadline=None)
@given(hi=U64, lo=U64, a=CANON, b=CANON)
def test_twin_arithmetic_against_python_ints(hi: int, lo: int, a: int, b: int) -> None:
    """reduce128 and mulmod on any 64-bit inputs, add/sub on canonical ones, combine_split."""
    u = np.uint64
    H, L, A, B = (np.array([v], u) for v in (hi, lo, a, b))
    assert int(_twins.reduce128(H, L)[0]) == (hi * 2**64 + lo) % p
    assert int(_twins.mulmod(H, L)[0]) == hi * lo % p
    assert int(_twins.combine_split(L, H)[0]) == (hi * 2**32 + lo) % p
    assert int(_twins.addmod(A, B)[0]) == (a + b) % p
    assert int(_twins.submod(A, B)[0]) == (a - b) % p
    assert int(_twins.powmod(A, hi % 1000)[0]) == pow(a, hi % 1000, p)


# ------------------------------------------------------------ each twin vs its kernel


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 40))
def test_elementwise_twins_equal_kernels(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = edge_array(rng, (n,)), edge_array(rng, (n,))
    s1 = edge_array(rng, (1,))
    out = np.empty(n, np.uint64)
    for tk in (kern.tiered("add_vv"), kern.tiered("sub_vv"), kern.tiered("mul_vv")):
        kernel_and_twin(tk, a, b, out)
    for tk in (kern.tiered("add_vs"), kern.tiered("sub_vs"), kern.tiered("mul_vs")):
        kernel_and_twin(tk, a, s1, out)
    kernel_and_twin(kern.tiered("sub_sv"), s1, b, out)
    kernel_and_twin(kern.tiered("neg_v"), a, out)
    kernel_and_twin(kern.tiered("pow_vs"), a, np.array([rng.integers(0, 2**63)], np.uint64), out)
    kernel_and_twin(kern.tiered("pow_vs"), a, np.array([0], np.uint64), out)
    kernel_and_twin(kern.tiered("reduce_v"), rng.integers(0, 2**64, size=n, dtype=np.uint64), out)
    nz = np.where(a == 0, np.uint64(1), a)
    kernel_and_twin(kern.tiered("inv_batch"), nz, out)
    _twins.inv_batch(nz, out)
    np.testing.assert_array_equal(_twins.mulmod(nz, out), np.ones(n, np.uint64))


@pytest.mark.parametrize("e", [0, 1, 2, 3, 2**32 + 7, p - 2, 2**64 - 1])
def test_powmod_twin_both_paths_against_python_ints(e: int) -> None:
    """Per element through Python ints up to _POW_SCALAR_MAX elements, whole-array
    square-and-multiply beyond; any 64-bit base (as the kernel's mulmod takes)."""
    rng = np.random.default_rng(e % 1000)
    n = _twins._POW_SCALAR_MAX + 5
    x = np.concatenate([np.array([*EDGES, 2**64 - 1], np.uint64), edge_array(rng, (n,))])
    want = [pow(v, e, p) for v in _ints(x)]
    assert _ints(_twins.powmod(x, e)) == want
    assert _ints(_twins.powmod(x[:7], e)) == want[:7]
    kernel_and_twin(kern.tiered("pow_vs"), x, np.array([e], np.uint64), np.empty_like(x))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 4), st.integers(0, 33), st.integers(1, 10))
def test_row_and_matrix_twins_equal_kernels(seed: int, m: int, n: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    a = edge_array(rng, (m, n))
    kernel_and_twin(kern.tiered("sum_rows"), a, np.empty(m, np.uint64))
    kernel_and_twin(kern.tiered("prod_rows"), a, np.empty(m, np.uint64))
    assert _ints(_twins.split_sum(a, axis=1)) == [sum(r) % p for r in _ints(a)]
    n = max(n, 1)  # (matmul3 never sends an empty product to the tiled kernel)
    A = edge_array(rng, (2, m, k))
    B = edge_array(rng, (2, k, n))
    out = np.empty((2, m, n), np.uint64)
    for tk in (
        kern.tiered("matmul_dots"),
        kern.tiered("matmul_few_terms"),
        kern.tiered("matmul_tiled"),
    ):
        kernel_and_twin(tk, A, B, out)
    Ai, Bi = _ints(A), _ints(B)
    want = [
        [[sum(Ai[s][i][t] * Bi[s][t][j] for t in range(k)) % p for j in range(n)] for i in range(m)]
        for s in range(2)
    ]
    got = np.empty_like(out)
    _twins.matmul(A, B, got)
    assert _ints(got) == want


def test_matmul_twin_blocked_path_equals_kernel() -> None:
    """Beyond _MATMUL_BLOCK the twin accumulates one inner term at a time."""
    rng = np.random.default_rng(3)
    A = edge_array(rng, (1, 4, 300))
    B = edge_array(rng, (1, 300, 1000))
    assert A.shape[1] * A.shape[2] * B.shape[2] > _twins._MATMUL_BLOCK
    kernel_and_twin(kern.tiered("matmul_tiled"), A, B, np.empty((1, 4, 1000), np.uint64))


@pytest.mark.parametrize("n", [1, 2, 4, 8, 64])
def test_ntt_twin_equals_kernel(n: int) -> None:
    rng = np.random.default_rng(n)
    for inverse in (False, True):
        a = edge_array(rng, (3, n))
        kernel_and_twin(kern.tiered("ntt_rows"), a, poly._twiddles(F, n, inverse), poly._bitrev(n))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 5), st.integers(1, 40), st.booleans())
def test_flp_twins_equal_kernels(seed: int, B: int, K: int, shared: bool) -> None:
    rng = np.random.default_rng(seed)
    a = edge_array(rng, (B, 2 * K + 5))
    w = edge_array(rng, (1 if shared else B, K + 2))
    kernel_and_twin(kern.tiered("_k_dot_rows"), a, 2, w, 1, K, 1, np.empty(B, np.uint64))
    kernel_and_twin(kern.tiered("_k_mul_rows"), a[:, :K], w[:, :K], np.empty((B, K), np.uint64))
    G = 2
    for bits in (1, K, 31, 33):
        kernel_and_twin(
            kern.tiered("_k_from_bits"),
            edge_array(rng, (B, G * bits + 1)),
            1,
            bits,
            np.empty((B, G), np.uint64),
        )
    kernel_and_twin(
        kern.tiered("_k_dot_groups"), a, 1, w[0, :3].copy(), np.empty((B, K // 3), np.uint64)
    )
    chunk = int(rng.integers(1, 7))
    calls = -(-(K + 3) // chunk)
    bc = np.uint64(rng.choice(EDGES))
    for use_w in (False, True):
        buf = np.zeros((B, calls, 2, chunk), np.uint64)
        kernel_and_twin(
            kern.tiered("_k_fill_pairs_run"), buf, 3, a, 2, w, 1, use_w, a[:1], 4, bc, K
        )
    idx = rng.integers(0, a.shape[1], K).astype(np.int64)
    none = np.empty(0, np.int64)
    vl = edge_array(rng, (1 if shared else B, K))
    vw = edge_array(rng, (B, K))
    for ai, bi in ((none, none), (idx, none), (none, idx), (idx, idx)):
        acc = edge_array(rng, (B, 2 * chunk))
        kernel_and_twin(
            kern.tiered("_k_pairs_at"), acc, 5, chunk, a, 1, ai, a[:1], 3, bi, bc, vw, vl
        )
    kernel_and_twin(kern.tiered("_k_powers"), w[:, 0].copy(), np.empty((w.shape[0], K), np.uint64))
    kernel_and_twin(kern.tiered("_k_psmul_eval"), a[:, : 2 * K], np.empty(B, np.uint64))


@pytest.mark.parametrize("calls,chunk", [(1, 1), (3, 2), (7, 5), (15, 3), (40, 8)])
def test_prover_twin_equals_kernel(calls: int, chunk: int) -> None:
    """The gadget polynomial of ParallelSum(Mul, chunk) over its wire domain."""
    rng = np.random.default_rng(calls)
    B, A = 3, 2 * chunk
    P = flp.next_power_of_2(calls + 1)
    inp = edge_array(rng, (B, calls, A))
    seeds = edge_array(rng, (B, A))
    outs = _twins.split_sum(_twins.mulmod(inp[..., :chunk], inp[..., chunk:]), axis=2)
    out = np.empty((B, 2 * P - 1), np.uint64)
    kernel_and_twin(kern.tiered("_k_prove_psmul"), inp, seeds, outs, *flp._psmul_tables(P), 2, out)


# ------------------------------------------------------------ the whole FLP on either tier


@pytest.mark.parametrize(
    "valid,values",
    [
        (cc.Sum(16), [0, 1, 65535, 300, 7, 12]),
        (cc.SumVec(10, 8), [list(range(k, k + 10)) for k in range(0, 60, 10)]),
        (cc.Histogram(10), [0, 9, 3, 3, 5, 1]),
    ],
    ids=repr,
)
def test_flp_identical_on_both_tiers(valid: object, values: list[object], tiering: None) -> None:
    """Proofs, verifiers and decisions bit for bit equal whichever tier runs; a tampered
    proof is rejected on the twins too."""
    flpi = FlpBBCGGI19(valid)  # type: ignore[arg-type]
    rng = np.random.default_rng(7)
    meas = np.stack([valid.encode(v) for v in values])  # type: ignore[attr-defined]
    B = meas.shape[0]
    pr = F.random((B, flpi.PROVE_RAND_LEN), rng=rng)
    jr = F.random((flpi.JOINT_RAND_LEN,), rng=rng)
    qr = flpi.derive_query_rand(b"seed")
    results = []
    for mode in ("numba", "numpy"):
        kern.set_tiering(mode)
        proof = flpi.prove(meas, pr, jr)
        ver = flpi.query(meas, proof, qr, jr)
        results.append((proof, ver, flpi.decide(ver)))
    for x, y in zip(*results, strict=True):
        np.testing.assert_array_equal(x, y)
    assert results[1][2].all()
    bad = results[1][0].copy()
    bad[:, -1] = F.add(bad[:, -1], F.elements(1))
    assert not flpi.decide(flpi.query(meas, bad, qr, jr)).any()


# ------------------------------------------------------------ dispatch


def test_tiered_dispatch_promotes_on_size_or_use(
    tiering: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kern, "_cached_on_disk", lambda kernel: False)  # as on a fresh install
    tk = kern.Tiered(kern.tiered("add_vv").kernel, _twins.add_vv)
    try:
        before = len(tk.signatures)
        a = np.arange(10, dtype=np.uint64)
        out = np.empty(10, np.uint64)
        tk(a, a, out)
        assert not tk.hot and tk.calls == 1 and tk.elements == 10 and tk.cached is False
        assert len(tk.signatures) == before  # the twin ran: nothing compiled for it
        np.testing.assert_array_equal(out, 2 * a)
        big = np.ones(kern.TWIN_MAX_ELEMENTS + 1, np.uint64)
        tk(big, big, np.empty_like(big))
        assert tk.hot
        monkeypatch.setattr(kern, "TWIN_HOT_CALLS", 3)
        kern.set_tiering("auto")
        for _ in range(3):
            assert not tk.hot
            tk(a, a, out)
        assert tk.hot
        kern.set_tiering("numpy")
        assert not tk.hot
        tk(big, big, np.empty_like(big))
        assert not tk.hot  # forced twin, whatever the size
        with pytest.raises(ConfigError, match="tiering mode"):
            kern.set_tiering("fast")
    finally:
        kern._TIERED.remove(tk)


def test_promotion_binds_the_bare_kernel_and_set_tiering_restores(tiering: None) -> None:
    """Hot: the module name binds the numba dispatcher itself (no wrapper on the hot path)."""
    for mod, name in ((kern, "mul_vv"), (flp, "_k_pairs_at")):
        t = kern.tiered(name)
        kern.set_tiering("numba")
        assert getattr(mod, name) is t.kernel
        kern.set_tiering("numpy")
        assert getattr(mod, name) is t and not t.hot


def _wait_hot(tk: kern.Tiered, deadline_s: float = 120.0) -> None:
    """Poll until the background loader has made ``tk`` hot (generous: a loaded machine)."""
    end = time.monotonic() + deadline_s
    while not tk.hot:
        assert time.monotonic() < end, f"{tk} was not loaded in {deadline_s} s"
        time.sleep(0.01)


def test_kernel_in_the_disk_cache_loads_in_the_background(tiering: None) -> None:
    """A cached kernel's first small call runs the twin and queues a background load;
    the kernel is hot once loaded, with no further call needed (a long-lived process runs
    compiled kernels from its first moments)."""
    a = np.arange(10, dtype=np.uint64)
    kern.tiered("add_vv").kernel(a, a, np.empty_like(a))  # now in numba's cache
    assert kern._cached_on_disk(kern.tiered("add_vv").kernel)
    tk = kern.Tiered(kern.tiered("add_vv").kernel, _twins.add_vv)
    try:
        out = np.empty_like(a)
        tk(a, a, out)
        np.testing.assert_array_equal(out, 2 * a)
        assert tk.cached and tk.loading and tk.calls == 1
        assert kern.wait_loaded(120.0) and tk.hot  # wait_loaded returns once it is loaded
        tk(a, a, out)
        np.testing.assert_array_equal(out, 2 * a)
        assert tk.calls == 1  # the second call went to the kernel, not the twin
    finally:
        kern._TIERED.remove(tk)


def test_set_tiering_cancels_a_pending_background_load(tiering: None) -> None:
    """A load queued before ``set_tiering`` never promotes its kernel afterwards (a test
    forcing the twins must get the twins)."""
    a = np.arange(10, dtype=np.uint64)
    kern.tiered("add_vv").kernel(a, a, np.empty_like(a))
    stale = kern.Tiered(kern.tiered("add_vv").kernel, _twins.add_vv)
    sentinel = kern.Tiered(kern.tiered("sub_vv").kernel, _twins.sub_vv)
    kern.tiered("sub_vv").kernel(a, a, np.empty_like(a))
    try:
        with kern._LOADER.lock:  # the loader waits: both requests stay queued
            stale(a, a, np.empty_like(a))
            kern._GENERATION += 1  # what set_tiering does (it takes this lock itself)
            sentinel(a, a, np.empty_like(a))
        _wait_hot(sentinel)  # queued after the stale request: that one was handled
        assert not stale.hot
    finally:
        kern._TIERED.remove(stale)
        kern._TIERED.remove(sentinel)


def test_fork_during_a_background_load_gives_a_working_child(tiering: None) -> None:
    """``fork`` waits for the load in progress; the child has no loader thread of its own
    until it asks, and its kernels compute correctly (twin, then loaded kernel)."""
    a = np.arange(10, dtype=np.uint64)
    kern.tiered("add_vv").kernel(a, a, np.empty_like(a))
    tk = kern.Tiered(kern.tiered("add_vv").kernel, _twins.add_vv)
    try:
        tk(a, a, np.empty_like(a))  # a load is queued or running now
        pid = os.fork()
        if pid == 0:  # the child: exit code 0 iff both paths compute 2a
            ok = True
            try:
                out = np.empty_like(a)
                tk(a, a, out)
                ok = bool((out == 2 * a).all())
                _wait_hot(tk, 60.0)
                tk(a, a, out)
                ok = ok and bool((out == 2 * a).all())
            except BaseException:
                ok = False
            os._exit(0 if ok else 1)
        end = time.monotonic() + 120.0
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > end:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail("the forked child hung (a lock inherited from the loader?)")
            time.sleep(0.02)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        kern._TIERED.remove(tk)


def test_cold_demo_compiles_no_kernel() -> None:
    """``kaires demo`` in a fresh process with an empty numba cache: correct (exit 0) and
    not one kernel compiled or written to the cache (the twins did the work)."""
    code = (
        "import io, contextlib, json, gc\n"
        "from kaires_fl import demo\n"
        "from numba.core.registry import CPUDispatcher\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    rc = demo.main(quiet=True)\n"
        "compiled = sorted(o.py_func.__qualname__ for o in gc.get_objects()\n"
        "                  if isinstance(o, CPUDispatcher) and o.signatures)\n"
        "print(json.dumps({'rc': rc, 'compiled': compiled}))\n"
    )
    with tempfile.TemporaryDirectory(prefix="kaires-numba-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "KAIRES_KERNELS": "auto"}
        res = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
        assert res.returncode == 0, res.stderr[-2000:]
        got = json.loads(res.stdout.strip().splitlines()[-1])
        assert got == {"rc": 0, "compiled": []}
        assert not any(files for _, _, files in os.walk(cache))


def test_kernels_forced_from_the_start_bind_the_bare_kernel() -> None:
    """``KAIRES_KERNELS=numba`` at import: every tiered name binds the numba dispatcher
    itself (no wrapper left on the hot path)."""
    code = (
        "from kaires_fl.arith import _kernels as k, flp\n"
        "from numba.core.registry import CPUDispatcher\n"
        "names = [(k, t.__name__) for t in k._TIERED if t.home is vars(k)]\n"
        "names += [(flp, t.__name__) for t in k._TIERED if t.home is vars(flp)]\n"
        "assert len(names) > 10, names\n"
        "bad = [n for m, n in names if not isinstance(getattr(m, n), CPUDispatcher)]\n"
        "print(bad)\n"
    )
    env = {**os.environ, "KAIRES_KERNELS": "numba"}
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "[]"
