"""The node host: one identity's services (ledger node, trustee, aggregator) on any transport.

A :class:`Node` is built from its directory (``private.toml``, ``public.toml``, the SQLite
ledger ``ledger.sqlite`` and, for a trustee, ``dkg-share.toml``) and the committee's
``group.toml``, on a network with ``endpoint(address)`` (the in-memory
:class:`~kaires_fl.transport.memory.MemoryNetwork`, or the TCP transport). It hosts:

- ``ledger-<i>``: a :class:`~kaires_fl.ledger.node.LedgerNode` on the genesis every node
  derives from ``group.toml`` alone (:func:`group_genesis`): the ledger roster, the
  registration switch, the trustee registry and — so that no interactive registration is
  needed — the aggregation committee ``committee/<id>``, written from the members' public
  entries (each entry's proof of knowledge of its box key is checked when the group file
  is loaded, as ``committee.register`` checks it on the ledger);
- ``trustee-<j>``: the bootstrap (a start barrier, the DKG over the network, the
  co-signed ``calypso.lts`` registration), then a
  :class:`~kaires_fl.secret_management.trustee.TrusteeNode` on the persisted share;
- ``aggregator-<k>``: an :class:`~kaires_fl.aggregation.job.AggregatorService` once the LTS
  is on the ledger.

Bootstrap, driven only by messages and the node's own keys (:meth:`Node._tick` every
``tick`` seconds):

1. **start barrier** — a trustee without a share broadcasts :class:`NodeHello` (with the
   time it came up) to the trustees, and answers a newcomer's hello at once; when it has
   heard all ``n`` trustees it starts its
   :class:`~kaires_fl.secret_management.dkg.DkgNode` at the agreed time
   ``max(arrival times) + start_delay`` — the same at every trustee, since the DKG's
   broadcast rounds are timed (the transports' clocks must agree, as the ledger's block
   times already require).
2. **DKG** — on completion the share is persisted (mode 0600) before anything else.
3. **LTS** — each trustee broadcasts a signed :class:`LtsApproval` of the digest of the
   ``calypso.lts`` payload its DKG produced; with approvals from all n (or n − t after
   ``grace`` seconds) it fixes the signer set S (sorted indices) and the first signer's
   next counter, signs that transaction and broadcasts the signature
   (:class:`LtsCosign`); a trustee in S countersigns any such set that registers exactly
   its own DKG result. Whoever holds every signature of a set submits the transaction.
   A set still incomplete after ``lts_retry`` seconds is given up, its silent members
   left out of the next one (:meth:`Node._retry_lts`). Two sets may both commit: every
   node uses the earliest matching LTS entry.

Readiness (:attr:`Node.ready`): genesis in the store, the aggregation committee in the
state, the LTS on the ledger, the trustee serving (if a trustee with a share) and the
aggregator serving (if an aggregator).

Restart: a new :class:`Node` on the same directory reopens its ledger (the
:class:`LedgerNode` asks its peers for the blocks it missed), reloads its share and
serves again as soon as it sees the LTS in its (caught-up) ledger. A trustee that went
down during the DKG stays without a share (it is named by the DKG; the committee works
with the others). This version requires the ledger role on every node (trustees and
aggregators read the ledger through their own ledger node).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import msgspec

from kaires_fl import schema
from kaires_fl.aggregation.job import AggregatorService
from kaires_fl.crypto.sign import H, is_valid
from kaires_fl.errors import ConfigError, LedgerError
from kaires_fl.ledger.block import Block, Certificate, Genesis
from kaires_fl.ledger.client import CommittedIndex, LedgerClient, make_genesis
from kaires_fl.ledger.committees import committee_key, quorum_of
from kaires_fl.ledger.contracts import counter_key
from kaires_fl.ledger.encoding import canonical
from kaires_fl.ledger.node import LedgerConfig, LedgerNode
from kaires_fl.ledger.store import Store
from kaires_fl.ledger.tx import TX_CONTEXT, Tx
from kaires_fl.node.config import (
    Group,
    NodeKeys,
    PublicEntry,
    load_node,
    load_share,
    parse_address,
    save_share,
)
from kaires_fl.secret_management.contracts import LTS_KIND, TRUSTEE_REGISTRY_KEY
from kaires_fl.secret_management.dkg import DkgNode, DkgParticipant, DkgResult, DkgWire
from kaires_fl.secret_management.release import LtsInfo
from kaires_fl.secret_management.trustee import (
    Trustee,
    TrusteeNode,
    lts_payload,
    make_trustee,
)
from kaires_fl.transport.base import Handler, Timer, Transport

log = logging.getLogger("kaires_fl.node")

LEDGER_FILE = "ledger.sqlite"
_APPROVAL_CONTEXT = b"kaires/node/lts-approval"
_LTS_DIGEST = b"kaires/node/lts-payload"
_SESSION_TAG = b"kaires/node/dkg-session"
#: Most signer sets a trustee keeps (and countersigns) while registering the LTS.
MAX_CANDIDATES = 16

_Indices = Annotated[tuple[schema.Index, ...], msgspec.Meta(max_length=1024)]


# --- bootstrap messages ------------------------------------------------------------------------


class NodeHello(schema.Message, frozen=True):
    """Start barrier of the DKG: trustee ``index`` is up since ``since_ms`` (its transport
    clock, milliseconds), has no share, and waits."""

    session: schema.Bytes32
    index: schema.Index
    since_ms: schema.U63


class LtsApproval(schema.Message, frozen=True):
    """Trustee ``index`` approves the ``calypso.lts`` payload with ``digest`` (signed)."""

    session: schema.Bytes32
    index: schema.Index
    digest: schema.Bytes32
    signature: schema.Signature = b""


class LtsCosign(schema.Message, frozen=True):
    """Trustee ``index``'s transaction signature on the LTS tx of signer set ``signers``
    (trustee indices, sorted) with the first signer's ``counter``."""

    session: schema.Bytes32
    index: schema.Index
    signers: _Indices
    counter: schema.U63
    tx_signature: Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]


NodeMessage = NodeHello | LtsApproval | LtsCosign

_Roles = Annotated[tuple[schema.Label, ...], msgspec.Meta(max_length=3)]


class NodeStatusRequest(schema.Message, frozen=True):
    """A client's (or operator's) question to ``ledger-<i>``: how is this node?"""

    nonce: schema.U63


class NodeStatus(schema.Message, frozen=True):
    """A node's answer to :class:`NodeStatusRequest` (authenticated by the connection:
    the client dialled the node's pinned key). ``last_block_ms``: the time of its last
    committed block (Unix ms; the genesis time before the first block)."""

    nonce: schema.U63
    name: schema.Label
    roles: _Roles
    height: schema.U63
    view: schema.U63
    last_block_ms: schema.U63
    ready: bool
    share: bool
    lts: schema.Label
    chain: schema.Label
    committee: schema.Label


# --- genesis ----------------------------------------------------------------------------------


def group_genesis(group: Group) -> Genesis:
    """The genesis block every node of ``group`` derives (same bytes at every node).

    Post: roster = the ledger nodes' keys in group order; state holds the aggregation
    committee ``committee/<group.committee_id>`` (members, n, t, quorum 2t + 1) and the
    trustee registry (only the group's trustees may hold an LTS).
    """
    aggs = group.with_role("aggregator")
    committee = {
        "members": [{"sign": e.sign, "box": e.box} for e in aggs],
        "n": len(aggs),
        "t": group.threshold,
        "quorum": quorum_of(group.threshold),
    }
    state = {
        committee_key(group.committee_id): committee,
        TRUSTEE_REGISTRY_KEY: [e.sign for e in group.with_role("trustee")],
    }
    return make_genesis(
        [e.sign for e in group.with_role("ledger")],
        None,
        None,
        state,
        name=f"kaires/{group.name}/{group.id[:32]}",
        time_ms=0,
        registration=group.registration,
    )


def tcp_peers(group: Group) -> dict[str, tuple[str, int, bytes, list[str]]]:
    """The pinned peers table of :class:`~kaires_fl.transport.tcp.TcpNetwork` for ``group``:
    ``{node name: (host, port, Ed25519 key, the node's service addresses)}``. Build a
    node's network with ``TcpNetwork(keys.identity, parse_address(entry.address),
    tcp_peers(group), group=bytes.fromhex(group.id))``."""
    return {
        e.name: (*parse_address(e.address), bytes.fromhex(e.sign), group.node_addresses(e.sign))
        for e in group.nodes
    }


def dkg_session(group: Group) -> bytes:
    """The DKG session of ``group`` (binds sealed shares and the persisted share to it)."""
    return H(_SESSION_TAG, bytes.fromhex(group.id))


# --- plumbing ---------------------------------------------------------------------------------


class NodeLedger:
    """The ledger surface :class:`~kaires_fl.ledger.client.LedgerClient` reads, served by
    this node's own :class:`LedgerNode` (reads are local; transactions go to every roster
    node). ``committed`` indexes the committed transactions (recent ones in memory, the
    rest in the node's SQLite tx index)."""

    registry = None

    def __init__(
        self, network: Any, node: LedgerNode, addresses: Sequence[str], genesis: Genesis
    ) -> None:
        self.network = network
        self.node = node
        self.addresses = list(addresses)
        self.genesis = genesis
        self.committed = CommittedIndex(node.store.tx_location)
        self.on_commit: list[Callable[[Block, Certificate], None]] = []
        node.on_commit.append(self._on_commit)

    def _on_commit(self, node: LedgerNode, block: Block, cert: Certificate) -> None:
        for i, tx in enumerate(block.txs):
            self.committed.add(tx.id, block.height, i)
        for cb in list(self.on_commit):
            cb(block, cert)

    @property
    def n(self) -> int:
        return self.genesis.n

    def best_node(self) -> LedgerNode:
        return self.node

    def live_nodes(self, honest: bool = True) -> list[LedgerNode]:
        return [self.node]

    def block(self, height: int) -> tuple[Block, Certificate]:
        got = self.node.store.block(height)
        if got is None:
            raise LedgerError(f"this node has no block {height} yet (height {self.node.height})")
        return got


class _Port(Transport):
    """A service's view of a shared endpoint: sends and timers go through it, deliveries
    come from the node's dispatcher (so several services can share one address)."""

    def __init__(self, endpoint: Transport) -> None:
        self.endpoint = endpoint
        self.address = endpoint.address
        self.handler: Handler | None = None

    def set_handler(self, handler: Handler | None) -> None:
        self.handler = handler

    def send(self, dst: str, payload: Any) -> None:
        self.endpoint.send(dst, payload)

    def now(self) -> float:
        return self.endpoint.now()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.endpoint.call_later(delay, callback)

    def deliver(self, src: str, payload: Any) -> None:
        if self.handler is not None:
            self.handler(src, payload)


# --- the node ---------------------------------------------------------------------------------


class Node:
    """One operator's node (see the module docstring).

    Parameters
    ----------
    node_dir:
        The node directory (keys, ledger database, DKG share).
    group:
        The committee (a loaded :class:`~kaires_fl.node.config.Group`).
    network:
        Anything with ``endpoint(address) -> Transport``.
    ledger_config:
        Ledger timing (default :class:`LedgerConfig`).
    dkg_round_time:
        Seconds per DKG round (transport time; must exceed the message latency by far).
    tick:
        Seconds between bootstrap steps (hellos, approvals, resubmissions).
    grace:
        Seconds a trustee waits for the last approvals before registering the LTS with
        n − t signers.
    start_delay:
        Margin (seconds) between the last trustee's arrival and the agreed DKG start
        (default 4 ticks; it must exceed the time a hello takes to reach every trustee).

    Raises
    ------
    ConfigError
        if the directory's files are missing or invalid, disagree with ``group``, or the
        node lacks the ledger role.
    """

    def __init__(
        self,
        node_dir: str | os.PathLike[str],
        group: Group,
        network: Any,
        *,
        ledger_config: LedgerConfig | None = None,
        dkg_round_time: float = 0.05,
        tick: float = 0.05,
        grace: float = 0.5,
        start_delay: float | None = None,
    ) -> None:
        self.dir = Path(node_dir)
        self.group = group
        self.network = network
        keys, entry = load_node(self.dir, group)
        if "ledger" not in entry.roles:
            raise ConfigError(
                f"{self.dir}: node {entry.name!r} has roles {list(entry.roles)} without "
                "'ledger'; this version hosts trustees and aggregators next to a ledger node "
                "(run `kaires node setup` with --roles including ledger)"
            )
        self.keys: NodeKeys = keys
        self.entry: PublicEntry = entry
        self.name = entry.name
        self.tick, self.grace, self.dkg_round_time = tick, grace, dkg_round_time
        self.start_delay = 4 * tick if start_delay is None else start_delay
        #: Seconds before an incomplete LTS signer set is given up (see _retry_lts).
        self.lts_retry = max(20 * tick, 4 * grace)
        self.genesis = group_genesis(group)
        self.session = dkg_session(group)
        self.trustee_entries = group.with_role("trustee")
        self.trustee_addresses = group.addresses("trustee")
        self.aggregator_addresses = group.addresses("aggregator")
        self.ledger_addresses = group.addresses("ledger")
        sign = entry.sign
        self.ledger_index = group.role_index("ledger", sign)
        self.trustee_index = group.role_index("trustee", sign)
        self.aggregator_index = group.role_index("aggregator", sign)
        assert self.ledger_index is not None
        self.addresses = group.node_addresses(sign)
        self.stopped = False

        # ledger
        self.ledger_address = self.ledger_addresses[self.ledger_index]
        self._ledger_ep = network.endpoint(self.ledger_address)
        self.store = Store(str(self.dir / LEDGER_FILE))
        self.ledger_node = LedgerNode(
            self.ledger_index,
            keys.identity,
            self.genesis,
            self._ledger_ep,
            self.store,
            self.ledger_addresses,
            None,
            ledger_config,
        )
        self._ledger_ep.set_handler(self._on_ledger_message)  # status requests, then ledger
        self.ledger = NodeLedger(network, self.ledger_node, self.ledger_addresses, self.genesis)
        #: The node's one ledger client (one identity, one counter sequence).
        self.client = LedgerClient(self.ledger, self.ledger_address)  # type: ignore[arg-type]
        self.lts: LtsInfo | None = None

        # trustee
        self.result: DkgResult | None = None
        self.dkg: DkgNode | None = None
        self.dkg_error: Exception | None = None
        self.trustee: Trustee | None = None
        self.trustee_node: TrusteeNode | None = None
        self.hellos: dict[int, int] = {}  # trustee -> its since_ms
        self._since_ms = int(network.endpoint(self.ledger_address).now() * 1000)
        self.dkg_start_at: float | None = None
        self.approvals: dict[int, bytes] = {}
        self._first_approval: float | None = None
        self._decided: tuple[tuple[int, ...], int, float] | None = None  # (S, counter, when)
        self._suspects: set[int] = set()  # signers that left an earlier set unsigned
        self.candidates: dict[tuple[tuple[int, ...], int], dict[int, bytes]] = {}
        self._assembled: dict[tuple[tuple[int, ...], int], Tx] = {}
        self.refused = 0  # peer messages dropped at this node's own boundary
        if self.trustee_index is not None:
            self._trustee_ep = network.endpoint(self.trustee_addresses[self.trustee_index])
            self._dkg_port = _Port(self._trustee_ep)
            self._trustee_port = _Port(self._trustee_ep)
            self._trustee_ep.set_handler(self._on_trustee_message)
            self.result = load_share(self.dir, self.session)
            if self.result is not None:
                self._event("share reloaded")

        # aggregator
        self.aggregator: AggregatorService | None = None
        self._timer: Timer | None = self._ledger_ep.call_later(0.0, self._tick)
        self._event(f"started ({', '.join(self.addresses)}), ledger height {self.height}")

    # -- status ------------------------------------------------------------------------
    @property
    def height(self) -> int:
        return self.ledger_node.height

    @property
    def committee_registered(self) -> bool:
        return self.ledger_node.state.get(committee_key(self.group.committee_id)) is not None

    @property
    def ready(self) -> bool:
        """Genesis stored, committee registered, LTS on the ledger, own services serving."""
        if self.stopped or self.lts is None or not self.committee_registered:
            return False
        if self.trustee_index is not None and self.result is not None and self.trustee is None:
            return False
        return self.aggregator_index is None or self.aggregator is not None

    def status(self) -> dict[str, Any]:
        """A one-line-able summary (for logs and ``committee status``)."""
        return {
            "name": self.name,
            "roles": list(self.entry.roles),
            "height": self.height,
            "view": self.ledger_node.view,
            "ready": self.ready,
            "lts": self.lts.id if self.lts else None,
            "share": self.result is not None,
            "chain": self.genesis.chain_id,
            "committee": self.group.committee_id,
        }

    def status_message(self, nonce: int = 0) -> NodeStatus:
        """This node's :class:`NodeStatus` (what it answers a :class:`NodeStatusRequest`)."""
        nd = self.ledger_node
        return NodeStatus(
            nonce,
            self.name,
            tuple(self.entry.roles),
            nd.height,
            nd.view,
            max(0, int(nd.last_time)),
            self.ready,
            self.result is not None,
            self.lts.id if self.lts else "",
            self.genesis.chain_id,
            self.group.committee_id,
        )

    def _on_ledger_message(self, src: str, msg: Any) -> None:
        """Handler of ``ledger-<i>``: a status request is answered here, everything else
        goes to the ledger node (its own service boundary)."""
        if isinstance(msg, NodeStatusRequest):
            if not self.stopped:
                self._ledger_ep.send(src, self.status_message(msg.nonce))
            return
        self.ledger_node.on_message(src, msg)

    def _event(self, what: str) -> None:
        log.info("node %s: %s", self.name, what)

    # -- dispatch on the trustee address -------------------------------------------------
    def _on_trustee_message(self, src: str, msg: Any) -> None:
        """Service boundary of ``trustee-<j>``: bootstrap messages here, DKG messages to
        the DKG, requests to the trustee; never raises."""
        try:
            if isinstance(msg, bytes | bytearray | memoryview):
                try:
                    msg = schema.decode(bytes(msg), NodeMessage)
                except Exception:
                    self._forward(src, bytes(msg))
                    return
            if isinstance(msg, NodeHello):
                self._on_hello(src, msg)
            elif isinstance(msg, LtsApproval):
                self._on_approval(src, msg)
            elif isinstance(msg, LtsCosign):
                self._on_cosign(src, msg)
            else:
                self._forward(src, msg)
        except Exception as exc:
            self.refused += 1
            log.debug("node %s: dropped a message from %s: %r", self.name, src, exc)

    def _forward(self, src: str, msg: Any) -> None:
        # Before the trustee serves, everything else belongs to the DKG; afterwards the
        # trustee gets everything but late DKG round messages.
        if self.dkg is not None and (self.trustee_node is None or isinstance(msg, DkgWire)):
            self._dkg_port.deliver(src, msg)
        elif self.trustee_node is not None:
            self._trustee_port.deliver(src, msg)
        else:
            self.refused += 1

    # -- 1. start barrier and DKG ----------------------------------------------------------
    def _hello(self) -> NodeHello:
        assert self.trustee_index is not None
        return NodeHello(self.session, self.trustee_index, self._since_ms)

    def _on_hello(self, src: str, msg: NodeHello) -> None:
        if msg.session != self.session or not self._from_trustee(src, msg.index):
            return
        if self.result is not None or self.dkg_error is not None:
            return
        if msg.index not in self.hellos and self.dkg is None:
            self._trustee_ep.send(src, self._hello())  # a newcomer hears us at once
        if self.dkg is None:
            self.hellos[msg.index] = msg.since_ms
        self._maybe_start_dkg()

    def _from_trustee(self, src: str, index: int) -> bool:
        return 0 <= index < len(self.trustee_addresses) and self.trustee_addresses[index] == src

    def _maybe_start_dkg(self) -> None:
        if self.dkg is not None or self.result is not None:
            return
        n = len(self.trustee_entries)
        assert self.trustee_index is not None
        self.hellos[self.trustee_index] = self._since_ms
        if len(self.hellos) < n:
            return
        participant = DkgParticipant(
            self.trustee_index,
            n,
            self.group.trustee_threshold,
            self.keys.box,
            [bytes.fromhex(e.box) for e in self.trustee_entries],
            self.session,
            self.keys.identity,
            tuple(bytes.fromhex(e.sign) for e in self.trustee_entries),
        )
        self.dkg = DkgNode(
            participant,
            self._dkg_port,
            self.trustee_addresses,
            self.dkg_round_time,
            on_done=self._dkg_done,
        )
        # The agreed start: every trustee computes it from the same hellos (the last one up
        # plus a margin), so their rounds line up whatever the message delays.
        self.dkg_start_at = max(self.hellos.values()) / 1000.0 + self.start_delay
        self._event(
            f"DKG starts at {self.dkg_start_at:.3f} ({n} trustees, threshold "
            f"{self.group.trustee_threshold})"
        )
        self.dkg.start(at=self.dkg_start_at)

    def _dkg_done(self, result: DkgResult | None, error: Exception | None) -> None:
        if result is None:
            self.dkg_error = error
            self._event(f"DKG failed: {error}")
            return
        save_share(self.dir, result, self.session)  # persisted before anything uses it
        self.result = result
        faulty = f", faulty {dict(result.faulty)}" if result.faulty else ""
        self._event(f"DKG done, share persisted (qual {list(result.qual)}{faulty})")
        self._tick_lts()

    # -- 2. LTS registration ---------------------------------------------------------------
    def _lts_payload(self) -> dict[str, Any]:
        assert self.result is not None
        return lts_payload(self.result, [bytes.fromhex(e.sign) for e in self.trustee_entries])

    def _digest(self) -> bytes:
        return H(_LTS_DIGEST, self.session, canonical(self._lts_payload()))

    def _lts_tx(self, signers: tuple[int, ...], counter: int) -> Tx:
        keys = tuple(self.trustee_entries[i].sign for i in signers)
        return Tx(self.genesis.chain_id, LTS_KIND, self._lts_payload(), keys, counter, ())

    def _on_approval(self, src: str, msg: LtsApproval) -> None:
        if msg.session != self.session or not self._from_trustee(src, msg.index):
            return
        key = bytes.fromhex(self.trustee_entries[msg.index].sign)
        if not schema.verify(msg, key, _APPROVAL_CONTEXT):
            self.refused += 1
            return
        self.approvals[msg.index] = msg.digest
        if self.result is not None and msg.digest == self._digest():
            if self._first_approval is None:
                self._first_approval = self._trustee_ep.now()
            self._maybe_decide()

    def _maybe_decide(self) -> None:
        if self._decided is not None or self.result is None or self.lts is not None:
            return
        mine = self._digest()
        n, t = len(self.trustee_entries), self.group.trustee_threshold
        agree = tuple(sorted(i for i, d in self.approvals.items() if d == mine))
        trusted = tuple(i for i in agree if i not in self._suspects)
        if len(trusted) >= n - t:
            agree = trusted
        waited = (
            self._first_approval is not None
            and self._trustee_ep.now() - self._first_approval >= self.grace
        )
        if len(agree) < n and not (waited and len(agree) >= n - t):
            return
        first = self.trustee_entries[agree[0]].sign
        counter = int(self.ledger_node.state.get(counter_key(first)) or 0) + 1
        self._decided = (agree, counter, self._trustee_ep.now())
        self._cosign(agree, counter)

    def _retry_lts(self) -> None:
        """Liveness: a decided signer set that has not committed after :attr:`lts_retry`
        seconds (a member approved, then never co-signed) is dropped; its silent members
        become suspects, left out of the next set if n − t others approve."""
        if self._decided is None:
            return
        signers, counter, when = self._decided
        if self._trustee_ep.now() - when < self.lts_retry:
            return
        got = self.candidates.get((signers, counter), {})
        self._suspects |= {i for i in signers if i not in got}
        self._event(
            f"LTS set {list(signers)} incomplete; retrying without {sorted(self._suspects)}"
        )
        self._decided = None
        self.approvals.clear()
        self._first_approval = None

    def _cosign(self, signers: tuple[int, ...], counter: int) -> None:
        assert self.trustee_index is not None
        sig = self.keys.identity.sign(TX_CONTEXT, self._lts_tx(signers, counter).hash)
        self.candidates.setdefault((signers, counter), {})[self.trustee_index] = sig
        msg = LtsCosign(self.session, self.trustee_index, signers, counter, sig)
        self._trustee_ep.broadcast(
            [self.trustee_addresses[i] for i in signers if i != self.trustee_index], msg
        )
        self._maybe_submit(signers, counter)

    def _on_cosign(self, src: str, msg: LtsCosign) -> None:
        if msg.session != self.session or not self._from_trustee(src, msg.index):
            return
        if self.result is None or self.lts is not None:
            return
        n, t = len(self.trustee_entries), self.group.trustee_threshold
        s = tuple(msg.signers)
        if list(s) != sorted(set(s)) or len(s) < n - t or s[-1] >= n or msg.index not in s:
            self.refused += 1
            return
        key = (s, msg.counter)
        if key not in self.candidates and len(self.candidates) >= MAX_CANDIDATES:
            return
        tx = self._lts_tx(s, msg.counter)
        signer = bytes.fromhex(self.trustee_entries[msg.index].sign)
        if not is_valid(signer, TX_CONTEXT, tx.hash, msg.tx_signature):
            self.refused += 1  # not a signature on the tx registering our own DKG result
            return
        self.candidates.setdefault(key, {})[msg.index] = msg.tx_signature
        assert self.trustee_index is not None
        if self.trustee_index in s and self.trustee_index not in self.candidates[key]:
            self._cosign(s, msg.counter)
        self._maybe_submit(s, msg.counter)

    def _maybe_submit(self, signers: tuple[int, ...], counter: int) -> None:
        got = self.candidates.get((signers, counter), {})
        if (signers, counter) in self._assembled or any(i not in got for i in signers):
            return
        unsigned = self._lts_tx(signers, counter)
        tx = Tx(
            unsigned.chain,
            unsigned.kind,
            unsigned.payload,
            unsigned.signers,
            counter,
            tuple(got[i].hex() for i in signers),
        )
        tx.verify_signatures()
        self._assembled[(signers, counter)] = tx
        self._event(f"LTS transaction co-signed by trustees {list(signers)}; submitted")
        self.client.submit_many([tx])

    def _tick_lts(self) -> None:
        if self.result is None or self.lts is not None or self.trustee_index is None:
            return
        approval = schema.sign(
            LtsApproval(self.session, self.trustee_index, self._digest()),
            self.keys.identity,
            _APPROVAL_CONTEXT,
        )
        self._trustee_ep.broadcast(self.trustee_addresses, approval)
        self._retry_lts()
        self._maybe_decide()
        if self._assembled:
            self.client.submit_many(list(self._assembled.values()))

    # -- 3. services -------------------------------------------------------------------------
    def find_lts(self) -> LtsInfo | None:
        """The earliest LTS entry on this node's ledger registered by this group's trustees
        (and, for a trustee with a share, for exactly its DKG's key)."""
        state = self.ledger_node.state
        want = [e.sign for e in self.trustee_entries]
        best: tuple[int, str, dict[str, Any]] | None = None
        for k in state.keys("calypso/lts/"):
            entry = state.get(k)
            if not isinstance(entry, dict) or entry.get("trustees") != want:
                continue
            if entry.get("t") != self.group.trustee_threshold:
                continue
            if self.result is not None and entry.get("transcript") != self.result.transcript.hex():
                continue
            rank = (int(entry.get("height", 0)), str(entry.get("id")), entry)
            if best is None or rank[:2] < best[:2]:
                best = rank
        return None if best is None else LtsInfo.from_entry(best[2])

    def _start_services(self) -> None:
        if self.lts is None:
            self.lts = self.find_lts()
            if self.lts is None:
                return
            self._event(f"LTS {self.lts.id[:16]}… is on the ledger")
        if self.trustee_index is not None and self.result is not None and self.trustee is None:
            self.trustee = make_trustee(
                self.result, self.lts, self.genesis, "honest", self.keys.identity
            )
            self.trustee_node = TrusteeNode(self.trustee, self._trustee_port)
            self._event("trustee serving")
        if self.aggregator_index is not None and self.aggregator is None:
            ep = self.network.endpoint(self.aggregator_addresses[self.aggregator_index])
            self.aggregator = AggregatorService(
                self.aggregator_index,
                self.keys.identity,
                self.keys.box,
                ep,
                self.client,
                self.trustee_addresses,
                self.lts.id,
            )
            self._event("aggregator serving")
        if self.ready:
            self._event(f"ready at height {self.height}")

    def _tick(self) -> None:
        if self.stopped:
            return
        try:
            if (
                self.trustee_index is not None
                and self.result is None
                and self.dkg is None
                and self.dkg_error is None
            ):
                self._trustee_ep.broadcast(self.trustee_addresses, self._hello())
            if not self.ready:
                self._start_services()
            self._tick_lts()
        except Exception as exc:  # a local fault must not stop the node's timer
            log.warning("node %s: bootstrap step failed: %r", self.name, exc)
        interval = self.tick if not self.ready else max(self.tick, 1.0)
        self._timer = self._ledger_ep.call_later(interval, self._tick)

    # -- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every service and close the ledger database (the directory keeps all state)."""
        if self.stopped:
            return
        self.stopped = True
        if self._timer is not None:
            self._timer.cancel()
        self.ledger_node.stop()
        for addr in self.addresses:
            self.network.endpoint(addr).set_handler(None)
        self.store.close()
        self._event("stopped")


def bootstrap(network: Any, nodes: Iterable[Node], timeout: float = 30.0) -> bool:
    """Drive ``network`` (``run_until``) until every node in ``nodes`` is ready."""
    ns = list(nodes)
    return bool(network.run_until(lambda: all(nd.ready for nd in ns), timeout))
