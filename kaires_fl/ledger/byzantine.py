"""Byzantine ledger nodes for fault-injection tests and simulations.

Behaviours (:data:`BEHAVIOURS`):

- ``"equivocate"``: as leader, proposes two different valid blocks to two halves of the
  committee and votes for both;
- ``"garbage"``: answers every consensus message with forged or nonsensical traffic
  (bad signatures, validly signed votes for random blocks, bogus view changes, a huge
  claimed height, forged sync answers), while following the protocol otherwise;
- ``"silent"``: receives but never sends (a crash that keeps its timers);
- ``"backdate"``: as leader, dates its blocks just after the previous block (as far in
  the past as monotonic time allows), e.g. to authorise a job on an expired policy;
- ``"byzantine"``: ``"equivocate"`` and ``"garbage"`` together (what
  ``LocalCommittee(faults={"ledger": {i: "byzantine"}})`` asks for).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from kaires_fl.errors import ConfigError
from kaires_fl.ledger.block import Block, BlockHeader, Certificate
from kaires_fl.ledger.consensus import (
    PROPOSAL_CONTEXT,
    Proposal,
    Status,
    SyncRequest,
    SyncResponse,
    ViewChange,
    Vote,
    vote_context,
    vote_message,
)
from kaires_fl.ledger.node import LedgerNode

BEHAVIOURS = ("equivocate", "garbage", "silent", "backdate", "byzantine")


class ByzantineNode(LedgerNode):
    def __init__(self, *args: Any, behaviour: str, **kwargs: Any) -> None:
        if behaviour not in BEHAVIOURS:
            raise ConfigError(f"unknown Byzantine behaviour {behaviour!r}; use one of {BEHAVIOURS}")
        self.behaviour = behaviour
        super().__init__(*args, **kwargs)

    def _broadcast(self, msg: Any) -> None:
        if self.behaviour == "silent":
            return
        super()._broadcast(msg)

    def _send(self, dst: str, msg: Any) -> None:
        if self.behaviour == "silent":
            return
        if self.behaviour in ("garbage", "byzantine") and isinstance(msg, SyncResponse):
            msg = SyncResponse(tuple(_forge(b, c) for b, c in msg.blocks), msg.more)
        super()._send(dst, msg)

    def _block_time(self) -> int:
        if self.behaviour == "backdate":
            return self.last_time + 1
        return super()._block_time()

    def _sign_vote(self, phase: str, view: int, block_hash: bytes) -> Vote:
        h = self.height + 1
        sig = self.identity.sign(
            vote_context(phase), vote_message(self.chain, phase, h, view, block_hash)
        )
        return Vote(phase, h, view, block_hash, self.index, sig)

    def _send_proposal(self, p: Proposal) -> None:
        if self.behaviour not in ("equivocate", "byzantine"):
            super()._send_proposal(p)
            return
        other = replace(p.block.header, time_ms=p.block.header.time_ms + 1)
        twin = Block(other, p.block.txs, p.block.results)
        sig = self.identity.sign(
            PROPOSAL_CONTEXT, Proposal.message(self.chain, p.height, p.view, twin.hash)
        )
        p2 = Proposal(p.height, p.view, twin, p.proposer, p.justification, sig)
        others = [a for i, a in enumerate(self.peers) if i != self.index]
        half = (len(others) + 1) // 2
        for group, prop in ((others[:half], p), (others[half:], p2)):
            for dst in group:
                self.t.send(dst, prop)
                for phase in ("prepare", "commit"):
                    self.t.send(dst, self._sign_vote(phase, p.view, prop.block.hash))

    def on_message(self, src: str, msg: Any) -> None:
        super().on_message(src, msg)
        me = self.peers[self.index]
        if (
            self.behaviour not in ("garbage", "byzantine")
            or src == me
            or not isinstance(msg, (Proposal, Vote, ViewChange))
        ):
            return
        h, v = msg.height, msg.view
        junk = os.urandom(32)
        bh = (
            msg.block.hash
            if isinstance(msg, Proposal)
            else msg.block_hash
            if isinstance(msg, Vote)
            else junk
        )
        for dst in self.peers:
            if dst == me:
                continue
            for phase in ("prepare", "commit"):
                self.t.send(dst, Vote(phase, h, v, bh, self.index, os.urandom(64)))
                self.t.send(dst, self._sign_vote(phase, v, junk))
            self.t.send(dst, ViewChange(h, v + 1, self.index, None, os.urandom(64)))
            self.t.send(dst, Status(self.height + 1000, self.index))
            self.t.send(dst, SyncRequest(1, self.index))


def _forge(block: Block, cert: Certificate) -> tuple[Block, Certificate]:
    hd = block.header
    fake: BlockHeader = replace(hd, state_root=os.urandom(32).hex())
    return Block(fake, block.txs, block.results), cert
