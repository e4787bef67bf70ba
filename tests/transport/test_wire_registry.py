"""The wire registry: every message that crosses processes, unique tags, total decoding."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kaires_fl
from kaires_fl import schema, wire
from kaires_fl.crypto.sign import H, Identity
from kaires_fl.errors import EncodingError
from kaires_fl.ledger.consensus import Status, TxGossip
from kaires_fl.ledger.tx import make_tx
from kaires_fl.secret_management.dkg import Complaint


def _all_messages() -> set[type]:
    """Every schema.Message subclass defined in the package (importing every module)."""
    for info in pkgutil.walk_packages(kaires_fl.__path__, "kaires_fl."):
        try:
            importlib.import_module(info.name)
        except ImportError:  # an optional dependency (e.g. Flower) is not installed
            continue
    out: set[type] = set()
    stack = list(schema.Message.__subclasses__())
    while stack:
        c = stack.pop()
        stack.extend(c.__subclasses__())
        # The Flower layer's messages travel inside Flower's own messages, never over the
        # committee transport.
        if c.__module__.startswith("kaires_fl.") and not c.__module__.startswith(
            "kaires_fl.strategies."
        ):
            out.add(c)
    return out


def test_every_message_of_the_package_is_registered():
    """Completeness: a module defining a new Message but missing from WIRE_MODULES fails here
    (its messages could not cross processes)."""
    registered = set(wire.registry().values())
    missing = sorted(f"{c.__module__}.{c.__qualname__}" for c in _all_messages() - registered)
    assert not missing, f"add these modules to kaires_fl.wire.WIRE_MODULES: {missing}"


def test_tags_are_unique():
    """Integrity: no two wire messages share a tag, so a frame never decodes as another type."""
    tags = [wire.tag_of(c) for c in _all_messages()]
    dup = sorted({t for t in tags if tags.count(t) > 1})
    assert not dup, f"wire tags used twice: {dup}"
    assert len(wire.registry()) == len(set(tags))


def test_collect_refuses_a_tag_collision():
    """Integrity: the registry refuses two message classes with one tag."""

    class Status(schema.Message, frozen=True):  # same tag as the ledger's Status
        height: int

    mod = Status.__module__
    with pytest.raises(EncodingError, match="wire tag 'Status'"):
        wire.collect((*wire.WIRE_MODULES, mod))


def _samples() -> list[object]:
    ident = Identity.from_seed(H(b"wire-test"))
    tx = make_tx("chain", "coin.transfer", {"to": "ab" * 32, "amount": 1}, 1, ident)
    return [Status(3, 1), Complaint(1, 2), TxGossip((tx,))]


@pytest.mark.parametrize("msg", _samples(), ids=lambda m: type(m).__name__)
def test_frame_roundtrip(msg):
    data = wire.encode_frame("ledger-0", "ledger-1", msg)
    src, dst, body = wire.decode_frame(data)
    assert (src, dst) == ("ledger-0", "ledger-1")
    assert type(body) is type(msg) and schema.encode(body) == schema.encode(msg)


@pytest.mark.parametrize("msg", _samples(), ids=lambda m: type(m).__name__)
def test_frame_from_an_encoded_body_is_the_same_bytes(msg):
    """A broadcast encodes its message once; its frames are byte for byte encode_frame's."""
    body = wire.encode_body(msg)
    assert wire.frame_from_body("ledger-0", "ledger-1", body) == wire.encode_frame(
        "ledger-0", "ledger-1", msg
    )
    assert schema.encode(wire.Frame("ledger-0", "ledger-1", msg)) == wire.encode_frame(
        "ledger-0", "ledger-1", msg
    )


def test_encode_refuses_what_is_not_a_wire_message():
    with pytest.raises(EncodingError, match="not a registered wire message"):
        wire.encode_frame("a", "b", {"not": "a message"})
    with pytest.raises(EncodingError, match="256"):
        wire.encode_frame("a" * 300, "b", Status(1, 1))


def test_size_limit(monkeypatch):
    """Robustness: an over-size frame is refused on both sides without decoding it."""
    data = wire.encode_frame("ledger-0", "ledger-1", Status(1, 1))
    monkeypatch.setattr(wire, "MAX_FRAME_BYTES", len(data) - 1)
    with pytest.raises(EncodingError, match="exceeds"):
        wire.decode_frame(data)
    with pytest.raises(EncodingError, match="exceeds"):
        wire.encode_frame("ledger-0", "ledger-1", Status(1, 1))


def _decode_or_refuse(data: bytes) -> None:
    try:
        src, dst, body = wire.decode_frame(data)
    except EncodingError:
        return
    assert isinstance(src, str) and isinstance(dst, str)
    assert type(body) in set(wire.registry().values())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_fuzz_arbitrary_bytes(data):
    """Robustness: arbitrary bytes decode to a registered message or raise EncodingError."""
    _decode_or_refuse(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(range(3)),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 64),
)
def test_fuzz_mutated_frames(which, flips, cut):
    """Robustness: a valid frame with bytes changed or truncated decodes or raises
    EncodingError, never another exception."""
    data = bytearray(wire.encode_frame("ledger-0", "ledger-1", _samples()[which]))
    for pos, val in flips:
        data[pos % len(data)] = val
    _decode_or_refuse(bytes(data[: max(0, len(data) - cut)]))
