"""Fully linear proofs (FLP) of Boneh–Boneh–Corrigan-Gibbs–Gilboa–Ishai (CRYPTO'19, Thm 4.3).

This is the proof system Prio3 uses (draft-irtf-cfrg-vdaf, ``FlpBBCGGI19``), rebuilt for
batches and for **Shamir** sharing:

* every array has leading batch axes: measurements ``(..., MEAS_LEN)``, proofs
  ``(..., PROOF_LEN)``, verifiers ``(..., VERIFIER_LEN)``; a batch is proved and queried
  with whole-array field operations, never one record at a time;
* ``query`` is affine in ``(meas, proof)`` and adds every constant **in full** (the
  ``num_shares = 1`` semantics of the reference). Run on a Shamir share of
  ``(meas, proof)`` it therefore returns a Shamir share (same degree, same point) of the
  verifier, which the aggregators open robustly before ``decide`` (see ``verify.py``);
* joint and query randomness are inputs, either one vector for the whole batch (shape
  ``(LEN,)``) or one per record (``(..., LEN)``);
* soundness is amplified by ``proofs`` independent repetitions (Prio3's ``PROOFS``), each
  with its own joint and query randomness; the default is the least count that brings the
  soundness error to at most 2^-64 (see :meth:`FlpBBCGGI19.soundness_error_log2` and
  ``docs/proofs.md``).

A validity circuit (:class:`Valid`) calls its gadgets on batched inputs of shape
``(B, k, ARITY)`` (k calls at once, in call order). The prover records the inputs of every
call on *wire* polynomials over the P-th roots of unity (P = next power of two above
calls + 1, the point α^0 holding a random *wire seed* for zero knowledge) and sends the
*gadget polynomial* G(wire_1(x), …, wire_L(x)). The verifier replaces gadget outputs by
evaluations of the gadget polynomial at α^1..α^M, interpolates the wires from the
(shared) inputs and evaluates everything at a random point t outside the domain; ``decide``
checks the circuit output is zero and G(wire(t)) equals the gadget polynomial at t.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from kaires_fl.arith import poly
from kaires_fl.errors import ConfigError, EncodingError, ProtocolError

#: Target soundness error (log2) used to choose the default number of proofs.
TARGET_SOUNDNESS_LOG2 = -64.0


def next_power_of_2(n: int) -> int:
    """Least power of two ≥ n (n ≥ 1)."""
    return 1 << max(0, (n - 1).bit_length())


def powers(F: Any, x: np.ndarray, n: int) -> np.ndarray:
    """``[x^0, x^1, …, x^(n-1)]`` along a new last axis; x has shape ``(...)``.

    Vectorised by doubling: log2(n) whole-array multiplications.
    """
    x = np.asarray(x, dtype=F.DTYPE)
    out = F.zeros((*x.shape, n))
    if n == 0:
        return out
    out[..., 0] = F.ones(x.shape)
    m = 1
    xm = x  # x^m
    while m < n:
        k = min(m, n - m)
        out[..., m : m + k] = F.mul(out[..., :k], xm[..., None])
        xm = F.mul(xm, xm)
        m *= 2
    return out


# ---------------------------------------------------------------------------- gadgets


class Gadget:
    """An arithmetic gadget: a low-degree polynomial map of ``ARITY`` inputs to one output.

    ``eval`` takes inputs with the arity on the last axis, ``(..., ARITY)``, and returns
    ``(...)``; it must be vectorised over the leading axes (the prover evaluates it on
    whole polynomial-evaluation grids).
    """

    ARITY: int
    DEGREE: int

    def eval(self, F: Any, inp: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Mul(Gadget):
    """x·y (arity 2, degree 2)."""

    ARITY = 2
    DEGREE = 2

    def eval(self, F: Any, inp: np.ndarray) -> np.ndarray:
        return F.mul(inp[..., 0], inp[..., 1])


class PolyEval(Gadget):
    """p(x) for a fixed public polynomial p (coefficients lowest degree first)."""

    ARITY = 1

    def __init__(self, coeffs: Sequence[int]) -> None:
        c = [int(v) for v in coeffs]
        while len(c) > 1 and c[-1] == 0:
            c.pop()
        if len(c) < 2:
            raise ConfigError("PolyEval needs a polynomial of degree ≥ 1; pass its coefficients")
        self.coeffs = c
        self.DEGREE = len(c) - 1

    def eval(self, F: Any, inp: np.ndarray) -> np.ndarray:
        x = inp[..., 0]
        cs = F.elements(self.coeffs)
        acc = np.broadcast_to(cs[-1], x.shape).copy()
        for c in cs[-2::-1]:
            acc = F.add(F.mul(acc, x), c)
        return acc

    def __repr__(self) -> str:
        return f"PolyEval({self.coeffs})"


class ParallelSum(Gadget):
    """Σ_j sub(inp_j) over ``count`` consecutive blocks of ``sub.ARITY`` inputs."""

    def __init__(self, sub: Gadget, count: int) -> None:
        if count < 1:
            raise ConfigError("ParallelSum needs count ≥ 1")
        self.sub = sub
        self.count = count
        self.ARITY = sub.ARITY * count
        self.DEGREE = sub.DEGREE

    def eval(self, F: Any, inp: np.ndarray) -> np.ndarray:
        blocks = inp.reshape(*inp.shape[:-1], self.count, self.sub.ARITY)
        return F.sum(self.sub.eval(F, blocks), axis=-1)

    def __repr__(self) -> str:
        return f"ParallelSum({self.sub!r}, {self.count})"


# ------------------------------------------------------------------ validity circuits


class GadgetCall:
    """What a circuit calls: ``call(inp (B, k, ARITY)) -> (B, k)`` for k calls at once."""

    def __init__(self, F: Any, gadget: Gadget, batch: int) -> None:
        self.F = F
        self.gadget = gadget
        self.batch = batch
        self.inputs: list[np.ndarray] = []
        self.calls = 0

    def record(self, inp: np.ndarray) -> np.ndarray:
        if inp.ndim != 3 or inp.shape[-1] != self.gadget.ARITY:
            raise ConfigError(
                f"gadget {self.gadget!r} called with inputs of shape {inp.shape}; "
                f"expected (B, k, {self.gadget.ARITY})"
            )
        inp = np.broadcast_to(inp, (self.batch, inp.shape[1], inp.shape[2]))
        self.inputs.append(inp)
        k = inp.shape[1]
        self.calls += k
        return inp

    def __call__(self, inp: np.ndarray) -> np.ndarray:
        return self.gadget.eval(self.F, self.record(inp))


class _QueryCall(GadgetCall):
    """Gadget outputs replaced by the gadget polynomial at α^1, α^2, … (call order)."""

    def __init__(self, F: Any, gadget: Gadget, batch: int, outputs: np.ndarray) -> None:
        super().__init__(F, gadget, batch)
        self.outputs = outputs  # (B or 1, P) evaluations at α^0..α^(P-1)

    def __call__(self, inp: np.ndarray) -> np.ndarray:
        start = self.calls
        k = self.record(inp).shape[1]
        out = self.outputs[:, 1 + start : 1 + start + k]
        if out.shape[1] != k:
            raise ConfigError(f"gadget {self.gadget!r} called more often than declared")
        return np.broadcast_to(out, (self.batch, k))


class Valid:
    """A validity circuit: ``eval`` is zero on every entry iff the measurement is valid.

    Subclasses set ``field``, ``MEAS_LEN``, ``JOINT_RAND_LEN``, ``EVAL_OUTPUT_LEN``,
    ``OUTPUT_LEN``, ``GADGETS`` and ``GADGET_CALLS``, and implement

    * ``eval(meas (B, MEAS_LEN), joint_rand (B|1, JOINT_RAND_LEN), gadgets) ->
      (B, EVAL_OUTPUT_LEN)``: calls ``gadgets[i](inp (B, k, ARITY))`` exactly
      ``GADGET_CALLS[i]`` times in total; everything outside gadgets must be affine in
      ``meas`` and in the gadget outputs, with constants added in full;
    * ``encode`` / ``truncate`` / ``decode`` (batched over leading axes; ``truncate`` is
      affine, constants in full);
    * ``joint_rand_error_terms()``: the degree in the joint randomness of the random
      combinations the circuit forms (its own soundness error is that over |F|).
    """

    field: Any
    MEAS_LEN: int
    JOINT_RAND_LEN: int = 0
    EVAL_OUTPUT_LEN: int = 1
    OUTPUT_LEN: int
    GADGETS: list[Gadget]
    GADGET_CALLS: list[int]

    def eval(
        self, meas: np.ndarray, joint_rand: np.ndarray, gadgets: list[GadgetCall]
    ) -> np.ndarray:
        raise NotImplementedError

    def encode(self, measurement: Any) -> np.ndarray:
        raise NotImplementedError

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decode(self, output: np.ndarray, num_measurements: int) -> Any:
        raise NotImplementedError

    def joint_rand_error_terms(self) -> int:
        return 0

    def check(self, meas: np.ndarray, joint_rand: np.ndarray | None = None) -> np.ndarray:
        """Evaluate the circuit directly (no proof): True where every output is zero.

        The reference that ``prove``/``query``/``decide`` must agree with; for tests.
        """
        F = self.field
        meas2, bshape = _batch(self, meas, self.MEAS_LEN, "measurement")
        jr = _rand(F, joint_rand, self.JOINT_RAND_LEN, bshape, "joint_rand")
        calls = [GadgetCall(F, g, meas2.shape[0]) for g in self.GADGETS]
        out = self.eval(meas2, jr, calls)
        return np.all(out == 0, axis=-1).reshape(bshape)


def _batch(obj: Any, a: Any, length: int, what: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """Flatten leading axes: ``(..., length)`` → ``((B, length), batch_shape)``."""
    arr = np.asarray(a)
    if arr.ndim == 0 or arr.shape[-1] != length:
        raise EncodingError(f"{what} must have shape (..., {length}) for {obj!r}; got {arr.shape}")
    if arr.dtype != obj.field.DTYPE:
        raise EncodingError(
            f"{what} must be field elements ({obj.field.__name__}.elements); got {arr.dtype}"
        )
    bshape = arr.shape[:-1]
    return np.ascontiguousarray(arr.reshape(-1, length)), bshape


def _rand(F: Any, r: Any, length: int, bshape: tuple[int, ...], what: str) -> np.ndarray:
    """Randomness as ``(1, length)`` (shared by the batch) or ``(B, length)`` (per record)."""
    if length == 0:
        return F.zeros((1, 0))
    if r is None:
        raise EncodingError(f"{what} of length {length} is required")
    arr = np.asarray(r)
    if arr.ndim == 0 or arr.shape[-1] != length or arr.dtype != F.DTYPE:
        raise EncodingError(
            f"{what} must be {F.__name__} elements of shape ({length},) or (..., {length}); "
            f"got {arr.shape} {arr.dtype}"
        )
    if math.prod(arr.shape[:-1]) == 1:
        return arr.reshape(1, length)
    try:
        arr = np.broadcast_to(arr, (*bshape, length))
    except ValueError as exc:
        raise EncodingError(
            f"{what} of shape {arr.shape} does not broadcast over the batch {bshape}"
        ) from exc
    return np.ascontiguousarray(arr.reshape(-1, length))


# ---------------------------------------------------------------------------- the FLP


class _GadgetLayout:
    """Sizes of one gadget's part of a proof and of a verifier."""

    def __init__(self, gadget: Gadget, calls: int) -> None:
        self.gadget = gadget
        self.calls = calls
        self.P = next_power_of_2(calls + 1)  # wire length: seed + calls, padded
        self.poly_len = gadget.DEGREE * (self.P - 1) + 1  # gadget polynomial coefficients
        self.N = next_power_of_2(self.poly_len)  # grid on which the prover evaluates G
        self.proof_len = gadget.ARITY + self.poly_len
        self.verifier_len = gadget.ARITY + 1


class FlpBBCGGI19:
    """The FLP of BBCGGI19 for a validity circuit, batched, with ``proofs`` repetitions.

    Sizes (all per record): ``MEAS_LEN``, ``OUTPUT_LEN``, ``PROVE_RAND_LEN``,
    ``JOINT_RAND_LEN``, ``QUERY_RAND_LEN``, ``PROOF_LEN``, ``VERIFIER_LEN``; the
    repetitions are laid out one after another in each of them.
    """

    def __init__(self, valid: Valid, proofs: int | None = None) -> None:
        self.valid = valid
        self.field = F = valid.field
        if len(valid.GADGETS) != len(valid.GADGET_CALLS):
            raise ConfigError("a circuit needs one call count per gadget")
        self.layouts = [
            _GadgetLayout(g, c) for g, c in zip(valid.GADGETS, valid.GADGET_CALLS, strict=True)
        ]
        for lay in self.layouts:
            if lay.N > F.GEN_ORDER:
                raise ConfigError(
                    f"{F.__name__} has no NTT domain of size {lay.N} for {lay.gadget!r}; "
                    "use fewer gadget calls (a larger chunk_length)"
                )
        one_err = self.single_proof_error_log2()
        if proofs is None:
            proofs = max(1, math.ceil(TARGET_SOUNDNESS_LOG2 / one_err))
        if proofs < 1:
            raise ConfigError("proofs must be ≥ 1")
        self.proofs = proofs
        self.MEAS_LEN = valid.MEAS_LEN
        self.OUTPUT_LEN = valid.OUTPUT_LEN
        self._jr1 = valid.JOINT_RAND_LEN
        self._qr1 = len(self.layouts) + (valid.EVAL_OUTPUT_LEN if valid.EVAL_OUTPUT_LEN > 1 else 0)
        self._pr1 = sum(lay.gadget.ARITY for lay in self.layouts)
        self._proof1 = sum(lay.proof_len for lay in self.layouts)
        self._ver1 = 1 + sum(lay.verifier_len for lay in self.layouts)
        self.JOINT_RAND_LEN = proofs * self._jr1
        self.QUERY_RAND_LEN = proofs * self._qr1
        self.PROVE_RAND_LEN = proofs * self._pr1
        self.PROOF_LEN = proofs * self._proof1
        self.VERIFIER_LEN = proofs * self._ver1

    def __repr__(self) -> str:
        return f"FlpBBCGGI19({self.valid!r}, proofs={self.proofs})"

    # -------------------------------------------------------------- soundness

    def single_proof_error_log2(self) -> float:
        """log2 of the soundness error of one repetition.

        ε₁ = Σ_gadgets DEGREE·(P−1)/(|F|−P)  (Schwartz–Zippel on G(wire(x)) − gadget_poly(x),
        t uniform outside the P-th roots of unity)
        + [EVAL_OUTPUT_LEN > 1]/|F|          (random combination of the circuit outputs)
        + joint_rand_error_terms/|F|         (the circuit's own random combinations).
        """
        p = self.field.MODULUS
        err = sum(lay.gadget.DEGREE * (lay.P - 1) / (p - lay.P) for lay in self.layouts)
        if self.valid.EVAL_OUTPUT_LEN > 1:
            err += 1 / p
        err += self.valid.joint_rand_error_terms() / p
        return math.log2(err)

    def soundness_error_log2(self) -> float:
        """log2 of the soundness error of all repetitions: proofs · log2(ε₁)."""
        return self.proofs * self.single_proof_error_log2()

    # -------------------------------------------------------------- randomness helpers

    def random_prove_rand(self, batch: tuple[int, ...] = ()) -> np.ndarray:
        """Fresh prover randomness (wire seeds) from the CSPRNG."""
        return self.field.random((*batch, self.PROVE_RAND_LEN))

    def check_query_rand(self, query_rand: np.ndarray) -> None:
        """Raise ``ProtocolError`` if a query point lies in a gadget's wire domain."""
        F = self.field
        qr = np.asarray(query_rand).reshape(-1, self.QUERY_RAND_LEN)
        for rep in range(self.proofs):
            base = rep * self._qr1
            for g, lay in enumerate(self.layouts):
                t = qr[:, base + g]
                if np.any(F.pow(t, lay.P) == F.ones(t.shape)):
                    raise ProtocolError(
                        "a query point lies in the FLP evaluation domain (probability "
                        f"≈ {lay.P}/|F|); derive query_rand again with the next counter"
                    )

    def derive_query_rand(self, seed: bytes, context: bytes = b"kaires/flp/query") -> np.ndarray:
        """Query randomness ``(QUERY_RAND_LEN,)`` expanded from a seed (one per job).

        Points in an evaluation domain are rejected and re-drawn with a counter appended
        to the context, as Prio3 aborts on them.
        """
        for ctr in range(64):
            qr = self.field.from_seed(seed, (self.QUERY_RAND_LEN,), context + bytes([ctr]))
            try:
                self.check_query_rand(qr)
            except ProtocolError:
                continue
            return qr
        raise ProtocolError("could not derive query randomness outside the domain")

    def derive_joint_rand(self, seed: bytes, context: bytes = b"kaires/flp/joint") -> np.ndarray:
        """Joint randomness ``(JOINT_RAND_LEN,)`` expanded from a seed."""
        return self.field.from_seed(seed, (self.JOINT_RAND_LEN,), context)

    # -------------------------------------------------------------- prove

    def prove(
        self, meas: np.ndarray, prove_rand: np.ndarray, joint_rand: np.ndarray | None
    ) -> np.ndarray:
        """Proofs ``(..., PROOF_LEN)`` that each measurement ``(..., MEAS_LEN)`` is valid.

        ``prove_rand`` must be fresh and secret per record ``(..., PROVE_RAND_LEN)``;
        ``joint_rand`` is ``(JOINT_RAND_LEN,)`` or per record.
        """
        F = self.field
        meas2, bshape = _batch(self, meas, self.MEAS_LEN, "measurement")
        B = meas2.shape[0]
        pr = np.asarray(prove_rand)
        if pr.dtype != F.DTYPE or pr.shape[-1:] != (self.PROVE_RAND_LEN,):
            raise EncodingError(
                f"prove_rand must be {F.__name__} elements of shape (..., {self.PROVE_RAND_LEN})"
            )
        pr = np.broadcast_to(pr, (*bshape, self.PROVE_RAND_LEN)).reshape(B, -1)
        jr = _rand(F, joint_rand, self.JOINT_RAND_LEN, bshape, "joint_rand")
        parts = []
        for rep in range(self.proofs):
            jr_rep = jr[:, rep * self._jr1 : (rep + 1) * self._jr1]
            calls = [GadgetCall(F, g, B) for g in self.valid.GADGETS]
            self.valid.eval(meas2, jr_rep, calls)
            off = rep * self._pr1
            for lay, call in zip(self.layouts, calls, strict=True):
                L = lay.gadget.ARITY
                seeds = pr[:, off : off + L]
                off += L
                wires = self._wires(call, lay, seeds)
                coeffs = poly.intt(F, wires)  # (B, L, P)
                grid = F.zeros((B, L, lay.N))
                grid[..., : lay.P] = coeffs
                vals = poly.ntt(F, grid)  # wires on the N-th roots of unity
                gvals = lay.gadget.eval(F, np.swapaxes(vals, 1, 2))  # (B, N)
                gpoly = poly.intt(F, np.ascontiguousarray(gvals))[:, : lay.poly_len]
                parts.append(seeds)
                parts.append(gpoly)
        proof = np.concatenate(parts, axis=1) if parts else F.zeros((B, 0))
        return proof.reshape(*bshape, self.PROOF_LEN)

    def _wires(self, call: GadgetCall, lay: _GadgetLayout, seeds: np.ndarray) -> np.ndarray:
        """Wire values ``(B, ARITY, P)``: seed at α^0, the k-th call's inputs at α^k."""
        F = self.field
        if call.calls != lay.calls:
            raise ConfigError(
                f"circuit {self.valid!r} called {lay.gadget!r} {call.calls} times; "
                f"declared {lay.calls}"
            )
        B = seeds.shape[0]
        wires = F.zeros((B, lay.gadget.ARITY, lay.P))
        wires[:, :, 0] = seeds
        inp = np.concatenate(call.inputs, axis=1) if call.inputs else F.zeros((B, 0, 0))
        wires[:, :, 1 : 1 + lay.calls] = np.swapaxes(inp, 1, 2)
        return wires

    # -------------------------------------------------------------- query

    def query(
        self,
        meas: np.ndarray,
        proof: np.ndarray,
        query_rand: np.ndarray,
        joint_rand: np.ndarray | None,
    ) -> np.ndarray:
        """Verifiers ``(..., VERIFIER_LEN)``; affine in ``(meas, proof)``, constants in full.

        Works unchanged on Shamir shares of ``meas`` and ``proof`` and then returns shares
        of the verifier. ``query_rand``/``joint_rand``: one vector for the batch or one per
        record. Raises ``ProtocolError`` if a query point lies in a wire domain.
        """
        F = self.field
        meas2, bshape = _batch(self, meas, self.MEAS_LEN, "measurement")
        proof2, pshape = _batch(self, proof, self.PROOF_LEN, "proof")
        if pshape != bshape:
            raise EncodingError(f"proof batch {pshape} does not match measurement batch {bshape}")
        B = meas2.shape[0]
        jr = _rand(F, joint_rand, self.JOINT_RAND_LEN, bshape, "joint_rand")
        qr = _rand(F, query_rand, self.QUERY_RAND_LEN, bshape, "query_rand")
        self.check_query_rand(qr)
        out = []
        poff = 0
        for rep in range(self.proofs):
            jr_rep = jr[:, rep * self._jr1 : (rep + 1) * self._jr1]
            qr_rep = qr[:, rep * self._qr1 : (rep + 1) * self._qr1]
            seeds_l, gpoly_l, calls = [], [], []
            for lay in self.layouts:
                L = lay.gadget.ARITY
                seeds = proof2[:, poff : poff + L]
                gpoly = proof2[:, poff + L : poff + lay.proof_len]
                poff += lay.proof_len
                # gadget polynomial on the P-th roots: fold mod x^P − 1, then one NTT
                folded = _fold(F, gpoly, lay.P)
                calls.append(_QueryCall(F, lay.gadget, B, poly.ntt(F, folded)))
                seeds_l.append(seeds)
                gpoly_l.append(gpoly)
            v = self.valid.eval(meas2, jr_rep, calls)  # (B, EVAL_OUTPUT_LEN)
            if self.valid.EVAL_OUTPUT_LEN > 1:
                coef = qr_rep[:, len(self.layouts) :]
                v = F.sum(F.mul(v, coef), axis=-1)[:, None]
            out.append(v)
            for g, lay in enumerate(self.layouts):
                t = qr_rep[:, g]
                wires = self._wires(calls[g], lay, seeds_l[g])  # (B, L, P)
                weights = _lagrange_at(F, t, lay.P)  # (B|1, P)
                tpow = powers(F, t, lay.poly_len)  # (B|1, poly_len)
                if weights.shape[0] == 1:
                    w_at_t = F.dot(wires, weights[0])
                    g_at_t = F.dot(gpoly_l[g], tpow[0])
                else:
                    w_at_t = F.sum(F.mul(wires, weights[:, None, :]), axis=-1)
                    g_at_t = F.sum(F.mul(gpoly_l[g], tpow), axis=-1)
                out.append(w_at_t)
                out.append(g_at_t[:, None])
        verifier = np.concatenate(out, axis=1)
        return verifier.reshape(*bshape, self.VERIFIER_LEN)

    # -------------------------------------------------------------- decide

    def decide(self, verifier: np.ndarray) -> np.ndarray:
        """Per-record acceptance ``(...)`` bool from opened verifiers ``(..., VERIFIER_LEN)``."""
        F = self.field
        ver, bshape = _batch(self, verifier, self.VERIFIER_LEN, "verifier")
        ok = np.ones(ver.shape[0], dtype=bool)
        off = 0
        for _rep in range(self.proofs):
            ok &= ver[:, off] == 0
            off += 1
            for lay in self.layouts:
                L = lay.gadget.ARITY
                w = ver[:, off : off + L]
                y = ver[:, off + L]
                off += L + 1
                ok &= lay.gadget.eval(F, w) == y
        return ok.reshape(bshape)


def _fold(F: Any, c: np.ndarray, P: int) -> np.ndarray:
    """Coefficients reduced modulo x^P − 1 (same values on the P-th roots of unity)."""
    n = c.shape[-1]
    if n <= P:
        out = F.zeros((*c.shape[:-1], P))
        out[..., :n] = c
        return out
    pad = (-n) % P
    if pad:
        c = np.concatenate([c, F.zeros((*c.shape[:-1], pad))], axis=-1)
    blocks = c.reshape(*c.shape[:-1], -1, P)
    return F.sum(blocks, axis=-2)


def _lagrange_at(F: Any, t: np.ndarray, P: int) -> np.ndarray:
    """Lagrange basis over the P-th roots of unity at t: ``(len(t), P)``.

    L_k(t) = (t^P − 1)·α^k / (P·(t − α^k)); t must lie outside the domain.
    """
    alpha = F.root_of_unity(P)
    dom = powers(F, np.asarray(alpha, dtype=F.DTYPE), P)  # α^0..α^(P-1)
    diff = F.sub(t[:, None], dom[None, :])
    zt = F.sub(F.pow(t, P), F.ones(t.shape))
    scale = F.mul(zt, F.inv(F.elements(P)))
    return F.mul(F.mul(F.inv(diff), dom[None, :]), scale[:, None])
