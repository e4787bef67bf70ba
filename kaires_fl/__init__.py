"""Kaires-FL: fully decentralized, privacy-preserving federated learning.

CALYPSO (a BFT ledger + a trustee committee) for access control and custody,
Prio (secret-shared submissions with FLP validity proofs) for privacy and
robustness against bad clients, and BFT Prio (Shamir sharing + robust
reconstruction) for robustness against bad servers.
"""

from __future__ import annotations

from typing import Any

from kaires_fl.privacy import DP

__version__ = "0.1.0"

__all__ = [
    "DP",
    "KairesLinearRegression",
    "KairesLogisticRegression",
    "KairesPCA",
    "KairesRidge",
    "KairesStandardScaler",
    "__version__",
    "connect",
]


def __getattr__(name: str) -> Any:
    # The estimators pull in scikit-learn and the whole stack: import them lazily so that
    # `import kaires_fl.arith.field` stays cheap (Ray workers, the CLI's start-up).
    if name in (
        "KairesLinearRegression",
        "KairesLogisticRegression",
        "KairesPCA",
        "KairesRidge",
        "KairesStandardScaler",
    ):
        from kaires_fl import estimators

        return getattr(estimators, name)
    if name == "connect":  # kaires_fl.connect("group.toml"): a deployed committee
        from kaires_fl.node.client import connect

        return connect
    raise AttributeError(f"module 'kaires_fl' has no attribute {name!r}")
