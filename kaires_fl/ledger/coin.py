"""Balances: minted at genesis (``bal/<key>`` entries), moved by ``coin.transfer``.

Escrow and payment for jobs live in :mod:`kaires_fl.ledger.jobs`; amounts are
non-negative integers (smallest unit), so arithmetic is exact.
"""

from __future__ import annotations

import re
from typing import Any

from kaires_fl.errors import LedgerError
from kaires_fl.ledger.contracts import TxEnv
from kaires_fl.ledger.state import StateView
from kaires_fl.ledger.tx import Tx


def balance_key(pub: str) -> str:
    return f"bal/{pub}"


def balance(view: StateView, pub: str) -> int:
    return int(view.get(balance_key(pub)) or 0)


def coin_transfer(view: StateView, tx: Tx, env: TxEnv) -> dict[str, Any]:
    """Payload ``{"to": hex key, "amount": int > 0}`` from the sender's balance."""
    if not isinstance(tx.payload, dict) or set(tx.payload) != {"to", "amount"}:
        raise LedgerError("coin.transfer payload is exactly {'to': hex key, 'amount': int > 0}")
    to, amount = tx.payload["to"], tx.payload["amount"]
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise LedgerError(f"transfer amount must be a positive integer, got {amount!r}")
    if not isinstance(to, str) or not re.fullmatch(r"[0-9a-f]{64}", to):
        raise LedgerError("transfer 'to' must be a hex Ed25519 public key")
    have = balance(view, tx.sender)
    if have < amount:
        raise LedgerError(f"insufficient balance: {tx.sender[:16]}… has {have}, needs {amount}")
    if to == tx.sender:
        return {}
    return {
        balance_key(tx.sender): have - amount,
        balance_key(to): balance(view, to) + amount,
    }
