"""Where the explorer gets block records: a persisted LocalCommittee, or a deployed group.

- :class:`DbSource` (``kaires explorer --db DIR``): the SQLite file of every ledger node in
  ``DIR`` (``ledger-<i>.sqlite``, as ``LocalCommittee(db_dir=DIR)`` writes them), opened
  read-only. Each file's blocks are verified from the genesis record most files hold (one
  altered file cannot move the trust root), and each file's stored state is compared with
  the replay of its verified blocks.
- :class:`GroupSource` (``kaires explorer --group group.toml``): a keyless client of the
  group asks every ledger node for its status and downloads every reachable node's chain;
  each chain is verified from the genesis the group file fixes (as ``kaires audit`` does).

Both return a :class:`Snapshot`: one :class:`~kaires_fl.explorer.chain.ChainView` per node
(so a node that lies, or a database that was altered, shows as failing verification) and
the view the pages show (the longest verified chain). A snapshot is recomputed, on a page
request, at most every ``refresh`` seconds: when a file changed (DbSource), or always
(GroupSource: every node's chain downloaded and verified again from genesis, so a node that
starts lying is caught at the next refresh).
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaires_fl.errors import ConfigError, EncodingError, KairesError
from kaires_fl.explorer.chain import ChainView, compare_state, verify_records
from kaires_fl.ledger.block import Genesis

if TYPE_CHECKING:
    from kaires_fl.node.config import Group

_LEDGER_FILE = re.compile(r"^ledger-(\d+)\.sqlite$")


@dataclass(frozen=True)
class NodeHealth:
    """One node as the committees page shows it (``reachable`` False: no status)."""

    name: str
    address: str
    roles: tuple[str, ...]
    reachable: bool
    ready: bool | None = None
    height: int | None = None
    view: int | None = None
    last_block_ms: int | None = None


@dataclass
class Snapshot:
    """Every node's verified chain and the one the pages show (see module docstring)."""

    mode: str
    views: list[ChainView]
    shown: ChainView
    health: list[NodeHealth] = field(default_factory=list)
    group: Group | None = None
    taken: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        """Every node's chain (and stored state) verified, and at least one node answered."""
        return bool(self.views) and all(v.ok for v in self.views)

    @property
    def failures(self) -> list[tuple[str, str]]:
        """(node, why) for every node whose chain did not verify."""
        return [(v.source, v.failure) for v in self.views if v.failure is not None]


def _empty(source: str, genesis: Genesis, why: str) -> ChainView:
    view = verify_records(source, genesis, [])
    view.failure = why
    return view


def ledger_files(path: str | os.PathLike[str]) -> list[Path]:
    """The node databases of ``path``: the file itself, or ``ledger-<i>.sqlite`` in order.

    Raises
    ------
    ConfigError
        if ``path`` holds no ledger database.
    """
    p = Path(path)
    if p.is_file():
        return [p]
    found = []
    if p.is_dir():
        found = sorted(
            (int(m.group(1)), q)
            for q in p.iterdir()
            if (m := _LEDGER_FILE.match(q.name)) is not None
        )
    if not found:
        raise ConfigError(
            f"{p}: no ledger database (ledger-<i>.sqlite); give the db_dir of a "
            "LocalCommittee(db_dir=...) or one node's SQLite file"
        )
    return [q for _, q in found]


def _read_db(path: Path) -> tuple[bytes | None, list[bytes], dict[str, bytes]]:
    """The genesis record, the block records (heights 1, 2, … while contiguous) and the
    state rows of one node's database, read through a read-only connection."""
    conn = sqlite3.connect(
        f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
    )
    try:
        # one read transaction: blocks and state from the same commit of a running node
        conn.execute("BEGIN")
        row = conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()
        records: list[bytes] = []
        for h, data in conn.execute("SELECT height, data FROM blocks ORDER BY height"):
            if h != len(records) + 1:
                break  # a gap: the records after it cannot link (verify_chain says so)
            records.append(bytes(data))
        state = {str(k): bytes(v) for k, v in conn.execute("SELECT key, value FROM state")}
        conn.execute("COMMIT")
        return (None if row is None else bytes(row[0])), records, state
    finally:
        conn.close()


def _read_genesis(path: Path) -> bytes | None:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()
        return None if row is None else bytes(row[0])
    finally:
        conn.close()


class DbSource:
    """The ledger databases of a persisted LocalCommittee (see module docstring)."""

    mode = "db"

    def __init__(self, path: str | os.PathLike[str], *, refresh: float = 2.0) -> None:
        self.files = ledger_files(path)
        self.refresh = refresh
        self._lock = threading.Lock()
        self._stamp: tuple[Any, ...] | None = None
        self._snapshot: Snapshot | None = None
        self.genesis = self._trusted_genesis()

    def _trusted_genesis(self) -> Genesis:
        """The genesis record most files hold (ties: the earliest file's): one altered file
        cannot move the trust root. Only the genesis meta row is read (cheap)."""
        votes: dict[bytes, int] = {}
        for f in self.files:
            try:
                raw = _read_genesis(f)
                if raw is not None:
                    Genesis.decode(raw)
                    votes[raw] = votes.get(raw, 0) + 1
            except (sqlite3.Error, EncodingError):
                continue
        if not votes:
            raise ConfigError(
                f"no readable genesis record in {', '.join(str(f) for f in self.files)}: "
                "is this a Kaires ledger database?"
            )
        return Genesis.decode(max(votes, key=lambda raw: votes[raw]))  # first max wins ties

    def _files_stamp(self) -> tuple[Any, ...]:
        out: list[tuple[int, int] | None] = []
        for f in self.files:
            for q in (f, f.with_name(f.name + "-wal")):
                try:
                    st = q.stat()
                    out.append((st.st_mtime_ns, st.st_size))
                except OSError:
                    out.append(None)
        return tuple(out)

    def snapshot(self) -> Snapshot:
        """The verified chains of every database (recomputed when a file changed, at most
        every ``refresh`` seconds)."""
        with self._lock:
            if self._snapshot is not None and time.time() - self._snapshot.taken < self.refresh:
                return self._snapshot
            stamp = self._files_stamp()
            if self._snapshot is None or stamp != self._stamp:
                self._snapshot = self._take()
                self._stamp = stamp
            return self._snapshot

    def _take(self) -> Snapshot:
        views = []
        health = []
        for f in self.files:
            name = f.name
            try:
                raw_genesis, records, stored = _read_db(f)
            except sqlite3.Error as exc:
                views.append(_empty(name, self.genesis, f"cannot read the database: {exc}"))
                health.append(NodeHealth(name, str(f), ("ledger",), False))
                continue
            if raw_genesis is None or raw_genesis != self.genesis.encode():
                views.append(
                    _empty(
                        name,
                        self.genesis,
                        "its genesis record differs from the one the other databases hold "
                        "(another ledger, or an altered genesis)",
                    )
                )
            else:
                view = verify_records(name, self.genesis, records)
                if view.ok:
                    view.failure = compare_state(view, stored)
                views.append(view)
            v = views[-1]
            health.append(
                NodeHealth(
                    name,
                    str(f),
                    ("ledger",),
                    True,
                    None,  # a database file is not a running node: no readiness
                    v.offered,
                    None,
                    v.block_time(v.height) if v.height else None,
                )
            )
        shown = max(views, key=lambda v: (v.height, v.ok))
        return Snapshot(self.mode, views, shown, health)


class GroupSource:
    """A deployed committee, read through a keyless client (see module docstring)."""

    mode = "group"

    def __init__(
        self, group_path: str | os.PathLike[str], *, refresh: float = 5.0, timeout: float = 10.0
    ) -> None:
        from kaires_fl.node.config import load_group
        from kaires_fl.node.host import group_genesis

        self.group = load_group(group_path)
        self.genesis = group_genesis(self.group)
        self.refresh = refresh
        self.timeout = timeout
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None

    def snapshot(self) -> Snapshot:
        """Every reachable ledger node's chain, verified (at most every ``refresh`` s)."""
        with self._lock:
            if self._snapshot is None or time.time() - self._snapshot.taken >= self.refresh:
                self._snapshot = self._take()
            return self._snapshot

    def _take(self) -> Snapshot:
        from kaires_fl.node.process import CommitteeClient

        group = self.group
        views: list[ChainView] = []
        with CommitteeClient(group) as client:
            statuses = client.poll(min(self.timeout, 5.0))
            addresses = dict(
                zip(
                    (e.name for e in group.with_role("ledger")),
                    client.ledger_addresses,
                    strict=True,
                )
            )
            for nv in statuses:
                if "ledger" not in nv.roles or nv.status is None:
                    continue
                try:
                    raw = client.fetch_chain(addresses[nv.name], self.timeout)
                except KairesError as exc:
                    views.append(_empty(nv.name, self.genesis, f"did not serve its chain: {exc}"))
                    continue
                view = verify_records(nv.name, self.genesis, raw)
                if view.ok and view.height < nv.status.height:
                    view.failure = (
                        f"claims height {nv.status.height} but served {view.height} blocks "
                        "(withheld blocks, or it committed more since: reload)"
                    )
                views.append(view)
        health = [
            NodeHealth(
                nv.name,
                nv.address,
                nv.roles,
                nv.status is not None,
                None if nv.status is None else nv.status.ready,
                None if nv.status is None else nv.status.height,
                None if nv.status is None else nv.status.view,
                None if nv.status is None else nv.status.last_block_ms,
            )
            for nv in statuses
        ]
        shown = (
            max(views, key=lambda v: (v.height, v.ok))
            if views
            else _empty("-", self.genesis, "no ledger node of the group answered")
        )
        return Snapshot(self.mode, views, shown, health, group)
