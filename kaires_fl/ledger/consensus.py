"""Consensus messages of the ledger's PBFT-style protocol (one instance per height).

Per height h the leader of view v is ``roster[(h + v) % n]``. Phases:

1. ``Proposal(h, v, block)`` signed by the leader (for v > 0 it carries a quorum of
   ``ViewChange(h, v)`` as justification, and must re-propose the highest-view
   prepared block among them, if any);
2. each node that validates the block (re-executes it: same results, same state root)
   sends ``Vote("prepare", h, v, hash)`` — at most one per view, persisted first;
3. on a quorum of prepares a node is *prepared* (keeps the :class:`PreparedCert`,
   persisted) and sends ``Vote("commit", h, v, hash)``;
4. a quorum of commits is the block's :class:`~kaires_fl.ledger.block.Certificate`:
   the block is final.

A node that times out in view v sends ``ViewChange(h, v + 1, prepared)``; f + 1 view
changes for higher views pull a node along (so one slow timer cannot stall it).
Safety: two quorums share an honest node, which prepares at most one block per view
and reports its prepared certificate in every view change, so once a block is final
every later view re-proposes it. ``Status`` heartbeats and ``SyncRequest`` /
``SyncResponse`` (certified blocks) let a restarted or partitioned node catch up.
"""

from __future__ import annotations

from dataclasses import dataclass

from kaires_fl.crypto.sign import H, verify
from kaires_fl.errors import InvalidProof, ProtocolError
from kaires_fl.ledger.block import COMMIT_CONTEXT, Block, Certificate, Genesis, commit_message

PREPARE_CONTEXT = b"kaires/ledger/prepare"
PROPOSAL_CONTEXT = b"kaires/ledger/proposal"
VIEWCHANGE_CONTEXT = b"kaires/ledger/view-change"


def leader_of(height: int, view: int, n: int) -> int:
    return (height + view) % n


def vote_message(chain: str, phase: str, height: int, view: int, block_hash: bytes) -> bytes:
    if phase == "commit":
        return commit_message(chain, height, view, block_hash)
    return H(
        b"prepare", chain.encode(), height.to_bytes(8, "big"), view.to_bytes(8, "big"), block_hash
    )


def vote_context(phase: str) -> bytes:
    return COMMIT_CONTEXT if phase == "commit" else PREPARE_CONTEXT


@dataclass(frozen=True)
class Vote:
    phase: str  # "prepare" | "commit"
    height: int
    view: int
    block_hash: bytes
    voter: int
    sig: bytes

    def check(self, genesis: Genesis) -> None:
        """Raises ProtocolError unless well formed and signed by roster node ``voter``."""
        if self.phase not in ("prepare", "commit") or not 0 <= self.voter < genesis.n:
            raise ProtocolError(f"malformed vote from node {self.voter}")
        try:
            verify(
                bytes.fromhex(genesis.roster[self.voter]),
                vote_context(self.phase),
                vote_message(genesis.chain_id, self.phase, self.height, self.view, self.block_hash),
                self.sig,
            )
        except (InvalidProof, TypeError) as exc:
            raise ProtocolError(f"vote of node {self.voter} has a bad signature") from exc


@dataclass(frozen=True)
class PreparedCert:
    """A block and a quorum of prepare signatures on it in ``view``."""

    view: int
    block: Block
    votes: tuple[tuple[int, bytes], ...]

    def check(self, genesis: Genesis, height: int) -> None:
        if self.block.height != height:
            raise ProtocolError("prepared certificate for another height")
        seen: set[int] = set()
        for voter, sig in self.votes:
            if voter in seen:
                raise ProtocolError("prepared certificate repeats a voter")
            seen.add(voter)
            Vote("prepare", height, self.view, self.block.hash, voter, sig).check(genesis)
        if len(seen) < genesis.quorum:
            raise ProtocolError("prepared certificate without a quorum")


def _proposal_message(chain: str, height: int, view: int, block_hash: bytes) -> bytes:
    return H(
        b"proposal", chain.encode(), height.to_bytes(8, "big"), view.to_bytes(8, "big"), block_hash
    )


@dataclass(frozen=True)
class ViewChange:
    height: int
    view: int  # the view the sender moves to
    voter: int
    prepared: PreparedCert | None
    sig: bytes

    @staticmethod
    def message(chain: str, height: int, view: int, prepared: PreparedCert | None) -> bytes:
        pv = -1 if prepared is None else prepared.view
        ph = b"" if prepared is None else prepared.block.hash
        return H(
            b"view-change",
            chain.encode(),
            height.to_bytes(8, "big"),
            view.to_bytes(8, "big"),
            pv.to_bytes(8, "big", signed=True),
            ph,
        )

    def check(self, genesis: Genesis) -> None:
        if not 0 <= self.voter < genesis.n or self.view < 1:
            raise ProtocolError(f"malformed view change from node {self.voter}")
        try:
            verify(
                bytes.fromhex(genesis.roster[self.voter]),
                VIEWCHANGE_CONTEXT,
                self.message(genesis.chain_id, self.height, self.view, self.prepared),
                self.sig,
            )
        except (InvalidProof, TypeError) as exc:
            raise ProtocolError(f"view change of node {self.voter} has a bad signature") from exc
        if self.prepared is not None:
            if self.prepared.view >= self.view:
                raise ProtocolError("view change carries a prepared certificate from its future")
            self.prepared.check(genesis, self.height)


@dataclass(frozen=True)
class Proposal:
    height: int
    view: int
    block: Block
    proposer: int
    justification: tuple[ViewChange, ...]
    sig: bytes

    @staticmethod
    def message(chain: str, height: int, view: int, block_hash: bytes) -> bytes:
        return _proposal_message(chain, height, view, block_hash)

    def check(self, genesis: Genesis) -> None:
        """Signature, leader and (for view > 0) justification; not the block's content.

        Raises
        ------
        ProtocolError
            if the proposal is not from the view's leader, badly signed, or unjustified
            (or does not re-propose the highest prepared block of its justification).
        """
        n = genesis.n
        if self.proposer != leader_of(self.height, self.view, n):
            raise ProtocolError(f"node {self.proposer} is not the leader of view {self.view}")
        if self.block.height != self.height:
            raise ProtocolError("proposal height does not match its block")
        try:
            verify(
                bytes.fromhex(genesis.roster[self.proposer]),
                PROPOSAL_CONTEXT,
                self.message(genesis.chain_id, self.height, self.view, self.block.hash),
                self.sig,
            )
        except (InvalidProof, TypeError) as exc:
            raise ProtocolError("proposal has a bad signature") from exc
        if self.view == 0:
            return
        voters: set[int] = set()
        best: PreparedCert | None = None
        for vc in self.justification:
            if vc.height != self.height or vc.view != self.view or vc.voter in voters:
                raise ProtocolError("proposal justification has a foreign or repeated view change")
            vc.check(genesis)
            voters.add(vc.voter)
            if vc.prepared is not None and (best is None or vc.prepared.view > best.view):
                best = vc.prepared
        if len(voters) < genesis.quorum:
            raise ProtocolError("proposal for a new view without a quorum of view changes")
        if best is not None and best.block.hash != self.block.hash:
            raise ProtocolError("new-view proposal does not re-propose the prepared block")

    def required_block(self) -> Block | None:
        best: PreparedCert | None = None
        for vc in self.justification:
            if vc.prepared is not None and (best is None or vc.prepared.view > best.view):
                best = vc.prepared
        return None if best is None else best.block


@dataclass(frozen=True)
class Status:
    height: int
    sender: int


@dataclass(frozen=True)
class SyncRequest:
    start: int
    sender: int


@dataclass(frozen=True)
class SyncResponse:
    blocks: tuple[tuple[Block, Certificate], ...]
    more: bool


@dataclass(frozen=True)
class TxGossip:
    """Transactions handed to a node by a client (or relayed by a peer)."""

    txs: tuple[object, ...]
