"""The networked committee: a client of a deployed Kaires committee (``kaires_fl.connect``).

:func:`connect` reads ``group.toml`` and returns a :class:`RemoteCommittee`, which
implements :class:`~kaires_fl.committee.Committee` exactly as
:class:`~kaires_fl.simulation.LocalCommittee` does — the same job code
(:class:`~kaires_fl.node.driver.NetworkCommittee`) — with the committee's services in
separate node processes:

- **network**: a client-only :class:`~kaires_fl.transport.tcp.TcpNetwork` (it listens on
  nothing) dialling the nodes of the group at their addresses, each authenticated by the
  Ed25519 key pinned in ``group.toml``; this process is ``client-<key hex>`` of its own key
  (a fresh one, or the client key file given), its services at ``client-<key hex>/…``;
- **ledger**: a :class:`LedgerFollower` — a read-only replica that fetches the certified
  blocks from the ledger nodes (``SyncRequest``), checks each certificate (2f + 1 roster
  signatures) and re-executes each block (same results, same state root) before taking
  it; reads, proofs and audits are answered from it, so no single node is trusted for
  what the client reads. Transactions go to every ledger node;
- **roles in this process**: the consumer (its identity and X25519 key are the client's
  keys), the untrusted coordinator (a key derived from the client's) and the simulated
  providers of ``run_job`` (keys derived from the client's and the label: each client
  has its own providers, whose policies grant its consumer). No trustee share, no
  aggregator key, no node key is ever loaded here.

Driving: like every Kaires network, the client's network runs only while it is driven;
``run_job`` and the ledger client's ``wait`` drive it (``run_until``) on the caller's thread.
While driven, the client also returns its C heap's free pages to the OS every
``TRIM_EVERY`` seconds (:meth:`RemoteCommittee._schedule_trim`), as a node does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import tomli_w

from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.crypto.sign import H, Identity
from kaires_fl.errors import ConfigError, ProtocolError
from kaires_fl.ledger.audit import verify_chain
from kaires_fl.ledger.block import Genesis
from kaires_fl.ledger.consensus import Status, SyncRequest, SyncResponse
from kaires_fl.ledger.darc import DEFAULT_MAX_JOBS, DEFAULT_MIN_PROVIDERS
from kaires_fl.ledger.node import LedgerConfig, LedgerNode
from kaires_fl.ledger.store import Store
from kaires_fl.node import config as _config
from kaires_fl.node.config import Group, NodeKeys, load_group
from kaires_fl.node.driver import NetworkCommittee
from kaires_fl.node.host import (
    Node,
    NodeLedger,
    NodeStatus,
    NodeStatusRequest,
    group_genesis,
    tcp_peers,
)
from kaires_fl.node.process import TRIM_EVERY, malloc_trim
from kaires_fl.roles.consumer import Consumer
from kaires_fl.secret_management.release import LtsInfo
from kaires_fl.transport.base import Timer, Transport
from kaires_fl.transport.tcp import TcpNetwork, client_address

__all__ = [
    "LedgerFollower",
    "RemoteCommittee",
    "ReplicaLedger",
    "connect",
    "load_client_key",
    "write_client_key",
]

_COORDINATOR_TAG = b"kaires/client/coordinator"
_PROVIDER_TAG = b"kaires/client/provider"


# --- the client's key file -------------------------------------------------------------------


def write_client_key(path: str | os.PathLike[str]) -> NodeKeys:
    """Create a client key file at ``path`` (mode 0600: fresh Ed25519 and X25519 seeds, the
    format of a node's ``private.toml``); never overwrites one. Returns the keys."""
    p = Path(path)
    if p.exists():
        raise ConfigError(f"{p}: a key file already exists; use it, or pick another path")
    p.parent.mkdir(parents=True, exist_ok=True)
    ed, x = os.urandom(32), os.urandom(32)
    data = tomli_w.dumps({"ed25519_seed": ed.hex(), "x25519_seed": x.hex()}).encode()
    _config._write_secret(p, data)
    return NodeKeys.from_seeds(ed, x)


def load_client_key(path: str | os.PathLike[str]) -> NodeKeys:
    """The keys of a client key file (a ``private.toml``-format file, mode 0600), or of
    the ``private.toml`` in directory ``path``.

    Raises
    ------
    ConfigError
        one line: missing, unreadable, accessible by others, or malformed.
    """
    p = Path(path)
    if p.is_dir():
        return _config.load_keys(p)
    obj = _config._read_toml(p, "key file")
    _config._check_private_mode(p)
    if set(obj) != {"ed25519_seed", "x25519_seed"}:
        raise ConfigError(f"{p}: needs exactly ed25519_seed and x25519_seed; regenerate it")
    return NodeKeys.from_seeds(
        _config._hex(obj["ed25519_seed"], 32, "ed25519_seed", str(p)),
        _config._hex(obj["x25519_seed"], 32, "x25519_seed", str(p)),
    )


# --- the verified ledger replica --------------------------------------------------------------


class LedgerFollower(LedgerNode):
    """A read-only replica of the ledger, kept by a client (no roster key, no votes).

    Every ``poll`` seconds (while the network is driven) it asks one roster node, in turn,
    for the blocks after its height; a :class:`SyncResponse` block is taken only with a valid
    certificate (a quorum of roster signatures) and after re-executing it on the
    replica's state gives the block's results and state root (:meth:`LedgerNode.validate`,
    the same code a ledger node runs to catch up); the certificate is checked before the
    block is executed. A node that lies, lags or is down can delay the replica by a poll
    interval (the next poll asks the next node) but cannot make it accept anything else.

    Only :class:`SyncResponse` from a roster address is processed; anything else is
    counted in ``ignored``. ``caught_up`` counts responses that reached the end of their
    sender's chain (``more`` false).

    Pre: ``transport`` is a client address (this object never votes or proposes).
    """

    def __init__(
        self,
        genesis: Genesis,
        transport: Transport,
        store: Store,
        peers: list[str],
        *,
        poll: float = 0.02,
        config: LedgerConfig | None = None,
    ) -> None:
        # Not LedgerNode.__init__: that one requires a roster identity and starts consensus.
        # _open_chain sets the fields the catch-up path (validate, _finalize, _commit) uses.
        self.index = -1
        self.identity = None  # type: ignore[assignment]
        self._open_chain(genesis, transport, store, peers, None, config)
        self.poll = poll
        self.caught_up = 0
        self.stopped = False
        transport.set_handler(self.on_message)
        self._poll_timer: Timer | None = None
        self._turn = -1
        self._request_sync(None)  # everyone at first: the first answer tells the height
        self._poll_timer = self.t.call_later(self.poll, self._poll)

    def _poll(self) -> None:
        # One ledger node per poll, in turn: a block is fetched once, not n times, and a
        # node that is down, lagging or withholding costs one poll interval.
        if self.stopped:
            return
        self._turn = (self._turn + 1) % len(self.peers)
        self._request_sync(self.peers[self._turn])
        self._poll_timer = self.t.call_later(self.poll, self._poll)

    def _request_sync(self, dst: str | None) -> None:
        req = SyncRequest(self.height + 1, 0)  # ``sender`` is informative only
        if dst is not None and dst in self._peer_set:
            self.t.send(dst, req)
        else:
            self.t.broadcast(self.peers, req)

    def _dispatch(self, src: str, msg: Any) -> None:
        if src not in self._peer_set:
            raise ProtocolError(f"{src} is not a ledger node of this committee")
        if isinstance(msg, SyncResponse):
            self._on_sync_response(src, msg)
            if not msg.more:
                self.caught_up += 1
        elif not isinstance(msg, Status):
            raise ProtocolError(f"a ledger replica takes no {type(msg).__name__}")

    def _ensure_timer(self) -> None:  # no view changes: a replica has no mempool
        return

    def stop(self) -> None:
        """Stop polling (the store stays open: close it with ``store.close()``)."""
        self.stopped = True
        if self._poll_timer is not None:
            self._poll_timer.cancel()
        self.t.set_handler(None)


class ReplicaLedger(NodeLedger):
    """The ledger surface of :class:`~kaires_fl.ledger.client.LocalLedger` over a
    :class:`LedgerFollower` (what the job driver, ``LedgerClient`` and audits read)."""

    def verify(self, replay: bool = False) -> int:
        """Audit the replica's chain from the genesis block (every certificate, the hash
        chain, and with ``replay`` every block re-executed); returns its height."""
        raw = (r for _, r in self.node.store.raw_blocks())
        return int(verify_chain(raw, self.genesis, replay=replay))


def committee_lts(ledger_node: Any, group: Group) -> LtsInfo | None:
    """The LTS the group's nodes use, read from ``ledger_node``'s state: the earliest
    ``calypso/lts/…`` entry registered by the group's trustees with the group's threshold
    (the very rule of :meth:`~kaires_fl.node.host.Node.find_lts`, run on the replica)."""
    view = SimpleNamespace(
        ledger_node=ledger_node,
        trustee_entries=group.with_role("trustee"),
        group=group,
        result=None,
    )
    return Node.find_lts(view)  # type: ignore[arg-type]


# --- the networked committee ------------------------------------------------------------------


class RemoteCommittee(NetworkCommittee):
    """A deployed committee seen from a client process (see the module docstring).

    Parameters
    ----------
    group:
        The committee (a loaded :class:`~kaires_fl.node.config.Group`).
    keys:
        The client's keys (default: fresh ones for this session).
    timeout:
        Seconds to wait for the replica to reach the committee's LTS (a live committee).
    poll:
        Seconds between the replica's sync requests while the network is driven.
    ledger_db:
        Where the replica keeps the ledger (default: in memory; a file path keeps it
        between sessions, so a reconnect only fetches the new blocks).
    min_providers, max_jobs, price, round_timeout:
        As for :class:`~kaires_fl.simulation.LocalCommittee`.

    Raises
    ------
    ConfigError
        if the group has the registration allow-list on (not supported by this client yet).
    ProtocolError
        if the committee is not ready (no LTS on the ledger) within ``timeout``.
    """

    def __init__(
        self,
        group: Group,
        *,
        keys: NodeKeys | None = None,
        timeout: float = 30.0,
        poll: float = 0.02,
        ledger_db: str | os.PathLike[str] = ":memory:",
        price: int = 0,
        min_providers: int = DEFAULT_MIN_PROVIDERS,
        max_jobs: int | None = DEFAULT_MAX_JOBS,
        round_timeout: float = 2.0,
        network_options: dict[str, Any] | None = None,
    ) -> None:
        if group.registration:
            raise ConfigError(
                "this client cannot yet be admitted on a ledger with registration on; "
                "use a group without registration"
            )
        if keys is None:
            keys = NodeKeys(Identity.generate(), EnvelopeKeyPair.generate())
        self.keys = keys
        self.address = client_address(keys.identity.public)
        genesis = group_genesis(group)
        net = TcpNetwork(
            keys.identity,
            None,
            tcp_peers(group),
            group=bytes.fromhex(group.id),
            **(network_options or {}),
        )
        self.network = net  # type: ignore[assignment]  # any network with run_until
        self.follower: LedgerFollower | None = None
        self._trim_timer: Timer | None = None
        self._schedule_trim(net, malloc_trim())
        t0 = time.perf_counter()
        try:
            store = Store(str(ledger_db))
            self.follower = LedgerFollower(
                genesis,
                self.network.endpoint(self.address + "/ledger"),
                store,
                group.addresses("ledger"),
                poll=poll,
            )
            lts = self._wait_ready(group, timeout)
            view = ReplicaLedger(self.network, self.follower, group.addresses("ledger"), genesis)
            super().__init__(
                self.network,
                view,
                group,
                lts,
                Consumer("consumer", keys.identity, keys.box),
                Identity.from_seed(H(_COORDINATOR_TAG, keys.identity.seed)),
                prefix=self.address + "/",
                price=price,
                min_providers=min_providers,
                max_jobs=max_jobs,
                round_timeout=round_timeout,
            )
            self.setup_seconds = time.perf_counter() - t0  # connecting and catching up
        except BaseException:
            self.close()
            raise

    def _schedule_trim(self, net: TcpNetwork, trim: Callable[[], None] | None) -> None:
        """Every ``TRIM_EVERY`` seconds while ``net`` is driven, return the C heap's free
        pages to the OS (``trim``: glibc's ``malloc_trim``; None: nothing to do).

        Why: the client's frames are received on the transport's I/O thread and freed on
        the driving thread, its sync batches and queued messages for a node that is down
        come and go; measured over 220 jobs with a node killed and restarted every 20 s,
        the *free* bytes inside glibc's arenas grew from 2 to 11 MB (the bytes in use by
        4 MB: caches filling to their bounds): fragmentation that glibc does not return
        by itself, as in a node.
        """
        if trim is None:
            return

        def trim_memory() -> None:
            trim()
            self._trim_timer = net.reactor.schedule(TRIM_EVERY, trim_memory)

        self._trim_timer = net.reactor.schedule(TRIM_EVERY, trim_memory)

    def _wait_ready(self, group: Group, timeout: float) -> LtsInfo:
        f = self.follower
        assert f is not None
        found: list[LtsInfo] = []

        def ready() -> bool:
            if not found:
                lts = committee_lts(f, group)
                if lts is None:
                    return False
                found.append(lts)
            return f.caught_up > 0

        deadline = time.monotonic() + timeout
        if not self.network.run_until(ready, timeout):
            raise ProtocolError(
                f"committee {group.name!r} is not ready after {timeout:.0f} s (ledger height "
                f"{f.height}, LTS {'on' if found else 'not on'} the ledger): start it "
                "(`kaires committee up`), check `kaires committee status`, or wait longer"
            )
        self.sync_to_tip(max(1.0, deadline - time.monotonic()))
        return found[0]

    def sync_to_tip(self, timeout: float = 10.0) -> int:
        """Bring the replica to the committee's latest height; returns its height.

        Asks every ledger node its height (:class:`~kaires_fl.node.host.NodeStatus`, on the
        authenticated connection to its pinned key); with answers from n − f nodes, the
        (f + 1)-th highest height is one an honest node has reached (f liars can neither
        raise nor lower it past every honest answer), and the replica syncs up to it.
        Returns at ``timeout`` with what it has (a committee that lost its quorum).
        """
        f = self.follower
        assert f is not None
        addresses = list(f.peers)
        faults = f.genesis.f
        nonce = int.from_bytes(os.urandom(7), "big")
        heights: dict[str, int] = {}

        def on_status(src: str, msg: Any) -> None:
            if (
                src in f._peer_set
                and isinstance(msg, NodeStatus)
                and msg.nonce == nonce
                and msg.chain == f.chain
            ):
                heights.setdefault(src, int(msg.height))

        def at_tip() -> bool:
            if len(heights) < len(addresses) - faults:
                return False
            return f.height >= sorted(heights.values(), reverse=True)[faults]

        ep = self.network.endpoint(self.address + "/status")
        ep.set_handler(on_status)
        try:
            ep.broadcast(addresses, NodeStatusRequest(nonce))
            self.network.run_until(at_tip, timeout)
        finally:
            ep.set_handler(None)
        return f.height

    def provider_identity(self, label: str) -> Identity:
        """Simulated provider ``label`` of *this client* (derived from the client's key: two
        clients never share a provider's key, its counters or its policy)."""
        return Identity.from_seed(H(_PROVIDER_TAG, self.keys.identity.seed, label.encode()))

    def verify(self, replay: bool = False) -> int:
        """Audit the replica's chain from the genesis block; returns its height."""
        return self.ledger.verify(replay=replay)

    def close(self) -> None:
        """Close the connections and the replica's database (idempotent)."""
        timer = getattr(self, "_trim_timer", None)
        if timer is not None:
            timer.cancel()
        f = getattr(self, "follower", None)
        if f is not None and not f.stopped:
            f.stop()
            f.store.close()
        net = getattr(self, "network", None)
        if net is not None:
            net.close()

    def __enter__(self) -> RemoteCommittee:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    group: str | os.PathLike[str] | Group,
    *,
    key: str | os.PathLike[str] | NodeKeys | None = None,
    timeout: float = 30.0,
    **options: Any,
) -> RemoteCommittee:
    """Connect to the deployed committee described by ``group`` (a ``group.toml`` path).

    ``key``: the client's key file (see :func:`write_client_key`) or keys; default fresh
    keys for this session. ``options``: see :class:`RemoteCommittee`. The returned
    committee runs jobs like a :class:`~kaires_fl.simulation.LocalCommittee`
    (``KairesLinearRegression(committee=connect("group.toml")).fit(X, y)``); close it
    (or use it as a context manager) when done.

    Raises
    ------
    ConfigError
        for a missing or malformed group or key file.
    ProtocolError
        if the committee is not ready within ``timeout`` seconds.
    """
    g = group if isinstance(group, Group) else load_group(group)
    keys = key if isinstance(key, NodeKeys) or key is None else load_client_key(key)
    committee = RemoteCommittee(g, keys=keys, timeout=timeout, **options)
    if not isinstance(group, Group) and not isinstance(key, NodeKeys):
        # How another process reconnects (pickled estimators, GridSearchCV(n_jobs>1)).
        committee.description = {  # type: ignore[attr-defined]
            "kind": "connect",
            "group": os.path.abspath(os.fspath(group)),
            "key": None if key is None else os.path.abspath(os.fspath(key)),
            "options": {"timeout": timeout, **options},
        }
    return committee
