"""The Flower benchmark's round timer (no Ray: the strategy hooks alone)."""

from __future__ import annotations

import time
from typing import Any

from kaires_fl.bench import flower


class _Strategy:
    """A strategy whose configure and aggregate steps take known times."""

    def configure_train(self, server_round: int, *a: Any, **kw: Any) -> list[int]:
        time.sleep(0.02)
        return [server_round]

    def aggregate_train(self, server_round: int, replies: Any) -> str:
        time.sleep(0.03)
        return "aggregate"


def test_timer_splits_each_round_into_the_wait_and_the_servers_own_work() -> None:
    s = flower._timed(_Strategy)()
    for r in (1, 2):
        assert s.configure_train(r) == [r]
        time.sleep(0.05)  # Flower: push, clients, replies
        assert s.aggregate_train(r, []) == "aggregate"
    assert len(s.round_times) == len(s.wait_times) == 2
    for total, wait in zip(s.round_times, s.wait_times, strict=True):
        # the wait holds the 50 ms between the steps; the rest, configure + aggregate
        # (20 + 30 ms): a wait measured from configure's start would leave ≈ 30 ms
        assert wait >= 0.05 and total - wait >= 0.05
