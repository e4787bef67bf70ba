"""In-process ledger committees and the client API services use.

:class:`LocalLedger` runs ``n`` :class:`~kaires_fl.ledger.node.LedgerNode` s on a
:class:`~kaires_fl.transport.memory.MemoryNetwork` (each with its own SQLite
database) and injects node faults. :class:`LedgerClient` signs, submits and waits for
transactions, reads state with proofs and audits the chain. Waiting drives the
simulated network (``network.run_until``), so call it from top-level code.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kaires_fl.crypto.sign import H, Identity
from kaires_fl.errors import ConfigError, LedgerError, ProtocolError
from kaires_fl.ledger.audit import BlockProof, StateProof, TxProof, verify_chain
from kaires_fl.ledger.block import Block, Certificate, Genesis, TxResult
from kaires_fl.ledger.coin import balance_key
from kaires_fl.ledger.consensus import TxGossip
from kaires_fl.ledger.contracts import ContractRegistry, counter_key, dry_run
from kaires_fl.ledger.identities import REGISTRATION_KEY, registration_entry
from kaires_fl.ledger.merkle import merkle_path
from kaires_fl.ledger.node import LedgerConfig, LedgerNode
from kaires_fl.ledger.state import StateView
from kaires_fl.ledger.store import Store
from kaires_fl.ledger.tx import Tx, make_tx
from kaires_fl.transport.memory import MemoryNetwork


def make_genesis(
    roster: Sequence[bytes | str],
    f: int | None = None,
    balances: Mapping[bytes | str, int] | None = None,
    state: Mapping[str, Any] | None = None,
    name: str = "kaires",
    time_ms: int = 0,
    registration: bool = True,
) -> Genesis:
    """Genesis block: node keys, ``f`` (default (n-1)//3), minted ``balances``, extra state.

    ``registration`` (default on): providers and consumers must be admitted by the roster
    (``identity.admit``, quorum n − f) before they own a data policy or create a job; the
    roster can switch it off with ``identity.require``. Simulations pass False.
    """
    keys = tuple(k.hex() if isinstance(k, bytes) else k for k in roster)
    f = (len(keys) - 1) // 3 if f is None else f
    st: dict[str, Any] = dict(state or {})
    st.setdefault(REGISTRATION_KEY, registration_entry(keys, f, registration))
    for who, amount in (balances or {}).items():
        pub = who.hex() if isinstance(who, bytes) else who
        if not isinstance(amount, int) or amount < 0:
            raise ConfigError(f"genesis balance of {pub[:16]}… must be an integer >= 0")
        st[balance_key(pub)] = amount
    return Genesis(name, keys, f, time_ms, st)


#: Transactions a :class:`CommittedIndex` keeps in memory (the most recently committed).
RECENT_TXS = 1 << 12


class CommittedIndex:
    """tx id → (height, index in block) of final transactions.

    The last ``keep`` transactions committed are held in memory; an older one is looked
    up with ``lookup`` (a node's SQLite tx index, :meth:`Store.tx_location`), so memory
    stays bounded however long the chain gets and a transaction committed before this
    process started is found too.
    """

    def __init__(
        self, lookup: Callable[[str], tuple[int, int] | None], keep: int | None = None
    ) -> None:
        self.lookup = lookup
        self.keep = RECENT_TXS if keep is None else keep
        self.recent: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def add(self, tx_id: str, height: int, index: int) -> None:
        """Record a committed tx (the first record of an id wins, as in the chain)."""
        if tx_id in self.recent:
            return
        self.recent[tx_id] = (height, index)
        if len(self.recent) > self.keep:
            self.recent.popitem(last=False)

    def get(self, tx_id: str) -> tuple[int, int] | None:
        got = self.recent.get(tx_id)
        return got if got is not None else self.lookup(tx_id)

    def __contains__(self, tx_id: object) -> bool:
        return isinstance(tx_id, str) and self.get(tx_id) is not None

    def __getitem__(self, tx_id: str) -> tuple[int, int]:
        got = self.get(tx_id)
        if got is None:
            raise KeyError(tx_id)
        return got

    def __len__(self) -> int:
        return len(self.recent)


def _fresh(raw: bytes | None) -> Any:
    return None if raw is None else json.loads(raw)


@dataclass(frozen=True)
class Committed:
    """A committed transaction: where it is, its recorded outcome, and (optionally) a proof."""

    tx_id: str
    height: int
    index: int
    result: TxResult
    proof: TxProof | None


class LocalLedger:
    """An in-process access-control cothority.

    Parameters
    ----------
    n, f:
        Committee size and fault bound (default f = (n-1)//3; needs n >= 3f+1).
    balances, state:
        Minted at genesis (``{public key: amount}``; extra ``{key: value}`` entries).
    db_paths:
        One SQLite path per node; default: an in-memory database per node kept alive by
        this object, so :meth:`restart` finds it again (the stand-in for a disk).
    byzantine:
        ``{index: behaviour}`` from :data:`kaires_fl.ledger.byzantine.BEHAVIOURS`.
    registration:
        Whether providers and consumers must be admitted by the roster (default off in
        this in-process simulation; see :func:`make_genesis`). :meth:`admit` admits them.
    """

    def __init__(
        self,
        n: int = 4,
        f: int | None = None,
        *,
        network: MemoryNetwork | None = None,
        seed: int = 0,
        balances: Mapping[bytes | str, int] | None = None,
        state: Mapping[str, Any] | None = None,
        config: LedgerConfig | None = None,
        registry: ContractRegistry | None = None,
        db_paths: Sequence[str] | None = None,
        byzantine: Mapping[int, str] | None = None,
        name: str = "kaires",
        registration: bool = False,
    ) -> None:
        self.network = network or MemoryNetwork(seed=seed)
        self.identities = [
            Identity.from_seed(
                H(b"kaires/ledger-node", name.encode(), str(seed).encode(), str(i).encode())
            )
            for i in range(n)
        ]
        self.genesis = make_genesis(
            [i.public for i in self.identities],
            f,
            balances,
            state,
            name,
            registration=registration,
        )
        self.config = config or LedgerConfig()
        self.registry = registry
        self.byzantine = dict(byzantine or {})
        tag = uuid.uuid4().hex[:12]
        self.addresses = [f"{name}-ledger-{i}" for i in range(n)]
        self._keepers: list[sqlite3.Connection] = []
        if db_paths is None:
            db_paths = [f"file:kaires-{tag}-{i}?mode=memory&cache=shared" for i in range(n)]
            self._keepers = [sqlite3.connect(p, uri=True) for p in db_paths]
        if len(db_paths) != n:
            raise ConfigError(f"need {n} database paths, got {len(db_paths)}")
        self.db_paths = list(db_paths)
        self.committed = CommittedIndex(self._tx_location)
        #: Called once per final block (from the first node that commits it):
        #: ``callback(block, certificate)``; services use it to react to commits.
        self.on_commit: list[Callable[[Block, Certificate], None]] = []
        self._recent: OrderedDict[int, tuple[Block, Certificate]] = OrderedDict()
        self.nodes: list[LedgerNode | None] = [None] * n
        for i in range(n):
            self._start(i)
        self._clients = itertools.count()

    @property
    def n(self) -> int:
        return self.genesis.n

    def _start(self, i: int) -> LedgerNode:
        ep = self.network.restart(self.addresses[i])
        store = Store(self.db_paths[i])
        behaviour = self.byzantine.get(i)
        if behaviour is None:
            cls: type[LedgerNode] = LedgerNode
            kwargs: dict[str, Any] = {}
        else:
            from kaires_fl.ledger.byzantine import ByzantineNode

            cls, kwargs = ByzantineNode, {"behaviour": behaviour}
        node = cls(
            i,
            self.identities[i],
            self.genesis,
            ep,
            store,
            self.addresses,
            self.registry,
            self.config,
            **kwargs,
        )
        node.on_commit.append(self._on_commit)
        self.nodes[i] = node
        return node

    def _on_commit(self, node: LedgerNode, block: Block, cert: Certificate) -> None:
        if block.height in self._recent:
            return
        self._recent[block.height] = (block, cert)
        if len(self._recent) > 256:
            self._recent.popitem(last=False)
        for i, tx in enumerate(block.txs):
            self.committed.add(tx.id, block.height, i)
        for cb in list(self.on_commit):
            cb(block, cert)

    def _tx_location(self, tx_id: str) -> tuple[int, int] | None:
        for nd in self.live_nodes():
            got = nd.store.tx_location(tx_id)
            if got is not None:
                return got
        return None

    def admit(self, role: str, keys: Sequence[bytes | str], admit: bool = True) -> None:
        """Admit (or remove) ``keys`` as ``role`` ("provider" / "consumer") on the
        registration allow-list, signed by a quorum of this ledger's roster."""
        reg = self.genesis.state.get(REGISTRATION_KEY) or {}
        quorum = int(reg.get("quorum", self.n - self.genesis.f))
        ids = self.identities[:quorum]
        payload = {
            "role": role,
            "keys": [k.hex() if isinstance(k, bytes) else k for k in keys],
            "admit": admit,
        }
        self.client("roster").execute(ids[0], "identity.admit", payload, cosigners=ids[1:])

    # -- fault injection ----------------------------------------------------------------
    def crash(self, i: int) -> None:
        """Crash node ``i`` (its database is kept)."""
        node = self.nodes[i]
        if node is not None:
            node.stop()
            node.store.close()
        self.network.crash(self.addresses[i])
        self.nodes[i] = None

    def restart(self, i: int) -> LedgerNode:
        """Restart node ``i`` from its database; it catches up from its peers."""
        if self.nodes[i] is not None:
            self.crash(i)
        return self._start(i)

    def live_nodes(self, honest: bool = True) -> list[LedgerNode]:
        return [
            nd
            for i, nd in enumerate(self.nodes)
            if nd is not None and not (honest and i in self.byzantine)
        ]

    def best_node(self) -> LedgerNode:
        """The live honest node with the highest committed height."""
        live = self.live_nodes() or self.live_nodes(honest=False)
        if not live:
            raise ProtocolError("no ledger node is running: restart one")
        return max(live, key=lambda nd: nd.height)

    def block(self, height: int) -> tuple[Block, Certificate]:
        rec = self._recent.get(height)
        if rec is not None:
            return rec
        for nd in self.live_nodes():
            got = nd.store.block(height)
            if got is not None:
                return got
        raise LedgerError(f"no live node has block {height}")

    def client(self, name: str | None = None) -> LedgerClient:
        return LedgerClient(self, name or f"client-{next(self._clients)}")

    def verify(self, replay: bool = False) -> int:
        """Audit the chain of the best live node from the genesis block; returns its height."""
        nd = self.best_node()
        return verify_chain(
            (raw for _, raw in nd.store.raw_blocks()),
            self.genesis,
            replay=replay,
            registry=self.registry,
        )

    def run_for(self, duration: float) -> None:
        self.network.run_for(duration)

    def close(self) -> None:
        for i in range(self.n):
            nd = self.nodes[i]
            if nd is not None:
                nd.stop()
                nd.store.close()
        for k in self._keepers:
            k.close()


class LedgerClient:
    """What a service (consumer, provider, trustee, aggregator) uses to talk to the ledger."""

    def __init__(self, ledger: LocalLedger, address: str) -> None:
        self.ledger = ledger
        self.network = ledger.network
        self.endpoint = self.network.endpoint(address)
        self.genesis = ledger.genesis
        self.chain = ledger.genesis.chain_id
        self._next: dict[str, int] = {}

    # -- transactions -------------------------------------------------------------------
    def next_counter(self, pub: bytes | str) -> int:
        """The next counter for signer ``pub`` (committed counter or last submitted, + 1)."""
        p = pub.hex() if isinstance(pub, bytes) else pub
        committed = self.ledger.best_node().state.get(counter_key(p)) or 0
        return max(committed, self._next.get(p, 0)) + 1

    def sign(
        self, identity: Identity, kind: str, payload: Any, cosigners: Sequence[Identity] = ()
    ) -> Tx:
        """A signed tx with the signer's next counter, reserved by this client (submit it:
        a reserved counter that is never submitted leaves a gap; see :meth:`reset_counter`)."""
        tx = make_tx(
            self.chain, kind, payload, self.next_counter(identity.public), identity, cosigners
        )
        self._next[tx.sender] = tx.counter
        return tx

    def reset_counter(self, pub: bytes | str) -> None:
        """Forget reserved counters of ``pub`` (after a signed tx was dropped unsent)."""
        self._next.pop(pub.hex() if isinstance(pub, bytes) else pub, None)

    def check(self, tx: Tx) -> None:
        """Dry-run ``tx`` on the latest state; raises LedgerError with the reason it would fail."""
        nd = self.ledger.best_node()
        if tx.chain != self.chain:
            raise LedgerError("tx is for another ledger (chain id)")
        dry_run(StateView(nd.state), tx, nd.registry, nd.height + 1, nd.last_time + 1)

    def submit(self, tx: Tx, check: bool = True) -> str:
        """Send ``tx`` to every node; returns its id. ``check`` dry-runs it first.

        Raises
        ------
        LedgerError
            if the dry run rejects it (bad or missing signature, replay, policy...).
        """
        if check:
            try:
                self.check(tx)
            except LedgerError:
                if self._next.get(tx.sender) == tx.counter:
                    self._next[tx.sender] = tx.counter - 1  # release the reservation
                raise
        self.endpoint.broadcast(self.ledger.addresses, TxGossip((tx,)))
        self._next[tx.sender] = max(self._next.get(tx.sender, 0), tx.counter)
        return tx.id

    def submit_many(self, txs: Sequence[Tx]) -> list[str]:
        """Send a batch without dry runs (nodes still check signatures and counters)."""
        self.endpoint.broadcast(self.ledger.addresses, TxGossip(tuple(txs)))
        for tx in txs:
            self._next[tx.sender] = max(self._next.get(tx.sender, 0), tx.counter)
        return [tx.id for tx in txs]

    def wait(
        self, tx_ids: Sequence[str], timeout: float = 30.0, proof: bool = True
    ) -> list[Committed]:
        """Drive the network until every tx in ``tx_ids`` is final.

        Raises
        ------
        ProtocolError
            if they are not all final within ``timeout`` simulated seconds.
        """
        committed = self.ledger.committed
        # Each id is looked up once in full (memory, then the store); while the network
        # runs, only the in-memory recent commits are checked (every commit lands there).
        pending = [t for t in tx_ids if t not in committed]
        recent = committed.recent
        ok = self.network.run_until(lambda: all(t in recent for t in pending), timeout)
        if not ok:
            ok = all(t in committed for t in tx_ids)
        if not ok:
            missing = [t[:16] for t in tx_ids if t not in committed]
            raise ProtocolError(
                f"{len(missing)} transaction(s) not committed within {timeout} s "
                f"(e.g. {missing[:3]}); the ledger lost its quorum or the tx was dropped"
            )
        out = []
        blocks: dict[int, tuple[Block, Certificate]] = {}  # one decode per block, not per tx
        for t in tx_ids:
            h, i = committed[t]
            if h not in blocks:
                blocks[h] = self.ledger.block(h)
            block, cert = blocks[h]
            p = None
            if proof:
                p = TxProof(
                    BlockProof(block.header, cert),
                    block.txs[i],
                    block.results[i],
                    tuple(merkle_path(block.leaves(), i)),
                )
            out.append(Committed(t, h, i, block.results[i], p))
        return out

    def submit_and_wait(self, tx: Tx, timeout: float = 30.0, proof: bool = True) -> Committed:
        """Submit ``tx`` and wait until it is final.

        Raises
        ------
        LedgerError
            if it is rejected (before submission, or recorded as rejected in its block).
        """
        self.submit(tx)
        c = self.wait([tx.id], timeout, proof)[0]
        if not c.result.ok:
            raise LedgerError(
                f"tx {tx.id[:16]}… ({tx.kind}) was rejected in block {c.height}: {c.result.reason}"
            )
        return c

    def execute(
        self,
        identity: Identity,
        kind: str,
        payload: Any,
        cosigners: Sequence[Identity] = (),
        timeout: float = 30.0,
    ) -> Committed:
        """Sign, submit and wait (the common case)."""
        return self.submit_and_wait(self.sign(identity, kind, payload, cosigners), timeout)

    # -- reads ----------------------------------------------------------------------------
    @property
    def height(self) -> int:
        return self.ledger.best_node().height

    def get(self, key: str) -> Any | None:
        """Latest committed value of ``key`` (unproven; use :meth:`prove` for a proof).

        A fresh copy: callers may modify it.
        """
        return _fresh(self.ledger.best_node().state.raw(key))

    def balance(self, who: Identity | bytes | str) -> int:
        """Committed balance of an identity (or its public key, raw or hex)."""
        pub = who.public if isinstance(who, Identity) else who
        return int(self.get(balance_key(pub.hex() if isinstance(pub, bytes) else pub)) or 0)

    def prove(self, key: str) -> StateProof:
        """Proof of ``key``'s value (or absence) at the latest final block."""
        return self.prove_many([key])[0]

    def prove_many(self, keys: Sequence[str]) -> list[StateProof]:
        """Proofs of several keys against the same (latest final) block."""
        nd = self.ledger.best_node()
        if nd.height:
            block, cert = nd.store.block(nd.height) or self.ledger.block(nd.height)
            bp = BlockProof(block.header, cert)
        else:
            bp = BlockProof(None, None)
        out = []
        for key in keys:
            pairs, sibs = nd.state.tree.proof(key)
            out.append(StateProof(bp, key, _fresh(nd.state.raw(key)), tuple(pairs), tuple(sibs)))
        return out

    def prove_job(self, job_id: str) -> StateProof:
        """Proof for trustees/providers that job ``job_id`` is committed (see ``verify_job``)."""
        return self.prove(f"job/{job_id}")

    def prove_tx(self, tx_id: str) -> TxProof:
        c = self.wait([tx_id], timeout=0.0, proof=True)[0]
        assert c.proof is not None
        return c.proof

    def accesses(self, provider: str) -> list[StateProof]:
        """Every job that used ``provider``'s data, each an access entry with its proof."""
        nd = self.ledger.best_node()
        return self.prove_many(sorted(nd.state.keys(f"access/{provider}/")))

    def block(self, height: int) -> tuple[Block, Certificate]:
        return self.ledger.block(height)

    def raw_blocks(self, start: int = 1, stop: int | None = None) -> list[bytes]:
        """Stored block records (what an auditor downloads)."""
        return [raw for _, raw in self.ledger.best_node().store.raw_blocks(start, stop)]

    def verify_chain(self, replay: bool = False) -> int:
        return verify_chain(
            self.raw_blocks(), self.genesis, replay=replay, registry=self.ledger.registry
        )
