"""Test harness: a Flower Grid that runs a real ClientApp in-process (no Ray).

Every message goes through Flower's protobuf serialisation both ways (as over the wire),
and each node keeps its Context across messages (as Flower's simulation engine does).
The Ray-backed ``run_simulation`` acceptance tests live in ``test_flower_simulation.py``; this
grid keeps the many protocol cases fast.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

SERVER_NODE = 0


class LocalGrid(Grid):
    """``num_nodes`` supernodes (node ids 1..n, partition ids 0..n−1) running ``client_app``."""

    def __init__(self, client_app: Any, num_nodes: int, run_config: dict | None = None) -> None:
        TaskIdentity.run_id = 1
        TaskIdentity.node_id = SERVER_NODE
        TaskIdentity.task_id = 1
        self.client_app = client_app
        self.contexts = {
            i + 1: Context(
                run_id=1,
                node_id=i + 1,
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for i in range(num_nodes)
        }
        self._ids = itertools.count(1)
        self.sent: list[Message] = []
        self.received: list[Message] = []

    # Grid API ------------------------------------------------------------------------
    def set_run(self, run: Any) -> None:
        pass

    @property
    def run(self) -> Any:
        return None

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(
            content=content,
            message_type=message_type,
            dst_node_id=dst_node_id,
            group_id=group_id,
            ttl=ttl,
        )

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("use send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("use send_and_receive")

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = f"m{next(self._ids)}"
            wire_in = message_from_proto(message_to_proto(msg))
            self.sent.append(wire_in)
            ctx = self.contexts[msg.metadata.dst_node_id]
            try:
                out = self.client_app(wire_in, ctx)
            except Exception as exc:  # as Flower's runtime: a failing ClientApp → error reply
                out = Message(Error(code=2, reason=f"ClientApp raised {exc!r}"), reply_to=wire_in)
            back = message_from_proto(message_to_proto(out))
            self.received.append(back)
            replies.append(back)
        return replies
