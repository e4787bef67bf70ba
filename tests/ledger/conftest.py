"""Fixtures of the ledger tests (helpers live in ledger_world: a unique module name)."""

from ledger_world import ledger

__all__ = ["ledger"]
