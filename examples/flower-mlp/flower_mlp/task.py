"""The example's model and data: a one-hidden-layer MLP in plain numpy on scikit-learn's
bundled digits data (1,797 8×8 images, 10 classes), split over the supernodes.

Architecture 64 → 1,400 (ReLU) → 10 (softmax): 64·1,400 + 1,400 + 1,400·10 + 10 =
105,010 parameters. No torch: a ClientApp starts fast on a Ray worker. Everything is
deterministic (fixed split, initialisation and per-(node, round) shuffling seeds), so the
ServerApp's result can be compared with plain FedAvg on the same updates.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

N_FEATURES = 64
HIDDEN = 1_400
N_CLASSES = 10
SEED = 0
#: Parameters of the model (the length of one flattened update).
N_PARAMS = N_FEATURES * HIDDEN + HIDDEN + HIDDEN * N_CLASSES + N_CLASSES


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
    """The training rows of one supernode (a fixed, contiguous split of the shuffled data)."""
    X, y, _, _ = _dataset()
    k = np.array_split(np.arange(len(y)), num_partitions)[partition_id]
    return X[k], y[k]


def test_set() -> tuple[np.ndarray, np.ndarray]:
    """The held-out rows (the ServerApp's centralised evaluation)."""
    _, _, X, y = _dataset()
    return X, y


def initial_arrays() -> list[np.ndarray]:
    """He-initialised ``W1 (64, H)``, zero ``b1 (H,)``, ``W2 (H, 10)``, zero ``b2 (10,)``."""
    rng = np.random.default_rng(SEED)
    W1 = rng.normal(scale=np.sqrt(2.0 / N_FEATURES), size=(N_FEATURES, HIDDEN))
    W2 = rng.normal(scale=np.sqrt(2.0 / HIDDEN), size=(HIDDEN, N_CLASSES))
    return [W1, np.zeros(HIDDEN), W2, np.zeros(N_CLASSES)]


def _forward(arrays: list[np.ndarray], X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hidden activations ``(n, H)`` and class probabilities ``(n, 10)``."""
    W1, b1, W2, b2 = arrays
    h = np.maximum(X @ W1 + b1, 0.0)
    z = h @ W2 + b2
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return h, p / p.sum(axis=1, keepdims=True)


def train(
    arrays: list[np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    epochs: int = 2,
    lr: float = 0.05,
    batch_size: int = 32,
    seed: int = 0,
) -> list[np.ndarray]:
    """Mini-batch SGD on the cross-entropy; returns the new arrays (the input is not
    modified). ``seed`` fixes the batch order (the ClientApp derives it from its partition
    and the server round, so a run is reproducible)."""
    W1, b1, W2, b2 = (np.array(a, dtype=np.float64) for a in arrays)
    Y = np.eye(N_CLASSES)[y]
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            k = order[start : start + batch_size]
            h, p = _forward([W1, b1, W2, b2], X[k])
            g = (p - Y[k]) / len(k)  # dL/dz
            gh = (g @ W2.T) * (h > 0)
            W2 -= lr * (h.T @ g)
            b2 -= lr * g.sum(axis=0)
            W1 -= lr * (X[k].T @ gh)
            b1 -= lr * gh.sum(axis=0)
    return [W1, b1, W2, b2]


def evaluate(arrays: list[np.ndarray], X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(cross-entropy loss, accuracy)."""
    _, p = _forward([np.asarray(a, dtype=np.float64) for a in arrays], X)
    loss = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
    return loss, float(np.mean(p.argmax(axis=1) == y))
