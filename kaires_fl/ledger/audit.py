"""Audit: chain verification from the genesis block alone, and offline inclusion proofs.

- :func:`verify_chain` checks a sequence of stored blocks (records as bytes, or
  (block, certificate) pairs): canonical encoding, heights, hash links, increasing
  times, the tx Merkle root, and a quorum (2f+1) of valid roster signatures per block;
  with ``replay=True`` it also re-executes every transaction from the genesis state
  and checks each recorded result and state root. It raises :class:`AuditError`
  naming the first bad block and why.
- :class:`BlockProof` (header + certificate) proves a block final: the roster is fixed
  by the genesis block, so no header chain is needed.
- :class:`TxProof` proves a transaction and its recorded outcome are in block h;
  :class:`StateProof` proves a state entry's value (or absence) after block h. Both
  verify offline with ``proof.verify(genesis)`` and serialise with ``to_bytes`` /
  ``from_bytes`` for shipping to trustees or providers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kaires_fl.errors import AuditError, EncodingError, KairesError
from kaires_fl.ledger.block import (
    Block,
    BlockHeader,
    Certificate,
    Genesis,
    TxResult,
    decode_certified,
    tx_leaf,
)
from kaires_fl.ledger.contracts import DEFAULT_REGISTRY, ContractRegistry, check_counter, execute_tx
from kaires_fl.ledger.encoding import (
    canonical,
    decode_canonical,
    expect_fields,
    expect_list,
    expect_str,
    hex_bytes,
)
from kaires_fl.ledger.merkle import BUCKET_BITS, verify_path, verify_state_proof
from kaires_fl.ledger.state import State, StateView
from kaires_fl.ledger.tx import Tx


def verify_chain(
    blocks: Iterable[bytes | tuple[Block, Certificate]],
    genesis: Genesis,
    *,
    replay: bool = False,
    registry: ContractRegistry | None = None,
) -> int:
    """Verify a chain from block 1 on against ``genesis``; returns the last height.

    Pre: none on ``blocks`` (they may come from anyone). Post: every block up to the
    returned height is final on ``genesis``'s chain.

    Raises
    ------
    AuditError
        ``"block h: <why>"`` for the first block that fails (malformed or oversized
        records included) — never another exception.
    """
    prev_hash = genesis.hash
    prev_time = genesis.time_ms
    height = 0
    state = State({k: canonical(v) for k, v in genesis.state.items()}) if replay else None
    reg = registry or DEFAULT_REGISTRY
    for item in blocks:
        expected = height + 1
        try:
            block, cert = _certified(item)
            hd = block.header
            if hd.height != expected:
                raise AuditError(f"has height {hd.height}, expected {expected}")
            if hd.chain != genesis.chain_id:
                raise AuditError("belongs to another chain")
            if hd.prev != prev_hash.hex():
                raise AuditError("does not link to the previous block's hash")
            if hd.time_ms <= prev_time:
                raise AuditError("time does not increase")
            if not 0 <= hd.proposer < genesis.n:
                raise AuditError("proposer is not in the roster")
            block.check_body()
            if cert.height != expected:
                raise AuditError("certificate is for another height")
            cert.verify(genesis, block.hash)
            if state is not None:
                _replay(state, block, reg)
        except (AuditError, EncodingError) as exc:
            raise AuditError(f"block {expected}: {exc}") from exc
        except KairesError as exc:
            raise AuditError(f"block {expected}: {type(exc).__name__}: {exc}") from exc
        except (TypeError, ValueError, OverflowError, AttributeError, RecursionError) as exc:
            # Only reachable with hand-built (Block, Certificate) objects of wrong types;
            # records from bytes are validated by the decoders.
            raise AuditError(f"block {expected}: malformed: {type(exc).__name__}: {exc}") from exc
        prev_hash, prev_time, height = block.hash, hd.time_ms, expected
    return height


def _certified(item: Any) -> tuple[Block, Certificate]:
    """A (block, certificate) pair from a stored record or a pair of objects."""
    if isinstance(item, bytes | bytearray | memoryview):
        return decode_certified(bytes(item))
    if (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], Block)
        and isinstance(item[1], Certificate)
    ):
        return item
    raise AuditError(f"expected a stored block record (bytes), got {type(item).__name__}")


def _replay(state: State, block: Block, registry: ContractRegistry) -> None:
    view = StateView(state)
    hd = block.header
    for i, (tx, res) in enumerate(zip(block.txs, block.results, strict=True)):
        tx.check_bounds()
        tx.verify_signatures()
        check_counter(view, tx)
        mine = execute_tx(view, tx, registry, hd.height, hd.time_ms)
        if mine != res:
            raise AuditError(f"tx {i} recorded {res}, replay gives {mine}")
    if view.root().hex() != hd.state_root:
        raise AuditError("state root differs from the replayed state")
    view.commit(hd.height)


@dataclass(frozen=True)
class BlockProof:
    """A block header with its certificate (``header is None``: the genesis state)."""

    header: BlockHeader | None
    cert: Certificate | None

    def verify(self, genesis: Genesis) -> bytes:
        """Check the block is final on ``genesis``'s chain; returns its state root."""
        if self.header is None:
            return State({k: canonical(v) for k, v in genesis.state.items()}).root
        if self.cert is None:
            raise AuditError("block proof without a certificate")
        if self.header.chain != genesis.chain_id:
            raise AuditError("block proof is for another chain")
        if self.cert.height != self.header.height:
            raise AuditError("block proof certificate is for another height")
        self.cert.verify(genesis, self.header.hash)
        return hex_bytes(self.header.state_root, 32, "state root")

    @property
    def height(self) -> int:
        return 0 if self.header is None else self.header.height

    def to_obj(self) -> Any:
        if self.header is None or self.cert is None:
            return None
        return {"header": self.header.to_obj(), "cert": self.cert.to_obj()}

    @classmethod
    def from_obj(cls, o: Any) -> BlockProof:
        """A block proof from its decoded record; raises EncodingError on any bad field."""
        if o is None:
            return cls(None, None)
        o = expect_fields(o, "block proof", {"header", "cert"})
        return cls(BlockHeader.from_obj(o["header"]), Certificate.from_obj(o["cert"]))


@dataclass(frozen=True)
class TxProof:
    """Proof that ``tx`` with outcome ``result`` is in the final block ``block``."""

    block: BlockProof
    tx: Tx
    result: TxResult
    path: tuple[tuple[bool, bytes], ...]

    @property
    def height(self) -> int:
        return self.block.height

    def verify(self, genesis: Genesis) -> None:
        """Raises AuditError unless the proof holds on ``genesis``'s chain."""
        if self.block.header is None:
            raise AuditError("a transaction proof needs a block, not genesis")
        self.block.verify(genesis)
        verify_path(
            tx_leaf(self.tx, self.result),
            self.path,
            hex_bytes(self.block.header.tx_root, 32, "tx root"),
        )

    def to_bytes(self) -> bytes:
        return canonical(
            {
                "block": self.block.to_obj(),
                "tx": self.tx.to_obj(),
                "result": [self.result.ok, self.result.reason],
                "path": [[left, h.hex()] for left, h in self.path],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> TxProof:
        """Inverse of :meth:`to_bytes`, for bytes from anyone.

        Raises
        ------
        EncodingError
            if ``data`` is not a canonical, well-typed transaction proof.
        """
        o = expect_fields(decode_canonical(data), "transaction proof", _TX_PROOF_FIELDS)
        r = o["result"]
        if type(r) is not list or len(r) != 2 or type(r[0]) is not bool:
            raise EncodingError("transaction proof result is [ok: bool, reason: str]")
        path = []
        for step in expect_list(o["path"], "Merkle path", MAX_PATH):
            if type(step) is not list or len(step) != 2 or type(step[0]) is not bool:
                raise EncodingError("a Merkle path step is [left: bool, hash: hex]")
            path.append((step[0], hex_bytes(step[1], 32, "path hash")))
        return cls(
            BlockProof.from_obj(o["block"]),
            Tx.from_obj(o["tx"]),
            TxResult(r[0], expect_str(r[1], "tx result reason")),
            tuple(path),
        )


#: Longest Merkle path a proof may carry (a block of up to 2^64 transactions).
MAX_PATH = 64
#: Most (key, value hash) pairs a state proof's bucket may hold.
MAX_BUCKET = 1 << 20
_TX_PROOF_FIELDS = frozenset({"block", "tx", "result", "path"})
_STATE_PROOF_FIELDS = frozenset({"block", "key", "value", "pairs", "siblings"})


@dataclass(frozen=True)
class StateProof:
    """Proof that state entry ``key`` holds ``value`` (None: absent) after block ``block``."""

    block: BlockProof
    key: str
    value: Any
    pairs: tuple[tuple[str, bytes], ...]
    siblings: tuple[bytes, ...]

    @property
    def height(self) -> int:
        return self.block.height

    def verify(self, genesis: Genesis) -> Any:
        """Raises AuditError unless the proof holds; returns the proven value."""
        root = self.block.verify(genesis)
        raw = None if self.value is None else canonical(self.value)
        verify_state_proof(self.key, raw, self.pairs, self.siblings, root)
        return self.value

    def to_bytes(self) -> bytes:
        return canonical(
            {
                "block": self.block.to_obj(),
                "key": self.key,
                "value": self.value,
                "pairs": [[k, v.hex()] for k, v in self.pairs],
                "siblings": [s.hex() for s in self.siblings],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> StateProof:
        """Inverse of :meth:`to_bytes`, for bytes from anyone.

        Raises
        ------
        EncodingError
            if ``data`` is not a canonical, well-typed state proof.
        """
        o = expect_fields(decode_canonical(data), "state proof", _STATE_PROOF_FIELDS)
        pairs = []
        for pair in expect_list(o["pairs"], "state proof bucket", MAX_BUCKET):
            if type(pair) is not list or len(pair) != 2:
                raise EncodingError("a state proof pair is [key, value hash]")
            pairs.append((expect_str(pair[0], "state key"), hex_bytes(pair[1], 32, "value hash")))
        siblings = expect_list(o["siblings"], "state proof siblings", BUCKET_BITS)
        return cls(
            BlockProof.from_obj(o["block"]),
            expect_str(o["key"], "state key"),
            o["value"],
            tuple(pairs),
            tuple(hex_bytes(sib, 32, "sibling") for sib in siblings),
        )


def verify_job(proof: StateProof, genesis: Genesis, job_id: str) -> dict[str, Any]:
    """Check offline that job ``job_id`` is committed; returns the job entry.

    The entry holds the included ``providers`` (and ``excluded`` with reasons),
    ``aggregators``, ``threshold``, ``consumer``, ``consumer_key``, ``statistic``,
    ``params``, ``status`` and the commit ``height``.

    Raises
    ------
    AuditError
        if the proof is not about that job, the job is absent, or the proof fails.
    """
    if proof.key != f"job/{job_id}":
        raise AuditError(f"proof is about {proof.key!r}, not job {job_id!r}")
    value = proof.verify(genesis)
    if value is None:
        raise AuditError(f"job {job_id!r} is not on the ledger at height {proof.height}")
    return value
