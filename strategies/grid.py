"""An in-process Flower Grid: a real ClientApp on ``num_nodes`` supernodes, no Ray.

Each node keeps its Context across messages (as Flower's simulation engine does), and a
ClientApp that raises answers with an error reply (as Flower's runtime does). Used by the
update-round bench (``kaires bench --only update``) and the Flower tests; a test harness
overrides :meth:`InProcessGrid.exchange` to pass every message through the wire encoding.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

#: The ServerApp's node id (messages take their source node from it).
SERVER_NODE = 0


class InProcessGrid(Grid):
    """``num_nodes`` supernodes (node ids 1..n, partition ids 0..n−1) running ``client_app``.

    ``workers > 1``: the calls of one ``send_and_receive`` run on that many threads (each
    node its own machine); replies come back in the order of the messages either way.
    """

    def __init__(
        self,
        client_app: Any,
        num_nodes: int,
        run_config: dict | None = None,
        workers: int = 1,
    ) -> None:
        # The ServerApp's identity, as Flower's runtime sets it.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SERVER_NODE, 1
        self.client_app = client_app
        self.workers = workers
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
    ) -> list[Message]:
        msgs = list(messages)
        for msg in msgs:
            msg.metadata.__dict__["_message_id"] = f"m{next(self._ids)}"
        if self.workers <= 1 or len(msgs) <= 1:
            return [self.exchange(m) for m in msgs]
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(self.exchange, msgs))

    def exchange(self, msg: Message) -> Message:
        """Run the ClientApp on ``msg`` in its node's Context; an exception → error reply."""
        try:
            return self.client_app(msg, self.contexts[msg.metadata.dst_node_id])
        except Exception as exc:  # as Flower's runtime: a failing ClientApp → error reply
            return Message(Error(code=2, reason=f"ClientApp raised {exc!r}"), reply_to=msg)
