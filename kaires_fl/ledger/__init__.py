"""The access-control cothority: a permissioned BFT ledger (n = 3f+1) with audit.

Public API (what other services call)
-------------------------------------
Committee and client (in process, on a :class:`~kaires_fl.transport.MemoryNetwork`)::

    ledger = LocalLedger(n=4, f=None, *, network=None, seed=0, balances={pub: amount},
                         state=None, config=LedgerConfig(view_timeout=0.05), registry=None,
                         db_paths=None, byzantine={2: "byzantine"}, name="kaires")
    ledger.genesis                      # Genesis: roster (hex keys), f, chain_id, quorum
    ledger.crash(i); ledger.restart(i)  # node faults (SQLite kept across restart)
    ledger.verify(replay=False) -> int  # audit the chain; returns height
    ledger.on_commit.append(cb)         # cb(block, cert) once per final block
    ledger.committed                    # {tx_id: (height, index)}
    client = ledger.client()            # LedgerClient
    client.sign(identity, kind, payload, cosigners=()) -> Tx     # fills the counter
    client.check(tx) -> None            # dry run; LedgerError with the reason
    client.submit(tx, check=True) -> tx_id ; client.submit_many(txs) -> [tx_id]
    client.wait(tx_ids, timeout=30.0, proof=True) -> [Committed]
    client.submit_and_wait(tx, timeout=30.0, proof=True) -> Committed  # LedgerError if rejected
    client.execute(identity, kind, payload, cosigners=(), timeout=30.0) -> Committed
    Committed(tx_id, height, index, result: TxResult, proof: TxProof | None)
    client.get(key) -> value | None (a fresh copy) ; client.balance(who) -> int ; client.height
    client.next_counter(pub) -> int ; client.reset_counter(pub)  # sign() reserves counters
    client.prove(key) -> StateProof ; client.prove_many(keys) -> [StateProof] (same block)
    client.prove_job(job_id) -> StateProof
    client.prove_tx(tx_id) -> TxProof ; client.accesses(provider) -> [StateProof]
    client.block(h) -> (Block, Certificate) ; client.raw_blocks(start=1, stop=None) -> [bytes]
    client.verify_chain(replay=False) -> int

Offline verification (from the genesis block only)::

    verify_chain(blocks: Iterable[bytes | (Block, Certificate)], genesis, *, replay=False,
                 registry=None) -> int          # AuditError("block h: why")
    proof.verify(genesis)                       # TxProof -> None, StateProof -> value
    verify_job(proof: StateProof, genesis, job_id) -> dict   # the committed job entry
    TxProof.from_bytes / StateProof.from_bytes / .to_bytes()

Contracts (``kind`` → function; see :mod:`kaires_fl.ledger.contracts`)::

    register_contract(kind, apply, *, registry=None, replace=False)
    apply(view: StateView, tx: Tx, env: TxEnv) -> {key: JSON value | None}
        view.get(key), view.keys(prefix); env.chain/height/time_ms/tx_id/signers;
        raise LedgerError("reason") to reject (the reason is recorded in the block)

Core contracts and their state entries:

- ``committee.register`` (payload via ``register_payload``, signed by every member) →
  ``committee/<committee_id(...)>`` = members' keys, n, t (n >= 3t + 1), quorum 2t + 1.
- ``darc.create`` / ``darc.evolve`` → ``darc/<id>`` (rules, ``terms`` via ``data_terms``,
  naming the accepted ``committees``; a data policy's id is ``bound_policy_id(name,
  owner)``); ``check_rule(view, darc_id, action, signers)``, ``evaluate(expr, signers, view)``.
- ``job.create`` (payload via ``job_payload(statistic, providers, committee, ...)``) →
  ``job/<tx id>`` (aggregators, keys, degree and quorum filled from the committee),
  ``access/<provider>/<job>``, ``usage/<provider>``, escrow from ``bal/<consumer>``; with
  ``privacy={"epsilon", "delta"}`` also ``privacy/<provider>`` (each provider's spending,
  checked against its policy's ``privacy_budget``; :mod:`kaires_fl.ledger.budgets`).
- ``job.receipt`` (signatures via ``sign_receipt``; the committee's quorum) →
  ``receipt/<job>``, payments/refunds.
- ``identity.admit`` / ``identity.require`` (roster quorum) → ``ident/<role>/<key>``,
  ``registration``: the provider/consumer allow-list (``make_genesis(registration=True)``,
  the default outside simulation; ``LocalLedger(registration=False)`` by default).
- ``coin.transfer`` → ``bal/<key>``. Counters: ``ctr/<key>`` (written by the executor).

Notes
-----
- Values from ``view.get`` are shared with the node's cache: read-only in contracts.
- A tx the client's dry run refuses never reaches a block (state unchanged). A tx that
  passes it but is refused by its contract at commit time (e.g. a policy revoked in
  between) is recorded in its block as rejected with the reason, consumes its counter
  and writes nothing else; ``submit_and_wait`` then raises LedgerError with the reason.
- Waiting drives the simulated network (``network.run_until``); it is re-entrant, but
  prefer calling it from top-level code rather than from inside a message handler.
- Byzantine node behaviours (tests, ``LocalCommittee`` faults): ``"equivocate"``,
  ``"garbage"``, ``"silent"``, ``"byzantine"`` (equivocate + garbage); a crash is
  ``ledger.crash(i)``. The roster is fixed by the genesis block (no reconfiguration).
- Encoding: :func:`~kaires_fl.ledger.encoding.canonical` uses orjson when it is installed
  and falls back to the standard library byte for byte (floats, null, escapes, non-ASCII);
  values must be plain JSON types (orjson would also encode ``Enum``/``UUID``, which the
  standard library refuses).
- Each node verifies every signature itself; it skips only the exact echo of its own
  proposal and votes (see ``LedgerNode.signed``).
"""

from __future__ import annotations

from kaires_fl.ledger.audit import BlockProof, StateProof, TxProof, verify_chain, verify_job
from kaires_fl.ledger.block import Block, BlockHeader, Certificate, Genesis, TxResult
from kaires_fl.ledger.client import Committed, LedgerClient, LocalLedger, make_genesis
from kaires_fl.ledger.coin import balance_key, coin_transfer
from kaires_fl.ledger.committees import (
    committee_id,
    committee_key,
    committee_register,
    member_pok,
    register_payload,
)
from kaires_fl.ledger.contracts import (
    DEFAULT_REGISTRY,
    Contract,
    ContractRegistry,
    TxEnv,
    register_contract,
)
from kaires_fl.ledger.darc import (
    bound_policy_id,
    check_rule,
    darc_create,
    darc_evolve,
    data_terms,
    evaluate,
)
from kaires_fl.ledger.identities import ident_key, identity_admit, identity_require
from kaires_fl.ledger.jobs import (
    access_key,
    job_create,
    job_key,
    job_payload,
    job_receipt,
    receipt_key,
    sign_receipt,
)
from kaires_fl.ledger.node import LedgerConfig, LedgerNode
from kaires_fl.ledger.state import StateView
from kaires_fl.ledger.tx import Tx, make_tx

register_contract("darc.create", darc_create)
register_contract("darc.evolve", darc_evolve)
register_contract("job.create", job_create)
register_contract("job.receipt", job_receipt)
register_contract("coin.transfer", coin_transfer)
register_contract("committee.register", committee_register)
register_contract("identity.admit", identity_admit)
register_contract("identity.require", identity_require)

__all__ = [
    "DEFAULT_REGISTRY",
    "Block",
    "BlockHeader",
    "BlockProof",
    "Certificate",
    "Committed",
    "Contract",
    "ContractRegistry",
    "Genesis",
    "LedgerClient",
    "LedgerConfig",
    "LedgerNode",
    "LocalLedger",
    "StateProof",
    "StateView",
    "Tx",
    "TxEnv",
    "TxProof",
    "TxResult",
    "access_key",
    "balance_key",
    "bound_policy_id",
    "check_rule",
    "committee_id",
    "committee_key",
    "data_terms",
    "evaluate",
    "ident_key",
    "job_key",
    "job_payload",
    "make_genesis",
    "make_tx",
    "member_pok",
    "receipt_key",
    "register_contract",
    "register_payload",
    "sign_receipt",
    "verify_chain",
    "verify_job",
]
