"""Consensus messages of the ledger's PBFT-style protocol (one instance per height).

Per height h the leader of view v is ``roster[(h + v) % n]``. Phases:

1. ``Proposal(h, v, block)`` signed by the leader (for v > 0 it carries a quorum of
   ``ViewChange(h, v)`` as justification, and must re-propose the highest-view
   prepared block among them, if any);
2. each node that validates the block (re-executes it: same results, same state root;
   for a new block, its time within ``max_clock_skew_ms`` of the node's clock) sends
   ``Vote("prepare", h, v, hash)`` — at most one per view, persisted first;
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

Every message is a :class:`kaires_fl.schema.Message` (declared types, ranges and sizes;
:data:`LedgerMessage` is their union for :func:`kaires_fl.schema.decode`). Blocks travel
as their canonical record (:attr:`Block.encoded`) and are decoded with
:func:`~kaires_fl.ledger.block.decode_block`. Signed messages (:class:`Vote`,
:class:`ViewChange`, :class:`Proposal`) are signed with :func:`kaires_fl.schema.sign`
over the canonical encoding of every field, under a context naming the message kind and
the chain (:func:`consensus_context`).
"""

from __future__ import annotations

from typing import Annotated, Union

import msgspec

from kaires_fl import schema
from kaires_fl.errors import ProtocolError
from kaires_fl.ledger.block import (
    MAX_ROSTER,
    U63,
    Block,
    Genesis,
    Vote,
    consensus_context,
    decode_block,
)
from kaires_fl.ledger.tx import Tx
from kaires_fl.schema import Blob, Index, Signature

__all__ = [
    "LedgerMessage",
    "PreparedCert",
    "Proposal",
    "Status",
    "SyncRequest",
    "SyncResponse",
    "TxGossip",
    "ViewChange",
    "Vote",
    "consensus_context",
    "leader_of",
]

#: Most certified blocks one sync response carries.
MAX_SYNC_BLOCKS = 1024
#: Most transactions one gossip message carries.
MAX_GOSSIP_TXS = 1 << 16

Votes = Annotated[tuple[tuple[Index, Signature], ...], msgspec.Meta(max_length=MAX_ROSTER)]


def leader_of(height: int, view: int, n: int) -> int:
    return (height + view) % n


def roster_index(i: object, genesis: Genesis) -> bool:
    """Whether ``i`` is a roster position (an int in [0, n): in-process messages are not
    validated by a decoder, and ``roster[-1]`` must not be a second name for a node)."""
    return type(i) is int and 0 <= i < genesis.n


def check_vote(vote: Vote, genesis: Genesis) -> None:
    """Raises ProtocolError unless ``vote`` is signed by roster node ``vote.voter``."""
    if not roster_index(vote.voter, genesis) or not schema.verify(
        vote, bytes.fromhex(genesis.roster[vote.voter]), consensus_context("vote", genesis.chain_id)
    ):
        raise ProtocolError(
            f"{vote.phase} vote of node {vote.voter} at height {vote.height} is not signed by "
            "that roster node"
        )


class PreparedCert(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A block (its canonical record) and a quorum of prepare signatures on it in ``view``."""

    view: U63
    block: Blob
    votes: Votes

    @classmethod
    def of(cls, view: int, block: Block, votes: tuple[tuple[int, bytes], ...]) -> PreparedCert:
        return cls(view, block.encoded, votes)

    def check(self, genesis: Genesis, height: int) -> Block:
        """Check the quorum of prepare signatures; returns the decoded block.

        Raises
        ------
        ProtocolError
            if the block is for another height, a voter repeats or signs badly, or the
            votes are fewer than a quorum. (EncodingError if the block does not decode.)
        """
        block = decode_block(self.block)
        if block.height != height:
            raise ProtocolError("prepared certificate for another height")
        seen: set[int] = set()
        for voter, sig in self.votes:
            if voter in seen:
                raise ProtocolError("prepared certificate repeats a voter")
            seen.add(voter)
            check_vote(Vote("prepare", height, self.view, block.hash, voter, sig), genesis)
        if len(seen) < genesis.quorum:
            raise ProtocolError("prepared certificate without a quorum")
        return block


class ViewChange(schema.Message, frozen=True):
    """``voter`` moves to ``view`` at ``height``, reporting its prepared certificate."""

    height: U63
    view: U63  # the view the sender moves to
    voter: Index
    prepared: PreparedCert | None = None
    signature: Signature = b""

    def check(self, genesis: Genesis) -> None:
        """Raises ProtocolError unless well formed, signed by ``voter``, with a valid
        prepared certificate from an earlier view (if any)."""
        if not roster_index(self.voter, genesis) or self.view < 1:
            raise ProtocolError(f"malformed view change from node {self.voter}")
        if not schema.verify(
            self,
            bytes.fromhex(genesis.roster[self.voter]),
            consensus_context("view", genesis.chain_id),
        ):
            raise ProtocolError(f"view change of node {self.voter} has a bad signature")
        if self.prepared is not None:
            if self.prepared.view >= self.view:
                raise ProtocolError("view change carries a prepared certificate from its future")
            self.prepared.check(genesis, self.height)


def best_prepared(justification: tuple[ViewChange, ...]) -> PreparedCert | None:
    """The highest-view prepared certificate among ``justification`` (None if none)."""
    best: PreparedCert | None = None
    for vc in justification:
        if vc.prepared is not None and (best is None or vc.prepared.view > best.view):
            best = vc.prepared
    return best


class Proposal(schema.Message, frozen=True):
    """The leader's block for ``(height, view)`` (the block's canonical record)."""

    height: U63
    view: U63
    proposer: Index
    block: Blob
    justification: Annotated[tuple[ViewChange, ...], msgspec.Meta(max_length=MAX_ROSTER)] = ()
    signature: Signature = b""

    def check(self, genesis: Genesis, block: Block) -> None:
        """Signature, leader and (for view > 0) justification; not the block's content.

        Pre: ``block`` is ``decode_block(self.block)``.

        Raises
        ------
        ProtocolError
            if the proposal is not from the view's leader, badly signed, or unjustified
            (or does not re-propose the highest prepared block of its justification).
        """
        self.check_signed(genesis)
        self.check_justified(genesis, block)

    def check_signed(self, genesis: Genesis) -> None:
        """The proposal comes from the leader of its height and view (its signature over
        every field, the block's bytes included): checked before the block is decoded,
        so nobody but that leader makes a node decode a block.

        Raises
        ------
        ProtocolError
            if the proposer is not that leader or the signature is not its.
        """
        if not roster_index(self.proposer, genesis) or self.proposer != leader_of(
            self.height, self.view, genesis.n
        ):
            raise ProtocolError(f"node {self.proposer} is not the leader of view {self.view}")
        if not schema.verify(
            self,
            genesis.roster_keys[self.proposer],
            consensus_context("proposal", genesis.chain_id),
        ):
            raise ProtocolError("proposal has a bad signature")

    def check_justified(self, genesis: Genesis, block: Block) -> None:
        """The block is for the proposal's height and, for view > 0, the proposal carries
        a quorum of view changes and re-proposes their highest prepared block (if any).

        Pre: ``block`` is ``decode_block(self.block)``; the signature was checked
        (:meth:`check_signed`) or the proposal is the node's own.

        Raises
        ------
        ProtocolError
            if not.
        """
        if block.height != self.height:
            raise ProtocolError("proposal height does not match its block")
        if self.view == 0:
            return
        voters: set[int] = set()
        for vc in self.justification:
            if vc.height != self.height or vc.view != self.view or vc.voter in voters:
                raise ProtocolError("proposal justification has a foreign or repeated view change")
            vc.check(genesis)
            voters.add(vc.voter)
        if len(voters) < genesis.quorum:
            raise ProtocolError("proposal for a new view without a quorum of view changes")
        best = best_prepared(self.justification)
        if best is not None and best.block != self.block:
            raise ProtocolError("new-view proposal does not re-propose the prepared block")

    def required_block(self) -> Block | None:
        """The prepared block this (new-view) proposal must carry, if any."""
        best = best_prepared(self.justification)
        return None if best is None else decode_block(best.block)


class Status(schema.Message, frozen=True):
    """Heartbeat: ``sender``'s committed height (unauthenticated; it only triggers sync)."""

    height: U63
    sender: Index


class SyncRequest(schema.Message, frozen=True):
    """Ask for certified blocks from height ``start`` on."""

    start: U63
    sender: Index


class SyncResponse(schema.Message, frozen=True):
    """Certified blocks (stored records, see ``encode_certified``); ``more`` if truncated."""

    blocks: Annotated[tuple[Blob, ...], msgspec.Meta(max_length=MAX_SYNC_BLOCKS)]
    more: bool


class TxGossip(schema.Message, frozen=True):
    """Transactions handed to a node by a client (or relayed by a peer).

    Each is a :class:`~kaires_fl.ledger.tx.Tx` (a dataclass whose annotations are its wire
    schema, validated on decode); the node checks the rest (:meth:`Tx.check_bounds`,
    signatures, counter) before admitting it.
    """

    txs: Annotated[tuple[Tx, ...], msgspec.Meta(max_length=MAX_GOSSIP_TXS)]


LedgerMessage = Union[  # noqa: UP007 - a runtime Union for schema.decode
    Proposal, Vote, ViewChange, Status, SyncRequest, SyncResponse, TxGossip
]
