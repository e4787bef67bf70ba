"""Test harness: a Flower Grid that runs a real ClientApp in-process (no Ray).

Every message goes through Flower's protobuf serialisation both ways (as over the wire),
and each node keeps its Context across messages (as Flower's simulation engine does).
The Ray-backed ``run_simulation`` acceptance tests live in ``test_flower_simulation.py``; this
grid keeps the many protocol cases fast.
"""

from __future__ import annotations

from typing import Any

from flwr.app import Message
from flwr.common.serde import message_from_proto, message_to_proto
from kaires_fl.strategies.grid import InProcessGrid

__all__ = ["LocalGrid"]


class LocalGrid(InProcessGrid):
    """``num_nodes`` supernodes (node ids 1..n, partition ids 0..n−1) running ``client_app``;
    each message and reply passes through the wire encoding and is recorded (``sent``,
    ``received``: as the ClientApp and the ServerApp see them)."""

    def __init__(self, client_app: Any, num_nodes: int, run_config: dict | None = None) -> None:
        super().__init__(client_app, num_nodes, run_config)
        self.sent: list[Message] = []
        self.received: list[Message] = []

    def exchange(self, msg: Message) -> Message:
        wire_in = message_from_proto(message_to_proto(msg))
        self.sent.append(wire_in)
        back = message_from_proto(message_to_proto(super().exchange(wire_in)))
        self.received.append(back)
        return back
