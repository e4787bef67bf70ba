"""SQLite persistence of one ledger node: blocks, state, tx index, consensus records.

A final block, its state writes and its tx index rows are written in one SQLite
transaction, so a crash leaves either the block with its effects or neither.
Consensus records (current view, votes cast, prepared certificate) are committed
*before* the vote or view change is sent, so a restarted node cannot contradict
itself. ``path`` is a file path, ``":memory:"`` (private, lost on close) or an SQLite
URI such as ``"file:node3?mode=memory&cache=shared"`` (survives a reopen while
another connection keeps it alive: the in-process stand-in for a disk).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping

from kaires_fl.errors import ConfigError
from kaires_fl.ledger.block import Block, Certificate, Genesis, decode_certified, encode_certified
from kaires_fl.ledger.merkle import bucket_of, value_hash

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (height INTEGER PRIMARY KEY, hash BLOB NOT NULL,
                                   data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS txindex (tx TEXT PRIMARY KEY, height INTEGER NOT NULL,
                                    idx INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state_hashes (bucket INTEGER NOT NULL, key TEXT NOT NULL,
                                         hash BLOB NOT NULL, PRIMARY KEY (bucket, key))
                                         WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS consensus (height INTEGER NOT NULL, key TEXT NOT NULL,
                                      value BLOB NOT NULL, PRIMARY KEY (height, key));
"""


def _hash_row(key: str, value: bytes) -> tuple[int, str, bytes]:
    return bucket_of(key), key, value_hash(value)


class Store:
    """One node's database (see module docstring)."""

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        self.conn = sqlite3.connect(
            path, uri=path.startswith("file:"), isolation_level=None, check_same_thread=False
        )
        if path != ":memory:" and "mode=memory" not in path:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)
        self._index_state_hashes()

    def _index_state_hashes(self) -> None:
        """Fill ``state_hashes`` (each state key's Merkle bucket and value hash) if a
        database written before that table existed has state but no hashes."""
        c = self.conn
        if c.execute("SELECT 1 FROM state_hashes LIMIT 1").fetchone() is not None:
            return
        if c.execute("SELECT 1 FROM state LIMIT 1").fetchone() is None:
            return
        rows = [_hash_row(k, bytes(v)) for k, v in c.execute("SELECT key, value FROM state")]
        c.execute("BEGIN")
        c.executemany("INSERT OR REPLACE INTO state_hashes VALUES (?, ?, ?)", rows)
        c.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    # -- genesis and height ---------------------------------------------------------
    def init_genesis(self, genesis: Genesis, state: Mapping[str, bytes]) -> None:
        """Record ``genesis`` (or check it is the one already recorded)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key='genesis'").fetchone()
        if row is not None:
            if Genesis.decode(row[0]).hash != genesis.hash:
                raise ConfigError(f"database {self.path} belongs to another ledger (genesis)")
            return
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute("INSERT INTO meta VALUES ('genesis', ?)", (genesis.encode(),))
            self.conn.executemany("INSERT INTO state VALUES (?, ?)", list(state.items()))
            self.conn.executemany(
                "INSERT INTO state_hashes VALUES (?, ?, ?)",
                [_hash_row(k, v) for k, v in state.items()],
            )

    def height(self) -> int:
        row = self.conn.execute("SELECT MAX(height) FROM blocks").fetchone()
        return int(row[0] or 0)

    # -- blocks ---------------------------------------------------------------------
    def commit_block(
        self, block: Block, cert: Certificate, writes: Mapping[str, bytes | None]
    ) -> None:
        """Atomically store a final block, its state writes and tx index; drop its votes."""
        h = block.height
        c = self.conn
        c.execute("BEGIN")
        try:
            c.execute(
                "INSERT INTO blocks VALUES (?, ?, ?)",
                (h, block.hash, encode_certified(block, cert)),
            )
            c.executemany(
                "INSERT OR REPLACE INTO txindex VALUES (?, ?, ?)",
                [(t.id, h, i) for i, t in enumerate(block.txs)],
            )
            self.write_state(writes)
            c.execute("DELETE FROM consensus WHERE height <= ?", (h,))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def write_state(self, writes: Mapping[str, bytes | None]) -> None:
        """Apply state ``writes`` (None deletes) with their Merkle value hashes; inside
        the caller's transaction (:meth:`commit_block`)."""
        c = self.conn
        dels = [(k,) for k, v in writes.items() if v is None]
        puts = [(k, v) for k, v in writes.items() if v is not None]
        if dels:
            c.executemany("DELETE FROM state WHERE key = ?", dels)
            c.executemany(
                "DELETE FROM state_hashes WHERE bucket = ? AND key = ?",
                [(bucket_of(k), k) for (k,) in dels],
            )
        c.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)", puts)
        c.executemany(
            "INSERT OR REPLACE INTO state_hashes VALUES (?, ?, ?)",
            [_hash_row(k, v) for k, v in puts],
        )

    def raw_block(self, height: int) -> bytes | None:
        row = self.conn.execute("SELECT data FROM blocks WHERE height = ?", (height,)).fetchone()
        return None if row is None else bytes(row[0])

    def block(self, height: int) -> tuple[Block, Certificate] | None:
        raw = self.raw_block(height)
        return None if raw is None else decode_certified(raw)

    def raw_blocks(self, start: int = 1, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        stop = self.height() if stop is None else stop
        yield from (
            (int(h), bytes(d))
            for h, d in self.conn.execute(
                "SELECT height, data FROM blocks WHERE height BETWEEN ? AND ? ORDER BY height",
                (start, stop),
            )
        )

    def tx_location(self, tx_id: str) -> tuple[int, int] | None:
        row = self.conn.execute("SELECT height, idx FROM txindex WHERE tx = ?", (tx_id,)).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def load_state(self) -> dict[str, bytes]:
        return {k: bytes(v) for k, v in self.conn.execute("SELECT key, value FROM state")}

    def state_items(self) -> Iterator[tuple[str, bytes]]:
        """Every committed state entry, streamed (never all in memory at once)."""
        for k, v in self.conn.execute("SELECT key, value FROM state"):
            yield k, bytes(v)

    def state_value(self, key: str) -> bytes | None:
        row = self.conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def state_keys(self, prefix: str = "") -> list[str]:
        """The committed state keys that start with ``prefix``, sorted (an index range)."""
        if not prefix:
            return [k for (k,) in self.conn.execute("SELECT key FROM state ORDER BY key")]
        # keys ≥ prefix and < prefix's successor: SQLite compares TEXT as UTF-8 bytes,
        # which orders like Python's code-point comparison
        nxt = ord(prefix[-1]) + 1
        nxt = 0xE000 if 0xD800 <= nxt <= 0xDFFF else nxt  # surrogates are not UTF-8
        stop = prefix[:-1] + chr(nxt) if nxt <= 0x10FFFF else None
        if stop is None:
            rows = self.conn.execute("SELECT key FROM state WHERE key >= ? ORDER BY key", (prefix,))
            return [k for (k,) in rows if k.startswith(prefix)]
        rows = self.conn.execute(
            "SELECT key FROM state WHERE key >= ? AND key < ? ORDER BY key", (prefix, stop)
        )
        return [k for (k,) in rows]

    def state_size(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM state").fetchone()[0])

    def bucket_pairs(self, bucket: int) -> dict[str, bytes]:
        """The committed (key → value hash) pairs of one Merkle bucket of the state."""
        return {
            k: bytes(h)
            for k, h in self.conn.execute(
                "SELECT key, hash FROM state_hashes WHERE bucket = ?", (bucket,)
            )
        }

    def bucket_rows(self) -> Iterator[tuple[int, str, bytes]]:
        """Every (bucket, key, value hash) of the committed state, streamed by bucket."""
        for b, k, h in self.conn.execute(
            "SELECT bucket, key, hash FROM state_hashes ORDER BY bucket, key"
        ):
            yield int(b), k, bytes(h)

    # -- consensus records ----------------------------------------------------------
    def put_consensus(self, height: int, records: Mapping[str, bytes]) -> None:
        """Durably record consensus facts for ``height`` (call before sending)."""
        c = self.conn
        c.execute("BEGIN")
        c.executemany(
            "INSERT OR REPLACE INTO consensus VALUES (?, ?, ?)",
            [(height, k, v) for k, v in records.items()],
        )
        c.execute("COMMIT")

    def consensus_records(self, height: int) -> dict[str, bytes]:
        return {
            k: bytes(v)
            for k, v in self.conn.execute(
                "SELECT key, value FROM consensus WHERE height = ?", (height,)
            )
        }
