"""Genesis, blocks, and the certificates that make them final.

- :class:`Genesis` is the trust root: chain name, roster (node public keys, hex), ``f``,
  start time and initial state. ``chain_id`` (hex of its hash) is block 0's hash.
- :class:`Block` = :class:`BlockHeader` + transactions + per-transaction results
  (accepted, or rejected with the reason: a refusal is recorded too). The header commits
  to both through ``tx_root`` and to the state after the block through ``state_root``.
- :class:`Certificate`: ``quorum`` distinct roster signatures on
  (chain, height, view, block hash) — a block with a valid certificate is final.

The roster is fixed by the genesis block, so the certificate of block h alone proves it
final: no header chain is needed to check an inclusion proof.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Literal

import msgspec

from kaires_fl import schema
from kaires_fl.crypto.sign import H
from kaires_fl.errors import AuditError, ConfigError, EncodingError
from kaires_fl.ledger.encoding import (
    canonical,
    decode_canonical,
    expect_fields,
    expect_int,
    expect_list,
    expect_str,
    hex_bytes,
)
from kaires_fl.ledger.merkle import merkle_root
from kaires_fl.ledger.tx import Tx

#: Largest roster (and certificate) a decoder accepts.
MAX_ROSTER = 1 << 16
#: Most transactions a block record may hold.
MAX_BLOCK_TXS = 1 << 20
_GENESIS_FIELDS = frozenset({"f", "name", "roster", "state", "time_ms"})
_HEADER_FIELDS = frozenset(
    {"chain", "height", "n_txs", "prev", "proposer", "state_root", "time_ms", "tx_root"}
)
_BLOCK_FIELDS = frozenset({"header", "results", "txs"})
_CERT_FIELDS = frozenset({"block", "height", "view", "votes"})


def quorum_size(n: int, f: int) -> int:
    """Votes needed for a quorum: ceil((n + f + 1) / 2) (= 2f + 1 when n = 3f + 1)."""
    return (n + f + 2) // 2


@dataclass(frozen=True)
class Genesis:
    """The genesis block: the trust root of a ledger (see module docstring)."""

    name: str
    roster: tuple[str, ...]
    f: int
    time_ms: int = 0
    state: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.roster)
        if self.f < 0 or n < 3 * self.f + 1:
            raise ConfigError(
                f"a BFT ledger with f = {self.f} needs n >= 3f + 1 = {3 * self.f + 1} nodes, "
                f"got {n}"
            )
        if len(set(self.roster)) != n:
            raise ConfigError("the roster lists a node key twice")
        for k in self.roster:
            hex_bytes(k, 32, "roster key")

    @property
    def n(self) -> int:
        return len(self.roster)

    @cached_property
    def roster_keys(self) -> tuple[bytes, ...]:
        """The roster's public keys as bytes."""
        return tuple(bytes.fromhex(k) for k in self.roster)

    @property
    def quorum(self) -> int:
        return quorum_size(self.n, self.f)

    def to_obj(self) -> dict[str, Any]:
        return {
            "f": self.f,
            "name": self.name,
            "roster": list(self.roster),
            "state": self.state,
            "time_ms": self.time_ms,
        }

    def encode(self) -> bytes:
        return canonical(self.to_obj())

    @classmethod
    def decode(cls, data: bytes) -> Genesis:
        o = expect_fields(decode_canonical(data), "genesis record", _GENESIS_FIELDS)
        roster = expect_list(o["roster"], "genesis roster", MAX_ROSTER)
        if type(o["state"]) is not dict:
            raise EncodingError("genesis state must be an object")
        try:
            return cls(
                expect_str(o["name"], "genesis name", 256),
                tuple(expect_str(k, "roster key", 64) for k in roster),
                expect_int(o["f"], "genesis f", 0, MAX_ROSTER),
                expect_int(o["time_ms"], "genesis time"),
                o["state"],
            )
        except ConfigError as exc:
            raise EncodingError(f"genesis record is not a valid ledger: {exc}") from exc

    @cached_property
    def hash(self) -> bytes:
        return H(b"kaires/ledger/genesis", self.encode())

    @property
    def chain_id(self) -> str:
        return self.hash.hex()


@dataclass(frozen=True)
class BlockHeader:
    chain: str
    height: int
    prev: str
    time_ms: int
    proposer: int
    n_txs: int
    tx_root: str
    state_root: str

    def to_obj(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "height": self.height,
            "n_txs": self.n_txs,
            "prev": self.prev,
            "proposer": self.proposer,
            "state_root": self.state_root,
            "time_ms": self.time_ms,
            "tx_root": self.tx_root,
        }

    @classmethod
    def from_obj(cls, o: Any) -> BlockHeader:
        """A header from its decoded record; raises EncodingError on any bad field."""
        o = expect_fields(o, "block header", _HEADER_FIELDS)
        return cls(
            expect_str(o["chain"], "block chain", 64),
            expect_int(o["height"], "block height"),
            expect_str(o["prev"], "block prev", 64),
            expect_int(o["time_ms"], "block time"),
            expect_int(o["proposer"], "block proposer", 0, MAX_ROSTER),
            expect_int(o["n_txs"], "block n_txs", 0, MAX_BLOCK_TXS),
            expect_str(o["tx_root"], "block tx_root", 64),
            expect_str(o["state_root"], "block state_root", 64),
        )

    @cached_property
    def hash(self) -> bytes:
        return H(b"kaires/ledger/block", canonical(self.to_obj()))


@dataclass(frozen=True)
class TxResult:
    """Outcome of one transaction in a block: accepted, or rejected with ``reason``."""

    ok: bool
    reason: str = ""


def tx_leaf(tx: Tx, result: TxResult) -> bytes:
    """The tx-tree leaf: binds a signed transaction (signatures included) to its outcome."""
    return H(
        b"kaires/ledger/tx-leaf",
        tx.hash,
        "/".join(tx.signatures).encode(),
        b"\x01" if result.ok else b"\x00",
        result.reason.encode(),
    )


@dataclass(frozen=True)
class Block:
    header: BlockHeader
    txs: tuple[Tx, ...]
    results: tuple[TxResult, ...]

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    def leaves(self) -> list[bytes]:
        return [tx_leaf(t, r) for t, r in zip(self.txs, self.results, strict=True)]

    @cached_property
    def encoded(self) -> bytes:
        """Canonical encoding of the block (header, txs, results)."""
        return canonical(self.to_obj())

    def check_body(self) -> None:
        """Check that the transactions and results match the header; raises AuditError."""
        if len(self.txs) != len(self.results) or len(self.txs) != self.header.n_txs:
            raise AuditError("block body does not have the header's number of transactions")
        if merkle_root(self.leaves()).hex() != self.header.tx_root:
            raise AuditError("block transactions/results do not match the header's tx_root")

    def to_obj(self) -> dict[str, Any]:
        return {
            "header": self.header.to_obj(),
            "results": [[r.ok, r.reason] for r in self.results],
            "txs": [t.to_obj() for t in self.txs],
        }

    @classmethod
    def from_obj(cls, o: Any) -> Block:
        """A block from its decoded record; raises EncodingError on any bad field."""
        o = expect_fields(o, "block record", _BLOCK_FIELDS)
        results = []
        for r in expect_list(o["results"], "block results", MAX_BLOCK_TXS):
            if type(r) is not list or len(r) != 2 or type(r[0]) is not bool:
                raise EncodingError(f"a tx result is [ok: bool, reason: str], got {r!r:.40}")
            results.append(TxResult(r[0], expect_str(r[1], "tx result reason")))
        txs = tuple(Tx.from_obj(t) for t in expect_list(o["txs"], "block txs", MAX_BLOCK_TXS))
        return cls(BlockHeader.from_obj(o["header"]), txs, tuple(results))

    @classmethod
    def from_bytes(cls, data: bytes) -> Block:
        """Inverse of :attr:`encoded`; raises EncodingError on any non-canonical byte."""
        block = cls.from_obj(decode_canonical(data))
        block.__dict__["encoded"] = bytes(data)
        return block


def consensus_context(kind: str, chain: str) -> bytes:
    """Signing context of consensus message ``kind`` ("vote", "view", "proposal") on
    ``chain``: a signature on one ledger is worth nothing on another."""
    return b"kaires/ledger/" + kind.encode() + b"/" + chain.encode()


class Vote(schema.Message, frozen=True):
    """A roster node's prepare or commit vote for block ``block_hash`` at (height, view).

    Signed with :func:`kaires_fl.schema.sign` under ``consensus_context("vote", chain)``.
    A quorum of commit signatures is a block's :class:`Certificate`, which keeps only
    (voter, signature) pairs and rebuilds each vote to check it.
    """

    phase: Literal["prepare", "commit"]
    height: U63
    view: U63
    block_hash: schema.Bytes32
    voter: schema.Index
    signature: schema.Signature = b""


#: A height, view or time on the wire (schema.U64's bound does not fit msgspec's int64
#: constraints, so the ledger uses 63 bits, which is also what its records allow).
U63 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


_DECODED: OrderedDict[bytes, Block] = OrderedDict()
#: Total record bytes the decoding memo may hold (blocks from a Byzantine leader can be
#: large; the memo must not become a way to exhaust memory).
_DECODED_MAX_BYTES = 64 * 2**20
#: Most blocks it holds: only blocks in flight (proposals, view changes, sync answers) are
#: decoded again; a full memo of a long chain's small blocks was resident memory.
_DECODED_MAX_BLOCKS = 256
_decoded_bytes = 0


def decode_block(data: bytes) -> Block:
    """:meth:`Block.from_bytes`, memoised on the bytes (decoding is a pure function of
    them and a Block is immutable): every node of an in-process committee that receives
    the same proposal shares one decoding. Raises EncodingError like ``from_bytes``."""
    if type(data) is not bytes:
        if not isinstance(data, bytearray | memoryview):
            raise EncodingError(f"a block record is bytes, got {type(data).__name__}")
        data = bytes(data)
    block = _DECODED.get(data)
    if block is None:
        block = Block.from_bytes(data)
        remember_block(block)
    return block


def remember_block(block: Block) -> None:
    """Make ``decode_block(block.encoded)`` return ``block`` (the sender's own decoding)."""
    global _decoded_bytes
    data = block.encoded
    if len(data) > _DECODED_MAX_BYTES // 4 or data in _DECODED:
        return
    _DECODED[data] = block
    _decoded_bytes += len(data)
    while _decoded_bytes > _DECODED_MAX_BYTES or len(_DECODED) > _DECODED_MAX_BLOCKS:
        old, _ = _DECODED.popitem(last=False)
        _decoded_bytes -= len(old)


@dataclass(frozen=True)
class Certificate:
    """Commit signatures of a quorum of roster nodes on one block."""

    height: int
    view: int
    block_hash: bytes
    votes: tuple[tuple[int, bytes], ...]

    def verify(self, genesis: Genesis, block_hash: bytes | None = None) -> None:
        """Check ``quorum`` distinct valid roster signatures (on ``block_hash`` if given).

        Raises
        ------
        AuditError
            naming what is wrong (wrong block, unknown or repeated signer, bad signature,
            too few signatures).
        """
        if block_hash is not None and block_hash != self.block_hash:
            raise AuditError(f"certificate of height {self.height} is for another block")
        seen: set[int] = set()
        ctx = consensus_context("vote", genesis.chain_id)
        keys, n = genesis.roster_keys, genesis.n
        for idx, sig in self.votes:
            if not 0 <= idx < n or idx in seen:
                raise AuditError(f"certificate signer index {idx} is unknown or repeated")
            seen.add(idx)
            vote = Vote("commit", self.height, self.view, self.block_hash, idx, sig)
            if not schema.verify(vote, keys[idx], ctx):
                raise AuditError(
                    f"certificate signature of node {idx} on height {self.height} is invalid"
                )
        if len(seen) < genesis.quorum:
            raise AuditError(
                f"certificate of height {self.height} has {len(seen)} signatures, "
                f"needs {genesis.quorum} (2f+1)"
            )

    def to_obj(self) -> dict[str, Any]:
        return {
            "block": self.block_hash.hex(),
            "height": self.height,
            "view": self.view,
            "votes": [[i, s.hex()] for i, s in self.votes],
        }

    @classmethod
    def from_obj(cls, o: Any) -> Certificate:
        """A certificate from its decoded record; raises EncodingError on any bad field."""
        o = expect_fields(o, "certificate", _CERT_FIELDS)
        votes = []
        for v in expect_list(o["votes"], "certificate votes", MAX_ROSTER):
            if type(v) is not list or len(v) != 2:
                raise EncodingError(f"a certificate vote is [index, signature], got {v!r:.40}")
            votes.append(
                (
                    expect_int(v[0], "certificate signer", 0, MAX_ROSTER),
                    hex_bytes(v[1], 64, "vote signature"),
                )
            )
        return cls(
            expect_int(o["height"], "certificate height"),
            expect_int(o["view"], "certificate view"),
            hex_bytes(o["block"], 32, "block hash"),
            tuple(votes),
        )


def encode_certified(block: Block, cert: Certificate) -> bytes:
    """The stored record of a final block: ``canonical({"block": ..., "cert": ...})``.

    Assembled from the block's cached encoding (sorted keys: "block" < "cert"), so a
    block is serialised once however many times it is stored.
    """
    return b'{"block":' + block.encoded + b',"cert":' + canonical(cert.to_obj()) + b"}"


def decode_certified(data: bytes) -> tuple[Block, Certificate]:
    """Inverse of :func:`encode_certified`; raises EncodingError on any non-canonical byte."""
    o = decode_canonical(data)
    if not isinstance(o, dict) or set(o) != {"block", "cert"}:
        raise EncodingError("a stored block record has exactly the fields 'block' and 'cert'")
    return Block.from_obj(o["block"]), Certificate.from_obj(o["cert"])
