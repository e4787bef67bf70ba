"""The example's model and data: softmax (multinomial logistic) regression on scikit-learn's
bundled digits data (1,797 8×8 images, 10 classes), split over the supernodes.

Plain numpy, so a ClientApp starts fast on a Ray worker. Everything is deterministic
(fixed split and seed), so two runs of the same strategy give the same model.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

N_FEATURES = 64
N_CLASSES = 10
SEED = 0


@lru_cache(maxsize=1)
def _dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    idx = np.random.default_rng(SEED).permutation(len(y))
    X, y = X[idx], y[idx]
    n_test = len(y) // 5
    return X[n_test:], y[n_test:], X[:n_test], y[:n_test]


def load_partition(partition_id: int, num_partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """The training rows of one supernode (a fixed, contiguous split)."""
    X, y, _, _ = _dataset()
    parts = np.array_split(np.arange(len(y)), num_partitions)
    k = parts[partition_id]
    return X[k], y[k]


def test_set() -> tuple[np.ndarray, np.ndarray]:
    """The held-out rows (the ServerApp's centralised evaluation)."""
    _, _, X, y = _dataset()
    return X, y


def initial_arrays() -> list[np.ndarray]:
    """Zero weights ``(64, 10)`` and bias ``(10,)``."""
    return [np.zeros((N_FEATURES, N_CLASSES)), np.zeros(N_CLASSES)]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def train(
    arrays: list[np.ndarray], X: np.ndarray, y: np.ndarray, epochs: int = 5, lr: float = 0.5
) -> list[np.ndarray]:
    """Full-batch gradient descent on the cross-entropy; returns the new weights."""
    W, b = (np.array(a, dtype=np.float64) for a in arrays)
    Y = np.eye(N_CLASSES)[y]
    for _ in range(epochs):
        P = _softmax(X @ W + b)
        G = (P - Y) / len(y)
        W -= lr * (X.T @ G)
        b -= lr * G.sum(axis=0)
    return [W, b]


def evaluate(arrays: list[np.ndarray], X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(cross-entropy loss, accuracy)."""
    W, b = arrays
    P = _softmax(X @ W + b)
    loss = float(-np.mean(np.log(P[np.arange(len(y)), y] + 1e-12)))
    return loss, float(np.mean(P.argmax(axis=1) == y))
