"""TCP network: Kaires services across processes, authenticated by pinned Ed25519 keys.

A :class:`TcpNetwork` is one identity's presence on the network: it listens (optionally)
on ``(host, port)``, dials the peers of ``peers`` (``{node name: (host, port, Ed25519
public key, [addresses])}``) and hosts local endpoints (:meth:`TcpNetwork.endpoint`) —
e.g. a node's ``ledger-<i>``, ``trustee-<j>`` and ``aggregator-<k>`` addresses — behind
the :class:`~kaires_fl.transport.base.Transport` interface, so the services run
unchanged. Time (:meth:`Reactor.now`) is the monotonic clock offset to Unix time at
start (seconds): it never goes back, and nodes synchronised by NTP agree on it within the
ledger's allowed clock skew (block times are Unix milliseconds).

Threads. Socket I/O runs on an asyncio loop in a background thread (the
:class:`Reactor`); handlers and timers run on the thread that drives the network with
:meth:`TcpNetwork.run_until` / :meth:`run_for` / :meth:`run_forever`, exactly as with
:class:`~kaires_fl.transport.memory.MemoryNetwork`: nothing is delivered while nobody
drives, and driving is re-entrant (a handler may wait with ``run_until``). Several
networks (several identities in one test process) may share one reactor
(``reactor=other.reactor``): driving any of them drives all. Drive from one thread.

Connections. Every connection starts with a handshake (timeout ``handshake_timeout``):

1. initiator → responder: magic, group id, its public key, an ephemeral X25519 key and
   a nonce;
2. responder → initiator: its public key, ephemeral key, nonce and its Ed25519
   signature over the transcript (group id, both keys, both ephemeral keys, both
   nonces) under the context ``kaires/net/handshake/responder``;
3. initiator → responder: its signature over the same transcript (``…/initiator``).

The initiator refuses a responder whose key is not the one pinned for the node it
dialled; the responder identifies the initiator as node N if its key is N's pinned key,
otherwise as a client (address ``client-<hex of its key>``) if ``accept_clients``,
otherwise refuses it. Both sides then derive one ChaCha20-Poly1305 key per direction
from the ephemeral Diffie-Hellman secret and the transcript: every frame is encrypted
and authenticated with a counter nonce, so nothing can be injected, replayed, reordered
or read on the wire after the handshake.

Frames: a 4-byte big-endian length, then the sealed :func:`kaires_fl.wire.encode_frame`
bytes ``(src, dst, message)``. A frame over the size limit, that does not authenticate,
or does not decode closes its connection (logged, counted in :attr:`TcpNetwork.stats`);
the network goes on. A node may only use its own addresses as ``src``, a client only
``client-<key hex>`` (or ``client-<key hex>/…``), and only towards local addresses (no
relaying): anything else is dropped, logged and counted. A client receives its replies
on the connection it opened.

Outgoing: one connection per peer, dialled on the first send and re-dialled after a
failure with exponential backoff and jitter; a bounded queue per peer (a full queue
drops the new message, counted); :meth:`Transport.send` never raises (a lost message is
a lost message, as on any network). Logs: ``logging.getLogger("kaires.net")``, one line
per event.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import heapq
import hmac
import itertools
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from kaires_fl import wire
from kaires_fl.crypto.sign import H, Identity, is_valid
from kaires_fl.errors import ConfigError, EncodingError, KairesError
from kaires_fl.transport.base import Handler, Timer, Transport

log = logging.getLogger("kaires.net")

MAGIC = b"KAIRESN1"
RESPONDER_CONTEXT = b"kaires/net/handshake/responder"
INITIATOR_CONTEXT = b"kaires/net/handshake/initiator"
_HELLO = len(MAGIC) + 32 * 4  # magic, group, key, ephemeral, nonce
_REPLY = len(MAGIC) + 32 * 3 + 64  # magic, key, ephemeral, nonce, signature
_TAG = 16  # AEAD tag bytes
#: Largest sealed frame on the wire (bytes after the length prefix).
MAX_SEALED_BYTES = wire.MAX_FRAME_BYTES + _TAG


class HandshakeError(KairesError):
    """A connection's handshake failed (wrong key, wrong group, unknown peer, bad signature)."""


def client_address(public: bytes) -> str:
    """The address of a client identified by Ed25519 key ``public``: ``client-<key hex>``.

    The whole key: a shorter prefix would let someone grind a key whose address collides
    with another client's and take over its reply connection.
    """
    return "client-" + bytes(public).hex()


@dataclass(frozen=True)
class Peer:
    """A node of the committee: where it listens, its pinned key and the addresses it hosts."""

    name: str
    host: str
    port: int
    public: bytes
    addresses: tuple[str, ...]


def _peer(name: str, spec: Any) -> Peer:
    if isinstance(spec, Peer):
        return spec
    try:
        host, port, public, addresses = spec
    except (TypeError, ValueError):
        raise ConfigError(
            f"peer {name!r}: expected (host, port, Ed25519 public key bytes, [addresses])"
        ) from None
    if not isinstance(public, bytes | bytearray) or len(public) != 32:
        raise ConfigError(f"peer {name!r}: the public key must be 32 bytes")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"peer {name!r}: port {port!r} is not in 1..65535")
    return Peer(str(name), str(host), port, bytes(public), tuple(str(a) for a in addresses))


# -- the caller-driven event queue and the I/O thread --------------------------------------------


class Reactor:
    """An asyncio loop on a daemon thread (socket I/O) and the event queue of the driving
    thread (deliveries and timers).

    Post: :meth:`run_until` runs events on the calling thread, re-entrantly; :meth:`close`
    stops the I/O thread.
    """

    #: Pause reading sockets while this many bytes wait for the driving thread.
    MAX_BACKLOG_BYTES = 512 * 2**20

    def __init__(self) -> None:
        self._epoch = time.time() - time.monotonic()
        self.loop = asyncio.new_event_loop()
        self._cond = threading.Condition()
        self._ready: collections.deque[Callable[[], None]] = collections.deque()
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self.backlog = 0  # bytes of received frames waiting for the driving thread
        self._stop = False
        self._forever = 0
        self.closed = False
        self._thread = threading.Thread(target=self._io, name="kaires-net-io", daemon=True)
        self._thread.start()

    def _io(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    # -- used from any thread -------------------------------------------------------------
    def now(self) -> float:
        """The transport clock in seconds: the monotonic clock (never goes back), offset
        to Unix time when the reactor started, so nodes on several machines synchronised
        by NTP agree on block times within the ledger's allowed skew."""
        return time.monotonic() + self._epoch

    def post(self, fn: Callable[[], None], size: int = 0) -> None:
        """Run ``fn()`` on the driving thread (``size``: bytes it holds, for backpressure)."""
        with self._cond:
            self.backlog += size
            self._ready.append(fn if not size else _Sized(fn, size))
            self._cond.notify()

    def schedule(self, delay: float, callback: Callable[[], None]) -> Timer:
        """A :class:`Timer` running ``callback`` on the driving thread after ``delay`` s."""
        timer = Timer(self.now() + max(0.0, delay), callback)
        with self._cond:
            heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
            self._cond.notify()
        return timer

    def submit(self, coro: Any, timeout: float | None = None) -> Any:
        """Run coroutine ``coro`` on the I/O loop and wait for its result (not on the loop)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        """Make :meth:`run_forever` return (thread-safe, e.g. from a signal handler)."""
        with self._cond:
            self._stop = True
            self._cond.notify()

    # -- the driving thread ----------------------------------------------------------------
    def _next(self, deadline: float) -> Callable[[], None] | None:
        with self._cond:
            while True:
                now = self.now()
                timers = self._timers
                while timers and timers[0][2].cancelled:
                    heapq.heappop(timers)
                if timers and timers[0][0] <= now:
                    return heapq.heappop(timers)[2].callback
                if self._ready:
                    fn = self._ready.popleft()
                    if isinstance(fn, _Sized):
                        self.backlog -= fn.size
                    return fn
                if now >= deadline or (self._stop and self._forever):
                    return None
                wait = deadline - now
                if timers:
                    wait = min(wait, timers[0][0] - now)
                self._cond.wait(min(wait, 0.25))  # re-check predicates on other state

    def run_until(self, done: Callable[[], bool], timeout: float = 60.0) -> bool:
        """Run events until ``done()`` holds; False if ``timeout`` real seconds pass first."""
        deadline = self.now() + timeout
        while not done():
            fn = self._next(deadline)
            if fn is None:
                return done()
            try:
                fn()
            except Exception:  # a service boundary: one failing callback never stops the loop
                log.warning("handler or timer raised; the network goes on", exc_info=True)
        return True

    def run_forever(self) -> None:
        """Run events until :meth:`stop` is called (also if called just before)."""
        self._forever += 1
        try:
            self.run_until(lambda: self._stop, math.inf)
        finally:
            self._forever -= 1
            if not self._forever:
                self._stop = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.stop()

        async def _shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):  # already stopping: nothing left to cancel
            self.submit(_shutdown(), timeout=5.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self.loop.close()


def _nothing() -> None:
    """A wake-up of the driving thread."""


class _Sized:
    __slots__ = ("fn", "size")

    def __init__(self, fn: Callable[[], None], size: int) -> None:
        self.fn = fn
        self.size = size

    def __call__(self) -> None:
        self.fn()


# -- the secure channel ----------------------------------------------------------------------------


class _Session:
    """The two directional AEAD keys of an authenticated connection and their counters."""

    def __init__(self, send_key: bytes, recv_key: bytes) -> None:
        self._send = ChaCha20Poly1305(send_key)
        self._recv = ChaCha20Poly1305(recv_key)
        self._ns = 0
        self._nr = 0

    def seal(self, frame: bytes) -> bytes:
        header = (len(frame) + _TAG).to_bytes(4, "big")
        nonce = self._ns.to_bytes(12, "little")
        self._ns += 1
        return header + self._send.encrypt(nonce, frame, header)

    def open(self, header: bytes, sealed: bytes) -> bytes:
        nonce = self._nr.to_bytes(12, "little")
        self._nr += 1
        return self._recv.decrypt(nonce, sealed, header)


def _transcript(group: bytes, hello: bytes, reply_head: bytes) -> bytes:
    return H(b"kaires/net/transcript", group, hello, reply_head)


def _session(eph: X25519PrivateKey, their_eph: bytes, transcript: bytes, initiator: bool) -> Any:
    try:
        shared = eph.exchange(X25519PublicKey.from_public_bytes(their_eph))
    except ValueError as exc:  # a low-order point: no shared secret
        raise HandshakeError(f"invalid ephemeral key: {exc}") from None
    k = H(b"kaires/net/keys", shared, transcript)
    i2r, r2i = H(b"initiator->responder", k), H(b"responder->initiator", k)
    return _Session(i2r, r2i) if initiator else _Session(r2i, i2r)


def _eph_public(eph: X25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return eph.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


# -- connections -----------------------------------------------------------------------------------


class _Conn:
    """One authenticated connection: who is at the other end, and how to write to it."""

    def __init__(
        self,
        net: TcpNetwork,
        writer: asyncio.StreamWriter,
        session: _Session,
        who: str,
        public: bytes,
    ) -> None:
        self.net = net
        self.writer = writer
        self.session = session
        self.who = who  # a peer's node name, or a client's address
        self.public = public
        self.is_client = who.startswith("client-")
        self.alive = True

    def may_send_from(self, src: str) -> bool:
        if self.is_client:
            return src == self.who or src.startswith(self.who + "/")
        peer = self.net.peers.get(self.who)
        return peer is not None and src in peer.addresses

    def write(self, frame: bytes) -> None:
        self.writer.write(self.session.seal(frame))

    def close(self) -> None:
        self.alive = False
        self.writer.close()


class _Link:
    """The outgoing connection to one peer: a bounded queue, dialled and re-dialled."""

    def __init__(self, net: TcpNetwork, peer: Peer) -> None:
        self.net = net
        self.peer = peer
        self.queue: collections.deque[bytes] = collections.deque()
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.conn: _Conn | None = None
        self.dropping = False

    def enqueue(self, frame: bytes) -> None:  # on the I/O loop
        if (
            len(self.queue) >= self.net.queue_limit
            or self.queued_bytes + len(frame) > self.net.queue_bytes
        ):
            self.net._count("dropped_queue_full")
            if not self.dropping:
                self.dropping = True
                log.warning(
                    "queue to %s full (%d frames, %d bytes): dropping new messages until it drains",
                    self.peer.name,
                    len(self.queue),
                    self.queued_bytes,
                )
            return
        self.queue.append(frame)
        self.queued_bytes += len(frame)
        self.wake.set()
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        net = self.net
        delay = net.backoff[0]
        while not net.closed:
            peer = self.peer = net.peers.get(self.peer.name, self.peer)
            try:
                conn = await asyncio.wait_for(net._dial(peer), net.handshake_timeout)
            except (TimeoutError, OSError, HandshakeError, asyncio.IncompleteReadError) as exc:
                wait = min(delay * (0.5 + random.random()), net.backoff[1])
                log.info(
                    "cannot reach %s at %s:%d (%s); retry in %.2f s",
                    peer.name,
                    peer.host,
                    peer.port,
                    type(exc).__name__ if not str(exc) else exc,
                    wait,
                )
                net._count("connect_failures")
                await asyncio.sleep(wait)
                delay = min(delay * 2, net.backoff[1])
                continue
            self.conn = conn
            up = asyncio.get_running_loop().time()
            try:
                while conn.alive and not net.closed:
                    while self.queue and conn.alive:
                        frame = self.queue.popleft()
                        self.queued_bytes -= len(frame)
                        conn.write(frame)
                        if conn.writer.transport.get_write_buffer_size() > 4 * 2**20:
                            await conn.writer.drain()
                    self.dropping = False
                    await conn.writer.drain()
                    self.wake.clear()
                    if not self.queue and conn.alive:
                        await self.wake.wait()
            except (ConnectionError, OSError) as exc:
                log.info("connection to %s lost: %s", peer.name, exc)
            finally:
                conn.close()
                self.conn = None
            if asyncio.get_running_loop().time() - up >= 1.0:
                delay = net.backoff[0]  # it worked for a while: redial at once
            elif not net.closed:  # closed right after the handshake: the peer refuses us
                await asyncio.sleep(min(delay * (0.5 + random.random()), net.backoff[1]))
                delay = min(delay * 2, net.backoff[1])


class TcpEndpoint(Transport):
    """A local address of a :class:`TcpNetwork` (created by :meth:`TcpNetwork.endpoint`)."""

    def __init__(self, network: TcpNetwork, address: str) -> None:
        self.network = network
        self.address = address
        self.handler: Handler | None = None

    def set_handler(self, handler: Handler | None) -> None:
        self.handler = handler

    def send(self, dst: str, payload: Any) -> None:
        self.network._send(self.address, dst, payload)

    def broadcast(self, dsts: Iterable[str], payload: Any) -> None:
        """Send ``payload`` to each of ``dsts``, encoding the message once."""
        self.network._send_all(self.address, dsts, payload)

    def now(self) -> float:
        return self.network.reactor.now()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.network.reactor.schedule(delay, callback)


class TcpNetwork:
    """One identity's presence on a TCP network (see the module docstring).

    Parameters
    ----------
    identity:
        This process's Ed25519 identity (a node's key if it is pinned in ``peers``).
    listen:
        ``(host, port)`` to accept connections on (port 0: pick a free one, see
        :attr:`port`), or None (a client, or a node that only dials).
    peers:
        ``{node name: (host, port, public key, [addresses])}`` (or :class:`Peer`): the
        committee, keys pinned.
    group:
        The chain/committee id both ends must share (bound into the handshake).
    accept_clients:
        Whether an unknown key may connect as a client.
    queue_limit, queue_bytes:
        Bounds of the outgoing queue to each peer (frames, bytes); beyond, new messages
        to that peer are dropped (``stats["dropped_queue_full"]``).
    handshake_timeout:
        Seconds a connection may take to authenticate (both directions).
    max_pending:
        Connections allowed to be in their handshake at once; more are closed at once
        (``stats["handshake_refused"]``).
    max_clients:
        Client connections allowed at once; a new client beyond is refused.
    backoff:
        ``(first, largest)`` delay in seconds between attempts to reach a peer (doubling,
        with ±50 % jitter).
    reactor:
        Share another network's reactor (several identities in one process).

    Raises
    ------
    ConfigError
        for malformed peers, an address claimed by two peers, or a port that cannot be
        bound (in use, no permission).
    """

    #: Largest backlog of unsent bytes to one client before messages to it are dropped.
    CLIENT_BUFFER_BYTES = 64 * 2**20

    def __init__(
        self,
        identity: Identity,
        listen: tuple[str, int] | None = None,
        peers: Mapping[str, Any] | None = None,
        *,
        group: bytes = b"kaires",
        accept_clients: bool = False,
        reactor: Reactor | None = None,
        queue_limit: int = 4096,
        queue_bytes: int = 512 * 2**20,
        max_pending: int = 64,
        max_clients: int = 1024,
        handshake_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.05, 5.0),
    ) -> None:
        self.identity = identity
        self.group = H(b"kaires/net/group", group)
        self.accept_clients = accept_clients
        self.queue_limit = queue_limit
        self.queue_bytes = queue_bytes
        self.max_pending = max_pending
        self.max_clients = max_clients
        self._pending = 0
        self.handshake_timeout = handshake_timeout
        self.backoff = backoff
        self.set_peers(peers or {})
        self.client_prefix = client_address(identity.public)
        self.endpoints: dict[str, TcpEndpoint] = {}
        self.stats: collections.Counter[str] = collections.Counter()
        self._links: dict[str, _Link] = {}
        self._clients: dict[str, _Conn] = {}
        self._conns: set[_Conn] = set()
        self.closed = False
        self._own_reactor = reactor is None
        self.reactor = reactor or Reactor()
        self._server: asyncio.base_events.Server | None = None
        self.port: int | None = None
        if listen is not None:
            try:
                self.port = self.reactor.submit(self._listen(*listen), timeout=10.0)
            except OSError as exc:
                self.close()
                raise ConfigError(
                    f"cannot listen on {listen[0]}:{listen[1]}: {exc.strerror or exc}; "
                    "pick another port or stop the process using it"
                ) from None

    def set_peers(self, peers: Mapping[str, Any]) -> None:
        """Pin the committee: ``{node name: (host, port, public key, [addresses])}``.

        Call before traffic flows (e.g. once every listener's port is known); existing
        connections keep the identity they authenticated with.

        Raises
        ------
        ConfigError
            for a malformed entry, a key or an address claimed by two peers.
        """
        table = {n: _peer(n, s) for n, s in peers.items()}
        owner: dict[str, str] = {}
        by_key: dict[bytes, str] = {}
        for p in table.values():
            if p.public in by_key:
                raise ConfigError(f"peers {by_key[p.public]!r} and {p.name!r} share a key")
            by_key[p.public] = p.name
            for a in p.addresses:
                if a in owner:
                    raise ConfigError(f"address {a!r} is claimed by {owner[a]!r} and {p.name!r}")
                owner[a] = p.name
        self.peers, self.owner, self.by_key = table, owner, by_key
        #: This network's node name if its key is pinned in ``peers``, else None (a client).
        self.name = by_key.get(self.identity.public)

    # -- endpoints and driving -------------------------------------------------------------
    def endpoint(self, address: str) -> TcpEndpoint:
        """The local endpoint ``address`` (created on first use).

        Precondition: a node's addresses are those ``peers`` lists for it; a client's are
        ``client-<key hex>`` or ``client-<key hex>/<anything>`` (:func:`client_address`).
        """
        ep = self.endpoints.get(address)
        if ep is not None:
            return ep
        if self.name is not None:
            if self.owner.get(address) != self.name:
                raise ConfigError(
                    f"{address!r} is not an address of node {self.name!r} in the peers table"
                )
        elif address != self.client_prefix and not address.startswith(self.client_prefix + "/"):
            raise ConfigError(
                f"a client's addresses are {self.client_prefix!r} or {self.client_prefix}/…, "
                f"not {address!r}"
            )
        ep = self.endpoints[address] = TcpEndpoint(self, address)
        return ep

    def now(self) -> float:
        return self.reactor.now()

    def run_until(self, done: Callable[[], bool], timeout: float = 60.0) -> bool:
        """Deliver messages and run timers until ``done()``; False after ``timeout`` real s."""
        return self.reactor.run_until(done, timeout)

    def run_for(self, duration: float) -> None:
        """Deliver messages and run timers for ``duration`` real seconds."""
        self.reactor.run_until(lambda: False, duration)

    def run_forever(self) -> None:
        """Deliver messages and run timers until :meth:`stop` (or :meth:`close`)."""
        self.reactor.run_forever()

    def stop(self) -> None:
        """Make :meth:`run_forever` return (thread-safe)."""
        self.reactor.stop()

    def close(self) -> None:
        """Close the listener and every connection (and the reactor if this network owns it)."""
        if self.closed:
            return
        self.closed = True
        if not self.reactor.closed:
            with contextlib.suppress(Exception):  # the loop is already stopping
                self.reactor.submit(self._close(), timeout=5.0)
        if self._own_reactor:
            self.reactor.close()

    def __enter__(self) -> TcpNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending (driving thread) ----------------------------------------------------------
    def _send(self, src: str, dst: str, payload: Any) -> None:
        self._send_all(src, (dst,), payload)

    def _send_all(self, src: str, dsts: Iterable[str], payload: Any) -> None:
        """Send ``payload`` from ``src`` to each of ``dsts``, encoding it at most once."""
        body: bytes | None = None
        for dst in dsts:
            self.stats["sent"] += 1
            if self.closed:
                self.stats["dropped_closed"] += 1
                continue
            local = self.endpoints.get(dst)
            if local is not None:
                self.reactor.post(functools.partial(self._deliver, local, src, payload))
                continue
            try:
                if body is None:
                    body = wire.encode_body(payload)
                frame = wire.frame_from_body(src, dst, body)
            except EncodingError as exc:
                self.stats["unencodable"] += 1
                log.warning("message %s -> %s not sent: %s", src, dst, exc)
                continue
            try:
                self.reactor.loop.call_soon_threadsafe(self._route, dst, frame)
            except RuntimeError:  # the loop is closed
                self.stats["dropped_closed"] += 1

    def _route(self, dst: str, frame: bytes) -> None:  # on the I/O loop
        owner = self.owner.get(dst)
        if owner is not None and owner != self.name:
            link = self._links.get(owner)
            if link is None:
                link = self._links[owner] = _Link(self, self.peers[owner])
            link.enqueue(frame)
            return
        if dst.startswith("client-"):
            conn = self._clients.get(dst.split("/", 1)[0])
            if conn is not None and conn.alive:
                if conn.writer.transport.get_write_buffer_size() > self.CLIENT_BUFFER_BYTES:
                    self._count("dropped_queue_full")
                    return
                conn.write(frame)
                return
        self._count("unroutable")

    def _deliver(self, ep: TcpEndpoint, src: str, payload: Any) -> None:  # driving thread
        h = ep.handler
        if h is None:
            self.stats["dropped_no_handler"] += 1
            return
        self.stats["delivered"] += 1
        try:
            h(src, payload)
        except Exception:
            self.stats["handler_errors"] += 1
            log.warning("handler of %s raised on a message from %s", ep.address, src, exc_info=True)

    def _count(self, key: str) -> None:
        """Count an I/O event and wake the driving thread (a predicate may watch stats)."""
        self.stats[key] += 1
        self.reactor.post(_nothing)

    # -- connections (I/O loop) --------------------------------------------------------------
    async def _listen(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._accept, host, port, limit=2**16)
        return int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self._links.values():
            if link.task is not None:
                link.task.cancel()
            link.wake.set()
        for c in list(self._conns):
            c.close()
        if self._server is not None:
            with contextlib.suppress(Exception):  # a handler still draining
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def _hello(self, eph: bytes, nonce: bytes) -> bytes:
        return MAGIC + self.group + self.identity.public + eph + nonce

    async def _dial(self, peer: Peer) -> _Conn:
        """Connect to ``peer`` and run the initiator's side of the handshake."""
        reader, writer = await asyncio.open_connection(peer.host, peer.port, limit=2**16)
        try:
            eph = X25519PrivateKey.generate()
            hello = self._hello(_eph_public(eph), os.urandom(32))
            writer.write(hello)
            reply = await reader.readexactly(_REPLY)
            if reply[: len(MAGIC)] != MAGIC:
                raise HandshakeError(f"{peer.name} did not answer the Kaires handshake")
            o = len(MAGIC)
            pub, their_eph, sig = reply[o : o + 32], reply[o + 32 : o + 64], reply[o + 96 :]
            if not hmac.compare_digest(pub, peer.public):
                raise HandshakeError(
                    f"{peer.name} at {peer.host}:{peer.port} presented key {pub.hex()[:16]}…, "
                    f"not its pinned key {peer.public.hex()[:16]}…"
                )
            tr = _transcript(self.group, hello, reply[: o + 96])
            if not is_valid(pub, RESPONDER_CONTEXT, tr, sig):
                raise HandshakeError(
                    f"{peer.name}'s handshake signature does not verify (another group id?)"
                )
            writer.write(self.identity.sign(INITIATOR_CONTEXT, tr))
            session = _session(eph, their_eph, tr, initiator=True)
        except BaseException:
            writer.close()
            raise
        conn = _Conn(self, writer, session, peer.name, pub)
        self._conns.add(conn)
        self._count("connections_out")
        log.info("connected to %s at %s:%d", peer.name, peer.host, peer.port)
        asyncio.get_running_loop().create_task(self._read(conn, reader))
        return conn

    async def _respond(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, bytes, _Session]:
        """The responder's side of the handshake: ``(peer name or client address, key,
        session)``."""
        hello = await reader.readexactly(_HELLO)
        o = len(MAGIC)
        if hello[:o] != MAGIC:
            raise HandshakeError("not a Kaires handshake")
        if not hmac.compare_digest(hello[o : o + 32], self.group):
            raise HandshakeError("the peer belongs to another group (chain id)")
        pub, their_eph = hello[o + 32 : o + 64], hello[o + 64 : o + 96]
        eph = X25519PrivateKey.generate()
        head = MAGIC + self.identity.public + _eph_public(eph) + os.urandom(32)
        tr = _transcript(self.group, hello, head)
        writer.write(head + self.identity.sign(RESPONDER_CONTEXT, tr))
        sig = await reader.readexactly(64)
        if not is_valid(pub, INITIATOR_CONTEXT, tr, sig):
            raise HandshakeError(f"key {pub.hex()[:16]}… did not prove it holds its private key")
        name = self.by_key.get(pub)
        if name is None:
            if not self.accept_clients:
                raise HandshakeError(f"unknown peer key {pub.hex()[:16]}… (clients not accepted)")
            name = client_address(pub)
        return name, pub, _session(eph, their_eph, tr, initiator=False)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        where = writer.get_extra_info("peername")
        if self._pending >= self.max_pending:
            log.warning(
                "refused connection from %s: %d handshakes already pending", where, self._pending
            )
            self._count("handshake_refused")
            writer.close()
            return
        self._pending += 1
        try:
            who, pub, session = await asyncio.wait_for(
                self._respond(reader, writer), self.handshake_timeout
            )
        except (TimeoutError, HandshakeError, asyncio.IncompleteReadError, OSError) as exc:
            log.warning("refused connection from %s: %s", where, exc or type(exc).__name__)
            self._count("handshake_refused")
            writer.close()
            return
        finally:
            self._pending -= 1
        if (
            who.startswith("client-")
            and who not in self._clients
            and len(self._clients) >= self.max_clients
        ):
            log.warning(
                "refused client %s from %s: %d clients connected", who, where, len(self._clients)
            )
            self._count("handshake_refused")
            writer.close()
            return
        conn = _Conn(self, writer, session, who, pub)
        self._conns.add(conn)
        self._count("connections_in")
        if conn.is_client:
            old = self._clients.get(who)
            if old is not None:
                old.close()
            self._clients[who] = conn
        log.info("accepted %s %s from %s", "client" if conn.is_client else "node", who, where)
        await self._read(conn, reader)

    async def _read(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        """Read, authenticate, decode and dispatch ``conn``'s frames until it closes."""
        reactor = self.reactor
        try:
            while conn.alive:
                header = await reader.readexactly(4)
                n = int.from_bytes(header, "big")
                if not _TAG <= n <= MAX_SEALED_BYTES:
                    raise EncodingError(f"frame length {n} outside 16..{MAX_SEALED_BYTES}")
                sealed = await reader.readexactly(n)
                try:
                    frame = conn.session.open(header, sealed)
                except InvalidTag:
                    raise EncodingError(
                        "frame does not authenticate (altered or injected)"
                    ) from None
                src, dst, body = wire.decode_frame(frame)
                if not conn.may_send_from(src):
                    log.warning("dropped a frame from %s claiming src %r", conn.who, src)
                    self._count("spoofed")
                    continue
                ep = self.endpoints.get(dst)
                if ep is None:
                    log.info("dropped a frame from %s to unknown local address %r", conn.who, dst)
                    self._count("unroutable")
                    continue
                while reactor.backlog > reactor.MAX_BACKLOG_BYTES and conn.alive:
                    await asyncio.sleep(0.005)
                reactor.post(functools.partial(self._deliver, ep, src, body), len(frame))
        except asyncio.IncompleteReadError:
            log.info("connection with %s closed", conn.who)
        except EncodingError as exc:
            log.warning("closed connection with %s: bad frame: %s", conn.who, exc)
            self._count("bad_frames")
        except (ConnectionError, OSError) as exc:
            log.info("connection with %s lost: %s", conn.who, exc)
        finally:
            conn.close()
            self._conns.discard(conn)
            if self._clients.get(conn.who) is conn:
                del self._clients[conn.who]
            for link in self._links.values():
                if link.conn is conn:
                    link.wake.set()
