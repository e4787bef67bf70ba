"""Logistic-regression Newton statistic (``"logistic_regression"``): at PUBLIC parameters θ,
the accepted providers' row count, log-loss, gradient and Hessian sums.

Each job of this kind is one Newton/IRLS step of :class:`~kaires_fl.estimators.
KairesLogisticRegression`: the consumer publishes θ in the job (``coef``), every provider
evaluates on its own rows, and the committee releases only the sums.

Frame. Every feature is mapped exactly to u = (x − c)·2^−e ∈ [−1, 1] (:func:`pow2_frame` of
the declared bounds; with ``fit_intercept=False`` the frame is centred at 0, so that no
intercept is implied), and a = [1, u] (or u without an intercept). θ holds one row of
coefficients per logit in this frame: K' = 1 logit for two classes (p = σ(θ·a)), K' = K
logits for K ≥ 3 classes (p = softmax(Θa)), as scikit-learn's binary / multinomial models.

Measurement (provider granularity, one ``SumVec`` per provider), with M = K'·len(a):

* ``n`` — the provider's row count;
* ``loss / L`` — Σ log-loss divided by the public per-row bound L = z̄ + log 2 (binary) or
  2·z̄ + log K (multinomial), z̄ = max_k Σ|θ_k| ≥ |θ_k·a| (so each row contributes ≤ 1);
* ``g`` (M) — Σ (p − y) ⊗ a, every entry ≤ 1 per row in absolute value;
* ``H`` (M(M+1)/2) — the upper triangle of the exact block Hessian
  Σ (diag(p) − ppᵀ) ⊗ aaᵀ (entries ≤ 1/4 per row).

So every entry of a provider's vector is bounded by its row count ≤ ``max_rows`` and is sent
as fixed point exactly as :class:`LinearRegressionStats` (``choose_fixed_point``): the
``SumVec`` circuit range-checks it (entries in ±2^bitlen(max_rows)), so a provider — honest
or not — moves each released sum by at most 2^bitlen(max_rows) < 2·``max_rows`` (its loss by
at most that many times L), whatever it sends; anything larger fails its proof. Decoding is
exact to P·2^−(f+1) per entry for P accepted providers.

Hessian choice: the exact block Hessian (quadratic convergence: ~5–8 jobs per fit). Its size
grows as K²d²/2; Böhning's bound ½(I − 11ᵀ/K) ⊗ AᵀA would need AᵀA once and only gradients
after, at the price of linear convergence (many more jobs) — not used here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit, log_softmax, softmax

from kaires_fl.arith import circuits
from kaires_fl.errors import ConfigError
from kaires_fl.statistics.base import (
    DEFAULT_MAX_PROVIDERS,
    MAX_FEATURES,
    Statistic,
    _as_2d,
    _blas,
    _fixed_point,
    _positive_int,
    _signed_ints,
    bounds_array,
    check_within,
    choose_fixed_point,
    pow2_frame,
)

#: Most entries a measurement may hold (2 + M + M(M+1)/2, M = K'(d+1)): a job's parameters
#: come from the ledger, and every aggregator allocates the circuit before proving anything.
MAX_ENTRIES = 1 << 20


def loss_bound(coef: np.ndarray) -> float:
    """Public per-row bound L of the log-loss at ``coef`` (K', m) when every |a_j| ≤ 1."""
    z = float(np.max(np.sum(np.abs(coef), axis=1))) if coef.size else 0.0
    k = coef.shape[0]
    return z + float(np.log(2.0)) if k == 1 else 2.0 * z + float(np.log(k))


class LogisticRegressionStats(Statistic):
    """Row count, log-loss, gradient and block Hessian of the logistic model at public
    parameters ``coef`` (see the module docstring).

    Parameters
    ----------
    n_features : d.
    n_classes : K ≥ 2 (labels y are the integers 0 … K−1).
    x_bounds : declared feature bounds ([lo, hi] for every feature, or one pair each).
    coef : (K', d + fit_intercept) parameters in the u frame (None: zeros); K' = 1 if K = 2.
    fit_intercept : whether a = [1, u] (else a = u, frame centred at 0).
    max_rows : the policy's row cap per provider (every entry is bounded by it).
    max_measurements : providers per job.
    frac_bits : fractional bits of the fixed-point sums (None: automatic, as linear regression).
    granularity : only ``"provider"`` (the gradient and Hessian are nonlinear in the rows).
    """

    kind = "logistic_regression"

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        x_bounds: Any,
        coef: Any = None,
        fit_intercept: bool = True,
        max_rows: int | None = None,
        max_measurements: int | None = None,
        frac_bits: int | None = None,
        granularity: str = "provider",
    ) -> None:
        if granularity != "provider":
            raise ConfigError(
                "logistic_regression has provider granularity only: the gradient and Hessian "
                f"are nonlinear in the rows (got granularity={granularity!r})"
            )
        self.granularity = "provider"
        self.n_features = d = _positive_int(n_features, "n_features", MAX_FEATURES)
        self.n_classes = K = _positive_int(n_classes, "n_classes")
        if K < 2:
            raise ConfigError(f"n_classes must be ≥ 2, got {n_classes!r}")
        if not isinstance(fit_intercept, bool | np.bool_):
            raise ConfigError(f"fit_intercept must be a bool, got {fit_intercept!r}")
        self.fit_intercept = bool(fit_intercept)
        self.n_logits = 1 if K == 2 else K
        self.width = d + int(self.fit_intercept)
        M = self.n_logits * self.width
        self.length = 2 + M + M * (M + 1) // 2
        if self.length > MAX_ENTRIES:
            raise ConfigError(
                f"{K} classes × {d} features need {self.length} entries per measurement (the "
                f"block Hessian), more than {MAX_ENTRIES}; reduce the features (KairesPCA) "
                "or the classes"
            )
        self.x_bounds = bounds_array(x_bounds, d, "x_bounds")
        if max_rows is None:
            raise ConfigError("provider granularity needs max_rows (the policy's row cap)")
        self.max_rows = _positive_int(max_rows, "max_rows")
        self.max_measurements = _positive_int(
            max_measurements or DEFAULT_MAX_PROVIDERS, "max_measurements"
        )
        if frac_bits is not None and (
            isinstance(frac_bits, bool) or not isinstance(frac_bits, int | np.integer)
        ):
            raise ConfigError(f"frac_bits must be None or an integer, got {frac_bits!r}")
        self.field, self._f, self.bits = choose_fixed_point(
            self.max_rows, self.max_measurements, frac_bits
        )
        self.frac_bits = self._f
        shape = (self.n_logits, self.width)
        if coef is None:
            c = np.zeros(shape)
        else:
            try:
                c = np.asarray(coef, dtype=np.float64)
            except (TypeError, ValueError):
                raise ConfigError(f"coef must be a {shape} array of numbers") from None
        if c.shape != shape or not np.all(np.isfinite(c)):
            raise ConfigError(f"coef must be a finite {shape} array, got shape {c.shape}")
        self.coef = c
        self.loss_scale = loss_bound(c)
        if not np.isfinite(self.loss_scale):
            raise ConfigError("coef is too large: the per-row loss bound overflows float64")
        if self.fit_intercept:
            self._center, self._exp = pow2_frame(self.x_bounds)
        else:
            m = np.max(np.abs(self.x_bounds), axis=1)
            self._center, self._exp = pow2_frame(np.stack([-m, m], axis=1))
        self._iu = np.triu_indices(M)

    @property
    def scale(self) -> np.ndarray:
        """2^e per feature: x = center + scale·u."""
        return np.ldexp(1.0, self._exp)

    @property
    def center(self) -> np.ndarray:
        return self._center

    def params(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "x_bounds": self.x_bounds.tolist(),
            "coef": self.coef.tolist(),
            "fit_intercept": self.fit_intercept,
            "max_rows": self.max_rows,
            "max_measurements": self.max_measurements,
            "frac_bits": self.frac_bits,
        }

    def _build_circuit(self, field: Any) -> Any:
        return circuits.SumVec(self.length, self.bits, field=field)

    def noise_scale(self) -> float:
        """One integer unit is 2^−f of an entry (the loss entry: times ``loss_scale``)."""
        return 2.0**-self._f

    # provider side ----------------------------------------------------------------

    def check_data(self, X: Any, y: Any) -> None:
        """Raise ConfigError if any row lies outside the declared bounds or a label is not
        one of 0 … K−1 (any number of rows)."""
        self._validated(X, y, one_provider=False)

    def _validated(self, X: Any, y: Any, one_provider: bool = True) -> tuple[np.ndarray, Any]:
        Xa = _as_2d(X)
        if Xa.shape[1] != self.n_features:
            raise ConfigError(f"X has {Xa.shape[1]} features; the job declares {self.n_features}")
        if y is None:
            raise ConfigError("logistic regression needs class labels y (integers 0 … K−1)")
        ya = np.asarray(y).reshape(-1)
        if ya.shape[0] != Xa.shape[0]:
            raise ConfigError(f"X has {Xa.shape[0]} rows but y has {ya.shape[0]}")
        yi = ya.astype(np.int64) if ya.dtype.kind in "iub" else np.rint(ya).astype(np.int64)
        if ya.dtype.kind not in "iub" and not np.array_equal(yi, ya):
            raise ConfigError("labels y must be the class indices 0 … K−1 (integers)")
        if np.any((yi < 0) | (yi >= self.n_classes)):
            raise ConfigError(
                f"labels y must lie in 0 … {self.n_classes - 1} (the job's n_classes)"
            )
        check_within(
            Xa, self.x_bounds, [f"feature {j}" for j in range(self.n_features)],
            "widen x_bounds (policy bounds)",
        )  # fmt: skip
        if one_provider and Xa.shape[0] > self.max_rows:
            raise ConfigError(
                f"a provider has {Xa.shape[0]} rows but the policy's row cap is "
                f"max_rows={self.max_rows}; raise max_rows"
            )
        return Xa, yi

    def local_sums(self, X: Any, y: Any) -> np.ndarray:
        """(provider) [n, loss/L, g, triu(H)] over this provider's rows at ``coef``, float64."""
        Xa, yi = self._validated(X, y)
        n = Xa.shape[0]
        A = np.empty((n, self.width))
        U = A[:, 1:] if self.fit_intercept else A
        if self.fit_intercept:
            A[:, 0] = 1.0
        np.subtract(Xa, self._center, out=U)
        U *= np.ldexp(1.0, -self._exp)
        np.clip(U, -1.0, 1.0, out=U)
        Z = A @ self.coef.T  # (n, K')
        with _blas().limit(limits=1, user_api="blas"):
            if self.n_logits == 1:
                z = Z[:, 0]
                loss = float(np.sum(np.logaddexp(0.0, z) - yi * z))
                p = expit(z)
                g = A.T @ (p - yi)
                H = (A * (p * (1.0 - p))[:, None]).T @ A
            else:
                K, m = self.n_logits, self.width
                loss = float(-np.sum(log_softmax(Z, axis=1)[np.arange(n), yi]))
                P = softmax(Z, axis=1)
                R = P.copy()
                R[np.arange(n), yi] -= 1.0
                g = (A.T @ R).T.reshape(-1)  # class-major: k·m + j
                H = np.empty((K * m, K * m))
                for k in range(K):  # K² blocks of BLAS products, K small
                    for j in range(k, K):
                        w = P[:, k] * ((k == j) - P[:, j])
                        B = (A * w[:, None]).T @ A
                        H[k * m : (k + 1) * m, j * m : (j + 1) * m] = B
                        H[j * m : (j + 1) * m, k * m : (k + 1) * m] = B.T
        scaled = min(max(loss / self.loss_scale, 0.0), float(n))
        return np.concatenate([[float(n), scaled], g, H[self._iu]])

    def measurements(self, X: Any, y: Any = None) -> np.ndarray:
        v = self.local_sums(X, y)
        return self.circuit.encode(_fixed_point(v, self._f, self.bits)[None, :])

    # consumer side ----------------------------------------------------------------

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> dict[str, Any]:
        """Returns ``n`` (rows), ``loss`` (Σ log-loss), ``grad`` (K', m) and ``hess``
        (K'm, K'm), all in the u frame at ``coef``."""
        self._check_count(num_measurements)
        ints = _signed_ints(self.field, aggregate, num_measurements << (self.bits - 1))
        unit = 1 << self._f
        # An honest count is an integer; a provider may send any bounded value, so round.
        n_rows = (int(ints[0]) + unit // 2) // unit
        v = np.array([float(x) for x in ints[1:]]) / float(unit)
        M = self.n_logits * self.width
        H = np.empty((M, M))
        H[self._iu] = v[1 + M :]
        H[(self._iu[1], self._iu[0])] = v[1 + M :]
        return {
            "n": n_rows,
            "loss": float(v[0]) * self.loss_scale,
            "grad": v[1 : 1 + M].reshape(self.n_logits, self.width),
            "hess": H,
        }
