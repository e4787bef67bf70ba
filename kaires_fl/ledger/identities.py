"""The registration allow-list of providers and consumers, governed by the ledger roster.

State::

    registration             {"required": bool, "governors": [hex key, ...], "quorum": int}
    ident/<role>/<hex key>   {"height": int}      (role: "provider" | "consumer")

The genesis block writes ``registration`` (:func:`registration_entry`): the governors are
the ledger nodes' keys and the quorum is n − f. While ``required`` is true, only an
admitted provider may own a data policy (``darc.create``/``darc.evolve`` with terms),
only an admitted consumer may create a job, and a job excludes a provider whose owner
was removed since. Without the entry (or with ``required`` false) registration is open
(simulation).

Contracts, each signed by at least ``quorum`` governors (sender + cosigners):

- ``identity.admit`` ``{"role": role, "keys": [hex, ...], "admit": bool}`` — admit or
  remove identities;
- ``identity.require`` ``{"required": bool}`` — switch the allow-list on or off.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from kaires_fl.errors import LedgerError
from kaires_fl.ledger.contracts import TxEnv
from kaires_fl.ledger.state import StateView
from kaires_fl.ledger.tx import Tx

REGISTRATION_KEY = "registration"
PROVIDER, CONSUMER = "provider", "consumer"
ROLES = (PROVIDER, CONSUMER)
#: Most keys one ``identity.admit`` may name.
MAX_KEYS = 1024
_HEX32 = re.compile(r"^[0-9a-f]{64}$")


def ident_key(role: str, pub: str) -> str:
    """State key marking ``pub`` (hex) as an admitted ``role``."""
    return f"ident/{role}/{pub}"


def registration_entry(roster: Sequence[str], f: int, required: bool = True) -> dict[str, Any]:
    """The genesis ``registration`` entry: governed by ``roster`` with quorum n − f."""
    return {"required": bool(required), "governors": list(roster), "quorum": len(roster) - f}


def registration_required(view: Any) -> bool:
    """Whether the allow-list is on (``view`` has ``get``)."""
    reg = view.get(REGISTRATION_KEY)
    return bool(reg is not None and reg.get("required"))


def check_registered(view: Any, pub: str, role: str) -> None:
    """Raise LedgerError if the allow-list is on and ``pub`` is not an admitted ``role``."""
    if registration_required(view) and view.get(ident_key(role, pub)) is None:
        raise LedgerError(
            f"{role} {pub[:16]}… is not on the ledger's registration allow-list: ask the "
            f"roster to admit it (identity.admit with role {role!r})"
        )


def _check_governed(view: StateView, env: TxEnv, what: str) -> None:
    reg = view.get(REGISTRATION_KEY)
    if reg is None:
        raise LedgerError(
            f"{what}: this ledger has no registration policy (its genesis did not create one)"
        )
    got = len(set(env.signers) & set(reg["governors"]))
    if got < reg["quorum"]:
        raise LedgerError(
            f"{what} needs {reg['quorum']} signatures of the ledger roster, got {got}"
        )


def identity_admit(view: StateView, tx: Tx, env: TxEnv) -> dict[str, Any]:
    """Contract ``identity.admit`` (module docstring)."""
    p = tx.payload
    if (
        not isinstance(p, dict)
        or set(p) != {"role", "keys", "admit"}
        or p["role"] not in ROLES
        or not isinstance(p["admit"], bool)
        or not isinstance(p["keys"], list)
        or not 1 <= len(p["keys"]) <= MAX_KEYS
        or not all(isinstance(k, str) and _HEX32.match(k) for k in p["keys"])
    ):
        raise LedgerError(
            f"identity.admit payload is {{'role': one of {ROLES}, 'keys': [1..{MAX_KEYS} hex "
            "Ed25519 keys], 'admit': bool}"
        )
    _check_governed(view, env, "identity.admit")
    value = {"height": env.height} if p["admit"] else None
    return {ident_key(p["role"], k): value for k in p["keys"]}


def identity_require(view: StateView, tx: Tx, env: TxEnv) -> dict[str, Any]:
    """Contract ``identity.require`` (module docstring)."""
    p = tx.payload
    if not isinstance(p, dict) or set(p) != {"required"} or not isinstance(p["required"], bool):
        raise LedgerError("identity.require payload is {'required': bool}")
    _check_governed(view, env, "identity.require")
    reg = view.get(REGISTRATION_KEY)
    return {REGISTRATION_KEY: {**(reg or {}), "required": p["required"]}}
