"""Shared helpers for the ledger tests: deterministic identities, committees, policies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.crypto.sign import H, Identity
from kaires_fl.ledger import LedgerConfig, LocalLedger, data_terms
from kaires_fl.ledger.committees import committee_id, committee_key, quorum_of
from kaires_fl.ledger.darc import bound_policy_id, policy_owner

FAST = LedgerConfig(view_timeout=0.05, max_timeout=1.0, status_interval=0.05)


def ident(name: str) -> Identity:
    return Identity.from_seed(H(b"test-identity", name.encode()))


def key(identity: Identity) -> str:
    return identity.public.hex()


def rule(*ids: Identity) -> str:
    return " | ".join(f"ed25519:{key(i)}" for i in ids)


# The aggregation committee every test ledger has registered at genesis (n = 4, t = 1).
AGGS = [ident(f"agg{i}") for i in range(4)]
AGG_BOXES = [EnvelopeKeyPair.from_seed(H(b"test-agg-box", str(i).encode())) for i in range(4)]
COMMITTEE = committee_id([key(a) for a in AGGS], [b.public.hex() for b in AGG_BOXES], 1)


def committee_state() -> dict[str, Any]:
    members = [
        {"sign": key(a), "box": b.public.hex()} for a, b in zip(AGGS, AGG_BOXES, strict=True)
    ]
    return {committee_key(COMMITTEE): {"members": members, "n": 4, "t": 1, "quorum": quorum_of(1)}}


def pol(owner: Identity, name: str) -> str:
    """The owner-bound policy id of ``owner``'s policy ``name``."""
    return bound_policy_id(name, key(owner))


def policy_payload(owner: Identity, pid: str, consumers: list[Identity], **terms: Any) -> dict:
    terms.setdefault("committees", [COMMITTEE])
    terms.setdefault("min_providers", 1)
    return {
        "id": pid if policy_owner(pid) else pol(owner, pid),
        "rules": {"_evolve": rule(owner), "use": rule(*consumers)},
        "terms": data_terms(key(owner), **terms),
    }


def make_ledger(n: int = 4, **kw: Any) -> LocalLedger:
    kw.setdefault("config", FAST)
    kw.setdefault("state", committee_state())
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
