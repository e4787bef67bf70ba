"""The in-process Flower Grid (strategies/grid.py): each reply answers its own message,
in order, on one thread or several; a raising ClientApp gives an error reply."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from kaires_fl.strategies.grid import InProcessGrid


def _app(seen: list[int]):  # type: ignore[no-untyped-def]
    def app(msg: Message, ctx) -> Message:  # type: ignore[no-untyped-def]
        if msg.content["config"]["fail"]:
            raise ValueError("boom")
        seen.append(ctx.node_id)
        pid = ctx.node_config["partition-id"]
        return Message(RecordDict({"config": ConfigRecord({"pid": pid})}), reply_to=msg)

    return app


@pytest.mark.parametrize("workers", [1, 3])
def test_replies_answer_their_messages_in_order(workers: int) -> None:
    seen: list[int] = []
    grid = InProcessGrid(_app(seen), 5, workers=workers)
    assert list(grid.get_node_ids()) == [1, 2, 3, 4, 5]
    msgs = [
        grid.create_message(
            RecordDict({"config": ConfigRecord({"fail": node == 3})}), "train", node, "g"
        )
        for node in (5, 3, 1, 2)
    ]
    replies = grid.send_and_receive(msgs)
    assert [r.metadata.reply_to_message_id for r in replies] == [
        m.metadata.message_id for m in msgs
    ]
    assert replies[1].has_error() and "boom" in replies[1].error.reason
    pids = [r.content["config"]["pid"] for i, r in enumerate(replies) if i != 1]
    assert pids == [4, 0, 1]  # node id − 1
    assert sorted(seen) == [1, 2, 5]
