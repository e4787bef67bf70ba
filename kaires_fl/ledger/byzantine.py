"""Byzantine ledger nodes for fault-injection tests and simulations.

Behaviours (:data:`BEHAVIOURS`):

- ``"equivocate"``: as leader, proposes two different valid blocks to two halves of the
  committee and votes for both;
- ``"garbage"``: answers every consensus message with forged or nonsensical traffic
  (bad signatures, validly signed votes for random blocks, bogus view changes, a huge
  claimed height, forged sync answers), while following the protocol otherwise;
- ``"silent"``: receives but never sends (a crash that keeps its timers);
- ``"badblock"``: as leader, signs and proposes blocks whose state root is wrong (they
  do not re-execute); honest nodes refuse them and record it as faulty;
- ``"backdate"``: as leader, dates its blocks just after the previous block (as far in
  the past as monotonic time allows), e.g. to authorise a job on an expired policy;
- ``"byzantine"``: ``"equivocate"`` and ``"garbage"`` together (what
  ``LocalCommittee(faults={"ledger": {i: "byzantine"}})`` asks for).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from kaires_fl import schema
from kaires_fl.errors import ConfigError
from kaires_fl.ledger.block import (
    Block,
    BlockHeader,
    decode_block,
    decode_certified,
    encode_certified,
    remember_block,
)
from kaires_fl.ledger.consensus import (
    Proposal,
    Status,
    SyncRequest,
    SyncResponse,
    ViewChange,
    Vote,
)
from kaires_fl.ledger.node import LedgerNode

BEHAVIOURS = ("equivocate", "garbage", "silent", "backdate", "badblock", "byzantine")


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
            msg = SyncResponse(tuple(_forge(raw) for raw in msg.blocks), msg.more)
        super()._send(dst, msg)

    def _block_time(self) -> int:
        if self.behaviour == "backdate":
            return self.last_time + 1
        return super()._block_time()

    def _sign_vote(self, phase: str, view: int, block_hash: bytes) -> Vote:
        vote = Vote(phase, self.height + 1, view, block_hash, self.index)  # type: ignore[arg-type]
        return schema.sign(vote, self.identity, self.contexts["vote"])

    def _send_proposal(self, p: Proposal) -> None:
        if self.behaviour == "badblock":
            block = decode_block(p.block)
            bad = Block(
                replace(block.header, state_root=os.urandom(32).hex()), block.txs, block.results
            )
            super()._send_proposal(
                schema.sign(
                    Proposal(p.height, p.view, p.proposer, bad.encoded, p.justification),
                    self.identity,
                    self.contexts["proposal"],
                )
            )
            return
        if self.behaviour not in ("equivocate", "byzantine"):
            super()._send_proposal(p)
            return
        block = decode_block(p.block)
        other = replace(block.header, time_ms=block.header.time_ms + 1)
        twin = Block(other, block.txs, block.results)
        remember_block(twin)
        p2 = schema.sign(
            Proposal(p.height, p.view, p.proposer, twin.encoded, p.justification),
            self.identity,
            self.contexts["proposal"],
        )
        others = [a for i, a in enumerate(self.peers) if i != self.index]
        half = (len(others) + 1) // 2
        for group, prop in ((others[:half], p), (others[half:], p2)):
            for dst in group:
                self.t.send(dst, prop)
                for phase in ("prepare", "commit"):
                    bh = decode_block(prop.block).hash
                    self.t.send(dst, self._sign_vote(phase, p.view, bh))

    def on_message(self, src: str, msg: Any) -> None:
        super().on_message(src, msg)
        me = self.peers[self.index]
        if (
            self.behaviour not in ("garbage", "byzantine")
            or src == me
            or not isinstance(msg, Proposal | Vote | ViewChange)
        ):
            return
        h, v = msg.height, msg.view
        junk = os.urandom(32)
        if isinstance(msg, Proposal):
            try:
                bh = decode_block(msg.block).hash
            except Exception:
                bh = junk
        else:
            bh = msg.block_hash if isinstance(msg, Vote) else junk
        for dst in self.peers:
            if dst == me:
                continue
            for phase in ("prepare", "commit"):
                self.t.send(dst, Vote(phase, h, v, bh, self.index, os.urandom(64)))
                self.t.send(dst, self._sign_vote(phase, v, junk))
            self.t.send(dst, ViewChange(h, v + 1, self.index, None, os.urandom(64)))
            self.t.send(dst, os.urandom(40))  # undecodable bytes
            self.t.send(dst, schema.encode(Status(2**64 - 1, self.index)))
            self.t.send(dst, Status(self.height + 1000, self.index))
            self.t.send(dst, SyncRequest(1, self.index))


def _forge(raw: bytes) -> bytes:
    block, cert = decode_certified(raw)
    fake: BlockHeader = replace(block.header, state_root=os.urandom(32).hex())
    return encode_certified(Block(fake, block.txs, block.results), cert)
