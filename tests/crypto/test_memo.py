"""Remembered checks (kaires_fl.crypto.memo): a pass is reused only for the exact same bytes.

Each test counts the underlying libsodium check, so it fails both if a remembered pass
is not reused (no speed-up) and if anything but the exact bytes of a pass is let through
(a tampered signature, point or proof, or a check that failed before).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import bindings as nb
from nacl.signing import VerifyKey

from kaires_fl.crypto import group, memo, proofs, sign
from kaires_fl.crypto.group import H_POINT, Point, Scalar
from kaires_fl.crypto.proofs import (
    DLEQProof,
    SchnorrProof,
    dleq_prove,
    dleq_verify,
    schnorr_prove,
    schnorr_verify,
)
from kaires_fl.crypto.sign import Identity, is_valid, verify
from kaires_fl.errors import EncodingError, InvalidProof

CTX = b"test/memo"
VARIANTS = ["ok", "key", "ctx", "msg", "sig"]
ORDER8 = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    memo.clear_all()
    yield
    memo.clear_all()


def _counting(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    calls: list[int] = []
    real: Callable[..., Any] = getattr(owner, name)

    def counted(*a: Any, **kw: Any) -> Any:
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(owner, name, counted)
    return calls


def _flip(b: bytes, i: int = 0) -> bytes:
    return b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]


# ---- signatures --------------------------------------------------------------------------
@pytest.mark.parametrize("length", [32, 5000])  # kept as it is / keyed by its digest
def test_signature_pass_is_reused_only_for_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch, length: int
) -> None:
    calls = _counting(monkeypatch, VerifyKey, "verify")
    alice, bob = Identity.from_seed(b"a" * 32), Identity.from_seed(b"b" * 32)
    msg = bytes(range(256)) * (length // 256) + b"x" * (length % 256)
    sig = alice.sign(CTX, msg)
    verify(alice.public, CTX, msg, sig)
    verify(alice.public, CTX, msg, sig)
    assert len(calls) == 1
    for bad in [
        (bob.public, CTX, msg, sig),  # another key
        (alice.public, CTX + b"!", msg, sig),  # another context
        (alice.public, CTX, _flip(msg, len(msg) - 1), sig),  # another message
        (alice.public, CTX, msg, _flip(sig, 40)),  # another signature
    ]:
        for _ in range(2):  # a failure is checked again every time
            with pytest.raises(InvalidProof):
                verify(*bad)
    assert len(calls) == 1 + 4 * 2


def test_mutable_buffers_are_checked_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch, VerifyKey, "verify")
    alice = Identity.from_seed(b"a" * 32)
    buf = bytearray(b"hello")
    sig = alice.sign(CTX, bytes(buf))
    assert is_valid(alice.public, CTX, buf, sig)  # type: ignore[arg-type]
    buf[0] ^= 1  # mutated after the pass: must not ride on it
    assert not is_valid(alice.public, CTX, buf, sig)  # type: ignore[arg-type]
    assert len(calls) == 2


@settings(max_examples=30, deadline=None)
@given(
    msgs=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    ops=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(VARIANTS)), max_size=12),
)
def test_signature_verdicts_match_libsodium(msgs: list[bytes], ops: list[tuple[int, str]]) -> None:
    """Any sequence of genuine and altered checks: the same verdict as libsodium's own."""
    memo.clear_all()
    ids = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(2)]
    for i, what in ops:
        msg = msgs[i % len(msgs)]
        pub, ctx, sig = ids[0].public, CTX, ids[0].sign(CTX, msg)
        if what == "key":
            pub = ids[1].public
        elif what == "ctx":
            ctx = b"other"
        elif what == "msg":
            msg = msg + b"\x00"
        elif what == "sig":
            sig = _flip(sig, i)
        framed = len(ctx).to_bytes(2, "little") + ctx + msg
        try:
            nb.crypto_sign_open(sig + framed, pub)
            expected = True
        except Exception:
            expected = False
        assert is_valid(pub, ctx, msg, sig) is expected is (what == "ok")


# ---- points ------------------------------------------------------------------------------
def test_point_validation_is_reused_only_for_a_valid_encoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _counting(monkeypatch, group._nb, "crypto_core_ed25519_is_valid_point")
    p = (Point.base() * Scalar(12345)).to_bytes()
    assert Point.from_bytes(p) == Point.from_bytes(p)
    assert len(calls) == 1
    torsioned = nb.crypto_core_ed25519_add(p, ORDER8)
    for _ in range(2):
        with pytest.raises(EncodingError, match="invalid group element"):
            Point.from_bytes(torsioned)
    assert len(calls) == 3


def test_unchecked_decoding_never_vouches_for_a_point() -> None:
    torsioned = nb.crypto_core_ed25519_add(Point.base().to_bytes(), ORDER8)
    Point.from_bytes(torsioned, subgroup_check=False)  # skipped check: nothing remembered
    with pytest.raises(EncodingError, match="invalid group element"):
        Point.from_bytes(torsioned)


def test_memory_is_bounded_oldest_first() -> None:
    m = memo.PassedChecks("test", 3)
    for k in range(5):
        m.remember(k)
    assert len(m) == 3
    assert not m.passed(0) and not m.passed(1) and m.passed(4)
    with pytest.raises(ValueError):
        memo.PassedChecks("test", 0)


# ---- sigma proofs ------------------------------------------------------------------------
def test_schnorr_pass_is_reused_only_for_the_same_statement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _counting(monkeypatch, proofs, "_schnorr_challenge")
    x = Scalar(777)
    X = Point.base() * x
    pr = schnorr_prove(x, CTX)
    calls.clear()
    schnorr_verify(pr, X, CTX)
    schnorr_verify(pr, X, CTX)
    assert len(calls) == 1
    other = SchnorrProof.from_bytes(_flip(pr.to_bytes(), 40))
    for args in [(other, X, CTX), (pr, X + Point.base(), CTX), (pr, X, CTX + b"!")]:
        for _ in range(2):
            with pytest.raises(InvalidProof):
                schnorr_verify(*args)
    with pytest.raises(InvalidProof):
        schnorr_verify(pr, X, CTX, base=H_POINT)
    assert len(calls) == 1 + 3 * 2 + 1


def test_dleq_pass_is_reused_only_for_the_same_statement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _counting(monkeypatch, proofs, "_dleq_challenge")
    x = Scalar(4242)
    G = Point.base()
    X1, X2 = G * x, H_POINT * x
    pr = dleq_prove(x, G, H_POINT, CTX)
    calls.clear()
    dleq_verify(pr, G, X1, H_POINT, X2, CTX)
    dleq_verify(pr, G, X1, H_POINT, X2, CTX)
    assert len(calls) == 1
    forged = DLEQProof.from_bytes(_flip(pr.to_bytes(), 3))
    for args in [
        (forged, G, X1, H_POINT, X2, CTX),
        (pr, G, X1, H_POINT, X2 + G, CTX),
        (pr, G, X1 + G, H_POINT, X2, CTX),
        (pr, G, X1, H_POINT, X2, CTX + b"!"),
    ]:
        for _ in range(2):
            with pytest.raises(InvalidProof):
                dleq_verify(*args)
    assert len(calls) == 1 + 4 * 2


def test_stats_count_hits_and_misses() -> None:
    alice = Identity.from_seed(b"a" * 32)
    sig = alice.sign(CTX, b"m")
    for _ in range(3):
        verify(alice.public, CTX, b"m", sig)
    assert memo.stats()["signature"] == (2, 1)
    assert sign._VERIFIED.passed((alice.public, CTX, sig, b"m"))
