"""A ledger node: mempool, block execution, PBFT-style consensus, persistence, catch-up.

See :mod:`kaires_fl.ledger.consensus` for the protocol. A node is event-driven: it
reacts to messages from its :class:`~kaires_fl.transport.base.Transport` and to its
timers, never blocks, and persists every consensus fact before it acts on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kaires_fl import schema
from kaires_fl.crypto.sign import Identity
from kaires_fl.errors import (
    AuditError,
    EncodingError,
    InvalidProof,
    KairesError,
    LedgerError,
    ProtocolError,
)
from kaires_fl.ledger.block import (
    Block,
    BlockHeader,
    Certificate,
    Genesis,
    TxResult,
    consensus_context,
    decode_block,
    decode_certified,
    remember_block,
    tx_leaf,
)
from kaires_fl.ledger.consensus import (
    LedgerMessage,
    PreparedCert,
    Proposal,
    Status,
    SyncRequest,
    SyncResponse,
    TxGossip,
    ViewChange,
    Vote,
    best_prepared,
    check_vote,
    leader_of,
    roster_index,
)
from kaires_fl.ledger.contracts import (
    DEFAULT_REGISTRY,
    MAX_REASON_CHARS,
    ContractRegistry,
    check_counter,
    counter_key,
    execute_tx,
)
from kaires_fl.ledger.encoding import MAX_RECORD_BYTES, canonical
from kaires_fl.ledger.merkle import merkle_root
from kaires_fl.ledger.state import State, StateView
from kaires_fl.ledger.store import Store
from kaires_fl.ledger.tx import Tx
from kaires_fl.transport.base import Timer, Transport

log = logging.getLogger(__name__)

_BAD_INPUT = (ProtocolError, LedgerError, EncodingError, AuditError, InvalidProof)


@dataclass(frozen=True)
class LedgerConfig:
    """Timing and size knobs (times in transport seconds).

    ``view_timeout`` is the base time a node waits for progress before a view change
    (doubling per failed view up to ``max_timeout``); tests use small values.

    Size bounds (bytes): a block holds at most ``max_block_bytes`` of canonical record,
    and never more than :func:`block_byte_limit` allows, so that a new-view proposal
    (the block plus a quorum of prepared blocks) and a sync response still fit one wire
    message (:data:`kaires_fl.schema.MAX_MESSAGE_BYTES`); the mempool holds at most
    ``mempool_max_bytes`` of transactions; a node queues at most ``future_per_signer``
    roster-signed messages for the next heights per signer.
    """

    view_timeout: float = 0.5
    max_timeout: float = 8.0
    batch_delay: float = 0.0005
    max_block_txs: int = 2000
    status_interval: float = 0.25
    max_clock_skew_ms: int = 5000
    sync_batch: int = 64
    mempool_limit: int = 200_000
    max_block_bytes: int = 32 * 2**20
    mempool_max_bytes: int = 512 * 2**20
    future_per_signer: int = 64


#: Votes for views further ahead of a node's own view are dropped (view changes, which
#: every node keeps one of per peer, bring a node along to the view its peers are in).
MAX_VIEWS_AHEAD = 64
#: Votes of one node for blocks this node has not seen (yet) kept per height: an honest
#: node casts two per view, and a vote rarely overtakes its block's proposal.
MAX_UNKNOWN_VOTES = 4 * (MAX_VIEWS_AHEAD + 1)
#: Room left in a block's byte budget for its header and record framing.
_BLOCK_OVERHEAD = 4096
#: Most bytes a recorded rejection reason takes in a block record (escaped UTF-8).
_REASON_ROOM = 24 * MAX_REASON_CHARS + 1024


def block_byte_limit(config: LedgerConfig, quorum: int) -> int:
    """Largest canonical block record (bytes) a node builds or prepares.

    ``min(config.max_block_bytes, MAX_MESSAGE_BYTES // (quorum + 2), MAX_RECORD_BYTES //
    2)``: a new-view proposal carries its block and up to ``quorum`` view changes, each
    with at most one prepared block, and must still decode as one wire message; a stored
    block record (block and certificate) must decode as one ledger record. Otherwise no
    follower could read the block and the chain would stall at that height.
    """
    return max(
        1,
        min(
            int(config.max_block_bytes),
            schema.MAX_MESSAGE_BYTES // (quorum + 2),
            MAX_RECORD_BYTES // 2,
        ),
    )


def tx_record_bytes(tx: Tx, reason: str = "") -> int:
    """An upper bound on the bytes ``tx`` (and a result ``reason``) add to a block record:
    its canonical body, its signatures (128 hex characters each, quoted) and the reason
    (at most 6 bytes per UTF-8 byte once escaped), plus framing."""
    return len(tx.body()) + 160 * (len(tx.signatures) + 1) + 6 * len(reason.encode()) + 64


def genesis_entries(genesis: Genesis) -> dict[str, bytes]:
    return {k: canonical(v) for k, v in genesis.state.items()}


class LedgerNode:
    """One member of the access-control cothority.

    Parameters
    ----------
    index:
        Position in ``genesis.roster`` (must match ``identity``).
    peers:
        Transport addresses of the roster nodes, in roster order (including this one).
    """

    def __init__(
        self,
        index: int,
        identity: Identity,
        genesis: Genesis,
        transport: Transport,
        store: Store,
        peers: list[str],
        registry: ContractRegistry | None = None,
        config: LedgerConfig | None = None,
    ) -> None:
        if genesis.roster[index] != identity.public.hex():
            raise ProtocolError(f"node {index}'s identity is not roster entry {index}")
        self.index = index
        self.identity = identity
        self._open_chain(genesis, transport, store, peers, registry, config)
        self._load_records()
        transport.set_handler(self.on_message)
        self._status_timer = self.t.call_later(self.config.status_interval, self._heartbeat)
        self._request_sync(None)  # a (re)started node asks its peers what it missed

    def _open_chain(
        self,
        genesis: Genesis,
        transport: Transport,
        store: Store,
        peers: list[str],
        registry: ContractRegistry | None,
        config: LedgerConfig | None,
    ) -> None:
        """Open the chain stored in ``store`` and reset every per-node field.

        Shared by a roster node and a client's read-only replica
        (:class:`kaires_fl.node.client.LedgerFollower`). Pre: ``index`` and ``identity`` are
        set. Post: the genesis is in ``store``; height, state, last hash and time are the
        stored chain's tip; mempool, caches, fault records and the per-height consensus state
        are empty. Starts no timer and installs no handler.
        """
        self.genesis = genesis
        self.chain = genesis.chain_id
        self.t = transport
        self.store = store
        self.peers = list(peers)
        self._peer_set = frozenset(self.peers)
        self.registry = registry or DEFAULT_REGISTRY
        self.config = config or LedgerConfig()
        self.n = genesis.n
        self.quorum = genesis.quorum
        store.init_genesis(genesis, genesis_entries(genesis))
        self.height = store.height()
        self.state = State.from_store(store, self.height)
        if self.height:
            last = store.block(self.height)
            assert last is not None
            self.last_hash = last[0].hash
            self.last_time = last[0].header.time_ms
        else:
            self.last_hash = genesis.hash
            self.last_time = genesis.time_ms
        self.mempool: dict[str, Tx] = {}
        self.mempool_bytes = 0  # Σ tx_record_bytes of the mempool (mempool_max_bytes)
        self.block_bytes = block_byte_limit(self.config, self.quorum)
        # (tx id, signatures) already checked: the id does not cover the signatures.
        self.verified: set[tuple[str, tuple[str, ...]]] = set()
        self.on_commit: list[Callable[[LedgerNode, Block, Certificate], None]] = []
        self.ignored = 0  # messages dropped as malformed, forged or out of place
        #: Roster nodes whose *signed* message failed processing: index -> (count, last
        #: reason). Evidence for operators (a Byzantine node, or a node whose chain or
        #: clock disagrees with this one's); the node itself goes on.
        self.faulty: dict[int, tuple[int, str]] = {}
        self._signer: int | None = None  # signer of the message being handled, once checked
        self._depth = 0  # nesting of on_message (a commit replays queued messages)
        self._subscriber_error: Exception | None = None
        self.contexts = {k: consensus_context(k, self.chain) for k in ("vote", "view", "proposal")}
        self._future: list[tuple[str, Any]] = []
        self._future_load: dict[int, tuple[int, int]] = {}  # signer -> (messages, bytes)
        self._last_sync = -1e9
        self._behind_since: float | None = None
        self._reset_height()

    # -- per-height consensus state --------------------------------------------------
    def _reset_height(self) -> None:
        self.view = 0
        self.blocks: dict[bytes, Block] = {}
        self.executed: dict[bytes, StateView] = {}
        self.invalid: set[bytes] = set()
        self.accepted: dict[int, bytes] = {}
        self.my_votes: dict[tuple[str, int], bytes] = {}
        self.votes: dict[tuple[str, int, bytes], dict[int, bytes]] = {}
        # voter -> how many of its votes for blocks this node does not know are kept (a
        # vote may overtake its proposal; a Byzantine node's votes for made-up blocks
        # must not grow ``votes`` without bound): at most MAX_UNKNOWN_VOTES per height.
        self.unknown_votes: dict[int, int] = {}
        self.prepared: PreparedCert | None = None
        self.prepared_block: Block | None = None
        self.vcs: dict[int, dict[int, ViewChange]] = {}
        self.highest_vc: dict[int, int] = {}
        self.proposed: set[int] = set()
        self._own_proposals: dict[int, tuple[bytes, bytes]] = {}  # view -> (block, sig)
        # Exact (kind, signer, fields…, signature) of what this node signed at this
        # height: its own broadcast comes back to it and needs no signature check (a
        # message naming another signer, or differing in any field, is checked).
        self.signed: set[tuple[Any, ...]] = set()
        self.timer: Timer | None = None
        self.propose_timer: Timer | None = None

    def _load_records(self) -> None:
        h = self.height + 1
        for key, value in self.store.consensus_records(h).items():
            if key == "view":
                self.view = int(value)
            elif key.startswith("vote/"):
                _, phase, view = key.split("/")
                self.my_votes[(phase, int(view))] = value
            elif key.startswith("proposed/"):
                self.proposed.add(int(key.split("/")[1]))
            elif key == "prepared":
                self.prepared = schema.decode(value, PreparedCert)
                self.prepared_block = decode_block(self.prepared.block)
                self.blocks[self.prepared_block.hash] = self.prepared_block

    def _persist(self, records: dict[str, bytes]) -> None:
        self.store.put_consensus(self.height + 1, records)

    # -- transport --------------------------------------------------------------------
    def _broadcast(self, msg: Any) -> None:
        self.t.broadcast(self.peers, msg)

    def _send(self, dst: str, msg: Any) -> None:
        self.t.send(dst, msg)

    def on_message(self, src: str, msg: Any) -> None:
        """Transport handler and service boundary: never raises.

        ``msg`` is a :data:`~kaires_fl.ledger.consensus.LedgerMessage` or its encoding
        (``bytes``, decoded and validated with :func:`kaires_fl.schema.decode`). Anything
        that goes wrong while handling it — malformed, forged, out of place, or an
        unexpected exception — is counted in ``ignored``; if the message was signed by a
        roster node and its signature checked, that node is recorded in ``faulty``.
        """
        outer, self._signer = self._signer, None
        self._depth += 1
        try:
            if isinstance(msg, bytes | bytearray | memoryview):
                msg = schema.decode(bytes(msg), LedgerMessage)
            self._dispatch(src, msg)
        except Exception as exc:
            self._refuse(src, msg, exc)
        finally:
            self._signer = outer
            self._depth -= 1
        if self._depth == 0 and self._subscriber_error is not None:
            err, self._subscriber_error = self._subscriber_error, None
            raise err  # a local on_commit subscriber failed (not the peer's doing)

    def _refuse(self, src: str, msg: Any, exc: Exception) -> None:
        """Count a refused message; blame its signer if its signature was checked."""
        self.ignored += 1
        reason = f"{type(exc).__name__}: {exc}"
        signer = self._signer
        if signer is not None and signer != self.index:
            count = self.faulty.get(signer, (0, ""))[0]
            self.faulty[signer] = (count + 1, reason[:500])
        what = type(msg).__name__
        if isinstance(exc, KairesError):
            log.debug("node %d ignored %s from %s: %s", self.index, what, src, reason)
        else:
            log.warning(
                "node %d: unexpected %s handling %s from %s (ignored)",
                self.index,
                reason,
                what,
                src,
                exc_info=True,
            )

    def _dispatch(self, src: str, msg: Any) -> None:
        if isinstance(msg, TxGossip):
            self._on_tx_gossip(msg)
            return
        if isinstance(msg, Status):
            if msg.height > self.height:
                # Being one block behind for a moment is normal; only a lasting lag is
                # worth a sync (a partitioned or restarted node).
                now = self.t.now()
                if self._behind_since is None:
                    self._behind_since = now
                elif now - self._behind_since >= self.config.status_interval:
                    self._request_sync(src)
            return
        if isinstance(msg, SyncRequest):
            self._on_sync_request(src, msg)
            return
        if isinstance(msg, SyncResponse):
            self._on_sync_response(src, msg)
            return
        if not isinstance(msg, Proposal | Vote | ViewChange):
            raise ProtocolError(f"unexpected message type {type(msg).__name__}")
        h = msg.height
        if h <= self.height:
            return
        if h > self.height + 1:
            if h <= self.height + 3:
                self._queue_future(src, msg)
            if h > self.height + 2:
                self._request_sync(src)
            return
        if isinstance(msg, Proposal):
            self._on_proposal(msg)
        elif isinstance(msg, Vote):
            self._on_vote(msg)
        else:
            self._on_view_change(msg)

    def _queue_future(self, src: str, msg: Proposal | Vote | ViewChange) -> None:
        """Keep a message for a coming height, replayed when this node gets there.

        Only a message signed by the roster node it names is kept (an unauthenticated
        peer cannot make a node hold anything), and at most ``future_per_signer``
        messages and ``MAX_MESSAGE_BYTES`` of blocks per signer: a Byzantine node cannot
        exhaust an honest node's memory with proposals for heights it has not reached.
        Dropping a message costs at most liveness, which view changes and sync restore.
        """
        signer, size = self._future_signer(msg)
        count, held = self._future_load.get(signer, (0, 0))
        if count >= self.config.future_per_signer or held + size > schema.MAX_MESSAGE_BYTES:
            raise ProtocolError(
                f"node {signer} already has {count} messages ({held} bytes) queued for "
                "coming heights: dropped"
            )
        self._future_load[signer] = (count + 1, held + size)
        self._future.append((src, msg))

    def _future_signer(self, msg: Proposal | Vote | ViewChange) -> tuple[int, int]:
        """(checked signer, bytes of blocks it carries) of a message for a coming height.

        Raises
        ------
        ProtocolError
            unless the message is signed by the roster node it names (for a proposal: the
            leader of its height and view).
        """
        g = self.genesis
        if isinstance(msg, Vote):
            check_vote(msg, g)
            return msg.voter, 256
        if isinstance(msg, ViewChange):
            signer, ctx, size = msg.voter, self.contexts["view"], 256
            if msg.prepared is not None:
                size += len(msg.prepared.block)
        else:
            msg.check_signed(g)
            size = 256 + len(msg.block)
            size += sum(len(vc.prepared.block) for vc in msg.justification if vc.prepared)
            return msg.proposer, size
        if not roster_index(signer, g) or not schema.verify(msg, g.roster_keys[signer], ctx):
            raise ProtocolError(f"a message for a coming height is not signed by node {signer}")
        return signer, size

    # -- mempool ----------------------------------------------------------------------
    def _on_tx_gossip(self, msg: TxGossip) -> None:
        """Admit each gossiped transaction; a bad one is counted in ``ignored`` and does
        not stop the others."""
        if not isinstance(msg.txs, tuple | list):
            raise ProtocolError("TxGossip.txs is not a sequence of transactions")
        for tx in msg.txs:
            try:
                self.add_tx(tx)
            except (LedgerError, EncodingError):
                self.ignored += 1

    def add_tx(self, tx: Tx) -> None:
        """Admit a transaction to the mempool after checking its chain, signatures and counter.

        Raises
        ------
        LedgerError
            if it is for another chain, badly signed, a replay, or the mempool is full.
        """
        if not isinstance(tx, Tx):
            raise LedgerError("not a transaction")
        tx.check_bounds()
        if tx.id in self.mempool:
            return
        if tx.chain != self.chain:
            raise LedgerError(f"tx {tx.id[:16]}… is for chain {tx.chain[:16]}…, not this ledger")
        size = tx_record_bytes(tx)
        if size + _REASON_ROOM > self.block_bytes - _BLOCK_OVERHEAD:
            raise LedgerError(
                f"tx {tx.id[:16]}… takes {size} bytes of a block, more than a block of this "
                f"ledger holds ({self.block_bytes - _BLOCK_OVERHEAD - _REASON_ROOM}): split it"
            )
        if (
            len(self.mempool) >= self.config.mempool_limit
            or self.mempool_bytes + size > self.config.mempool_max_bytes
        ):
            raise LedgerError("mempool full: retry later")
        last = self.state.get(counter_key(tx.sender)) if tx.signers else None
        if tx.signers and tx.counter <= (last or 0):
            raise LedgerError(
                f"tx {tx.id[:16]}… replays counter {tx.counter} of signer {tx.sender[:16]}… "
                f"(last committed {last})"
            )
        tx.verify_signatures()
        self.verified.add((tx.id, tx.signatures))
        self.mempool[tx.id] = tx
        self.mempool_bytes += size
        self._ensure_timer()
        self._schedule_propose()

    def _drop_tx(self, tx_id: str) -> None:
        """Remove a transaction from the mempool (if there), keeping its byte count."""
        tx = self.mempool.pop(tx_id, None)
        if tx is not None:
            self.mempool_bytes -= tx_record_bytes(tx)

    # -- proposing --------------------------------------------------------------------
    def is_leader(self) -> bool:
        return leader_of(self.height + 1, self.view, self.n) == self.index

    def _schedule_propose(self) -> None:
        if not self.is_leader() or self.view in self.proposed or self.propose_timer is not None:
            return
        if self.view == 0:
            if not self.mempool:
                return
            delay = self.config.batch_delay
        else:
            if len(self.vcs.get(self.view, {})) < self.quorum:
                return
            delay = 0.0
        self.propose_timer = self.t.call_later(delay, self._propose)

    def build_block(self, time_ms: int) -> tuple[Block, StateView]:
        """Execute mempool transactions (in arrival order, each signer's in counter order)
        into a block of at most ``max_block_txs`` transactions and
        :func:`block_byte_limit` bytes."""
        view = StateView(self.state)
        txs: list[Tx] = []
        results: list[TxResult] = []
        stale = []
        h = self.height + 1
        room = self.block_bytes - _BLOCK_OVERHEAD
        # Per signer, the counters still waiting in the mempool: a transaction runs only
        # after the signer's lower-counter ones that are here (counters may skip one that
        # never arrives, but arrival order must not make a pending one stale).
        waiting: dict[str, list[int]] = {}
        for tx in self.mempool.values():
            waiting.setdefault(tx.sender, []).append(tx.counter)
        for tx in self.mempool.values():
            if len(txs) >= self.config.max_block_txs:
                break
            # a tx's result reason is unknown before it runs: keep room for the longest
            if tx_record_bytes(tx) + _REASON_ROOM > room:
                break
            try:
                check_counter(view, tx)
            except LedgerError:
                stale.append(tx.id)
                continue
            last = view.get(counter_key(tx.sender)) or 0
            if tx.counter > last + 1 and any(last < c < tx.counter for c in waiting[tx.sender]):
                continue  # a lower counter of this signer is pending: it goes first
            res = execute_tx(view, tx, self.registry, h, time_ms)
            results.append(res)
            txs.append(tx)
            room -= tx_record_bytes(tx, res.reason)
        for tid in stale:
            self._drop_tx(tid)
        header = BlockHeader(
            self.chain,
            h,
            self.last_hash.hex(),
            time_ms,
            self.index,
            len(txs),
            merkle_root([tx_leaf(t, r) for t, r in zip(txs, results, strict=True)]).hex(),
            view.root().hex(),
        )
        return Block(header, tuple(txs), tuple(results)), view

    def _propose(self) -> None:
        self.propose_timer = None
        v = self.view
        if not self.is_leader() or v in self.proposed:
            return
        justification: tuple[ViewChange, ...] = ()
        block: Block | None = None
        if v > 0:
            vcs = self.vcs.get(v, {})
            if len(vcs) < self.quorum:
                return
            justification = tuple(vcs[i] for i in sorted(vcs))
            best = best_prepared(justification)
            if best is not None:
                block = decode_block(best.block)
        elif not self.mempool:
            return
        if block is None:
            block, view = self.build_block(self._block_time())
            if not block.txs and v == 0:
                return
            self.blocks[block.hash] = block
            self.executed[block.hash] = view
        self.proposed.add(v)
        self._persist({f"proposed/{v}": block.hash})
        remember_block(block)
        p = schema.sign(
            Proposal(self.height + 1, v, self.index, block.encoded, justification),
            self.identity,
            self.contexts["proposal"],
        )
        self._own_proposals[v] = (p.block, p.signature)
        self._send_proposal(p)

    def _block_time(self) -> int:
        """The time of a new block: this node's clock, and later than the last block."""
        return max(self.last_time + 1, int(self.t.now() * 1000))

    def _send_proposal(self, p: Proposal) -> None:
        self._broadcast(p)

    # -- validation -------------------------------------------------------------------
    def check_timely(self, block: Block) -> None:
        """Refuse a new block whose time is not this node's clock within the allowed skew.

        A block's time decides policy expiry (``expires_time_ms``), so one leader must not
        choose it: an honest node prepares a freshly built block only if
        ``|time_ms - now_ms| <= max_clock_skew_ms``. A block is final only with 2f + 1
        prepares, hence with f + 1 honest ones: its time is within the skew of an honest
        clock at the moment it was prepared. (Re-proposals of a prepared block and
        certified blocks are not checked again: a quorum already did.)

        Raises
        ------
        ProtocolError
            if the time leads or lags this node's clock by more than the skew.
        """
        now_ms = int(self.t.now() * 1000)
        skew = self.config.max_clock_skew_ms
        t = block.header.time_ms
        if t > now_ms + skew:
            raise ProtocolError(
                f"block time {t} ms is {t - now_ms} ms ahead of this node's clock (skew "
                f"allowed {skew} ms): the leader's clock is wrong or it is Byzantine"
            )
        if t < now_ms - skew:
            raise ProtocolError(
                f"block time {t} ms lags this node's clock by {now_ms - t} ms (skew allowed "
                f"{skew} ms): a backdated block could authorise an expired policy"
            )

    def validate(self, block: Block, certified: bool = False) -> StateView:
        """Re-execute ``block`` on the committed state; returns the executed overlay.

        Raises
        ------
        ProtocolError
            if it does not extend this node's chain, or its results or state root differ
            from this node's execution.
        """
        if block.hash in self.executed:
            return self.executed[block.hash]
        if block.hash in self.invalid:
            raise ProtocolError("block already found invalid")
        try:
            executed = self._execute(block, certified)
        except _BAD_INPUT:
            self.invalid.add(block.hash)
            raise
        self.blocks[block.hash] = block
        self.executed[block.hash] = executed
        return executed

    def _execute(self, block: Block, certified: bool) -> StateView:
        hd = block.header
        if hd.chain != self.chain or hd.height != self.height + 1:
            raise ProtocolError(f"block is for height {hd.height}, expected {self.height + 1}")
        if hd.prev != self.last_hash.hex():
            raise ProtocolError("block does not extend this node's last final block")
        if hd.time_ms <= self.last_time:
            raise ProtocolError("block time does not increase")
        if not 0 <= hd.proposer < self.n:
            raise ProtocolError("block proposer is not in the roster")

        block.check_body()
        view = StateView(self.state)
        for tx, res in zip(block.txs, block.results, strict=True):
            if tx.chain != self.chain:
                raise ProtocolError("block holds a tx of another chain")
            tx.check_bounds()
            if (tx.id, tx.signatures) not in self.verified:
                tx.verify_signatures()
                self.verified.add((tx.id, tx.signatures))
            check_counter(view, tx)
            mine = execute_tx(view, tx, self.registry, hd.height, hd.time_ms)
            if mine != res:
                raise ProtocolError(
                    f"tx {tx.id[:16]}… result differs: block says {res}, this node got {mine}"
                )
        if view.root().hex() != hd.state_root:
            raise ProtocolError("block state root differs from this node's execution")
        return view

    # -- voting -----------------------------------------------------------------------
    def _on_proposal(self, p: Proposal) -> None:
        if p.view < self.view:
            return
        # Signature and size before the block is decoded: an outsider's (or a leader's)
        # forged or oversized block costs a hash, not a decoding.
        own = p.proposer == self.index and self._own_proposals.get(p.view) == (
            p.block,
            p.signature,
        )
        if not own:
            p.check_signed(self.genesis)
        self._signer = p.proposer
        limit = self.block_bytes if p.view == 0 else schema.MAX_MESSAGE_BYTES
        if len(p.block) > limit:
            raise ProtocolError(
                f"proposed block of {len(p.block)} bytes is larger than this ledger's "
                f"{limit}-byte blocks"
            )
        block = decode_block(p.block)
        h = block.hash
        if self.accepted.get(p.view, h) != h or self.my_votes.get(("prepare", p.view), h) != h:
            return  # equivocation: keep the first
        p.check_justified(self.genesis, block)
        if p.view == 0 or p.required_block() is None:
            self.check_timely(block)
            if len(block.txs) > self.config.max_block_txs:
                raise ProtocolError(
                    f"proposed block holds {len(block.txs)} txs, more than max_block_txs = "
                    f"{self.config.max_block_txs}"
                )
            if len(block.encoded) > self.block_bytes:
                raise ProtocolError(
                    f"proposed block is {len(block.encoded)} bytes, more than this ledger's "
                    f"{self.block_bytes}-byte blocks (a new-view proposal carrying it would "
                    "not fit one wire message)"
                )
        self.validate(block)
        if p.view > self.view:
            self._set_view(p.view)
        self.accepted[p.view] = h
        self._ensure_timer()
        self._vote("prepare", p.view, h)
        self._check_prepared(p.view, h)
        self._check_committed(p.view, h)

    def _vote(
        self, phase: str, view: int, block_hash: bytes, records: dict[str, bytes] | None = None
    ) -> None:
        """Cast this node's vote; ``records`` are persisted in the same transaction."""
        if (phase, view) in self.my_votes:
            if records:
                self._persist(records)
            return
        self.my_votes[(phase, view)] = block_hash
        self._persist({**(records or {}), f"vote/{phase}/{view}": block_hash})
        h = self.height + 1
        vote = schema.sign(
            Vote(phase, h, view, block_hash, self.index),  # type: ignore[arg-type]
            self.identity,
            self.contexts["vote"],
        )
        self.signed.add(("vote", self.index, phase, h, view, block_hash, vote.signature))
        self._broadcast(vote)

    def _on_vote(self, v: Vote) -> None:
        key = (v.phase, v.view, v.block_hash)
        got = self.votes.get(key)
        if got is not None and v.voter in got:
            return
        if v.view > self.view + MAX_VIEWS_AHEAD:
            # a view this node cannot reach without view changes, which bring it along
            raise ProtocolError(f"vote for view {v.view}, far ahead of view {self.view}")
        known = v.block_hash in self.blocks
        if not known and self.unknown_votes.get(v.voter, 0) >= MAX_UNKNOWN_VOTES:
            raise ProtocolError(
                f"node {v.voter} already has {MAX_UNKNOWN_VOTES} votes for unknown blocks "
                "kept at this height: dropped"
            )
        own = ("vote", v.voter, v.phase, v.height, v.view, v.block_hash, v.signature)
        if own not in self.signed:
            check_vote(v, self.genesis)
        self._signer = v.voter
        if not known:
            self.unknown_votes[v.voter] = self.unknown_votes.get(v.voter, 0) + 1
        self.votes.setdefault(key, {})[v.voter] = v.signature
        self._ensure_timer()
        if v.phase == "prepare":
            self._check_prepared(v.view, v.block_hash)
        else:
            self._check_committed(v.view, v.block_hash)

    def _check_prepared(self, view: int, block_hash: bytes) -> None:
        if view != self.view or block_hash not in self.executed:
            return
        votes = self.votes.get(("prepare", view, block_hash), {})
        if len(votes) < self.quorum or ("commit", view) in self.my_votes:
            return
        records: dict[str, bytes] = {}
        if self.prepared is None or self.prepared.view < view:
            chosen = tuple(sorted(votes.items())[: self.quorum])
            self.prepared_block = self.blocks[block_hash]
            self.prepared = PreparedCert.of(view, self.prepared_block, chosen)
            records["prepared"] = schema.encode(self.prepared)
        self._vote("commit", view, block_hash, records)

    def _check_committed(self, view: int, block_hash: bytes) -> None:
        votes = self.votes.get(("commit", view, block_hash), {})
        if len(votes) < self.quorum:
            return
        block = self.blocks.get(block_hash)
        if block is None:
            self._request_sync(None)
            return
        executed = self.validate(block, certified=True)
        cert = Certificate(
            self.height + 1, view, block_hash, tuple(sorted(votes.items())[: self.quorum])
        )
        self._finalize(block, cert, executed)

    # -- view change ------------------------------------------------------------------
    def _ensure_timer(self) -> None:
        if self.timer is None:
            t = min(self.config.view_timeout * (2 ** min(self.view, 16)), self.config.max_timeout)
            h, v = self.height, self.view
            self.timer = self.t.call_later(t, lambda: self._on_timeout(h, v))

    def _on_timeout(self, height: int, view: int) -> None:
        self.timer = None
        if height != self.height or view != self.view:
            return
        if self.mempool:
            # Peers that never got these txs could not notice the stall without them (as
            # much as one block holds: the gossip must fit one wire message).
            batch: list[Tx] = []
            room = self.block_bytes
            for tx in self.mempool.values():
                room -= tx_record_bytes(tx)
                if len(batch) >= self.config.max_block_txs or (batch and room < 0):
                    break
                batch.append(tx)
            self._broadcast(TxGossip(tuple(batch)))
        self._enter_view(view + 1)

    def _set_view(self, view: int) -> None:
        self.view = view
        self._persist({"view": str(view).encode()})
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.propose_timer is not None:
            self.propose_timer.cancel()
            self.propose_timer = None
        self._ensure_timer()

    def _enter_view(self, view: int) -> None:
        if view <= self.view:
            return
        self._set_view(view)
        vc = schema.sign(
            ViewChange(self.height + 1, view, self.index, self.prepared),
            self.identity,
            self.contexts["view"],
        )
        self._broadcast(vc)
        for phase, vv, bh in list(self.votes):
            if vv == view and phase == "prepare":
                self._check_prepared(vv, bh)
        self._schedule_propose()

    def _on_view_change(self, vc: ViewChange) -> None:
        if vc.view < self.view or vc.voter in self.vcs.get(vc.view, {}):
            return
        if type(vc.voter) is int and self.highest_vc.get(vc.voter, 0) > vc.view:
            return  # superseded: that node already moved to a later view
        vc.check(self.genesis)
        self._signer = vc.voter
        # Keep each node's latest view change only (an honest node never goes back): a
        # Byzantine node's view changes for ever higher views cannot pile up.
        old = self.highest_vc.get(vc.voter)
        if old is not None and old in self.vcs:
            self.vcs[old].pop(vc.voter, None)
            if not self.vcs[old]:
                del self.vcs[old]
        self.vcs.setdefault(vc.view, {})[vc.voter] = vc
        if vc.prepared is not None:
            block = decode_block(vc.prepared.block)
            self.blocks.setdefault(block.hash, block)
        self.highest_vc[vc.voter] = max(self.highest_vc.get(vc.voter, 0), vc.view)
        ahead = sorted((v for v in self.highest_vc.values() if v > self.view), reverse=True)
        if len(ahead) > self.genesis.f:
            self._enter_view(ahead[self.genesis.f])
        self._schedule_propose()

    # -- commit -----------------------------------------------------------------------
    def _finalize(self, block: Block, cert: Certificate, view: StateView) -> None:
        self._depth += 1
        try:
            self._commit(block, cert, view)
        finally:
            self._depth -= 1
        if self._depth == 0 and self._subscriber_error is not None:
            err, self._subscriber_error = self._subscriber_error, None
            raise err  # a local on_commit subscriber failed; the node itself is consistent

    def _commit(self, block: Block, cert: Certificate, view: StateView) -> None:
        self.store.commit_block(block, cert, view.writes)
        view.commit(block.height)
        self.height = block.height
        self.last_hash = block.hash
        self.last_time = block.header.time_ms
        for tx in block.txs:
            self._drop_tx(tx.id)
            self.verified.discard((tx.id, tx.signatures))
        for tid in [
            t.id
            for t in self.mempool.values()
            if t.counter <= (self.state.get(counter_key(t.sender)) or 0)
        ]:
            self._drop_tx(tid)
        if len(self.verified) > 2 * len(self.mempool) + 1024:
            # checks of txs that left the mempool unfinalised (stale, or in a block that
            # lost its view): a block that still carries one checks it again
            self.verified = {v for v in self.verified if v[0] in self.mempool}
        for tm in (self.timer, self.propose_timer):
            if tm is not None:
                tm.cancel()
        self._reset_height()
        self._behind_since = None
        for cb in list(self.on_commit):
            try:
                cb(self, block, cert)
            except Exception as exc:
                self._subscriber_error = self._subscriber_error or exc
        future, self._future = self._future, []
        self._future_load = {}
        for src, msg in future:
            self.on_message(src, msg)
        if self.mempool:
            self._ensure_timer()
            self._schedule_propose()

    # -- catch-up ---------------------------------------------------------------------
    def _heartbeat(self) -> None:
        self._broadcast(Status(self.height, self.index))
        self._status_timer = self.t.call_later(self.config.status_interval, self._heartbeat)

    def _request_sync(self, dst: str | None) -> None:
        """Ask ``dst`` (a roster peer that seems ahead) or, if None or not a roster
        address, every peer for the blocks after this node's height (rate limited).
        Unauthenticated heartbeats from anyone may trigger a request, but only roster
        nodes receive it: an outsider claiming a huge height cannot take the requests
        and answer none."""
        if dst is not None and dst not in self._peer_set:
            dst = None
        now = self.t.now()
        if now - self._last_sync < min(self.config.view_timeout / 4, 0.05):
            return
        self._last_sync = now
        req = SyncRequest(self.height + 1, self.index)
        if dst is None:
            self._broadcast(req)
        else:
            self._send(dst, req)

    def _on_sync_request(self, src: str, req: SyncRequest) -> None:
        if req.start == self.height + 1:
            # The requester is at this node's tip: say so (an empty, final answer), or a
            # replica reconnecting to an idle chain would wait for a block forever.
            self._send(src, SyncResponse((), False))
            return
        if req.start > self.height or req.start < 1:
            return
        stop = min(self.height, req.start + self.config.sync_batch - 1)
        blocks: list[bytes] = []
        # at least one block, and no more than half a wire message of them
        room = schema.MAX_MESSAGE_BYTES // 2
        for h in range(req.start, stop + 1):
            rec = self.store.raw_block(h)
            if rec is None or (blocks and len(rec) > room):
                break
            room -= len(rec)
            blocks.append(rec)
        last = req.start + len(blocks) - 1
        self._send(src, SyncResponse(tuple(blocks), last < self.height))

    def _on_sync_response(self, src: str, resp: SyncResponse) -> None:
        applied = False
        for raw in resp.blocks:
            block, cert = decode_certified(raw)
            if block.height != self.height + 1:
                continue
            cert.verify(self.genesis, block.hash)
            if cert.height != block.height:
                raise AuditError("certificate height does not match its block")
            executed = self.validate(block, certified=True)
            self._finalize(block, cert, executed)
            applied = True
        if resp.more and applied:
            self._last_sync = -1e9
            self._request_sync(src)

    # -- lifecycle --------------------------------------------------------------------
    def stop(self) -> None:
        """Cancel this node's timers (the endpoint stays; the store stays open)."""
        for tm in (self.timer, self.propose_timer, self._status_timer):
            if tm is not None:
                tm.cancel()
