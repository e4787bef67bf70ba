"""The accuracy table of docs/privacy.md: Kaires' differential privacy next to a trusted server's.

    python examples/privacy_table.py [--reps 3] [--rounds 3] [--only diabetes|synthetic|flower]

Prints a markdown table (and writes it to ``--out`` if given). Three workloads, each at
ε ∈ {0.5, 1, 4} with δ = 1e-5:

* **Diabetes regression** (scikit-learn's diabetes data, 80 % train / 20 % test, fixed
  split, 10 providers, one record = one patient is the privacy unit): the held-out RMSE
  (predictions clipped to the declared target bounds, public) of
  ``KairesLinearRegression(granularity="record", epsilon=ε)`` — the committee's
  aggregators add the noise — next to a *trusted curator* that adds Gaussian noise of the
  same (ε, δ) (replace-one, same proven sensitivity, same per-block noise scales) to the
  exact sums and post-processes them the same way. Flower has no regression; this is what
  a trusted server would do.
* **Synthetic regression**, the same two estimators on 20,000 records (x uniform in
  [0, 1]², y = 1 + 2x₁ − x₂ + noise), 5,000 held out: the size at which record-level DP
  regression is useful.
* **The Flower example app** (examples/flower-app: softmax regression on the digits, 10
  supernodes, ``--rounds`` rounds, every client sampled, clip norm C): test accuracy of
  ``KairesFedAvg(dp=...)`` (per-round ε chosen so that the Rényi composition of the
  rounds is ε) next to Flower's ``DifferentialPrivacyServerSideFixedClipping`` around
  ``FedAvg`` (the server sees every update, clips it and adds Gaussian noise), its noise
  multiplier calibrated with Flower's own ``RdpAccountant`` to ε over the same rounds
  (Flower's accountant supports add-or-remove-one neighbours only; Kaires' guarantee is
  the stronger replace-one).

Every figure is the mean ± standard deviation over ``--reps`` runs with fresh noise. The
machine the docs' figures come from is stated with them.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

EPSILONS = (0.5, 1.0, 4.0)
DELTA = 1e-5
PROVIDERS = 10
#: Declared (public) bounds of the diabetes data: sklearn's columns are centred and scaled
#: to unit norm (|x| < 0.2), the target is a disease-progression score in [25, 346].
X_BOUNDS = [-0.25, 0.25]
Y_BOUNDS = [0.0, 400.0]
#: Quantisation bits of a record (the DP noise is far above this precision).
RECORD_BITS = 4
CLIP_NORM = 1.0
APP_DIR = Path(__file__).resolve().parent / "flower-app"


def mean_std(values: list[float], digits: int = 3) -> str:
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


# ------------------------------------------------------------------------------ diabetes


def diabetes_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))
    n_test = len(y) // 5
    te, tr = idx[:n_test], idx[n_test:]
    return X[tr], y[tr], X[te], y[te]


def gaussian_sigma(epsilon: float, delta: float, l2: float, rounds: int = 1) -> float:
    """σ of the Gaussian mechanism with L2 sensitivity ``l2`` that is (ε, δ)-DP over
    ``rounds`` releases (Rényi accounting by Google's dp-accounting, bisection)."""
    import dp_accounting

    def eps(nm: float) -> float:
        acc = dp_accounting.rdp.RdpAccountant()
        acc.compose(dp_accounting.GaussianDpEvent(nm), rounds)
        return float(acc.get_epsilon(delta))

    lo, hi = 1e-3, 1.0
    while eps(hi) > epsilon:
        hi *= 2
    while hi - lo > 1e-6 * hi:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if eps(mid) <= epsilon else (mid, hi)
    return hi * l2


def synthetic_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """20,000 training and 5,000 held-out rows: x uniform in [0, 1]², y = 1 + 2x₁ − x₂ + noise
    (std 0.1) clipped to the declared [−1, 4]."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (25_000, 2))
    y = np.clip(1 + 2 * X[:, 0] - X[:, 1] + rng.normal(0, 0.1, len(X)), -1.0, 4.0)
    return X[:20_000], y[:20_000], X[20_000:], y[20_000:]


#: name → (split, per-feature bounds, target bounds, RMSE digits)
REGRESSIONS: dict[str, tuple[Any, list[float], list[float], int]] = {
    "diabetes": (diabetes_split, X_BOUNDS, Y_BOUNDS, 1),
    "synthetic": (synthetic_split, [0.0, 1.0], [-1.0, 4.0], 3),
}


def rmse(y: np.ndarray, pred: np.ndarray, y_bounds: list[float]) -> float:
    """Root mean squared error of ``pred`` clipped to the declared target bounds."""
    return float(np.sqrt(np.mean((np.clip(pred, y_bounds[0], y_bounds[1]) - y) ** 2)))


def trusted_curator_rmse(name: str, epsilon: float, seed: int) -> float:
    """Held-out RMSE of a trusted curator's Gaussian sufficient-statistics perturbation:
    the same (ε, δ), the same proven sensitivity and the same post-processing as Kaires."""
    from kaires_fl.estimators.linear import (
        denoise_stats,
        solve_normal_equations,
        with_public_count,
    )
    from kaires_fl.privacy.mechanism import block_spans
    from kaires_fl.statistics import LinearRegressionStats

    split, xb, yb, _ = REGRESSIONS[name]
    Xtr, ytr, Xte, yte = split()
    stat = LinearRegressionStats(
        Xtr.shape[1], [xb] * Xtr.shape[1], yb, "record",
        max_measurements=len(ytr), bits=RECORD_BITS,
    )  # fmt: skip
    F = stat.field
    total = F.sum(stat.circuit.truncate(stat.measurements(Xtr, ytr)), axis=0)
    # The same per-block scales as Kaires' noise (σ_j = s·scale_j): the Gaussian RDP of
    # the blocks adds up to one Gaussian of sensitivity √Σ(l2_j/scale_j)² at noise s.
    spans = block_spans(stat.noise_blocks())
    s = gaussian_sigma(
        epsilon, DELTA, math.sqrt(sum((l2 / c) ** 2 for _, _, l2, _, c in spans if l2 > 0))
    )
    per = np.concatenate([np.full(b - a, s * c) for a, b, _, _, c in spans])
    rng = np.random.default_rng(seed)
    z = np.rint(rng.normal(0.0, 1.0, stat.output_len) * per)
    noise = np.array([int(v) % F.MODULUS for v in z], dtype=np.uint64)
    stats = stat.decode_noisy(F.add(total, noise), len(ytr))
    stats = with_public_count(stats, len(ytr), stat._bounds)
    sigma = float(per.max()) * stat.noise_scale()  # the products' σ: the scatter's floor
    coef, intercept = solve_normal_equations(denoise_stats(stats, sigma))
    return rmse(yte, Xte @ coef + intercept, yb)


def regression_rows(name: str, reps: int) -> list[list[str]]:
    from sklearn.linear_model import LinearRegression

    from kaires_fl import KairesLinearRegression
    from kaires_fl.simulation import LocalCommittee

    split, xb, yb, digits = REGRESSIONS[name]
    Xtr, ytr, Xte, yte = split()
    bounds = ([xb] * Xtr.shape[1], yb)
    exact = rmse(yte, LinearRegression().fit(Xtr, ytr).predict(Xte), yb)
    mean_only = rmse(yte, np.full(len(yte), float(np.mean(ytr))), yb)
    label = f"{name} regression, {len(ytr)} records (held-out RMSE)"
    rows = [
        [label, "∞ (no DP)", f"{exact:.{digits}f}", f"{exact:.{digits}f}", "—"],
        ["", "— (predict the mean)", f"{mean_only:.{digits}f}", f"{mean_only:.{digits}f}", "—"],
    ]
    committee = LocalCommittee()
    try:
        for eps in EPSILONS:
            kaires, trusted = [], []
            for r in range(reps):
                est = KairesLinearRegression(
                    n_providers=PROVIDERS, committee=committee, granularity="record",
                    bounds=bounds, frac_bits=RECORD_BITS, epsilon=eps, delta=DELTA,
                    progress=False,
                )  # fmt: skip
                est.fit(Xtr, ytr)
                kaires.append(rmse(yte, est.predict(Xte), yb))
                trusted.append(trusted_curator_rmse(name, eps, seed=r))
            rows.append(["", f"{eps:g}", mean_std(kaires, digits), mean_std(trusted, digits), "—"])
            print(f"{name} ε={eps}: kaires {mean_std(kaires)}, trusted {mean_std(trusted)}")
    finally:
        committee.close()
    return rows


# -------------------------------------------------------------------------------- flower


def _task() -> Any:
    if str(APP_DIR) not in sys.path:
        sys.path.insert(0, str(APP_DIR))
    import task

    return task


def plain_client_app() -> Any:
    """The example's train handler without kaires_mod (what plain Flower runs)."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    task = _task()
    app = ClientApp()

    @app.train()
    def train(msg: Any, context: Any) -> Any:
        X, y = task.load_partition(
            int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
        )
        new = task.train(msg.content["arrays"].to_numpy_ndarrays(), X, y, epochs=5)
        return Message(
            RecordDict(
                {"arrays": ArrayRecord(new), "metrics": MetricRecord({"num-examples": len(y)})}
            ),
            reply_to=msg,
        )

    return app


def _accuracy(arrays: Any) -> float:
    task = _task()
    X, y = task.test_set()
    return float(task.evaluate(arrays.to_numpy_ndarrays(), X, y)[1])


def flower_dp_accuracy(eps: float | None, rounds: int, replace_one: bool = False) -> float:
    """Test accuracy after ``rounds`` of FedAvg (eps None) or Flower's server-side
    fixed-clipping DP calibrated to ε over the rounds by Flower's accountant
    (add-or-remove-one); ``replace_one``: twice that noise multiplier, the Gaussian
    mechanism's calibration for replace-one neighbours (sensitivity 2C), Kaires' relation."""
    from flwr.app import ArrayRecord, ConfigRecord
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
    from flwr.supercore.privacy_accounting import (
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        SamplingMethod,
    )
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    from kaires_fl.bench.update import _grid

    task = _task()
    grid = _grid(plain_client_app(), PROVIDERS)
    strategy: Any = FedAvg(
        fraction_evaluate=0.0, min_available_nodes=PROVIDERS, min_train_nodes=PROVIDERS
    )
    if eps is not None:
        config = PrivacyConfig(
            DELTA, PROVIDERS, NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.NO_AMPLIFICATION
        )

        def spent(nm: float) -> float:
            acc = RdpAccountant(config)
            acc.compose(GaussianPrivacyEvent(nm, PROVIDERS, PROVIDERS), rounds)
            return acc.get_epsilon(DELTA)

        lo, hi = 1e-3, 1.0
        while spent(hi) > eps:
            hi *= 2
        while hi - lo > 1e-5 * hi:
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if spent(mid) <= eps else (mid, hi)
        strategy = DifferentialPrivacyServerSideFixedClipping(
            strategy,
            noise_multiplier=2 * hi if replace_one else hi,
            clipping_norm=CLIP_NORM,
            num_sampled_clients=PROVIDERS,
        )
    res = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(task.initial_arrays()),
        num_rounds=rounds,
        train_config=ConfigRecord({"lr": 0.5}),
    )
    return _accuracy(res.arrays)


def kaires_round_dp(eps: float, rounds: int) -> Any:
    """The per-round DP(ε_r, δ) whose Rényi composition over ``rounds`` rounds of the
    example's model update is (ε, δ), as KairesFedAvg accounts it (bisection on ε_r)."""
    from kaires_fl.strategies.update import ModelUpdateStats

    from kaires_fl import DP
    from kaires_fl.privacy.mechanism import TAIL_SHARE, plan_noise

    task = _task()
    length = sum(int(np.prod(a.shape)) for a in task.initial_arrays())
    stat = ModelUpdateStats(length, clip_norm=CLIP_NORM, weight_cap=1.0)

    def total(e: float) -> float:
        plan = plan_noise(DP(e, DELTA), stat, 4, 1)
        return plan.epsilon(DELTA * (1 - TAIL_SHARE), rounds)

    lo, hi = 1e-4, eps
    while hi - lo > 1e-4 * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(mid) <= eps else (lo, mid)
    return DP(lo, DELTA)


def kaires_accuracy(eps: float, rounds: int) -> tuple[float, float]:
    """(test accuracy, the last round's kaires-epsilon) of KairesFedAvg at ε over rounds."""
    from flwr.app import ArrayRecord, ConfigRecord
    from kaires_fl.strategies import KairesFedAvg, make_kaires_mod

    from kaires_fl.bench.update import _grid
    from kaires_fl.simulation import LocalCommittee

    task = _task()
    plain = plain_client_app()
    from flwr.clientapp import ClientApp

    app = ClientApp(mods=[make_kaires_mod(simulation=True)])

    @app.train()
    def train(msg: Any, context: Any) -> Any:
        return plain(msg, context)

    committee = LocalCommittee()
    try:
        strategy = KairesFedAvg(
            fraction_evaluate=0.0, min_available_nodes=PROVIDERS, min_train_nodes=PROVIDERS,
            committee=committee, clip_norm=CLIP_NORM, num_examples_cap=1,
            dp=kaires_round_dp(eps, rounds),
        )  # fmt: skip
        res = strategy.start(
            grid=_grid(app, PROVIDERS),
            initial_arrays=ArrayRecord(task.initial_arrays()),
            num_rounds=rounds,
            train_config=ConfigRecord({"lr": 0.5}),
        )
        spent = float(res.train_metrics_clientapp[rounds]["kaires-epsilon"])
        return _accuracy(res.arrays), spent
    finally:
        committee.close()


def flower_rows(reps: int, rounds: int) -> list[list[str]]:
    exact = flower_dp_accuracy(None, rounds)
    label = f"Flower app, digits ({rounds} rounds, test accuracy)"
    rows = [[label, "∞ (no DP)", f"{exact:.3f}", f"{exact:.3f}", f"{exact:.3f}"]]
    for eps in EPSILONS:
        kaires, same, flower, spent = [], [], [], []
        for _ in range(reps):
            acc, e = kaires_accuracy(eps, rounds)
            kaires.append(acc)
            spent.append(e)
            same.append(flower_dp_accuracy(eps, rounds, replace_one=True))
            flower.append(flower_dp_accuracy(eps, rounds))
        rows.append(["", f"{eps:g}", mean_std(kaires), mean_std(same), mean_std(flower)])
        print(
            f"flower ε={eps}: kaires {mean_std(kaires)} (kaires-epsilon {max(spent):.3f}), "
            f"flower replace-one {mean_std(same)}, flower add/remove {mean_std(flower)}"
        )
    return rows


def table(rows: list[list[str]]) -> str:
    head = [
        "workload",
        "ε (δ = 1e-5)",
        "Kaires (no trusted party, replace-one)",
        "trusted server, replace-one",
        "Flower server-side DP as its accountant counts (add/remove-one)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=["diabetes", "synthetic", "flower"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    import logging

    logging.getLogger("flwr").setLevel(logging.ERROR)
    t0 = time.process_time()
    rows: list[list[str]] = []
    for name in ("diabetes", "synthetic"):
        if args.only in (None, name):
            rows += regression_rows(name, args.reps)
    if args.only in (None, "flower"):
        rows += flower_rows(args.reps, args.rounds)
    out = table(rows)
    print(out)
    print(f"({math.ceil(time.process_time() - t0)} s of CPU)")
    if args.out:
        args.out.write_text(out + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
