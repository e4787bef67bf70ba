"""Nodes as OS processes through the CLI: committee init / up / status / down, a node
SIGKILLed and restarted with ``kaires node run`` (catch-up, ``kaires audit``), hostile
bytes and peers on a node's port, and one-line start-up errors.

Steady on a loaded machine: ports are chosen free at run time, readiness is polled (never
slept on), deadlines are generous, and every process started is stopped in a finally.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression

import kaires_fl
from kaires_fl.bench.net import free_base_port
from kaires_fl.crypto.sign import Identity
from kaires_fl.estimators import KairesLinearRegression
from kaires_fl.ledger.consensus import Status, TxGossip
from kaires_fl.ledger.tx import make_tx
from kaires_fl.node.config import load_group
from kaires_fl.node.host import group_genesis
from kaires_fl.node.process import (
    PID_FILE,
    CommitteeClient,
    pid_alive,
    read_pid,
    stop_nodes,
)
from kaires_fl.transport.tcp import MAGIC

N = 4
DEADLINE = 90.0  # seconds any one wait may take on a loaded machine


def _kaires(*args: str, timeout: float = DEADLINE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kaires_fl.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


_free_base = free_base_port  # P .. P+n-1 free on 127.0.0.1 now (the bench's helper)


def _wait(pred: Callable[[], bool], timeout: float = DEADLINE, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every)
    return pred()


def _run_node(node_dir: Path, group: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "kaires_fl.cli", "node", "run", "--dir", str(node_dir)]
    cmd += ["--group", str(group)]
    with open(node_dir / "node.log", "ab") as logf:
        return subprocess.Popen(
            cmd,
            stdout=logf,
            stderr=logf,
            start_new_session=True,
        )


class Committee:
    def __init__(self, root: Path, up_s: float, up_out: str) -> None:
        self.root = root
        self.group_path = root / "group.toml"
        self.group = load_group(self.group_path)
        self.dirs = [root / f"node-{i}" for i in range(N)]
        self.up_s = up_s
        self.up_out = up_out
        self.children: list[subprocess.Popen[bytes]] = []
        self.chain = group_genesis(self.group).chain_id

    def heights(self, client: CommitteeClient, expect: int = N) -> dict[str, int]:
        """Heights of the nodes that answer (waits up to 2 s for ``expect`` answers)."""
        views = client.poll(2.0, until=lambda st: len(st) >= expect)
        return {v.name: v.status.height for v in views if v.status is not None}


@pytest.fixture(scope="module")
def committee(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Committee]:
    root = tmp_path_factory.mktemp("procs") / "committee"
    base = _free_base(N)
    t0 = time.monotonic()
    init = _kaires("committee", "init", "--dir", str(root), "--nodes", str(N),
                   "--base-port", str(base))  # fmt: skip
    assert init.returncode == 0, init.stderr
    c: Committee | None = None
    try:
        up = _kaires("committee", "up", "--dir", str(root), "--detach", "--timeout", "80")
        up_s = time.monotonic() - t0
        assert up.returncode == 0, up.stdout + up.stderr
        c = Committee(root, up_s, up.stdout)
        print(f"\ncommittee_up_s {up_s:.2f} (init -> ready, {N} node processes)")
        yield c
    finally:
        dirs = [root / f"node-{i}" for i in range(N)]
        stop_nodes(dirs, grace=5.0, out=lambda s: None)
        for p in c.children if c else []:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


@pytest.mark.slow
def test_up_prints_pinned_ids_and_status_is_live(committee: Committee) -> None:
    """Deployment: four OS processes become ready (genesis, DKG, LTS, aggregation
    committee); ``up`` prints the chain and committee ids providers pin, and ``status``
    reports every node reachable and ready (exit 0)."""
    c = committee
    genesis = group_genesis(c.group)
    assert f"chain id {genesis.chain_id}" in c.up_out
    assert f"committee id {c.group.committee_id}" in c.up_out
    assert c.up_s < 60.0
    pids = [read_pid(d) for d in c.dirs]
    assert all(p is not None for p in pids) and len(set(pids)) == N
    st = _kaires("committee", "status", "--group", str(c.group_path))
    assert st.returncode == 0, st.stdout + st.stderr
    rows = [ln for ln in st.stdout.splitlines() if ln.startswith("node-")]
    assert len(rows) == N and all(" yes " in r for r in rows)
    assert "committee live: 4/4" in st.stdout
    for d in c.dirs:
        log = (d / "node.log").read_text()
        assert "DKG done, share persisted" in log and "ready at height" in log


@pytest.mark.slow
def test_ready_nodes_warm_their_kernels(committee: Committee) -> None:
    """Once ready, every node runs its kernel warm-up (kaires_fl.node.warmup) on a
    background thread and logs it: a checked tiny job, its kernels compiled."""
    c = committee

    def warm() -> bool:
        return all("kernels warm (" in (d / "node.log").read_text() for d in c.dirs)

    assert _wait(warm, 180), [(d / "node.log").read_text()[-500:] for d in c.dirs]
    for d in c.dirs:
        log = (d / "node.log").read_text()
        assert log.index("ready at height") < log.index("kernels warm (")
        assert "warm-up failed" not in log


@pytest.mark.slow
def test_hostile_bytes_and_peers_are_refused_and_the_node_serves(committee: Committee) -> None:
    """Robustness: garbage bytes, a handshake for another group, a handshake claiming a
    node's pinned key without its private key, and a client frame spoofing a node's
    address reach node-0's port: each is refused and logged, and node-0 keeps answering
    and committing."""
    c = committee
    host, port = c.group.nodes[0].address.split(":")
    node1_key = bytes.fromhex(c.group.nodes[1].sign)

    def connect() -> socket.socket:
        s = socket.create_connection((host, int(port)), timeout=10)
        s.settimeout(10)
        return s

    # 1. garbage
    with connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(200))
        assert s.recv(1024) == b""  # closed on us
    # 2. another group id
    with connect() as s:
        s.sendall(MAGIC + os.urandom(32) + node1_key + os.urandom(64))
        assert s.recv(1024) == b""
    # 3. node-1's key without its private key: the responder's reply comes, our signature fails
    from kaires_fl.crypto.sign import H

    gid = H(b"kaires/net/group", bytes.fromhex(c.group.id))
    with connect() as s:
        s.sendall(MAGIC + gid + node1_key + os.urandom(64))
        reply = b""
        while len(reply) < len(MAGIC) + 32 * 3 + 64:
            chunk = s.recv(4096)
            assert chunk
            reply += chunk
        s.sendall(Identity.generate().sign(b"kaires/net/handshake/initiator", b"x"))
        assert s.recv(1024) == b""
    # 4. an unknown key connects as a client and spoofs ledger-1 as src
    with CommitteeClient(c.group) as client:
        client.net._send("ledger-1", "ledger-0", Status(10**6, 1))
        before = c.heights(client)
        assert before.get("node-0") is not None, "node-0 stopped answering"
        # (measured before the transactions are sent: the block may commit at once)
        txs = [make_tx(c.chain, "coin.transfer",
                       {"to": "00" * 32, "amount": 1}, 1, Identity.generate())
               for _ in range(5)]  # fmt: skip
        client.endpoint.broadcast(client.ledger_addresses, TxGossip(tuple(txs)))
        assert _wait(lambda: c.heights(client).get("node-0", 0) > before["node-0"], 30)

    log_path = c.dirs[0] / "node.log"

    def logged() -> bool:
        log = log_path.read_text()
        return log.count("refused connection") >= 3 and "claiming src 'ledger-1'" in log

    assert _wait(logged, 20), log_path.read_text()[-3000:]
    log = log_path.read_text()
    assert "not a Kaires handshake" in log and "another group" in log
    assert "did not prove it holds its private key" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_sigkilled_node_restarts_catches_up_and_audit_verifies(committee: Committee) -> None:
    """Fault tolerance: node-3 is SIGKILLed; the other three keep committing clients'
    transactions and run a diabetes fit through ``kaires_fl.connect`` (equal to
    scikit-learn); restarted with ``kaires node run`` on its directory (stale pid file,
    persisted share), it catches up to the same height and ``kaires audit`` verifies
    the chain from genesis through a live node and lists the job's access to a
    provider's policy, with its proof."""
    c = committee
    victim = c.dirs[3]
    pid = read_pid(victim)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert _wait(lambda: not pid_alive(pid), 20)
    assert (victim / PID_FILE).exists()  # stale: a SIGKILLed node cannot clean up
    with CommitteeClient(c.group) as client:
        start = c.heights(client, 3)
        assert "node-3" not in start and len(start) == 3
        for _ in range(3):
            h0 = max(c.heights(client, 3).values())
            txs = [make_tx(c.chain, "coin.transfer",
                           {"to": "11" * 32, "amount": 1}, 1, Identity.generate())
                   for _ in range(10)]  # fmt: skip
            client.endpoint.broadcast(client.ledger_addresses, TxGossip(tuple(txs)))
            assert _wait(lambda h0=h0: min(c.heights(client, 3).values()) > h0, 30)
        # a job with node-3 down: same result as scikit-learn, and an access on the ledger
        X, y = load_diabetes(return_X_y=True)
        with kaires_fl.connect(c.group_path, timeout=60.0) as remote:
            est = KairesLinearRegression(n_providers=4, committee=remote).fit(X, y)
            policy = sorted(p.policy_id for p in remote.providers.values())[0]
        sk = LinearRegression().fit(X, y)
        ours, ref = np.append(est.coef_, est.intercept_), np.append(sk.coef_, sk.intercept_)
        assert np.max(np.abs(ours - ref)) / np.max(np.abs(ref)) <= 1e-6
        target = max(c.heights(client, 3).values())
        assert target >= max(start.values()) + 3
        # restart with kaires node run
        p = _run_node(victim, c.group_path)
        c.children.append(p)

        def caught_up() -> bool:
            views = {v.name: v.status for v in client.poll(2.0)}
            s = views.get("node-3")
            others = [v.height for n, v in views.items() if v is not None and n != "node-3"]
            return s is not None and s.ready and bool(others) and s.height == max(others)

        assert _wait(caught_up, 60), (victim / "node.log").read_text()[-3000:]
    assert read_pid(victim) == p.pid
    log = (victim / "node.log").read_text()
    assert "share reloaded" in log
    audit = _kaires("audit", "--group", str(c.group_path), "--provider", policy)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "verified from genesis" in audit.stdout
    assert f"accesses to policy {policy}: 1," in audit.stdout, audit.stdout
    assert "LinearRegression" in audit.stdout or "(proof" in audit.stdout
    got = int(re.search(r": (\d+) blocks \(", audit.stdout).group(1))  # type: ignore[union-attr]
    assert got >= target


@pytest.mark.slow
def test_down_stops_every_node_cleanly(committee: Committee) -> None:
    """Operations: ``committee down`` SIGTERMs every node by its pid file; each stops
    cleanly (``stopped`` logged, pid file removed, no traceback) and ``status`` then
    exits 1 (not live)."""
    c = committee
    pids = [read_pid(d) for d in c.dirs]
    down = _kaires("committee", "down", "--dir", str(c.root))
    assert down.returncode == 0, down.stdout + down.stderr
    assert down.stdout.count("stopped (pid") == N
    for p in c.children:
        p.wait(timeout=20)
        assert p.returncode == 0
    assert all(pid is not None and not pid_alive(pid) for pid in pids)
    for d in c.dirs:
        assert not (d / PID_FILE).exists()
        log = (d / "node.log").read_text()
        assert "stopping (signal)" in log and "stopped" in log.splitlines()[-20:].__str__()
        assert "Traceback" not in log
    st = _kaires("committee", "status", "--group", str(c.group_path), "--timeout", "1")
    assert st.returncode == 1 and "NOT live" in st.stdout


# -- start-up errors: one line, no traceback --------------------------------------------------


@pytest.fixture(scope="module")
def lone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lone") / "c"
    r = _kaires("committee", "init", "--dir", str(root), "--nodes", "4",
                "--base-port", str(_free_base(4)))  # fmt: skip
    assert r.returncode == 0, r.stderr
    return root


def _one_error_line(r: subprocess.CompletedProcess[str], *words: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("kaires: error:"), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    for w in words:
        assert w in lines[0], lines[0]


def test_port_in_use_is_one_error_line(lone: Path) -> None:
    """Usability: a node whose port is taken says so in one line and exits (no traceback,
    no pid file left)."""
    group = load_group(lone / "group.toml")
    host, port = group.nodes[0].address.split(":")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        s.listen()
        r = _kaires("node", "run", "--dir", str(lone / "node-0"), "--group",
                    str(lone / "group.toml"))  # fmt: skip
    _one_error_line(r, "cannot listen", port)
    assert not (lone / "node-0" / PID_FILE).exists()


def test_malformed_group_is_one_error_line(lone: Path, tmp_path: Path) -> None:
    """Usability: a malformed group.toml is named in one line."""
    bad = tmp_path / "group.toml"
    bad.write_text((lone / "group.toml").read_text() + "\nthis is [not toml\n")
    r = _kaires("node", "run", "--dir", str(lone / "node-0"), "--group", str(bad))
    _one_error_line(r, str(bad), "malformed TOML")


def test_missing_key_file_is_one_error_line(lone: Path, tmp_path: Path) -> None:
    """Usability: a node directory without private.toml is named in one line."""
    d = tmp_path / "node-0"
    d.mkdir()
    (d / "public.toml").write_bytes((lone / "node-0" / "public.toml").read_bytes())
    r = _kaires("node", "run", "--dir", str(d), "--group", str(lone / "group.toml"))
    _one_error_line(r, "private.toml", "not found")


def test_status_of_a_committee_that_is_down_exits_1(lone: Path) -> None:
    """Operations: with no node running, ``status`` shows every node unreachable, exit 1."""
    r = _kaires("committee", "status", "--group", str(lone / "group.toml"), "--timeout", "0.5")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.count(" no ") >= N and "NOT live: 0/4" in r.stdout


@pytest.mark.slow
def test_up_in_the_foreground_stops_the_nodes_on_ctrl_c(tmp_path: Path) -> None:
    """Operations: ``committee up`` without --detach stays in the foreground once ready;
    SIGINT (Ctrl-C) stops every node it started (pid files removed) and it exits 0."""
    root = tmp_path / "c"
    r = _kaires("committee", "init", "--dir", str(root), "--nodes", "4",
                "--base-port", str(_free_base(4)))  # fmt: skip
    assert r.returncode == 0, r.stderr
    up = subprocess.Popen(
        [sys.executable, "-m", "kaires_fl.cli", "committee", "up", "--dir", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    dirs = [root / f"node-{i}" for i in range(4)]
    try:
        assert up.stdout is not None
        lines = []
        for line in up.stdout:  # blocks until a line or EOF (the command's own timeout)
            lines.append(line)
            if line.startswith("running; Ctrl-C"):
                break
        assert any(ln.startswith("committee ready in") for ln in lines), "".join(lines)
        pids = [read_pid(d) for d in dirs]
        assert all(p is not None for p in pids)
        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=DEADLINE)
        assert up.returncode == 0, "".join(lines) + rest
        assert rest.count("stopped (pid") == 4, rest
        assert not any((d / PID_FILE).exists() for d in dirs)
        assert not any(pid_alive(p) for p in pids if p is not None)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(timeout=10)
        stop_nodes(dirs, grace=5.0, out=lambda s: None)


@pytest.mark.slow
def test_up_reports_a_node_that_cannot_start_and_stops_the_others(tmp_path: Path) -> None:
    """Usability: when a node cannot start (its port is taken), ``committee up`` names it
    with its error, stops the nodes it started and exits 1 — no half-up committee."""
    root = tmp_path / "c"
    r = _kaires("committee", "init", "--dir", str(root), "--nodes", "4",
                "--base-port", str(_free_base(4)))  # fmt: skip
    assert r.returncode == 0, r.stderr
    host, port = load_group(root / "group.toml").nodes[2].address.split(":")
    dirs = [root / f"node-{i}" for i in range(4)]
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, int(port)))
            s.listen()
            up = _kaires("committee", "up", "--dir", str(root), "--detach", "--timeout", "60")
        assert up.returncode == 1, up.stdout + up.stderr
        assert "node-2 exited with status 2" in up.stdout and "cannot listen" in up.stdout
        assert "Traceback" not in up.stdout + up.stderr
        assert all(read_pid(d) is None for d in dirs)
    finally:
        stop_nodes(dirs, grace=5.0, out=lambda s: None)


def test_ledger_address_answers_status_and_survives_junk(tmp_path: Path) -> None:
    """Robustness: the node's ``ledger-<i>`` handler answers a NodeStatusRequest from
    anyone with its status, and arbitrary bytes or objects from anyone never raise out
    of it (the ledger node's boundary drops them); it still answers afterwards."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from kaires_fl.node.config import make_group, setup_node, write_group
    from kaires_fl.node.host import Node, NodeStatus, NodeStatusRequest
    from kaires_fl.transport.memory import MemoryNetwork

    entry = setup_node(tmp_path / "node-0", "127.0.0.1:7100", name="node-0")
    write_group(make_group([entry]), tmp_path / "group.toml")
    group = load_group(tmp_path / "group.toml")
    net = MemoryNetwork(seed=1)
    node = Node(tmp_path / "node-0", group, net)
    got: list[object] = []
    client = net.endpoint("client-00")
    client.set_handler(lambda src, msg: got.append(msg))
    try:

        def ask(nonce: int) -> NodeStatus:
            got.clear()
            client.send("ledger-0", NodeStatusRequest(nonce))
            assert net.run_until(lambda: bool(got), 5.0)
            reply = got[0]
            assert isinstance(reply, NodeStatus) and reply.nonce == nonce
            return reply

        first = ask(7)
        assert first.name == "node-0" and first.chain == group_genesis(group).chain_id
        assert first.committee == group.committee_id and first.roles == tuple(entry.roles)

        junk = st.one_of(
            st.binary(max_size=256),
            st.integers(),
            st.text(max_size=32),
            st.none(),
            st.builds(Status, st.integers(0, 2**62), st.integers(0, 2**16)),
        )

        @settings(max_examples=150, deadline=None)
        @given(junk)
        def feed(msg: object) -> None:
            node._on_ledger_message("client-00", msg)

        feed()
        assert ask(8).name == "node-0"
    finally:
        node.stop()


def test_down_kills_a_node_that_ignores_sigterm(lone: Path) -> None:
    """Operations: ``committee down`` escalates to SIGKILL after the grace period for a
    node process that does not stop on SIGTERM, and removes its pid file."""
    d = lone / "node-1"
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    # the arguments make it look like `kaires node run` (the pid-reuse guard)
    p = subprocess.Popen([sys.executable, "-c", code, "node", "run"], start_new_session=True)
    try:
        assert _wait(lambda: b"run" in Path(f"/proc/{p.pid}/cmdline").read_bytes(), 10)
        (d / PID_FILE).write_text(f"{p.pid}\n")
        assert read_pid(d) == p.pid
        r = _kaires("committee", "down", "--dir", str(lone), "--grace", "0.5")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"node-1: killed (pid {p.pid}" in r.stdout
        assert p.wait(timeout=10) == -signal.SIGKILL
        assert not (d / PID_FILE).exists()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
        (d / PID_FILE).unlink(missing_ok=True)


def test_audit_verification_refuses_altered_chains() -> None:
    """Integrity: what ``kaires audit`` does with the blocks a node served
    (:func:`verify_and_prove`) accepts the real chain and refuses a dropped, reordered,
    truncated or foreign block with an AuditError; arbitrary byte mutations of a record
    give an AuditError or (a mutation the certificate's quorum tolerates) the same
    height — never another exception."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from kaires_fl.errors import AuditError
    from kaires_fl.ledger.client import LocalLedger
    from kaires_fl.node.process import verify_and_prove

    ledgers = [LocalLedger(4, seed=s) for s in (1, 2)]
    try:
        for L in ledgers:
            client = L.client()
            for _ in range(3):
                tx = make_tx(L.genesis.chain_id, "coin.transfer",
                             {"to": "22" * 32, "amount": 1}, 1, Identity.generate())  # fmt: skip
                client.wait([client.submit(tx, check=False)], 30.0)
        raw = ledgers[0].client().raw_blocks()
        other = ledgers[1].client().raw_blocks()
        genesis = ledgers[0].genesis
        assert len(raw) >= 3
        assert verify_and_prove(raw, genesis, "none")[0] == len(raw)
        for bad in (
            raw[1:],
            [raw[1], raw[0], *raw[2:]],
            [*raw[:-1], raw[-1][:-5]],
            [raw[0], other[1], *raw[2:]],
        ):
            with pytest.raises(AuditError):
                verify_and_prove(bad, genesis)

        @settings(max_examples=60, deadline=None)
        @given(st.integers(0, len(raw) - 1), st.integers(0, 10**6), st.integers(1, 255))
        def mutate(i: int, pos: int, x: int) -> None:
            rec = bytearray(raw[i])
            rec[pos % len(rec)] ^= x
            try:
                h, _ = verify_and_prove([*raw[:i], bytes(rec), *raw[i + 1 :]], genesis)
            except AuditError:
                return
            assert h == len(raw)

        mutate()
    finally:
        for L in ledgers:
            L.close()
