"""The explorer's view of a ledger: block records verified from genesis in this process.

:func:`verify_records` takes the certified block records one source (a node's SQLite file,
or what one node served over the network) offers and keeps only what it can prove: the
longest prefix whose blocks are final on the genesis chain (hash links, increasing times,
tx roots, 2f + 1 roster signatures — :func:`~kaires_fl.ledger.audit.verify_chain`) and
whose transactions re-execute to the recorded results and state roots. The state the
explorer shows is the state *it* replayed, never a node's stored state; a node's stored
state that differs from the replay is reported as a failure too (:func:`compare_state`).

Every access shown comes with a :class:`~kaires_fl.ledger.audit.StateProof` against the
last verified block, checked with ``proof.verify(genesis)`` before it is shown.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kaires_fl.errors import AuditError, EncodingError, KairesError
from kaires_fl.ledger.audit import BlockProof, StateProof, _replay, verify_chain
from kaires_fl.ledger.block import Block, Certificate, Genesis, decode_certified
from kaires_fl.ledger.contracts import DEFAULT_REGISTRY, ContractRegistry
from kaires_fl.ledger.encoding import canonical, decode_canonical
from kaires_fl.ledger.state import State


@dataclass(frozen=True)
class TxInfo:
    """One transaction of a verified block, as the pages show it."""

    id: str
    kind: str
    sender: str
    ok: bool
    reason: str


@dataclass(frozen=True)
class PolicyTx:
    """A transaction that created or evolved a policy (accepted or refused)."""

    height: int
    tx: str
    kind: str
    version: Any
    ok: bool
    reason: str
    rules: Any
    terms: Any


@dataclass(frozen=True)
class BlockInfo:
    """One verified block: header facts, the roster indices that signed it, its txs."""

    height: int
    hash: str
    time_ms: int
    proposer: int
    view: int
    signers: tuple[int, ...]
    txs: tuple[TxInfo, ...]


@dataclass
class ChainView:
    """What one source's records prove (see module docstring).

    ``offered``: how many block records the source offered; ``height``: how many of them
    verified; ``failure``: why the rest (or the stored state) did not verify (None: all did).
    Post: ``state`` is the replayed state after block ``height``.
    """

    source: str
    genesis: Genesis
    offered: int
    height: int
    failure: str | None
    blocks: list[BlockInfo]
    state: State
    last: tuple[Block, Certificate] | None = field(default=None, repr=False)
    #: policy id → its darc.create / darc.evolve transactions, oldest first
    policy_txs: dict[str, list[PolicyTx]] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.failure is None

    def get(self, key: str) -> Any | None:
        """The replayed value at ``key`` (a fresh copy; None if absent)."""
        raw = self.state.raw(key)
        return None if raw is None else decode_canonical(raw)

    def keys(self, prefix: str) -> list[str]:
        return sorted(self.state.keys(prefix))

    def items(self, prefix: str) -> Iterator[tuple[str, Any]]:
        for k in self.keys(prefix):
            yield k, self.get(k)

    def block_time(self, height: int) -> int:
        """The time (Unix ms) of verified block ``height`` (the genesis time for 0)."""
        if 1 <= height <= len(self.blocks):
            return self.blocks[height - 1].time_ms
        return self.genesis.time_ms

    def prove(self, key: str) -> StateProof:
        """A proof of ``key``'s value after the last verified block, checked here.

        Raises
        ------
        AuditError
            if the proof does not verify on this chain's genesis (never expected: the
            state is this process's own replay).
        """
        if self.last is None:
            bp = BlockProof(None, None)
        else:
            bp = BlockProof(self.last[0].header, self.last[1])
        pairs, siblings = self.state.tree.proof(key)
        proof = StateProof(bp, key, self.get(key), tuple(pairs), tuple(siblings))
        proof.verify(self.genesis)
        return proof


def _genesis_state(genesis: Genesis) -> State:
    return State({k: canonical(v) for k, v in genesis.state.items()})


def verify_records(
    source: str,
    genesis: Genesis,
    records: Sequence[bytes],
    *,
    registry: ContractRegistry | None = None,
) -> ChainView:
    """Verify ``records`` (heights 1, 2, … from anyone) from ``genesis``; never raises on
    bad records.

    Post: the view's ``height`` is the longest prefix that is final on ``genesis``'s chain
    and replays to its recorded results and state roots; ``failure`` is ``"block h: why"``
    for the first block that does not (None if every record verified).
    """
    reg = registry or DEFAULT_REGISTRY
    failure: str | None = None
    seen = 0

    def counted() -> Iterator[bytes]:
        nonlocal seen
        for rec in records:
            seen += 1
            yield rec

    try:
        good = verify_chain(counted(), genesis, registry=reg)
    except AuditError as exc:
        failure = str(exc)
        good = seen - 1
    state, blocks, last, why = _replay_prefix(genesis, records[:good], reg)
    if why is not None:
        # the failing block may have written part of itself into ``state``: replay the
        # prefix before it again, so the state shown is exactly that prefix's
        failure = why
        state, blocks, last, _ = _replay_prefix(genesis, records[: len(blocks)], reg)
    view = ChainView(source, genesis, len(records), len(blocks), failure, blocks, state, last)
    for rec in records[: len(blocks)]:
        _index_policies(view.policy_txs, *decode_certified(rec))
    return view


_POLICY_KINDS = ("darc.create", "darc.evolve")


def _index_policies(index: dict[str, list[PolicyTx]], block: Block, cert: Certificate) -> None:
    for tx, res in zip(block.txs, block.results, strict=True):
        p = tx.payload
        if tx.kind in _POLICY_KINDS and isinstance(p, dict) and isinstance(p.get("id"), str):
            index.setdefault(p["id"], []).append(
                PolicyTx(
                    block.height,
                    tx.id,
                    tx.kind,
                    p.get("version", 0),
                    res.ok,
                    res.reason,
                    p.get("rules"),
                    p.get("terms"),
                )
            )


def _replay_prefix(
    genesis: Genesis, records: Sequence[bytes], reg: ContractRegistry
) -> tuple[State, list[BlockInfo], tuple[Block, Certificate] | None, str | None]:
    """Re-execute certified ``records`` from the genesis state; stops at the first block
    whose transactions do not give its recorded results and state root (then returns
    ``"block h: replay: why"``, with ``blocks`` the ones before it)."""
    state = _genesis_state(genesis)
    blocks: list[BlockInfo] = []
    last: tuple[Block, Certificate] | None = None
    for rec in records:
        block, cert = decode_certified(rec)  # verify_chain decoded it already
        try:
            _replay(state, block, reg)
        except (KairesError, TypeError, ValueError, OverflowError, KeyError) as exc:
            return state, blocks, last, f"block {block.height}: replay: {exc}"
        blocks.append(_block_info(block, cert))
        last = (block, cert)
    return state, blocks, last, None


def _block_info(block: Block, cert: Certificate) -> BlockInfo:
    hd = block.header
    txs = tuple(
        TxInfo(t.id, t.kind, t.sender, r.ok, r.reason)
        for t, r in zip(block.txs, block.results, strict=True)
    )
    return BlockInfo(
        hd.height,
        block.hash.hex(),
        hd.time_ms,
        hd.proposer,
        cert.view,
        tuple(sorted(i for i, _ in cert.votes)),
        txs,
    )


def compare_state(view: ChainView, stored: Mapping[str, bytes]) -> str | None:
    """Why a node's stored state (key → canonical bytes) differs from ``view``'s replay, or
    None if it is the same. Meaningful only when every stored block verified."""
    mine = {k: view.state.raw(k) for k in view.state.keys("")}
    for key in sorted(set(mine) | set(stored)):
        a, b = mine.get(key), stored.get(key)
        if a == b:
            continue
        if b is None:
            why = "is missing from the stored state"
        elif a is None:
            why = "is in the stored state but no verified block wrote it"
        else:
            try:
                decode_canonical(b)
                why = "holds a value no verified block wrote"
            except EncodingError:
                why = "holds bytes that are not a canonical value"
        return (
            f"stored state after block {view.height}: key {key!r} {why} (the node's "
            "database was altered or is corrupt; the state shown is this explorer's replay)"
        )
    return None
