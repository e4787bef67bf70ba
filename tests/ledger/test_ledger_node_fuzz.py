"""Fuzz: LedgerNode.on_message is a service boundary (issue 9, finding 15).

Arbitrary bytes, arbitrary Python objects, byte-mutated encodings of real consensus
messages and real messages with fields swapped for values of any type never make the
handler raise; afterwards the ledger still commits a valid transaction.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_world import ident, make_ledger, rule

from kaires_fl import schema
from kaires_fl.ledger import LocalLedger
from kaires_fl.ledger.consensus import (
    LedgerMessage,
    Proposal,
    Status,
    SyncRequest,
    SyncResponse,
    TxGossip,
    ViewChange,
    Vote,
)
from kaires_fl.transport import Envelope

NO_FIXTURE_CHECK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
KINDS = (Proposal, Vote, ViewChange, Status, SyncRequest, SyncResponse, TxGossip)


@pytest.fixture(scope="module")
def world() -> Any:
    L = make_ledger(4)
    seen: dict[type, list[Any]] = {}

    def spy(env: Envelope) -> bool:
        if isinstance(env.payload, KINDS):
            seen.setdefault(type(env.payload), []).append(env.payload)
        return True

    remove = L.network.add_filter(spy)
    c = L.client()
    owner = ident("node-fuzz")
    for k in range(2):
        c.execute(owner, "darc.create", {"id": f"nf{k}", "rules": {"_evolve": rule(owner)}})
    L.crash(leader_of_next(L))  # a view change, so ViewChange and new-view Proposal flow
    c.execute(owner, "darc.create", {"id": "nf-vc", "rules": {"_evolve": rule(owner)}})
    L.restart(next(i for i, nd in enumerate(L.nodes) if nd is None))
    L.run_for(0.5)  # the restarted node syncs: SyncRequest / SyncResponse
    remove()
    samples = [m for kind in KINDS for m in seen.get(kind, [])[:5]]
    assert {type(m) for m in samples} >= {Proposal, Vote, ViewChange, Status, SyncRequest}
    yield {"L": L, "samples": samples}
    L.close()


def leader_of_next(L: LocalLedger) -> int:
    from kaires_fl.ledger.consensus import leader_of

    return leader_of(L.best_node().height + 1, 0, L.n)


anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=40),
    lambda kids: st.lists(kids, max_size=3) | st.tuples(kids, kids),
    max_leaves=8,
)


def _feed(L: LocalLedger, msg: Any) -> None:
    node = L.nodes[0]
    assert node is not None
    node.on_message(L.addresses[1], msg)  # must never raise


@settings(max_examples=150, deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(msg=st.binary(max_size=200) | anything)
def test_arbitrary_bytes_and_objects(world: Any, msg: Any) -> None:
    _feed(world["L"], msg)


@settings(max_examples=200, deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(data=st.data(), pos=st.integers(min_value=0), byte=st.integers(0, 255))
def test_byte_mutated_real_messages(world: Any, data: Any, pos: int, byte: int) -> None:
    msg = data.draw(st.sampled_from(world["samples"]))
    raw = schema.encode(msg)
    i = pos % len(raw)
    mutated = raw[:i] + bytes([byte]) + raw[i + 1 :]
    _feed(world["L"], mutated)
    _feed(world["L"], raw[:i])


@settings(max_examples=200, deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(data=st.data(), value=anything)
def test_real_messages_with_a_field_of_any_type(world: Any, data: Any, value: Any) -> None:
    """In-process objects skip decoding: wrongly typed fields reach the handler itself."""
    msg = data.draw(st.sampled_from(world["samples"]))
    name = data.draw(st.sampled_from(msg.__struct_fields__))
    _feed(world["L"], msgspec.structs.replace(msg, **{name: value}))


def test_every_sample_decodes_and_the_ledger_still_commits(world: Any) -> None:
    L = world["L"]
    for msg in world["samples"]:
        assert schema.decode(schema.encode(msg), LedgerMessage) == msg
    c = L.client()
    owner = ident("node-fuzz-after")
    before = L.nodes[0].height
    done = c.execute(owner, "darc.create", {"id": "after", "rules": {"_evolve": rule(owner)}})
    assert done.result.ok
    assert L.network.run_until(lambda: L.nodes[0].height > before, 5.0)
    assert L.nodes[0].ignored > 0
