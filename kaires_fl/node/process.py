"""Nodes as OS processes: ``kaires node run``, ``committee up/down/status``, ``audit``.

- :func:`run_node` — one :class:`~kaires_fl.node.host.Node` in the foreground on a
  :class:`~kaires_fl.transport.tcp.TcpNetwork` listening on the node's address (clients
  accepted), ``NODE_DIR/node.pid`` written while it runs, SIGTERM/SIGINT stop it cleanly
  (sockets closed, SQLite closed, pid file removed), one log line per event on stderr.
- :class:`CommitteeClient` — a keyless client of a committee (a fresh Ed25519 identity,
  no node key): asks nodes for their :class:`~kaires_fl.node.host.NodeStatus`, downloads
  the certified chain with the ledger's own ``SyncRequest`` / ``SyncResponse``.
- :func:`committee_up` / :func:`committee_down` — one ``python -m kaires_fl.cli node run``
  process per node of a ``committee init`` directory; readiness is polled over the
  network as a client, never guessed from time.
- :func:`committee_status`, :func:`audit` — the operator's and the provider's views.

Threading: a node runs every service on the thread that drives its network (the main
thread); socket I/O is on the transport's I/O thread. A long computation in a handler
(an aggregator's share verification, a large block) delays the node's consensus timers
by as long as it runs — the ledger's view timeouts absorb short stalls (they double up
to ``max_timeout``), but nothing is moved off the loop yet. Once ready, a node compiles
the numba kernels a job calls on a background thread (:mod:`kaires_fl.node.warmup`;
``KAIRES_NODE_WARMUP=0`` turns it off), so that no job compiles them on the loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kaires_fl.crypto.sign import Identity
from kaires_fl.errors import AuditError, ConfigError, KairesError
from kaires_fl.ledger.audit import BlockProof, StateProof, _replay, verify_chain
from kaires_fl.ledger.block import decode_certified
from kaires_fl.ledger.budgets import privacy_line
from kaires_fl.ledger.consensus import SyncRequest, SyncResponse
from kaires_fl.ledger.contracts import DEFAULT_REGISTRY
from kaires_fl.ledger.encoding import canonical, decode_canonical
from kaires_fl.ledger.node import LedgerConfig
from kaires_fl.ledger.state import State
from kaires_fl.node.config import Group, load_group, load_node, parse_address
from kaires_fl.node.host import Node, NodeStatus, NodeStatusRequest, group_genesis, tcp_peers
from kaires_fl.node.warmup import start_warmup
from kaires_fl.transport.tcp import TcpNetwork

log = logging.getLogger("kaires_fl.node.process")

PID_FILE = "node.pid"
LOG_FILE = "node.log"
GROUP_FILE = "group.toml"

#: Timing of a node on a real network (seconds): DKG round, bootstrap tick, ledger.
DKG_ROUND_TIME = 0.25
TICK = 0.1
LEDGER_CONFIG = LedgerConfig(view_timeout=1.0, max_timeout=8.0)
#: Seconds between two returns of a node's freed heap memory to the OS (glibc
#: ``malloc_trim``): transient buffers — messages queued for a peer that is down, a sync
#: batch for one that restarted — are freed after use, but glibc keeps the freed pages
#: resident, so without it a node's RSS ratchets up with every peer restart.
TRIM_EVERY = 30.0
#: Environment variable: ``0`` turns off the kernel warm-up a node runs once it is ready
#: (:mod:`kaires_fl.node.warmup`); seconds between two readiness checks before it starts.
WARMUP_ENV = "KAIRES_NODE_WARMUP"
WARMUP_POLL = 0.5


def malloc_trim() -> Callable[[], None] | None:
    """A function returning freed heap pages to the OS (glibc's ``malloc_trim(0)``), or
    None where the C library has none (not Linux with glibc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release() -> None:
        trim(0)

    return release


# -- logging and pid files --------------------------------------------------------------------


def configure_logging(level: int = logging.INFO) -> None:
    """One line per event on stderr: ``time level logger: message`` (UTC)."""
    handler = logging.StreamHandler(sys.stderr)
    fmt = logging.Formatter("%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s")
    fmt.datefmt = "%Y-%m-%dT%H:%M:%S"
    fmt.converter = time.gmtime
    handler.setFormatter(fmt)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): kill(0) is all we know
    return stat[stat.rfind(")") + 2 :][:1] not in ("Z", "X")


def _is_node_process(pid: int) -> bool:
    """Whether ``pid`` runs ``kaires node run`` (guards against a recycled pid)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return pid_alive(pid)
    return b"node" in cmd and b"run" in cmd


def read_pid(node_dir: str | os.PathLike[str]) -> int | None:
    """The pid in ``node_dir/node.pid`` if that process is a live node, else None."""
    try:
        pid = int(Path(node_dir, PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) and _is_node_process(pid) else None


# -- kaires node run -----------------------------------------------------------------------------


def run_node(
    node_dir: str | os.PathLike[str],
    group_path: str | os.PathLike[str],
) -> int:
    """Run the node of ``node_dir`` in the foreground until SIGTERM or SIGINT.

    Pre: ``node_dir`` holds the node's keys (``kaires node setup``), ``group_path`` a
    group containing it. Post: on a signal, every service is stopped, the sockets and the
    ledger database are closed and ``node.pid`` is removed; returns 0.

    Raises
    ------
    ConfigError
        (before anything is started or logged) for a malformed group file, missing or
        invalid key files, a node already running on ``node_dir``, or a port in use.
    """
    node_dir = Path(node_dir)
    group = load_group(group_path)
    keys, entry = load_node(node_dir, group)
    running = read_pid(node_dir)
    if running is not None and running != os.getpid():
        raise ConfigError(
            f"{node_dir / PID_FILE}: node {entry.name!r} already runs as pid {running}; "
            "stop it first (kaires committee down, or kill that pid)"
        )
    net = TcpNetwork(
        keys.identity,
        parse_address(entry.address),
        tcp_peers(group),
        group=bytes.fromhex(group.id),
        accept_clients=True,
    )
    stop = [False]

    def on_signal(signum: int, frame: Any) -> None:
        stop[0] = True
        net.reactor.stop()  # wakes the driving thread (re-entrant lock: safe here)

    pid_path = node_dir / PID_FILE
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    node: Node | None = None
    try:
        node = Node(
            node_dir,
            group,
            net,
            ledger_config=LEDGER_CONFIG,
            dkg_round_time=DKG_ROUND_TIME,
            tick=TICK,
        )
        nd = node

        def on_commit(block: Any, cert: Any) -> None:
            log.info(
                "node %s: block %d committed (%d txs, view %d)",
                nd.name,
                block.height,
                len(block.txs),
                nd.ledger_node.view,
            )

        node.ledger.on_commit.append(on_commit)
        trim = malloc_trim()
        if trim is not None:

            def trim_memory() -> None:
                trim()
                net.reactor.schedule(TRIM_EVERY, trim_memory)

            net.reactor.schedule(TRIM_EVERY, trim_memory)
        if os.environ.get(WARMUP_ENV, "1") != "0":

            def warm_when_ready() -> None:
                if nd.ready:
                    start_warmup(nd.name)
                else:
                    net.reactor.schedule(WARMUP_POLL, warm_when_ready)

            net.reactor.schedule(WARMUP_POLL, warm_when_ready)
        tmp = pid_path.with_suffix(".pid.tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, pid_path)
        log.info(
            "node %s: listening on %s (pid %d, chain %s…)",
            node.name,
            entry.address,
            os.getpid(),
            node.genesis.chain_id[:16],
        )
        net.reactor.run_until(lambda: stop[0], math.inf)
        log.info("node %s: stopping (signal)", node.name)
    finally:
        if node is not None:
            node.stop()
        net.close()
        with contextlib.suppress(OSError):
            if read_pid(node_dir) in (None, os.getpid()):
                pid_path.unlink()
        for s, h in old.items():
            signal.signal(s, h)
    return 0


# -- the client ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeView:
    """What a client learnt about one node (``status`` None: unreachable)."""

    name: str
    address: str
    roles: tuple[str, ...]
    status: NodeStatus | None


class CommitteeClient:
    """A keyless client of the committee of ``group`` (see the module docstring).

    Post: holds only a fresh Ed25519 identity (no node key); :meth:`close` closes its
    connections.
    """

    def __init__(self, group: Group, identity: Identity | None = None) -> None:
        self.group = group
        self.genesis = group_genesis(group)
        self.identity = identity or Identity.generate()
        self.net = TcpNetwork(
            self.identity,
            None,
            tcp_peers(group),
            group=bytes.fromhex(group.id),
            handshake_timeout=3.0,
            backoff=(0.05, 0.5),
        )
        self.endpoint = self.net.endpoint(self.net.client_prefix)
        self.endpoint.set_handler(self._on_message)
        self.ledger_addresses = group.addresses("ledger")
        self._owner = {a: e.name for e in group.nodes for a in group.node_addresses(e.sign)}
        self.statuses: dict[str, NodeStatus] = {}
        self._nonce = 0
        self._sync: dict[str, list[SyncResponse]] = {}

    def close(self) -> None:
        self.net.close()

    def __enter__(self) -> CommitteeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_message(self, src: str, msg: Any) -> None:
        name = self._owner.get(src)
        if name is None:
            return
        if isinstance(msg, NodeStatus) and msg.nonce == self._nonce and msg.name == name:
            self.statuses[name] = msg
        elif isinstance(msg, SyncResponse):
            self._sync.setdefault(src, []).append(msg)

    def poll(
        self, timeout: float, until: Callable[[dict[str, NodeStatus]], bool] | None = None
    ) -> list[NodeView]:
        """Ask every ledger node for its status (resent every 0.25 s) until every node
        answered, or ``until(statuses)`` holds, or ``timeout`` seconds pass."""
        self._nonce += 1
        self.statuses = {}
        nodes = [e for e in self.group.nodes if "ledger" in e.roles]
        deadline = time.monotonic() + timeout

        def done() -> bool:
            if until is not None:
                return until(self.statuses)
            return len(self.statuses) == len(nodes)

        ledger_names = [e.name for e in nodes]
        while True:
            # ask again only the nodes that have not answered, or were not ready yet (an
            # unreachable node's queue does not fill with questions)
            ask = [
                a
                for a, n in zip(self.ledger_addresses, ledger_names, strict=True)
                if n not in self.statuses or not self.statuses[n].ready
            ]
            self.endpoint.broadcast(ask, NodeStatusRequest(self._nonce))
            left = deadline - time.monotonic()
            if self.net.run_until(done, max(0.0, min(0.25, left))) or left <= 0.25:
                break
        return [
            NodeView(e.name, e.address, tuple(e.roles), self.statuses.get(e.name))
            for e in self.group.nodes
        ]

    def wait_ready(self, timeout: float, also: Callable[[], bool] = lambda: True) -> list[NodeView]:
        """Poll until every node reports ready (or ``timeout``, or ``also()`` fails)."""
        n = len(self.group.nodes)
        return self.poll(
            timeout,
            until=lambda st: not also() or (len(st) == n and all(s.ready for s in st.values())),
        )

    def fetch_chain(self, address: str, timeout: float = 30.0) -> list[bytes]:
        """Every certified block record ``address`` (a ``ledger-<i>``) has, from height 1.

        Raises
        ------
        KairesError
            if the node stops answering for ``timeout`` seconds.
        """
        blocks: list[bytes] = []
        while True:
            self._sync[address] = []
            start = len(blocks) + 1
            deadline = time.monotonic() + timeout
            while not self._sync[address]:
                self.endpoint.send(address, SyncRequest(start, 0))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise KairesError(
                        f"{address} did not send blocks from {start} within {timeout} s"
                    )
                self.net.run_until(lambda: bool(self._sync[address]), min(1.0, left))
            resp = self._sync[address][0]
            blocks.extend(resp.blocks)
            if not resp.more or not resp.blocks:
                return blocks


def is_live(views: Sequence[NodeView]) -> bool:
    """At least a quorum (n − f, i.e. 2f + 1 of 3f + 1) of ledger nodes reachable and ready."""
    ledger = [v for v in views if "ledger" in v.roles]
    n = len(ledger)
    f = (n - 1) // 3
    ok = sum(1 for v in ledger if v.status is not None and v.status.ready)
    return n > 0 and ok >= n - f


def _time(ms: int) -> str:
    if ms <= 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_status(views: Sequence[NodeView]) -> list[str]:
    """The lines ``kaires committee status`` prints."""
    out = [
        f"{'node':12s} {'address':22s} {'reachable':9s} {'ready':5s} {'height':>6s} "
        f"{'view':>4s} {'last block':20s} roles"
    ]
    for v in views:
        s = v.status
        if s is None:
            out.append(f"{v.name:12s} {v.address:22s} {'no':9s} {'-':5s} {'-':>6s} {'-':>4s} "
                       f"{'-':20s} {','.join(v.roles)}")  # fmt: skip
        else:
            out.append(
                f"{v.name:12s} {v.address:22s} {'yes':9s} {'yes' if s.ready else 'no':5s} "
                f"{s.height:6d} {s.view:4d} {_time(s.last_block_ms):20s} {','.join(s.roles)}"
            )
    return out


# -- kaires committee up / down / status ---------------------------------------------------------


def _committee(root: Path) -> tuple[Group, list[tuple[str, Path]]]:
    group = load_group(root / GROUP_FILE)
    dirs = []
    for e in group.nodes:
        d = root / e.name
        if not d.is_dir():
            raise ConfigError(
                f"{d}: no directory for node {e.name!r} of {root / GROUP_FILE} (committee up "
                "runs the nodes of a `kaires committee init` directory)"
            )
        dirs.append((e.name, d))
    return group, dirs


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def spawn_node(node_dir: Path, group_path: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m kaires_fl.cli node run`` for ``node_dir`` in its own session
    (a terminal's Ctrl-C does not reach it), appending to ``node_dir/node.log``."""
    with open(node_dir / LOG_FILE, "ab") as logf:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kaires_fl.cli",
                "node",
                "run",
                "--dir",
                str(node_dir),
                "--group",
                str(group_path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            start_new_session=True,
        )


def _say(line: str) -> None:
    print(line, flush=True)


def committee_up(
    root: str | os.PathLike[str],
    *,
    detach: bool = False,
    timeout: float = 120.0,
    out: Callable[[str], None] = _say,
) -> int:
    """Start every node of ``root`` (one OS process each) and wait until the committee is
    ready; print the ids providers pin. Without ``detach``, stay until SIGINT/SIGTERM and
    then stop the nodes. Returns 0 once ready (and, in the foreground, stopped), 1 if the
    committee did not become ready or a signal came first (the nodes started here are
    stopped again). Nodes already running (live pid file) are left as they are."""
    root = Path(root)
    t0 = time.monotonic()
    group, dirs = _committee(root)
    got: list[int] = []  # signals received (SIGINT/SIGTERM) while this command runs

    def on_signal(signum: int, frame: Any) -> None:
        got.append(signum)

    main_thread = threading.current_thread() is threading.main_thread()
    old = (
        {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        if main_thread
        else {}
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ok = False
    try:
        for name, d in dirs:
            pid = read_pid(d)
            if pid is not None:
                out(f"{name}: already running (pid {pid})")
                continue
            procs[name] = spawn_node(d, root / GROUP_FILE)
        out(f"started {len(procs)} node process(es); logs in {root}/node-*/{LOG_FILE}")
        with CommitteeClient(group) as client:
            dead: list[str] = []

            def go_on() -> bool:
                dead[:] = [n for n, p in procs.items() if p.poll() is not None]
                return not dead and not got

            views = client.wait_ready(timeout, also=go_on)
            ready = [v for v in views if v.status is not None and v.status.ready]
            if got:
                out("interrupted before the committee was ready")
                return 1
            if dead:
                for n in dead:
                    d = dict(dirs)[n]
                    out(
                        f"{n} exited with status {procs[n].returncode}: "
                        f"{_log_tail(d / LOG_FILE, 2)}"
                    )
                return 1
            if len(ready) < len(views):
                late = [v.name for v in views if v not in ready]
                out(f"committee not ready after {timeout:.0f} s (waiting for {', '.join(late)})")
                return 1
            st = ready[0].status
            assert st is not None
            out(f"committee ready in {time.monotonic() - t0:.1f} s at height {st.height}")
            out(f"chain id {st.chain}")
            out(f"committee id {st.committee}")
            out(f"lts id {st.lts}")
            out(f"group id {group.id}")
        ok = True
        if detach:
            return 0
        out("running; Ctrl-C stops the committee")
        while not got and any(p.poll() is None for p in procs.values()):
            time.sleep(0.2)
        return 0
    finally:
        if not ok or not detach:
            stop_nodes([d for n, d in dirs if n in procs], procs=procs, out=out)
        for s, h in old.items():
            signal.signal(s, h)


def stop_nodes(
    node_dirs: Sequence[Path],
    *,
    grace: float = 10.0,
    procs: dict[str, subprocess.Popen[bytes]] | None = None,
    out: Callable[[str], None] = _say,
) -> int:
    """SIGTERM every running node of ``node_dirs`` (by its pid file), SIGKILL those still
    alive after ``grace`` seconds; returns how many were running."""
    pids: dict[Path, int] = {}
    for d in node_dirs:
        pid = read_pid(d)
        if pid is None and procs is not None and procs.get(d.name) is not None:
            p = procs[d.name]
            pid = p.pid if p.poll() is None else None
        if pid is not None:
            pids[d] = pid
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    def reap() -> None:
        for p in (procs or {}).values():
            p.poll()

    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap()
        if not any(pid_alive(p) for p in pids.values()):
            break
        time.sleep(0.05)
    for d, pid in pids.items():
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            out(f"{d.name}: killed (pid {pid}, still running after {grace:.0f} s)")
            with contextlib.suppress(OSError):
                (d / PID_FILE).unlink()
        else:
            out(f"{d.name}: stopped (pid {pid})")
    for p in (procs or {}).values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=5.0)
    return len(pids)


def committee_down(
    root: str | os.PathLike[str], *, grace: float = 10.0, out: Callable[[str], None] = _say
) -> int:
    """Stop the nodes of ``root`` (pid files; SIGTERM, then SIGKILL after ``grace`` s)."""
    root = Path(root)
    _, dirs = _committee(root)
    n = stop_nodes([d for _, d in dirs], grace=grace, out=out)
    if n == 0:
        out("no node was running")
    return 0


def committee_status(
    group_path: str | os.PathLike[str],
    *,
    timeout: float = 3.0,
    out: Callable[[str], None] = _say,
) -> int:
    """Print each node's status; 0 if the committee is live (:func:`is_live`), else 1."""
    group = load_group(group_path)
    with CommitteeClient(group) as client:
        views = client.poll(timeout)
    for line in format_status(views):
        out(line)
    live = is_live(views)
    n = len([v for v in views if "ledger" in v.roles])
    ok = sum(1 for v in views if v.status is not None and v.status.ready and "ledger" in v.roles)
    out(f"committee {'live' if live else 'NOT live'}: {ok}/{n} ledger nodes reachable and ready")
    return 0 if live else 1


# -- kaires audit --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditReport:
    """What :func:`audit_chain` established."""

    via: str
    height: int
    accesses: list[StateProof]
    #: The highest height any node claimed in its status (unauthenticated: a node may
    #: withhold its latest blocks, or claim a height it does not have).
    claimed: int = 0


def verify_and_prove(
    raw: Sequence[bytes], genesis: Any, provider: str | None = None
) -> tuple[int, list[StateProof]]:
    """Verify block records ``raw`` (heights 1, 2, …, from anyone) from ``genesis`` and
    prove ``provider``'s access entries against the last block.

    Post: returns ``(len(raw), proofs)``; every block is final on ``genesis``'s chain
    (links, times, tx roots, 2f + 1 roster signatures) and every transaction re-executes
    to its recorded result and the recorded state roots (what ``verify_chain(...,
    replay=True)`` checks, in one replay that keeps the state); each proof verifies.

    Raises
    ------
    AuditError
        naming the first block that fails — never another exception.
    """
    height = verify_chain(raw, genesis, registry=DEFAULT_REGISTRY)
    if height != len(raw):
        raise AuditError(f"verified {height} of {len(raw)} blocks")
    state = State({k: canonical(v) for k, v in genesis.state.items()})
    last = None
    for rec in raw:
        block, cert = decode_certified(rec)
        try:
            _replay(state, block, DEFAULT_REGISTRY)
        except (KairesError, TypeError, ValueError, OverflowError) as exc:
            raise AuditError(f"block {block.height}: {exc}") from None
        last = (block, cert)
    proofs: list[StateProof] = []
    if provider is not None:
        bp = BlockProof(last[0].header, last[1]) if last else BlockProof(None, None)
        for key in sorted(state.keys(f"access/{provider}/")):
            pairs, sibs = state.tree.proof(key)
            raw_value = state.raw(key)
            value = None if raw_value is None else decode_canonical(raw_value)
            proof = StateProof(bp, key, value, tuple(pairs), tuple(sibs))
            proof.verify(genesis)
            proofs.append(proof)
    return height, proofs


def audit_chain(group: Group, provider: str | None = None, *, timeout: float = 30.0) -> AuditReport:
    """Download the chain from the first live ledger node, verify it from the genesis of
    ``group`` (hash links, 2f + 1 signatures per block, every transaction replayed) and
    prove ``provider``'s access entries against the last block.

    Raises
    ------
    AuditError
        if the chain does not verify; KairesError if no node is reachable.
    """
    genesis = group_genesis(group)
    with CommitteeClient(group) as client:
        views = client.poll(min(timeout, 5.0))
        live = [v for v in views if v.status is not None and "ledger" in v.roles]
        if not live:
            raise KairesError("no ledger node of the group answered; is the committee up?")
        best = max(live, key=lambda v: v.status.height if v.status else 0)
        entry = next(e for e in group.nodes if e.name == best.name)
        i = group.role_index("ledger", entry.sign)
        assert i is not None
        address = client.ledger_addresses[i]
        raw = client.fetch_chain(address, timeout)
    height, proofs = verify_and_prove(raw, genesis, provider)
    claimed = max(v.status.height for v in live if v.status is not None)
    return AuditReport(best.name, height, proofs, claimed)


def audit(
    group_path: str | os.PathLike[str],
    provider: str | None = None,
    *,
    timeout: float = 30.0,
    out: Callable[[str], None] = _say,
) -> int:
    """``kaires audit``: print the verified height and the provider's accesses; 0 if the
    chain verifies (an :class:`AuditError` is reported by the CLI as an error)."""
    group = load_group(group_path)
    report = audit_chain(group, provider, timeout=timeout)
    out(
        f"chain {group_genesis(group).chain_id[:16]}… verified from genesis through {report.via}: "
        f"{report.height} blocks (hash links, 2f + 1 signatures, every transaction replayed)"
    )
    if report.claimed > report.height:
        out(
            f"note: a node claims height {report.claimed} but {report.via} served "
            f"{report.height} blocks (withheld blocks or a false claim; audit again later)"
        )
    if provider is not None:
        out(f"accesses to policy {provider}: {len(report.accesses)}, each proven at height "
            f"{report.height}")  # fmt: skip
        for p in report.accesses:
            e = p.value if isinstance(p.value, dict) else {}
            out(
                f"  job {str(e.get('job', p.key))[:16]}… {e.get('statistic', '?')} by consumer "
                f"{str(e.get('consumer', '?'))[:16]}… at height {e.get('height', '?')} "
                f"(proof {len(p.to_bytes())} bytes, verified)"
            )
            if isinstance(e.get("privacy"), dict):
                out(f"    {privacy_line(e['privacy'])}")
    return 0
