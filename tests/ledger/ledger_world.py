"""Shared helpers for the ledger tests: deterministic identities, committees, policies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kaires_fl.crypto.sign import H, Identity
from kaires_fl.ledger import LedgerConfig, LocalLedger, data_terms

FAST = LedgerConfig(view_timeout=0.05, max_timeout=1.0, status_interval=0.05)


def ident(name: str) -> Identity:
    return Identity.from_seed(H(b"test-identity", name.encode()))


def key(identity: Identity) -> str:
    return identity.public.hex()


def rule(*ids: Identity) -> str:
    return " | ".join(f"ed25519:{key(i)}" for i in ids)


def policy_payload(owner: Identity, pid: str, consumers: list[Identity], **terms: Any) -> dict:
    return {
        "id": pid,
        "rules": {"_evolve": rule(owner), "use": rule(*consumers)},
        "terms": data_terms(key(owner), **terms),
    }


def make_ledger(n: int = 4, **kw: Any) -> LocalLedger:
    kw.setdefault("config", FAST)
    return LocalLedger(n, **kw)


@pytest.fixture
def ledger() -> Iterator[LocalLedger]:
    L = make_ledger(4, balances={key(ident("bob")): 1000, key(ident("carol")): 5})
    yield L
    L.close()


def assert_agreement(L: LocalLedger) -> None:
    """Every honest live node's final blocks agree at every common height."""
    nodes = L.live_nodes()
    top = max(nd.height for nd in nodes)
    for h in range(1, top + 1):
        hashes = {nd.store.block(h)[0].hash for nd in nodes if nd.height >= h}  # type: ignore[index]
        assert len(hashes) == 1, f"two different final blocks at height {h}"
