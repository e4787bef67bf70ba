"""The distributed Skellam mechanism, dealt by the aggregators as range-proven inputs.

A job run with ``dp=DP(ε, δ)`` releases ``aggregate + Z``, Z with i.i.d. integer
coordinates. Every aggregator d of the job's n (degree t) deals its own noise vector e_d

1. sampled from its own secret randomness (the OS CSPRNG: :func:`noise_rng`; never the
   public coin): Skellam of variance σ²/(n − t) per coordinate (:func:`sample_noise`; on
   two scales 2^k·Z₁ + Z₂ when σ² is beyond one draw, :class:`NoisePlan`),
   clipped to the proven range [−B, B − 1] with B = 2^(bits − 1) (the clipping happens
   with probability P ≤ δ/(10(1 + e^ε)), and costs (1 + e^ε)·P ≤ δ/10 of δ);
2. as a Shamir-shared input like a provider's submission: e_d + B encoded by the
   ``SumVec(length, bits)`` circuit (every coordinate in [0, 2^bits) as bits), with an FLP
   proof; aggregator j's measurement and proof shares are encrypted under
   H(job, d, j, e·Y_j) (E = e·G in the deal, Y_j its recipient point), a key j derives
   as y_j·E and can prove (DLEQ, :class:`NoiseComplaint`); the deal is signed
   (:class:`NoiseDeal`, :func:`deal_noise`);
3. every aggregator opens its part of every deal, and publishes per dealer a consistency
   value and its FLP verifier share (:class:`NoiseRound`, :func:`noise_round`);
4. an aggregator whose value is off the decoded sharing, or that could not open its part,
   proves its part key in round 2 (:func:`noise_disputes`, :func:`complain`);
5. every aggregator opens those robustly (:func:`decide_noise`) and accepts dealer d iff
   its values decode to one degree-t polynomial, no proven complaint shows it at fault,
   and its range proof holds; it then adds its shares of the accepted deals (minus the
   offset B) to its share of the aggregate (:func:`noise_total`). Values correct or
   blame only when 3t + 1 are present (rows plus unopened claims, :func:`_decisive`): a
   deal whose values disagree with fewer (a relay withheld rounds) is undecided and the
   job stops — nobody is put in question, no dealer is dropped.

Guarantees (at most t faulty aggregators): an honest dealer's deal always decodes and
passes (a faulty aggregator's value is corrected or counts as missing, and a false
complaint proves nothing), so every honest
aggregator adds the n − t (or more) honest noises: the released noise has variance at
least σ² per coordinate whatever the t others deal (``"no_noise"`` adds zero), n/(n − t)·σ²
when all are honest, and a faulty dealer adds at most its proven bound B per coordinate.
A dealer that cheats an honest aggregator is proven at fault and left out by all. The t
colluding aggregators see t shares of each honest noise: nothing of it.

Per-block noise (:class:`NoiseBlock`, :func:`calibrate_blocks`): a statistic whose output
coordinates have different bounds declares blocks (``statistic.noise_blocks()``); block j
then gets its own σ_j = s·scale_j and its own proven range [−B_j, B_j − 1]
(:class:`BlockSumVec`; a public block gets no noise and no bits), and the accountant bounds
the product mechanism's RDP by the sum of the blocks' (:func:`product_rdp`).

Sampling: Poisson(μ/2) − Poisson(μ/2) with numpy's Generator seeded with 128 bits from
``secrets`` (the sample is a secret of the aggregator alone; a floating-point sampler is
used, as in Agarwal–Kairouz–Liu's own implementation).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any

import msgspec
import numpy as np

from kaires_fl import schema
from kaires_fl.arith import circuits, sharing
from kaires_fl.arith.flp import FlpBBCGGI19, Mul, ParallelSum, dot_groups
from kaires_fl.crypto import envelope
from kaires_fl.crypto.elgamal import RecipientKey, recipient_point_from_x25519
from kaires_fl.crypto.group import Point, Scalar
from kaires_fl.crypto.proofs import DLEQProof, dleq_prove, is_valid_dleq
from kaires_fl.crypto.sign import H, Identity
from kaires_fl.errors import (
    ConfigError,
    DecodingError,
    EncodingError,
    KairesError,
    ProtocolError,
)
from kaires_fl.privacy import DP
from kaires_fl.privacy.accounting import (
    ORDERS,
    calibrate,
    calibrate_coarse,
    epsilon_from_rdp,
    epsilon_spent,
    least_passing,
    skellam_rdp,
    two_scale_epsilon,
    two_scale_rdp,
)
from kaires_fl.schema import Blob, Bytes32, Elements, Index, Signature

__all__ = [
    "MECHANISM",
    "TAIL_SHARE",
    "NoiseBlock",
    "NoiseDeal",
    "NoisePlan",
    "NoiseRound",
    "deal_noise",
    "decide_noise",
    "noise_rng",
    "noise_round",
    "noise_total",
    "open_deal",
    "plan_noise",
    "sample_noise",
    "skellam_tail",
]

#: The mechanism's name in a job's privacy report.
MECHANISM = "skellam"
#: Share of δ spent on the noise leaving its proven range (the rest calibrates σ).
TAIL_SHARE = 0.1
#: Context of a dealer's signature on its deal.
DEAL_CONTEXT = b"kaires/privacy/noise-deal"
#: Most aggregators a job's noise is dealt among.
MAX_DEALERS = 256
#: Largest variance one dealer samples as one Skellam (numpy's Poisson sampler is accurate
#: to about λ = 1e13: beyond, its variance is off and its draws even); beyond this the
#: noise is dealt on two scales (:class:`NoisePlan`).
MAX_DEALER_VARIANCE = 1e12

_FLPS: dict[tuple[Any, ...], FlpBBCGGI19] = {}


# ---------------------------------------------------------------------------- sampling


def noise_rng() -> np.random.Generator:
    """A numpy Generator seeded with 128 bits of the OS CSPRNG (an aggregator's own secret)."""
    return np.random.default_rng(secrets.randbits(128))


def skellam_tail(variance: float, bound: float) -> float:
    """Chernoff bound on P(|Z| ≥ bound) for Z ~ Poisson(μ/2) − Poisson(μ/2), μ = variance.

    log E[e^{λZ}] = μ(cosh λ − 1); at λ = asinh(b/μ) the one-sided bound is
    exp(−b·asinh(b/μ) + μ(√(1 + (b/μ)²) − 1)).
    """
    mu, b = float(variance), float(bound)
    if b <= 0:
        return 1.0
    r = b / mu
    expo = -b * math.asinh(r) + mu * (math.sqrt(1 + r * r) - 1)
    return min(1.0, 2 * math.exp(expo))


def sample_noise(
    variance: float, length: int, bound: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``length`` Skellam samples of ``variance``, clipped to [−bound, bound − 1] (int64).

    ``rng``: tests only; by default :func:`noise_rng` (fresh OS randomness).
    """
    g = rng if rng is not None else noise_rng()
    lam = float(variance) / 2
    z = g.poisson(lam, length).astype(np.int64) - g.poisson(lam, length).astype(np.int64)
    return np.clip(z, -int(bound), int(bound) - 1)


# ---------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class NoiseBlock:
    """Output coordinates [start, stop) with their own Skellam noise (a per-block plan).

    ``l2``/``l1``: the most one privacy unit moves this block (integer units; 0: the
    block is public, e.g. a proven constant, and gets no noise); ``sigma``: its noise std
    over the honest dealers (0 iff ``l2`` is 0). Beyond the sampler (σ²/(n − t) >
    :data:`MAX_DEALER_VARIANCE`) the block's noise is 2^k·Z₁ + Z₂ (``scale_bits`` k > 0,
    as :class:`NoisePlan`), with σ² = 4^k·coarse + fine. ``bits``: each dealer's noise in
    the block is proven in [−B_b, B_b − 1], B_b = 2^(bits − 1) (0: a public block, whose
    noise is proven to be exactly 0).
    """

    start: int
    stop: int
    l2: float
    l1: float
    sigma: float
    scale_bits: int = 0
    coarse_variance: float = 0.0
    fine_variance: float = 0.0
    bits: int = 0

    @property
    def length(self) -> int:
        return self.stop - self.start

    @property
    def bound(self) -> int:
        """B_b: the block's proven range is [−B_b, B_b − 1] (0 for a public block)."""
        return 1 << (self.bits - 1) if self.bits else 0

    def rdp(self, orders: Sequence[int] = ORDERS) -> np.ndarray:
        """This block's RDP curve (zero for a public block)."""
        if self.l2 == 0:
            return np.zeros(len(orders))
        if self.scale_bits == 0:
            return skellam_rdp(orders, self.sigma**2, self.l2, self.l1)
        return two_scale_rdp(
            orders,
            self.coarse_variance,
            self.fine_variance,
            self.scale_bits,
            self.l2,
            self.l1,
            self.length,
        )

    def sample(self, honest: int, rng: np.random.Generator) -> np.ndarray:
        """One dealer's share (1/``honest`` of each variance) of this block's noise,
        unclipped (object ints when on two scales)."""
        big = 1 << 62
        if self.l2 == 0:
            return np.zeros(self.length, dtype=np.int64)
        if self.scale_bits == 0:
            return sample_noise(self.sigma**2 / honest, self.length, big, rng)
        coarse = sample_noise(self.coarse_variance / honest, self.length, big, rng)
        fine = sample_noise(self.fine_variance / honest, self.length, big, rng)
        return coarse.astype(object) * (1 << self.scale_bits) + fine.astype(object)


def product_rdp(blocks: Sequence[NoiseBlock], orders: Sequence[int] = ORDERS) -> np.ndarray:
    """RDP of releasing every block with its own independent noise: the sum of the blocks'
    curves. A neighbour's change moves block j by at most its (l2_j, l1_j); the noises are
    independent, so the output distribution is a product and its Rényi divergence of order
    α is the sum of the blocks' (each bounded by its own curve, whatever the change)."""
    out = np.zeros(len(orders))
    for b in blocks:
        out = out + b.rdp(orders)
    return out


def _block_at(
    start: int, stop: int, l2: float, l1: float, scale: float, s: float, honest: int
) -> NoiseBlock:
    """Block [start, stop) of sensitivities ``l2``/``l1`` at noise std s·``scale``."""
    length = stop - start
    if l2 == 0:
        return NoiseBlock(start, stop, 0.0, 0.0, 0.0)
    sigma = s * scale
    if sigma**2 / honest <= MAX_DEALER_VARIANCE:
        return NoiseBlock(start, stop, l2, l1, sigma)
    k = max(1, math.ceil(math.log(sigma**2 / (honest * MAX_DEALER_VARIANCE), 4)))
    # The fine part only hides the remainders |r_i| ≤ 2^(k−1) (RDP ≈ α·4^(k−1)·L/(2·fine)):
    # 10⁶ times that much variance makes its cost negligible, and leaves the rest of σ² to
    # the coarse part, whose sensitivity is the block's own (/2^k).
    fine = min(honest * MAX_DEALER_VARIANCE / 2, 4.0 ** (k - 1) * length * 1e6, sigma**2 / 2)
    coarse = (sigma**2 - fine) / 4.0**k
    return NoiseBlock(start, stop, l2, l1, sigma, k, coarse, fine)


def block_spans(
    declared: Sequence[Sequence[float]],
) -> list[tuple[int, int, float, float, float]]:
    """``statistic.noise_blocks()`` as ``(start, stop, l2, l1, scale)``: a declared
    ``(start, stop, m)`` (every coordinate moves by at most m) is ``(start, stop, m√L, m·L,
    m)``; a declared ``(start, stop, l2, l1, scale)`` (a norm-ball block) is kept."""
    out = []
    for d in declared:
        if len(d) == 3:
            a, b, m = int(d[0]), int(d[1]), float(d[2])
            out.append((a, b, m * math.sqrt(b - a), m * (b - a), m))
        elif len(d) == 5:
            out.append((int(d[0]), int(d[1]), float(d[2]), float(d[3]), float(d[4])))
        else:
            raise ConfigError(
                f"a noise block is (start, stop, m) or (start, stop, l2, l1, scale), got {d!r}"
            )
    return out


def calibrate_blocks(
    target: DP, declared: Sequence[Sequence[float]], honest: int
) -> tuple[NoiseBlock, ...]:
    """Per-block noise meeting ``target`` with σ_j = s·scale_j (:func:`block_spans`; for a
    per-coordinate bound m_j the scale is m_j), for the least s found by bisection.
    σ_j ∝ m_j makes every block's rescaled sensitivity equal: the small-bound sums are no
    longer drowned by the noise the products need. Post: ``epsilon_from_rdp(product_rdp(
    blocks), target.delta) ≤ target.epsilon`` (checked on the returned blocks themselves).
    """
    spans = block_spans(declared)
    if not any(l2 > 0 for _, _, l2, _, _ in spans):
        raise ConfigError("a noise plan needs at least one block one unit can move")

    def at(s: float) -> tuple[NoiseBlock, ...]:
        return tuple(_block_at(*span, s, honest) for span in spans)

    def ok(s: float) -> bool:
        return epsilon_from_rdp(product_rdp(at(s)), target.delta) <= target.epsilon

    s = least_passing(ok, 1.0)
    if s is None:
        raise ConfigError(f"no noise level reaches ε = {target.epsilon}")
    return at(s)


def _block_bits(b: NoiseBlock, honest: int, draws: int, budget: float) -> tuple[int, float]:
    """(bits, P): the range bits of one dealer's noise in block b (B_b = 2^(bits − 1)) and
    the probability that some of ``draws`` coordinates reach B_b (≤ ``budget``)."""
    if b.l2 == 0:
        return 0, 0.0
    if b.scale_bits == 0:
        v = b.sigma**2 / honest
        bits = _bound_bits(v, draws, budget)
        return bits, draws * skellam_tail(v, 1 << (bits - 1))
    # |2^k·Z₁ + Z₂| < 2^k·B₁ + B₂ unless one part reaches its own bound
    v1, v2 = b.coarse_variance / honest, b.fine_variance / honest
    b1 = 1 << (_bound_bits(v1, draws, budget / 2) - 1)
    b2 = 1 << (_bound_bits(v2, draws, budget / 2) - 1)
    p = draws * (skellam_tail(v1, b1) + skellam_tail(v2, b2))
    return ((b1 << b.scale_bits) + b2).bit_length() + 1, p


class BlockSumVec(circuits.SumVec):
    """A vector whose block b holds ``lengths[b]`` integers in [0, 2^bits[b]), as bits
    (``bits[b] = 0``: exactly 0, no bits); output the vector. The range check is
    :class:`~kaires_fl.arith.circuits.SumVec`'s on every bit."""

    def __init__(self, blocks: Sequence[tuple[int, int]], field: Any) -> None:
        self.blocks = tuple((int(n), int(w)) for n, w in blocks)
        if not self.blocks or any(n < 1 or w < 0 for n, w in self.blocks):
            raise ConfigError("BlockSumVec needs blocks of ≥ 1 coordinates and ≥ 0 bits")
        if max(w for _, w in self.blocks) >= field.MODULUS.bit_length() - 1:
            raise ConfigError("BlockSumVec bits must be < log2(p) − 1")
        meas = sum(n * w for n, w in self.blocks)
        if meas < 1:
            raise ConfigError("BlockSumVec needs at least one bit")
        self.field = field
        self.length = sum(n for n, _ in self.blocks)
        self.bits = max(w for _, w in self.blocks)
        self.chunk_length = circuits.best_chunk_length(meas)
        self.MEAS_LEN = meas
        self.OUTPUT_LEN = self.length
        self.EVAL_OUTPUT_LEN = 1
        self.GADGETS = [ParallelSum(Mul(), self.chunk_length)]
        self.GADGET_CALLS = [math.ceil(meas / self.chunk_length)]
        self.JOINT_RAND_LEN = self.GADGET_CALLS[0]
        self._pairs = meas

    def __repr__(self) -> str:
        return f"BlockSumVec(blocks={self.blocks!r}, chunk_length={self.chunk_length})"

    def encode(self, measurement: Any) -> np.ndarray:
        v = np.asarray(measurement, dtype=np.int64)
        if v.shape != (self.length,):
            raise EncodingError(f"BlockSumVec measurement must have shape ({self.length},)")
        parts, at = [], 0
        for n, w in self.blocks:
            x = v[at : at + n]
            if np.any(x < 0) or np.any(x >= 1 << w):
                raise EncodingError(f"BlockSumVec entries {at}…{at + n - 1} must lie in [0, 2^{w})")
            parts.append(((x[:, None] >> np.arange(w)) & 1).reshape(-1))
            at += n
        return self.field.elements(np.concatenate(parts).astype(np.uint64))

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        m = np.asarray(meas)
        F, out, at = self.field, [], 0
        for n, w in self.blocks:
            if w == 0:
                out.append(F.zeros((*m.shape[:-1], n)))
                continue
            pow2 = F.elements([1 << k for k in range(w)])
            out.append(dot_groups(F, m, pow2, n, start=at))
            at += n * w
        return np.concatenate(out, axis=-1)

    def max_measurements(self) -> int:
        return (self.field.MODULUS - 1) // ((1 << self.bits) - 1)


# ---------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class NoisePlan:
    """What every party of a job agrees on about its noise (rebuilt from the job).

    ``sigma``: the target noise std per output coordinate, in the aggregate's integer
    units; ``n``/``t``: the aggregators and the sharing degree; ``length``: output
    coordinates; ``bits``: the proven range is [−B, B − 1], B = 2^(bits − 1); ``tail``:
    what clipping costs in δ, (1 + e^ε)·P(some dealer's coordinate is clipped) ≤
    TAIL_SHARE·δ.
    """

    dp: DP
    l2: float
    l1: float
    unit: str
    n: int
    t: int
    length: int
    field: Any
    sigma: float
    bits: int
    tail: float
    #: Two scales (k > 0) when σ² is beyond the sampler: noise 2^k·Z₁ + Z₂ with
    #: Z₁ ~ Sk(coarse_variance), Z₂ ~ Sk(fine_variance) over the honest dealers
    #: (:func:`kaires_fl.privacy.accounting.two_scale_rdp`); k = 0: one Skellam of σ².
    scale_bits: int = 0
    coarse_variance: float = 0.0
    fine_variance: float = 0.0
    #: P(some dealer's coordinate is clipped) in one release (``tail`` = (1 + e^ε)·this:
    #: over k releases of total ε_k, clipping costs (1 + e^ε_k)·k·clip_probability of δ).
    clip_probability: float = 0.0
    #: Per-block noise (:class:`NoiseBlock`, covering the output in order) when the
    #: statistic declares blocks of different replacement bounds; ``sigma`` is then the
    #: largest block's σ. Empty: one σ on every coordinate.
    blocks: tuple[NoiseBlock, ...] = ()

    def epsilon(self, delta: float, rounds: int = 1) -> float:
        """The ε of ``rounds`` releases of this plan's noise at ``delta`` (the clipping
        tail ``rounds·tail`` comes on top of δ)."""
        if self.blocks:
            return epsilon_from_rdp(product_rdp(self.blocks), delta, rounds)
        if self.scale_bits == 0:
            return epsilon_spent(self.sigma, self.l2, self.l1, delta, rounds)
        return two_scale_epsilon(
            self.coarse_variance,
            self.fine_variance,
            self.scale_bits,
            self.l2,
            self.l1,
            self.length,
            delta,
            rounds,
        )

    def sample(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """One dealer's noise (its share of the variance), clipped to [−B, B − 1]."""
        h = self.n - self.t
        if self.blocks:
            g = rng if rng is not None else noise_rng()
            parts = [
                np.clip(np.asarray(b.sample(h, g), dtype=object), -b.bound, max(b.bound - 1, 0))
                for b in self.blocks
            ]
            return np.concatenate(parts).astype(np.int64)
        if self.scale_bits == 0:
            return sample_noise(self.dealer_variance, self.length, self.bound, rng)
        g = rng if rng is not None else noise_rng()
        big = 1 << 62
        coarse = sample_noise(self.coarse_variance / h, self.length, big, g)
        fine = sample_noise(self.fine_variance / h, self.length, big, g)
        z = coarse.astype(object) * (1 << self.scale_bits) + fine.astype(object)
        return np.clip(z, -self.bound, self.bound - 1).astype(np.int64)

    @property
    def bound(self) -> int:
        return 1 << (self.bits - 1)

    @property
    def dealer_variance(self) -> float:
        """Each dealer's variance σ²/(n − t): the n − t honest ones give σ² together."""
        return self.sigma**2 / (self.n - self.t)

    @property
    def max_variance(self) -> float:
        """Variance when every dealer is honest: n/(n − t)·σ²."""
        return self.n * self.dealer_variance

    @cached_property
    def offsets(self) -> np.ndarray:
        """Per coordinate, the public offset B_b a deal adds (int64): noise + offset is
        what the range proof shows in [0, 2^bits_b)."""
        if not self.blocks:
            return np.full(self.length, self.bound, dtype=np.int64)
        return np.concatenate([np.full(b.length, b.bound, dtype=np.int64) for b in self.blocks])

    @cached_property
    def widths(self) -> np.ndarray:
        """Per coordinate, the range bits of a deal (0: a public coordinate)."""
        if not self.blocks:
            return np.full(self.length, self.bits, dtype=np.int64)
        return np.concatenate([np.full(b.length, b.bits, dtype=np.int64) for b in self.blocks])

    @cached_property
    def flp(self) -> FlpBBCGGI19:
        if self.blocks:
            spans = tuple((b.length, b.bits) for b in self.blocks)
            key: tuple[Any, ...] = (self.field.__name__, spans)
            f = _FLPS.get(key)
            if f is None:
                f = _FLPS[key] = FlpBBCGGI19(BlockSumVec(spans, self.field))
            return f
        key = (self.field.__name__, self.length, self.bits)
        f = _FLPS.get(key)
        if f is None:
            f = _FLPS[key] = FlpBBCGGI19(circuits.SumVec(self.length, self.bits, field=self.field))
        return f

    def report(self, scale: float) -> dict[str, Any]:
        """The job's ``report["privacy"]``; ``scale``: decoded units per integer unit.

        ``sigma`` (and ``sigma_units``): one float when every coordinate gets the same
        noise; with per-block noise a list, one σ per block, and ``blocks`` the blocks'
        output coordinates ``[start, stop)`` in the same order (σ = 0: a public block).
        """
        out: dict[str, Any] = {
            "epsilon": self.dp.epsilon,
            "delta": self.dp.delta,
            "sigma": float(self.sigma * scale),
            "mechanism": MECHANISM,
            "unit": self.unit,
            "sensitivity": {"l2": self.l2, "l1": self.l1, "scale": float(scale)},
            "sigma_units": float(self.sigma),
            "bound_units": self.bound,
            "dealers": self.n,
            "honest_dealers": self.n - self.t,
        }
        if self.blocks:
            out["sigma"] = [float(b.sigma * scale) for b in self.blocks]
            out["sigma_units"] = [float(b.sigma) for b in self.blocks]
            out["blocks"] = [[b.start, b.stop] for b in self.blocks]
            out["bound_units"] = [b.bound for b in self.blocks]
        return out


def plan_noise(dp: DP, statistic: Any, n: int, t: int) -> NoisePlan:
    """The noise plan of a job of ``statistic`` at ``dp`` among n aggregators of degree t.

    σ is calibrated at (ε, (1 − TAIL_SHARE)·δ) from the statistic's proven sensitivity
    (``statistic.sensitivity()``); the range bits are the fewest whose clipping
    probability over the honest dealers' coordinates is ≤ TAIL_SHARE·δ. Raises
    ConfigError when the noise could wrap the statistic's field.
    """
    if not 1 <= n <= MAX_DEALERS or not 0 <= t < n:
        raise ConfigError(f"a noise plan needs 0 ≤ t < n ≤ {MAX_DEALERS}, got n={n}, t={t}")
    sens = statistic.sensitivity()
    l2, l1, unit = float(sens["l2"]), float(sens["l1"]), str(sens["unit"])
    target = DP(dp.epsilon, dp.delta * (1 - TAIL_SHARE))
    declared = getattr(statistic, "noise_blocks", lambda: None)()
    if declared:
        return _plan_blocks(dp, target, statistic, declared, l2, l1, unit, n, t)
    sigma = calibrate(target, l2, l1)
    length = int(statistic.output_len)
    F = statistic.field
    h = n - t
    # Clipping changes each release with probability ≤ P; a mechanism within total variation
    # P of an (ε, δ)-DP one is (ε, δ + (1 + e^ε)·P)-DP: P is budgeted for that factor.
    factor = 1 + math.exp(dp.epsilon)
    budget = dp.delta * TAIL_SHARE / factor
    k, v1, v2 = 0, sigma**2, 0.0
    if sigma**2 / h > MAX_DEALER_VARIANCE:
        try:
            k, v1, v2 = _two_scales(target, l2, l1, length, h, sigma)
        except ConfigError as exc:
            f = getattr(statistic, "frac_bits", None)
            if isinstance(f, int):  # σ scales as 2^f: say how many bits to drop
                drop = math.ceil(math.log2(sigma / 2e10))
                raise ConfigError(f"{exc}: frac_bits ≤ {max(1, f - drop)}") from None
            raise
        sigma = math.sqrt(v1 * 4.0**k + v2)
    if k == 0:
        bits = _bound_bits(v1 / h, n * length, budget)
        tail = min(1.0, n * length * skellam_tail(v1 / h, 1 << (bits - 1)))
    else:  # |2^k·Z₁ + Z₂| < 2^k·B₁ + B₂ unless one part reaches its own bound
        b1 = 1 << (_bound_bits(v1 / h, n * length, budget / 2) - 1)
        b2 = 1 << (_bound_bits(v2 / h, n * length, budget / 2) - 1)
        bits = ((b1 << k) + b2).bit_length() + 1
        tail = min(1.0, n * length * (skellam_tail(v1 / h, b1) + skellam_tail(v2 / h, b2)))
    if bits >= F.MODULUS.bit_length() - 1 or (
        _max_total(statistic) + n * (1 << (bits - 1)) >= F.MODULUS // 2
    ):
        raise ConfigError(
            f"noise of σ = {sigma:.3g} (range ±2^{bits - 1} per aggregator) could take sums past "
            f"half the field of {statistic!r} (they would decode with the wrong sign): raise "
            "epsilon or lower max_measurements"
        )
    return NoisePlan(dp, l2, l1, unit, n, t, length, F, sigma, bits, factor * tail, k, v1, v2, tail)


def _plan_blocks(
    dp: DP,
    target: DP,
    statistic: Any,
    declared: Sequence[Sequence[float]],
    l2: float,
    l1: float,
    unit: str,
    n: int,
    t: int,
) -> NoisePlan:
    """:func:`plan_noise` of a statistic declaring per-block replacement bounds
    (``statistic.noise_blocks()``: ``(start, stop, m)`` covering the output in order).

    Each block's range is proven on its own (:class:`BlockSumVec`): a Byzantine dealer
    adds at most B_b to a coordinate of block b, and nothing to a public block."""
    length = int(statistic.output_len)
    spans = block_spans(declared)
    edges = [0] + [sp[1] for sp in spans]
    if (
        [sp[0] for sp in spans] != edges[:-1]
        or edges[-1] != length
        or any(
            sp[0] >= sp[1]
            or not all(math.isfinite(v) and v >= 0 for v in sp[2:])
            or (sp[2] > 0) != (sp[4] > 0)
            or sp[2] > sp[3] * (1 + 1e-12)
            for sp in spans
        )
    ):
        raise ConfigError(f"{statistic!r} declares noise blocks that do not tile its output")
    h = n - t
    blocks = calibrate_blocks(target, spans, h)
    factor = 1 + math.exp(dp.epsilon)
    budget = dp.delta * TAIL_SHARE / factor
    noisy = sum(b.length for b in blocks if b.l2 > 0)
    ranged, clip = [], 0.0
    for b in blocks:  # the clipping budget shared in proportion to the blocks' coordinates
        bb, p = _block_bits(b, h, n * b.length, budget * b.length / noisy)
        ranged.append(dataclasses.replace(b, bits=bb))
        clip += p
    blocks = tuple(ranged)
    bits = max(b.bits for b in blocks)
    clip = min(1.0, clip)
    F = statistic.field
    sigma = max(b.sigma for b in blocks)
    if bits >= F.MODULUS.bit_length() - 1 or (
        _max_total(statistic) + n * (1 << (bits - 1)) >= F.MODULUS // 2
    ):
        raise ConfigError(
            f"noise of σ = {sigma:.3g} (range ±2^{bits - 1} per aggregator) could take sums past "
            f"half the field of {statistic!r} (they would decode with the wrong sign): raise "
            "epsilon or lower max_measurements"
        )
    return NoisePlan(
        dp,
        l2,
        l1,
        unit,
        n,
        t,
        length,
        F,
        sigma,
        bits,
        factor * clip,
        clip_probability=clip,
        blocks=blocks,
    )


def _bound_bits(variance: float, draws: int, budget: float) -> int:
    """Fewest bits with ``draws``·P(|Sk(variance)| ≥ 2^(bits − 1)) ≤ ``budget``."""
    bits = 1
    while draws * skellam_tail(variance, 1 << (bits - 1)) > budget:
        bits += 1
    return bits


def _two_scales(
    target: DP, l2: float, l1: float, length: int, honest: int, sigma: float
) -> tuple[int, float, float]:
    """(k, coarse, fine) variances for a σ beyond the sampler: the fine part as large as
    the sampler takes (its privacy cost is then small), the least k whose coarse variance
    per dealer fits too. ConfigError when no k does."""
    fine = honest * MAX_DEALER_VARIANCE / 2
    k = max(1, math.ceil(math.log(sigma**2 / (honest * MAX_DEALER_VARIANCE), 4)))
    while k < 62:
        coarse = calibrate_coarse(target, fine, k, l2, l1, length)
        if coarse is None:
            break  # a coarser scale only costs the fine part more
        if coarse / honest <= MAX_DEALER_VARIANCE:
            return k, coarse, fine
        k += 1
    raise ConfigError(
        f"noise of σ = {sigma:.3g} integer units is beyond the noise sampler: the statistic's "
        "fixed point is far finer than the noise — lower its frac_bits (or bits)"
    )


def _max_total(statistic: Any) -> int:
    """An upper bound on |a coordinate of the aggregate| in the field, from the circuit's
    own sizing (``max_measurements()`` sums of its largest output cannot wrap)."""
    cap = int(statistic.circuit.max_measurements())
    per = (statistic.field.MODULUS - 1) // max(cap, 1)
    return per * int(statistic.max_measurements)


# ---------------------------------------------------------------------------- messages


Parts = Annotated[tuple[Blob, ...], msgspec.Meta(max_length=MAX_DEALERS)]
#: A job id, as the aggregation messages bound it.
JobId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:/-]+\Z")]
Dealers = Annotated[tuple[Index, ...], msgspec.Meta(max_length=MAX_DEALERS)]


class NoiseDeal(schema.Message, frozen=True):
    """Aggregator ``dealer``'s noise deal: its measurement and proof shares, part j
    encrypted under the key H(job, dealer, j, e·Y_j) (``ephemeral`` = e·G, Y_j aggregator
    j's recipient point): j derives it as y_j·E and can prove it (:class:`NoiseComplaint`);
    signed by the dealer over every field."""

    job: JobId
    dealer: Index
    ephemeral: Bytes32
    meas_parts: Parts
    proof_parts: Parts
    signature: Signature = b""


class NoiseComplaint(schema.Message, frozen=True):
    """Aggregator ``holder``'s proof of the key of its part of ``dealer``'s deal:
    ``shared`` = y·E with a DLEQ proof that log_G Y = log_E shared. Anyone then opens the
    part and checks what the holder published (:func:`decide_noise`)."""

    dealer: Index
    holder: Index
    shared: Bytes32
    proof: Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]


Complaints = Annotated[tuple[NoiseComplaint, ...], msgspec.Meta(max_length=MAX_DEALERS)]


class NoiseRound(schema.Message, frozen=True):
    """An aggregator's round-1 values for the deals it was relayed, in ``dealers`` order:
    consistency value ``z`` (D,) and FLP verifier share ``verifier`` (D, VERIFIER_LEN);
    ``unopened``: the dealers whose part it could not open (their rows are zero)."""

    dealers: Dealers
    z: Elements
    verifier: Elements
    unopened: Dealers = ()


def _aad(job: str, dealer: int, to: int, kind: bytes) -> bytes:
    return H(
        b"kaires/privacy/noise-part",
        job.encode(),
        dealer.to_bytes(4, "little"),
        to.to_bytes(4, "little"),
        kind,
    )


def _joint_rand(plan: NoisePlan, job: str, dealer: int, meas_parts: Sequence[bytes]) -> Any:
    """Fiat–Shamir joint randomness over the sealed measurement parts."""
    h = hashlib.sha256(b"kaires/privacy/noise-joint")
    h.update(job.encode() + dealer.to_bytes(4, "little"))
    for p in meas_parts:
        h.update(hashlib.sha256(p).digest())
    return plan.flp.derive_joint_rand(h.digest())


def deal_digest(deal: NoiseDeal) -> bytes:
    """A deal's hash (the deal's query randomness binds it)."""
    return schema.signing_digest(deal, DEAL_CONTEXT)


def deal_noise(
    plan: NoisePlan,
    job: str,
    dealer: int,
    identity: Identity,
    boxes: Sequence[bytes],
    noise: np.ndarray,
    *,
    valid: bool = True,
    corrupt: int | None = None,
) -> NoiseDeal:
    """Deal ``noise`` (int vector in [−B, B − 1]) as aggregator ``dealer``: Shamir shares of
    its SumVec encoding and FLP proof, part j encrypted under H(job, dealer, j, e·Y_j) with
    Y_j the recipient point of ``boxes[j]`` (X25519 keys) and E = e·G in the deal, signed.

    ``valid=False`` (tests / fault injection only) encodes ``noise`` without the range
    check, as a Byzantine dealer would: its proof then fails. ``corrupt=j`` (fault
    injection only) gives aggregator j a measurement share off the sharing (the joint
    randomness and proof then cover the parts as dealt, as a cheating dealer would make
    them).
    """
    flp, F, n, t = plan.flp, plan.field, plan.n, plan.t
    if len(boxes) != n:
        raise ConfigError(f"{len(boxes)} recipient keys for {n} aggregators")
    v = np.asarray(noise, dtype=np.int64) + plan.offsets
    if valid:
        meas = flp.valid.encode(v)
    else:  # bits of |v| taken as is (a value out of range has a non-bit "bit")
        bits = [
            (int(x) >> k) & 1 if k < w - 1 else int(x) >> k
            for x, w in zip(v.tolist(), plan.widths.tolist(), strict=True)
            for k in range(w)
        ]
        meas = F.elements(np.asarray(bits, dtype=object) % F.MODULUS)
    e = Scalar.random_nonzero()
    keys = [
        _part_key(job, dealer, j, recipient_point_from_x25519(bytes(b)) * e)
        for j, b in enumerate(boxes)
    ]
    meas_sh = sharing.share(F, meas, n, t)
    if corrupt is not None:  # its noise share is then wrong: its result share would be
        meas_sh[corrupt] = F.add(meas_sh[corrupt], F.ones(meas_sh[corrupt].shape))
    meas_parts = tuple(
        envelope.seal(keys[j], F.encode(meas_sh[j]), _aad(job, dealer, j, b"meas"))
        for j in range(n)
    )
    jr = _joint_rand(plan, job, dealer, meas_parts)
    proof = flp.prove(meas, flp.random_prove_rand(), jr if flp.JOINT_RAND_LEN else None)
    proof_sh = sharing.share(F, proof, n, t)
    proof_parts = tuple(
        envelope.seal(keys[j], F.encode(proof_sh[j]), _aad(job, dealer, j, b"proof"))
        for j in range(n)
    )
    E = (Point.base() * e).to_bytes()
    return schema.sign(NoiseDeal(job, dealer, E, meas_parts, proof_parts), identity, DEAL_CONTEXT)


def _part_key(job: str, dealer: int, to: int, shared: Point) -> bytes:
    return H(
        b"kaires/privacy/noise-key",
        job.encode(),
        dealer.to_bytes(4, "little"),
        to.to_bytes(4, "little"),
        shared.to_bytes(),
    )


def _complaint_context(job: str, dealer: int, holder: int) -> bytes:
    return H(
        b"kaires/privacy/noise-complaint",
        job.encode(),
        dealer.to_bytes(4, "little"),
        holder.to_bytes(4, "little"),
    )


def _open_with(
    plan: NoisePlan, deal: NoiseDeal, me: int, key: bytes
) -> tuple[np.ndarray, np.ndarray]:
    F, flp = plan.field, plan.flp
    m = envelope.open_(key, deal.meas_parts[me], _aad(deal.job, deal.dealer, me, b"meas"))
    p = envelope.open_(key, deal.proof_parts[me], _aad(deal.job, deal.dealer, me, b"proof"))
    return F.decode(m, (flp.MEAS_LEN,)), F.decode(p, (flp.PROOF_LEN,))


def check_deals(
    plan: NoisePlan, job: str, deals: Sequence[Any], signers: Sequence[str]
) -> list[NoiseDeal]:
    """The deals of ``job`` validly signed by the aggregator they name (one per dealer,
    sorted by dealer); anything else is dropped (a relayed forgery proves nothing)."""
    out: dict[int, NoiseDeal] = {}
    for d in deals:
        if not isinstance(d, NoiseDeal) or d.job != job or not 0 <= d.dealer < plan.n:
            continue
        if len(d.meas_parts) != plan.n or len(d.proof_parts) != plan.n:
            continue
        if d.dealer in out:
            continue
        if schema.verify(d, bytes.fromhex(signers[d.dealer]), DEAL_CONTEXT):
            out[d.dealer] = d
    return [out[k] for k in sorted(out)]


def open_deal(
    plan: NoisePlan, deal: NoiseDeal, me: int, recipient: RecipientKey
) -> tuple[np.ndarray, np.ndarray]:
    """Aggregator ``me``'s (measurement, proof) shares of ``deal``, with its recipient key.

    Raises InvalidProof / EncodingError if its part does not open or has the wrong size.
    """
    E = Point.from_bytes(bytes(deal.ephemeral))
    return _open_with(plan, deal, me, _part_key(deal.job, deal.dealer, me, E * recipient.secret))


def complain(plan: NoisePlan, deal: NoiseDeal, me: int, recipient: RecipientKey) -> NoiseComplaint:
    """Aggregator ``me``'s proven part key of ``deal`` (its share of a faulty dealer's noise
    only: an honest aggregator complains only about a dealer at fault, see
    :func:`noise_disputes`)."""
    E = Point.from_bytes(bytes(deal.ephemeral))
    S = E * recipient.secret
    proof = dleq_prove(
        recipient.secret,
        Point.base(),
        E,
        _complaint_context(deal.job, deal.dealer, me),
        statement1=recipient.public,
        statement2=S,
    )
    return NoiseComplaint(deal.dealer, me, S.to_bytes(), proof.to_bytes())


def _complaint_key(deal: NoiseDeal, c: NoiseComplaint, box: bytes) -> bytes | None:
    """The part key a complaint proves (None: it does not verify)."""
    try:
        E = Point.from_bytes(bytes(deal.ephemeral))
        S = Point.from_bytes(bytes(c.shared))
        Y = recipient_point_from_x25519(bytes(box))
        proof = DLEQProof.from_bytes(bytes(c.proof))
    except (KairesError, ValueError):
        return None
    ctx = _complaint_context(deal.job, deal.dealer, c.holder)
    if not is_valid_dleq(proof, Point.base(), Y, E, S, ctx):
        return None
    return _part_key(deal.job, deal.dealer, c.holder, S)


def _coeffs(plan: NoisePlan, coin: bytes, deal: NoiseDeal) -> tuple[Any, Any, bytes]:
    """Consistency coefficients and the query seed of one deal: from the coin and the deal's
    own hash only (a dealer that signs two deals affects nothing but its own)."""
    seed = H(b"kaires/privacy/noise-query", coin, deal_digest(deal))
    F, flp = plan.field, plan.flp
    return (
        F.from_seed(seed, (flp.MEAS_LEN,), b"kaires/privacy/noise-z/meas"),
        F.from_seed(seed, (flp.PROOF_LEN,), b"kaires/privacy/noise-z/proof"),
        seed,
    )


def noise_round(
    plan: NoisePlan,
    coin: bytes,
    deals: Sequence[NoiseDeal],
    shares: Mapping[int, tuple[np.ndarray, np.ndarray]],
) -> NoiseRound:
    """Round-1 values of one aggregator: per deal, z = ⟨c_m, meas⟩ + ⟨c_p, proof⟩ and the
    FLP verifier share, computed on its ``shares`` (dealer → opened shares)."""
    F, flp = plan.field, plan.flp
    D = len(deals)
    z = F.zeros((D,))
    ver = F.zeros((D, flp.VERIFIER_LEN))
    for k, d in enumerate(deals):
        got = shares.get(d.dealer)
        if got is None:
            continue
        row = _values(plan, coin, d, *got)
        z[k], ver[k] = row[0], row[1:]
    unopened = tuple(d.dealer for d in deals if d.dealer not in shares)
    return NoiseRound(
        tuple(d.dealer for d in deals), Elements.of(F, z), Elements.of(F, ver), unopened
    )


def _values(
    plan: NoisePlan, coin: bytes, deal: NoiseDeal, meas: np.ndarray, proof: np.ndarray
) -> np.ndarray:
    """One holder's round-1 values of ``deal`` from its shares: [z, verifier share]."""
    F, flp = plan.field, plan.flp
    c_m, c_p, seed = _coeffs(plan, coin, deal)
    z = F.add(F.dot(meas, c_m), F.dot(proof, c_p))
    jr = _joint_rand(plan, deal.job, deal.dealer, deal.meas_parts) if flp.JOINT_RAND_LEN else None
    ver = flp.query(meas[None, :], proof[None, :], flp.derive_query_rand(seed), jr)[0]
    return np.concatenate([np.asarray(z).reshape(1), ver])


@dataclass
class _Opened:
    """The public analysis of the round-1 noise values (same at every honest aggregator)."""

    rows: dict[int, np.ndarray]  # holder → its [z, verifier] per deal
    unopened: dict[int, set[int]]  # holder → dealers it could not open
    decoded: dict[int, tuple[np.ndarray, set[int]]]  # dealer → (opened values, wrong holders)
    undecodable: set[int]
    #: dealers whose values disagree while too few are present to blame the dealer or any
    #: holder (see :func:`_decisive`): nothing may be decided or disclosed about them
    undecided: set[int] = field(default_factory=set)


def _analyse(plan: NoisePlan, deals: Sequence[NoiseDeal], rounds: Mapping[int, Any]) -> _Opened:
    F, flp, n, t = plan.field, plan.flp, plan.n, plan.t
    order = tuple(d.dealer for d in deals)
    rows: dict[int, np.ndarray] = {}
    unopened: dict[int, set[int]] = {}
    for i, r in rounds.items():
        try:
            if not isinstance(r, NoiseRound) or tuple(r.dealers) != order:
                continue
            z = _elements(r.z, F, (len(order),))
            v = _elements(r.verifier, F, (len(order), flp.VERIFIER_LEN))
        except (EncodingError, ValueError, TypeError):
            continue
        rows[i] = np.concatenate([z[:, None], v], axis=1)
        unopened[i] = set(r.unopened)
    decoded: dict[int, tuple[np.ndarray, set[int]]] = {}
    undecodable: set[int] = set()
    undecided: set[int] = set()
    for k, d in enumerate(order):
        shares = {i: rows[i][k] for i in rows if d not in unopened[i]}
        decisive = _decisive(len(rows), len(rows) - len(shares), t)
        try:
            opened, bad = sharing.robust_reconstruct(F, shares, n, t)
        except (DecodingError, ConfigError):
            (undecodable if decisive else undecided).add(d)
            continue
        if bad and not decisive:
            undecided.add(d)  # a correction here could be aimed at an honest holder
            continue
        decoded[d] = (opened, set(bad))
    return _Opened(rows, unopened, decoded, undecodable, undecided)


def _decisive(rows: int, claims: int, t: int) -> bool:
    """Whether ``rows`` present round values, ``claims`` of them unopened claims (erasures),
    determine a deal's sharing whoever is faulty: an honest dealer's values, with at most
    t − claims others wrong, then decode to the one right sharing (rows + claims ≥ 3t + 1);
    more than t claims prove the dealer at fault. Otherwise a relay withholding rounds and
    the faulty aggregators could make an honest deal undecodable (its noise dropped) or
    decode it to another sharing (an honest holder put in question discloses its part)."""
    return claims > t or rows + claims >= 3 * t + 1


def noise_disputes(
    plan: NoisePlan, deals: Sequence[NoiseDeal], rounds: Mapping[int, Any]
) -> dict[int, set[int]]:
    """Dealer → the aggregators whose part of its (decodable) deal is in question: their
    value is off the decoded sharing, or they could not open their part. With at most t
    faulty aggregators an honest aggregator is in question only for a faulty dealer (an
    honest dealer's sharing is consistent and decodes around the faulty values), so it
    may then disclose its part key (:func:`complain`)."""
    a = _analyse(plan, deals, rounds)
    out: dict[int, set[int]] = {}
    for d, (_, bad) in a.decoded.items():
        holders = bad | {i for i, u in a.unopened.items() if d in u}
        if holders:
            out[d] = holders
    return out


def decide_noise(
    plan: NoisePlan,
    deals: Sequence[NoiseDeal],
    rounds: Mapping[int, Any],
    coin: bytes = b"",
    complaints: Sequence[Any] = (),
    boxes: Sequence[bytes] = (),
) -> tuple[list[int], dict[int, str]]:
    """The accepted dealers and why the others were rejected (deterministic).

    ``rounds``: aggregator → its :class:`NoiseRound` (from the round-1 messages every
    honest aggregator checked; a missing or malformed one counts as missing);
    ``complaints``: the relayed :class:`NoiseComplaint` s (self-proving: a DLEQ proof under
    the holder's recipient point from ``boxes``). Dealer d is accepted iff its (z,
    verifier) values decode robustly to one degree-t sharing, no proven complaint shows
    that a part it dealt does not open or holds a share off its sharing (the holder's
    proven part gives the very z it published, off the decoded sharing), and the opened
    verifier passes the range proof. A false complaint (the part opens and gives another
    z) rejects nothing. Raises ``ProtocolError`` when a deal does not decode from too few
    rounds to blame its dealer or a holder (see :func:`_decisive`).
    """
    a = _analyse(plan, deals, rounds)
    _check_decided(a)
    by_dealer = {d.dealer: d for d in deals}
    order = [d.dealer for d in deals]
    accepted: list[int] = []
    rejected: dict[int, str] = {
        d: "its noise shares do not decode to one degree-t sharing" for d in a.undecodable
    }
    proven = _proven_faults(plan, a, by_dealer, order, coin, complaints, boxes)
    for d in order:
        if d in rejected:
            continue
        if d in proven:
            rejected[d] = proven[d]
            continue
        opened, _ = a.decoded[d]
        if bool(np.all(plan.flp.decide(opened[None, 1:]))):
            accepted.append(d)
        else:
            rejected[d] = "its noise fails the range proof"
    return accepted, rejected


def _check_decided(a: _Opened) -> None:
    """Raise ``ProtocolError`` if a deal's values disagree while too few are present to
    tell a faulty dealer from a faulty aggregator (:func:`_decisive`)."""
    if a.undecided:
        raise ProtocolError(
            f"the noise deals of aggregators {sorted(a.undecided)} have round-1 values that "
            "disagree, and fewer than 3t + 1 are present to tell a faulty dealer from a "
            "faulty aggregator: nothing is decided or released — rerun the job with every "
            "aggregator's round-1 message relayed"
        )


def _proven_faults(
    plan: NoisePlan,
    a: _Opened,
    deals: Mapping[int, NoiseDeal],
    order: Sequence[int],
    coin: bytes,
    complaints: Sequence[Any],
    boxes: Sequence[bytes],
) -> dict[int, str]:
    """Dealers a valid complaint proves at fault (see :func:`decide_noise`)."""
    out: dict[int, str] = {}
    seen: set[tuple[int, int]] = set()
    for c in complaints:
        if not isinstance(c, NoiseComplaint) or c.dealer not in a.decoded or c.dealer in out:
            continue
        d, i = c.dealer, c.holder
        if (d, i) in seen or not 0 <= i < len(boxes):
            continue
        _, bad = a.decoded[d]
        in_question = i in bad or d in a.unopened.get(i, set())
        if not in_question:
            continue
        deal = deals[d]
        key = _complaint_key(deal, c, boxes[i])
        if key is None:
            continue  # not the holder's key: proves nothing
        seen.add((d, i))
        try:
            meas, proof = _open_with(plan, deal, i, key)
        except (KairesError, ValueError):
            out[d] = f"the part it dealt to aggregator {i} does not open with its proven key"
            continue
        # Every value the holder published must follow from the proven part: a holder that
        # lied in any of them (z or verifier share) proves nothing against the dealer.
        if i in bad and i in a.rows:
            row = _values(plan, coin, deal, meas, proof)
            if np.array_equal(row, a.rows[i][order.index(d)]):
                out[d] = (
                    f"the share it dealt to aggregator {i} is off its sharing (the proven "
                    "part gives the values published)"
                )
    return out


def _elements(e: Any, F: Any, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(e, Elements) or e.field != F.__name__ or tuple(e.shape) != shape:
        raise EncodingError(f"expected {F.__name__} elements of shape {shape}")
    return e.array(F)


def noise_total(
    plan: NoisePlan, accepted: Sequence[int], shares: Mapping[int, tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """This aggregator's share of the accepted noise: Σ_d truncate(meas_d) − B (OUTPUT_LEN).

    Subtracting the public offset B from every share shifts the shared value by −B.
    """
    F, flp = plan.field, plan.flp
    total = F.zeros((flp.OUTPUT_LEN,))
    offset = F.elements(plan.offsets)
    for d in accepted:
        got = shares.get(d)
        if got is None:
            continue
        total = F.add(total, F.sub(flp.valid.truncate(got[0][None, :])[0], offset))
    return total


def deal_for(
    plan: NoisePlan,
    job: str,
    dealer: int,
    identity: Identity,
    boxes: Sequence[bytes],
    behaviour: str | None = None,
) -> NoiseDeal:
    """Aggregator ``dealer``'s deal: fresh Skellam noise of the plan's dealer variance
    (``behaviour="no_noise"``: zeros — a Byzantine aggregator adding none, which its
    proof cannot tell; ``"big_noise"``: far out of range, which its proof rejects;
    ``"bad_noise_share"``: a share off its sharing to the next aggregator, who proves it)."""
    if behaviour == "no_noise":
        noise = np.zeros(plan.length, dtype=np.int64)
    elif behaviour == "big_noise":
        return deal_noise(
            plan,
            job,
            dealer,
            identity,
            boxes,
            np.full(plan.length, 4 * plan.bound, dtype=np.int64),
            valid=False,
        )
    elif behaviour == "bad_noise_share":
        noise = plan.sample()
        return deal_noise(plan, job, dealer, identity, boxes, noise, corrupt=(dealer + 1) % plan.n)
    else:
        noise = plan.sample()
    return deal_noise(plan, job, dealer, identity, boxes, noise)
