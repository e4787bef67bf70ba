"""Fuzz: every ledger decoder fed arbitrary or mutated bytes raises a KairesError subclass
(EncodingError or AuditError), never another exception (issue 9, finding 15)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_world import ident, key, make_ledger, rule

from kaires_fl.errors import AuditError, EncodingError, KairesError
from kaires_fl.ledger import StateProof, TxProof, verify_chain
from kaires_fl.ledger.block import Block, Genesis, decode_certified
from kaires_fl.ledger.encoding import MAX_DEPTH, canonical, decode_canonical

ALICE, BOB = ident("fuzz-alice"), ident("fuzz-bob")
NO_FIXTURE_CHECK = [HealthCheck.function_scoped_fixture]


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, Any]]:
    L = make_ledger(4, balances={key(BOB): 100})
    c = L.client()
    c.execute(ALICE, "darc.create", {"id": "fz", "rules": {"_evolve": rule(ALICE)}})
    done = c.execute(BOB, "coin.transfer", {"to": key(ALICE), "amount": 7})
    L.run_for(0.1)
    raws = c.raw_blocks()
    yield {
        "L": L,
        "genesis": L.genesis,
        "raws": raws,
        "records": {
            "block": raws[-1],
            "txproof": c.prove_tx(done.tx_id).to_bytes(),
            "stateproof": c.prove(f"bal/{key(ALICE)}").to_bytes(),
            "genesis": L.genesis.encode(),
        },
    }
    L.close()


def _decoders(genesis: Genesis) -> dict[str, Callable[[bytes], Any]]:
    def chain(data: bytes) -> Any:
        return verify_chain([data], genesis, replay=True)

    def txproof(data: bytes) -> Any:
        return TxProof.from_bytes(data).verify(genesis)

    def stateproof(data: bytes) -> Any:
        return StateProof.from_bytes(data).verify(genesis)

    return {
        "canonical": decode_canonical,
        "certified": decode_certified,
        "block": Block.from_bytes,
        "chain": chain,
        "txproof": txproof,
        "stateproof": stateproof,
        "genesis": Genesis.decode,
    }


def _only_typed(fn: Callable[[bytes], Any], data: Any) -> None:
    with contextlib.suppress(KairesError):
        fn(data)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4)
    ),
    max_leaves=20,
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes(world: dict[str, Any], data: bytes) -> None:
    for fn in _decoders(world["genesis"]).values():
        _only_typed(fn, data)


def _replace_somewhere(obj: Any, path: list[int], new: Any) -> Any:
    """``obj`` with the sub-value chosen by ``path`` (indices mod the size) replaced."""
    if not path or not isinstance(obj, dict | list) or not obj:
        return new
    i, rest = path[0], path[1:]
    if isinstance(obj, dict):
        k = sorted(obj)[i % len(obj)]
        return {**obj, k: _replace_somewhere(obj[k], rest, new)}
    j = i % len(obj)
    return [*obj[:j], _replace_somewhere(obj[j], rest, new), *obj[j + 1 :]]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    which=st.sampled_from(["block", "txproof", "stateproof", "genesis"]),
    path=st.lists(st.integers(min_value=0, max_value=50), max_size=6),
    new=json_values,
)
def test_structurally_mutated_records(
    world: dict[str, Any], which: str, path: list[int], new: Any
) -> None:
    """A real record with one sub-value swapped for any JSON value (wrong type, huge int,
    float, deep list...) re-encoded canonically: typed errors only."""
    obj = decode_canonical(world["records"][which])
    data = canonical(_replace_somewhere(obj, path, new))
    for fn in _decoders(world["genesis"]).values():
        _only_typed(fn, data)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    which=st.sampled_from(["block", "txproof", "stateproof", "genesis"]),
    pos=st.integers(min_value=0),
    byte=st.integers(min_value=0, max_value=255),
    cut=st.booleans(),
)
def test_byte_mutated_records(
    world: dict[str, Any], which: str, pos: int, byte: int, cut: bool
) -> None:
    raw = world["records"][which]
    i = pos % len(raw)
    data = raw[:i] if cut else raw[:i] + bytes([byte]) + raw[i + 1 :]
    if data == raw:
        return
    name = {"block": "chain", "txproof": "txproof", "stateproof": "stateproof"}.get(which)
    fns = _decoders(world["genesis"])
    for fn in fns.values():
        _only_typed(fn, data)
    if name is not None:
        with pytest.raises((EncodingError, AuditError)):
            fns[name](data)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000, 200_000])
def test_deep_nesting_is_refused_not_a_recursion_error(depth: int) -> None:
    data = b"[" * depth + b"]" * depth
    with pytest.raises(EncodingError, match="deeper"):
        decode_canonical(data)
    with pytest.raises(AuditError):
        verify_chain([b'{"block":' + data + b',"cert":1}'], make_genesis_stub())
    nested: Any = 0
    for _ in range(min(depth, 10_000)):
        nested = [nested]
    with pytest.raises(EncodingError):
        decode_canonical(canonical(nested))  # too deep to encode (>= 5000) or to decode


def make_genesis_stub() -> Genesis:
    return Genesis("stub", (key(ALICE),), 0)


def test_out_of_range_and_wrong_typed_fields_are_encoding_errors(world: dict[str, Any]) -> None:
    block = decode_canonical(world["records"]["block"])
    for field, bad in [
        ("height", 2**70),
        ("height", -1),
        ("height", "1"),
        ("height", True),
        ("time_ms", 1.5),
        ("proposer", 2**40),
        ("chain", 7),
    ]:
        hdr = {**block["block"]["header"], field: bad}
        data = canonical({**block, "block": {**block["block"], "header": hdr}})
        with pytest.raises(EncodingError):
            decode_certified(data)
        with pytest.raises(AuditError):
            verify_chain([data], world["genesis"])
    for bad_cert in [{**block["cert"], "view": 2**64}, {**block["cert"], "votes": [[0]]}, []]:
        with pytest.raises(EncodingError):
            decode_certified(canonical({**block, "cert": bad_cert}))
    with pytest.raises(AuditError, match="expected a stored block record"):
        verify_chain([object()], world["genesis"])  # type: ignore[list-item]
    with pytest.raises(EncodingError):
        decode_canonical("not bytes")  # type: ignore[arg-type]
    with pytest.raises(EncodingError):
        TxProof.from_bytes(json.dumps([1, 2]).encode())


def test_real_records_still_decode(world: dict[str, Any]) -> None:
    g = world["genesis"]
    assert verify_chain(world["raws"], g, replay=True) == len(world["raws"])
    TxProof.from_bytes(world["records"]["txproof"]).verify(g)
    StateProof.from_bytes(world["records"]["stateproof"]).verify(g)
    assert Genesis.decode(world["records"]["genesis"]).hash == g.hash
    block, _ = decode_certified(world["records"]["block"])
    again = Block.from_bytes(block.encoded)
    assert again.hash == block.hash and again.encoded == block.encoded
