"""The contract registry and the transaction executor (the ledger's state machine).

A *contract* is a function ``apply(view, tx, env) -> writes``:

- ``view`` (:class:`~kaires_fl.ledger.state.StateView`) reads any state entry,
  ``view.get(key)`` / ``view.keys(prefix)`` (e.g. a write checks that a policy exists);
- ``tx`` is the :class:`~kaires_fl.ledger.tx.Tx`, signatures already verified;
- ``env`` (:class:`TxEnv`) gives the block height and time, the tx id and the signers;
- it returns the entries to write (``{key: JSON value}``, None deletes), or raises
  :class:`~kaires_fl.errors.LedgerError` whose message is the recorded reason.

A contract must be deterministic (same state + tx → same writes on every node) and
must treat what ``view.get`` returns as read-only (it is shared with the node's cache):
build new values, e.g. ``{**entry, "status": "done"}``. Register one with
:func:`register_contract` (``kind`` namespaced, e.g. ``"calypso.write"``); every node
of a ledger must have the same registry.

The executor (:func:`execute_tx`) checks the sender's counter (``ctr/<sender>``, must be
above the last one), runs the contract, and on success writes its entries (all or none) plus the new
counter. Any exception a contract raises (but MemoryError) is a rejection recorded with
its reason: a peer's payload can never stop a node's block execution.
A transaction rejected by its contract inside a block still consumes its counter (the
refusal is on the ledger and cannot be replayed); nothing else is written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kaires_fl.errors import ConfigError, EncodingError, LedgerError
from kaires_fl.ledger.block import TxResult
from kaires_fl.ledger.state import StateView
from kaires_fl.ledger.tx import Tx


@dataclass(frozen=True)
class TxEnv:
    """What a contract may know besides the state: where and when it runs."""

    chain: str
    height: int
    time_ms: int
    tx_id: str
    signers: tuple[str, ...]


Contract = Callable[[StateView, Tx, TxEnv], Mapping[str, Any | None]]

_RESERVED = ("ctr/",)


class ContractRegistry:
    """Maps a transaction ``kind`` to its contract."""

    def __init__(self, contracts: Mapping[str, Contract] | None = None) -> None:
        self._contracts: dict[str, Contract] = dict(contracts or {})

    def register(self, kind: str, contract: Contract, *, replace: bool = False) -> None:
        """Register ``contract`` for ``kind``.

        Raises
        ------
        ConfigError
            if ``kind`` is taken (pass ``replace=True`` to override deliberately).
        """
        if not kind or not isinstance(kind, str):
            raise ConfigError("a contract kind is a non-empty string such as 'calypso.write'")
        if kind in self._contracts and not replace and self._contracts[kind] is not contract:
            raise ConfigError(f"contract kind {kind!r} is already registered")
        self._contracts[kind] = contract

    def get(self, kind: str) -> Contract:
        c = self._contracts.get(kind)
        if c is None:
            raise LedgerError(
                f"unknown transaction kind {kind!r}: no contract is registered for it "
                f"(known: {', '.join(sorted(self._contracts))})"
            )
        return c

    def kinds(self) -> list[str]:
        return sorted(self._contracts)

    def copy(self) -> ContractRegistry:
        return ContractRegistry(self._contracts)


#: The registry nodes use unless given another; core contracts register here on import
#: of :mod:`kaires_fl.ledger`, other services register theirs at import time too.
DEFAULT_REGISTRY = ContractRegistry()


def register_contract(
    kind: str,
    contract: Contract,
    *,
    registry: ContractRegistry | None = None,
    replace: bool = False,
) -> None:
    """Register ``contract`` for ``kind`` in ``registry`` (default: :data:`DEFAULT_REGISTRY`)."""
    (registry or DEFAULT_REGISTRY).register(kind, contract, replace=replace)


def counter_key(pub: str) -> str:
    return f"ctr/{pub}"


def check_counter(view: StateView, tx: Tx) -> None:
    """Raises LedgerError unless ``tx.counter`` exceeds the sender's last counter.

    Counters only increase; they may skip. A signed transaction that is never submitted
    (a coordinator that withholds an aggregator's signed read) therefore cannot block the
    signer's later transactions, and the counters it skipped can never be used: a replay
    or a late relay of the withheld one is refused as stale.
    """
    last = view.get(counter_key(tx.sender)) or 0
    if tx.counter <= last:
        raise LedgerError(
            f"tx {tx.id[:16]}… is replayed or stale: counter {tx.counter}, the signer "
            f"{tx.sender[:16]}… is at {last}; fetch the counter with next_counter() and re-sign"
        )


#: Longest recorded rejection reason (a contract's message may echo its payload; a block
#: must stay within its byte budget whatever the transactions in it say).
MAX_REASON_CHARS = 2048


def execute_tx(
    view: StateView, tx: Tx, registry: ContractRegistry, height: int, time_ms: int
) -> TxResult:
    """Apply one (signature-checked, counter-checked) tx to ``view``; returns its result."""
    env = TxEnv(tx.chain, height, time_ms, tx.id, tx.signers)
    try:
        writes = registry.get(tx.kind)(view, tx, env)
        for k in writes:
            if not isinstance(k, str) or k.startswith(_RESERVED):
                raise LedgerError(f"contract {tx.kind!r} may not write entry {k!r}")
        view.put_all(writes)
        result = TxResult(True, "")
    except (LedgerError, EncodingError) as exc:
        result = TxResult(False, f"{type(exc).__name__}: {str(exc)[:MAX_REASON_CHARS]}")
    except MemoryError:
        raise  # not the transaction's doing, and not deterministic across nodes
    except Exception as exc:  # a contract must never stop a block
        # A malformed payload reaching a contract (or a contract's own typed error that
        # is not a LedgerError): deterministic on every node, recorded as a rejection.
        result = TxResult(
            False, f"malformed {tx.kind!r} payload: {type(exc).__name__}: {str(exc)[:512]}"
        )
    view.put_all({counter_key(tx.sender): tx.counter})
    return result


def dry_run(view: StateView, tx: Tx, registry: ContractRegistry, height: int, time_ms: int) -> None:
    """Check ``tx`` against ``view`` as if it were the next transaction, without keeping writes.

    Raises
    ------
    LedgerError
        with the reason the tx would be rejected (signature, counter or contract).
    """
    tx.verify_signatures()
    probe = view.copy()
    check_counter(probe, tx)
    res = execute_tx(probe, tx, registry, height, time_ms)
    if not res.ok:
        raise LedgerError(f"tx {tx.id[:16]}… ({tx.kind}) rejected: {res.reason}")
