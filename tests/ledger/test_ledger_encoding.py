"""Canonical encoding: the orjson fast path is byte-identical to the standard library's."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaires_fl.errors import EncodingError
from kaires_fl.ledger import encoding
from kaires_fl.ledger.encoding import canonical, decode_canonical, reference_canonical

_keys = st.text(max_size=6) | st.sampled_from(["a", "b", "id", "e1", "null", "x.y"])
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["ab" * 32, "1e5", "null", "true", '"', "\\", "\x7f", "\x1f", "é"])
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_canonical_matches_the_reference(value: object) -> None:
    data = canonical(value)
    assert data == reference_canonical(value)
    assert decode_canonical(data) == value
    assert canonical(decode_canonical(data)) == data


@pytest.mark.parametrize(
    "value",
    [1e-7, 1e16, 1e-5, -0.0, 5e-324, {"a": 1.5}, [1e22], {"k": None}, "é", {"é": 1}, 2**64],
)
def test_values_the_fast_path_would_format_differently(value: object) -> None:
    assert canonical(value) == reference_canonical(value)


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), {"a": float("-inf")}, {1: 2, "a": 3}, b"x", {1, 2}]
)
def test_non_ledger_values_are_refused(value: object) -> None:
    with pytest.raises(EncodingError):
        canonical(value)


def test_without_orjson_the_bytes_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    values = [{"b": [1, True, None], "a": "x" * 70}, {"f": 0.1}, "é", 7, [], {}]
    fast = [canonical(v) for v in values]
    monkeypatch.setattr(encoding, "_orjson", None)
    assert [canonical(v) for v in values] == fast
    assert [decode_canonical(b) for b in fast] == values


@pytest.mark.parametrize(
    "bad",
    [
        b'{"b":1,"a":2}',
        b'{"a":1 }',
        b"18446744073709551616.0",
        b'{"a":1,"a":1}',
        b'"\\u00E9"',
        b'"\xc3\xa9"',
        b"1E5",
        b"NaN",
        b"[1,]",
    ],
)
def test_decode_refuses_non_canonical_bytes(bad: bytes) -> None:
    with pytest.raises(EncodingError):
        decode_canonical(bad)


def test_decode_keeps_big_integers_exact() -> None:
    # orjson reads integers beyond 64 bits as floats; the record must still decode exactly.
    big = {"bal": 2**80 + 1}
    assert decode_canonical(canonical(big)) == big
    assert isinstance(decode_canonical(b"18446744073709551617"), int)
    assert not math.isnan(decode_canonical(b"1.5"))


def test_prepared_record_round_trips_through_the_schema() -> None:
    from ledger_world import ident

    from kaires_fl import schema
    from kaires_fl.crypto.sign import H
    from kaires_fl.ledger import Block, BlockHeader, TxResult, make_tx
    from kaires_fl.ledger.block import decode_block
    from kaires_fl.ledger.consensus import PreparedCert
    from kaires_fl.ledger.tx import Tx

    tx: Tx = make_tx("c" * 64, "coin.transfer", {"to": "ab", "amount": 1}, 1, ident("p"))
    hd = BlockHeader("c" * 64, 3, "0" * 64, 5, 1, 1, H(b"t").hex(), H(b"s").hex())
    block = Block(hd, (tx,), (TxResult(False, "no"),))
    p = PreparedCert.of(2, block, ((0, b"\x01" * 64),))
    again = schema.decode(schema.encode(p), PreparedCert)
    assert again == p and again.view == 2
    assert again.block == block.encoded == canonical(block.to_obj())
    assert decode_block(again.block).hash == block.hash


def test_signed_tx_hash_is_the_hash_of_its_body() -> None:
    from ledger_world import ident

    from kaires_fl.ledger.tx import Tx, make_tx

    tx = make_tx("c" * 64, "coin.transfer", {"to": "ab", "amount": 1}, 4, ident("s"), [ident("t")])
    rebuilt = Tx(tx.chain, tx.kind, tx.payload, tx.signers, tx.counter, tx.signatures)
    assert tx.hash == rebuilt.hash and tx.id == rebuilt.id == rebuilt.hash.hex()
    rebuilt.verify_signatures()
