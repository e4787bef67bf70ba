"""A private :class:`KairesPCA`: principal components from the covariance of ONE Kaires job of
:class:`~kaires_fl.statistics.CovarianceStats`.

The consumer learns n, Σx and XᵀX of the accepted providers' rows (the centred scatter,
exactly centred in integers) and computes the eigendecomposition itself; no row leaves its
provider. scikit-learn's ``PCA(svd_solver="full")`` takes the SVD X_c = U S Vᵀ of the centred
rows; here Vᵀ and S² come from the eigendecomposition of X_cᵀX_c = V S² Vᵀ, so

* ``components_`` are the eigenvectors (descending eigenvalue), signs fixed as scikit-learn's
  ``svd_flip(u_based_decision=False)``: the largest-magnitude entry of each component is
  positive;
* ``explained_variance_`` = S²/(n − 1), ``singular_values_`` = S, and the ratio, noise
  variance and ``n_components`` choice ("mle", a float in (0, 1), an int) as scikit-learn.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from kaires_fl.committee import Committee
from kaires_fl.errors import ConfigError, ProtocolError
from kaires_fl.estimators.base import KairesEstimatorMixin
from kaires_fl.estimators.preprocessing import column_statistic_job
from kaires_fl.statistics.covariance import CovarianceStats


def flip_signs(components: np.ndarray) -> np.ndarray:
    """Rows with their largest-|·| entry made positive (scikit-learn's ``svd_flip`` with
    ``u_based_decision=False``), a new array."""
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(components.shape[0]), idx])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


def principal_axes(scatter: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Singular values S (r,) and right singular vectors Vᵀ (r, d) of the centred rows from
    their scatter X_cᵀX_c, r = min(n, d), S descending.

    Eigenvalues the fixed-point error makes slightly negative are clipped to 0.
    """
    d = scatter.shape[0]
    w, V = scipy.linalg.eigh(scatter)
    order = np.argsort(w)[::-1][: min(n, d)]
    S = np.sqrt(np.clip(w[order], 0.0, None))
    return S, flip_signs(V[:, order].T)


def _infer_dimension(spectrum: np.ndarray, n_samples: int) -> int:
    """Minka's MLE of the dimension, as scikit-learn's ``PCA(n_components="mle")``."""
    from sklearn.decomposition._pca import _infer_dimension as sk_infer

    return int(sk_infer(spectrum, n_samples))


def _resolve_n_components(k: Any, ev: np.ndarray, ratio: np.ndarray, n: int, d: int) -> int:
    """Components kept, as scikit-learn's PCA: None → min(n, d); "mle" → Minka's MLE; a
    float in (0, 1) → the fewest whose cumulated ratio exceeds it; an int → itself."""
    if k is None:
        return min(n, d)
    if isinstance(k, str):  # "mle" (checked in fit)
        return _infer_dimension(ev, n)
    if isinstance(k, numbers.Integral):
        return int(k)
    return min(int(np.searchsorted(np.cumsum(ratio), float(k), side="right")) + 1, len(ev))


class KairesPCA(
    KairesEstimatorMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """Principal component analysis on a private covariance (one Kaires job).

    Parameters
    ----------
    n_components : int, float in (0, 1), "mle" or None
        As scikit-learn's PCA: None keeps min(n_samples, n_features).
    whiten : bool, default False
        Divide the projections by sqrt(explained_variance_).
    n_providers, committee, granularity, bounds, frac_bits, progress, epsilon, delta :
        As :class:`~kaires_fl.estimators.preprocessing.KairesStandardScaler` (with
        ``epsilon`` the noisy scatter's negative eigenvalues are clipped to 0).

    Attributes
    ----------
    components_ (k, d), explained_variance_ (k,), explained_variance_ratio_ (k,),
    singular_values_ (k,), mean_ (d,), n_components_, n_samples_ (accepted rows),
    noise_variance_, n_features_in_, feature_names_in_, n_providers_, kaires_report_,
    kaires_statistic_.

    Precision: the scatter has the error bound of
    :class:`~kaires_fl.statistics.CovarianceStats` (≈ 1e-12 relative in provider
    granularity at the defaults), so eigenvalues agree with scikit-learn's to that relative
    error and components to it divided by the gap to the neighbouring eigenvalue.
    """

    def __init__(
        self,
        n_components: int | float | str | None = None,
        *,
        whiten: bool = False,
        n_providers: int = 10,
        committee: Committee | None = None,
        granularity: str = "provider",
        bounds: Any = "auto",
        frac_bits: int | None = None,
        progress: bool | str = "auto",
        epsilon: float | None = None,
        delta: float | None = None,
    ) -> None:
        self.n_components = n_components
        self.whiten = whiten
        self.n_providers = n_providers
        self.committee = committee
        self.granularity = granularity
        self.bounds = bounds
        self.frac_bits = frac_bits
        self.progress = progress
        self.epsilon = epsilon
        self.delta = delta

    def _check_n_components(self, n: int, d: int) -> None:
        k = self.n_components
        if k is None or k == "mle":
            if k == "mle" and n < d:
                raise ValueError("n_components='mle' is only supported if n_samples >= n_features")
            return
        if isinstance(k, numbers.Integral) and not isinstance(k, bool):
            if not 0 <= k <= min(n, d):
                raise ValueError(
                    f"n_components={k} must be between 0 and min(n_samples, n_features)="
                    f"{min(n, d)} with svd_solver='full'"
                )
            return
        if isinstance(k, numbers.Real) and not isinstance(k, bool) and 0 < k < 1:
            return
        raise ConfigError(
            f"n_components must be None, 'mle', an int in [0, min(n_samples, n_features)] or "
            f"a float in (0, 1), got {k!r}"
        )

    def fit(self, X: Any, y: Any = None, provider: Any = None) -> KairesPCA:
        """Learn the components through one Kaires job; returns self.

        Parameters
        ----------
        X : (n_samples, n_features) array-like (dense, finite).
        y : ignored.
        provider : optional (n_samples,) labels; rows with the same label form one provider.
            In a Pipeline: ``pipe.fit(X, y, <step name>__provider=labels)``.
        """
        X = validate_data(self, X, dtype=np.float64, reset=True, ensure_min_samples=2)
        self._check_n_components(*X.shape)
        stat, agg, result, labels = column_statistic_job(self, CovarianceStats, X, provider)
        n, d = round(max(float(agg["n"]), 0.0)), X.shape[1]  # noisy with epsilon
        if n < 2:
            raise ProtocolError(
                f"the Kaires job aggregated {n} row(s); a covariance needs at least 2 (the "
                "accepted providers' rows); see kaires_report_ / the job's rejected providers"
            )
        # the accepted rows may be fewer than X's: re-check n_components against them
        self._check_n_components(n, d)
        S, Vt = principal_axes(np.asarray(agg["scatter"], dtype=np.float64), n)
        ev = S**2 / (n - 1)
        total = float(ev.sum())
        ratio = ev / total if total > 0 else np.zeros_like(ev)
        k = _resolve_n_components(self.n_components, ev, ratio, n, d)
        self.noise_variance_ = float(ev[k:].mean()) if k < min(n, d) else 0.0
        self.n_samples_ = n
        self.n_components_ = k
        self.mean_ = np.asarray(agg["mean"], dtype=np.float64)
        self.components_ = np.ascontiguousarray(Vt[:k])
        self.explained_variance_ = ev[:k].copy()
        self.explained_variance_ratio_ = ratio[:k].copy()
        self.singular_values_ = S[:k].copy()
        self.kaires_report_ = dict(result.report)
        self.kaires_statistic_ = stat.spec()
        self.n_providers_ = len(labels)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Projections (X − mean_)·components_ᵀ (divided by sqrt(explained_variance_) when
        whitening)."""
        check_is_fitted(self, "components_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        Z = (X - self.mean_) @ self.components_.T
        if self.whiten:
            scale = np.sqrt(self.explained_variance_)
            scale[scale < np.finfo(np.float64).eps] = np.finfo(np.float64).eps
            Z /= scale
        return Z

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Back to the feature space: X·components_ (× sqrt(explained_variance_) when
        whitening) + mean_."""
        check_is_fitted(self, "components_")
        X = check_array(X, dtype=np.float64)
        if self.whiten:
            return X @ (np.sqrt(self.explained_variance_)[:, None] * self.components_) + self.mean_
        return X @ self.components_ + self.mean_

    def get_covariance(self) -> np.ndarray:
        """The model's covariance components_ᵀ·diag(ev − σ²)·components_ + σ²I (as
        scikit-learn's PCA.get_covariance)."""
        check_is_fitted(self, "components_")
        comp = self.components_
        ev = self.explained_variance_
        if self.whiten:
            comp = comp * np.sqrt(ev[:, None])
        diff = np.where(ev > self.noise_variance_, ev - self.noise_variance_, 0.0)
        cov = (comp.T * diff) @ comp
        cov.flat[:: len(cov) + 1] += self.noise_variance_
        return cov

    def get_precision(self) -> np.ndarray:
        """The inverse of :meth:`get_covariance` (by the matrix inversion lemma when the
        noise variance is positive, as scikit-learn's PCA.get_precision)."""
        check_is_fitted(self, "components_")
        d = self.components_.shape[1]
        if self.n_components_ == 0:
            return np.eye(d) / self.noise_variance_
        if self.noise_variance_ == 0.0:
            return np.asarray(scipy.linalg.inv(self.get_covariance()))
        comp = self.components_
        ev = self.explained_variance_
        if self.whiten:
            comp = comp * np.sqrt(ev[:, None])
        diff = np.where(ev > self.noise_variance_, ev - self.noise_variance_, 0.0)
        inner = comp @ comp.T / self.noise_variance_
        inner.flat[:: len(inner) + 1] += 1.0 / diff
        precision = comp.T @ scipy.linalg.inv(inner) @ comp
        precision /= -(self.noise_variance_**2)
        precision.flat[:: d + 1] += 1.0 / self.noise_variance_
        return np.asarray(precision)

    def score_samples(self, X: Any) -> np.ndarray:
        """Log-likelihood of each row under the probabilistic PCA model (as scikit-learn's
        PCA.score_samples; Bishop, PRML 12.2.1)."""
        check_is_fitted(self, "components_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        Xr = X - self.mean_
        precision = self.get_precision()
        sign, logdet = np.linalg.slogdet(precision)
        logdet = logdet if sign > 0 else -np.inf
        ll = -0.5 * np.sum(Xr * (Xr @ precision), axis=1)
        return ll - 0.5 * (X.shape[1] * np.log(2.0 * np.pi) - logdet)

    def score(self, X: Any, y: Any = None) -> float:
        """Average log-likelihood of the rows (GridSearchCV's default score for PCA)."""
        return float(np.mean(self.score_samples(X)))

    @property
    def _n_features_out(self) -> int:
        return int(self.components_.shape[0])

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags
