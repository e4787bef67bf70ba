"""Kaires-FL for Flower (≥ 1.42, Message API): drop-in strategies and a client mod.

::

    from kaires_fl.strategies import KairesFedAvg, KairesStatsStrategy, kaires_mod

    client_app = ClientApp(mods=[kaires_mod])          # unchanged train handler
    strategy = KairesFedAvg(min_available_nodes=10, num_examples_cap=1024)  # + FedAvg's
    strategy.start(grid=grid, initial_arrays=arrays, num_rounds=3)

A deployed node configures its key, trust anchors and grants in its node config; a
simulation uses ``make_kaires_mod(simulation=True)`` (docs/flower.md).

Importing this package imports Flower but none of Kaires' cryptography: that is loaded
on first use (the ServerApp's first round, a client's first Kaires message), so Ray
workers start as fast as with plain Flower.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CommitteeConnection",
    "KairesFedAvg",
    "KairesStatsStrategy",
    "ModelUpdateStats",
    "ProviderPolicy",
    "RoundResult",
    "kaires_mod",
    "make_kaires_mod",
]

_WHERE = {
    "KairesFedAvg": "fedavg",
    "KairesStatsStrategy": "stats",
    "kaires_mod": "mod",
    "make_kaires_mod": "mod",
    "CommitteeConnection": "committee",
    "RoundResult": "committee",
    "ModelUpdateStats": "update",
    "ProviderPolicy": "provider",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
