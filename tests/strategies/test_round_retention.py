"""What a ServerApp keeps per round (issue 11, H1's finding): over many KairesFedAvg rounds
on the in-process committee, the garbage collector's tracked objects grow by the ledger's
bounded caches of its blocks and by each round's small record in ``kaires_rounds`` — not
by the rounds' submissions, shares, release answers or messages.

Before the fix each round left ≈ 650 more objects (and, at 10k parameters, ≈ 12 MB) for
25–32 rounds: the aggregators kept their last 32 jobs whole, and every cancelled release
timer, queued in the simulated network until its time, kept its job's whole state.
"""

from __future__ import annotations

import gc
import logging
import types
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from kaires_fl.strategies import KairesFedAvg, make_kaires_mod
from kaires_fl.strategies.grid import InProcessGrid

from kaires_fl.aggregation import job as job_mod
from kaires_fl.ledger import block as block_mod
from kaires_fl.simulation import LocalCommittee
from kaires_fl.transport.base import Timer
from kaires_fl.transport.memory import MemoryNetwork

NODES = 4
LENGTH = 20
FIRST, LAST = 10, 30  # the measured rounds: after the first jobs filled what is bounded
#: gc-tracked objects of one round's record (its job entry, RoundResult, nodes, timings,
#: refusals; Flower's own per-round metrics): measured 20.
RECORD_OBJECTS = 40


def _client_app() -> ClientApp:
    delta = np.random.default_rng(5).normal(size=LENGTH)
    app = ClientApp(mods=[make_kaires_mod(simulation=True)])

    @app.train()
    def train(msg: Message, ctx: Any) -> Message:
        (w,) = msg.content["arrays"].to_numpy_ndarrays()
        content = {"arrays": ArrayRecord([w + delta]), "metrics": MetricRecord({"num-examples": 8})}
        return Message(RecordDict(content), reply_to=msg)

    return app


_OPAQUE = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    MemoryNetwork,  # the ledger's way to every other party
)


def _tracked_from(roots: Iterable[Any]) -> int:
    """gc-tracked objects reachable from ``roots`` (not through functions, classes,
    modules or the network)."""
    seen: set[int] = set()
    stack = list(roots)
    count = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _OPAQUE):
            continue
        seen.add(id(obj))
        count += gc.is_tracked(obj)
        stack.extend(gc.get_referents(obj))
    return count


def _ledger_objects(committee: LocalCommittee) -> int:
    """What the in-process ledger keeps of its blocks in memory (each bounded: its last 256
    blocks and certificates, the transaction index, the decoded-block and state caches)."""
    ledger = committee.ledger
    roots = [ledger._recent, ledger.committed, block_mod._DECODED]
    return _tracked_from(roots + [node.state for node in ledger.nodes if node is not None])


def test_rounds_leave_only_their_record_and_the_ledgers_blocks() -> None:
    committee = LocalCommittee()
    counts: dict[int, tuple[int, int]] = {}

    class Counted(KairesFedAvg):
        def configure_train(self, server_round: int, *args: Any, **kw: Any) -> Any:
            if server_round in (FIRST, LAST):
                gc.collect()
                counts[server_round] = (len(gc.get_objects()), _ledger_objects(committee))
            return super().configure_train(server_round, *args, **kw)

    strategy = Counted(
        fraction_evaluate=0.0,
        min_train_nodes=NODES,
        min_available_nodes=NODES,
        committee=committee,
        clip_norm=10.0,
        num_examples_cap=8,
    )
    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    flwr_log.setLevel(logging.WARNING)
    try:
        strategy.start(
            grid=InProcessGrid(_client_app(), NODES),
            initial_arrays=ArrayRecord([np.zeros(LENGTH)]),
            num_rounds=LAST,
        )
    finally:
        flwr_log.setLevel(level)
    assert all(len(strategy.kaires_rounds[r]["result"].accepted) == NODES for r in (1, LAST))
    (all0, ledger0), (all1, ledger1) = counts[FIRST], counts[LAST]
    rounds = LAST - FIRST
    rest = (all1 - all0) - (ledger1 - ledger0)
    assert rest <= RECORD_OBJECTS * rounds, (
        f"{rest / rounds:.0f} objects a round beyond the ledger's "
        f"{(ledger1 - ledger0) / rounds:.0f}"
    )
    # what makes it so: the aggregators drop delivered jobs, the records hold no sum, and
    # one statistic serves every round of the model
    for svc in committee.aggregators:
        assert len(svc.jobs) <= job_mod.KEEP_DELIVERED + 1
    records = strategy.kaires_rounds
    assert all("sum" not in records[r]["result"].aggregate for r in records)
    assert abs(records[1]["result"].aggregate["weight"] - NODES) < 1e-5  # Σ w, w = 1 each
    assert records[1]["statistic"] is records[LAST]["statistic"]


class _JobState:
    done = False


def _timer_on(state: _JobState) -> Timer:
    return Timer(1.0, lambda: setattr(state, "done", True))


def test_a_cancelled_timer_holds_nothing() -> None:
    """A cancelled timer queued until its time keeps nothing its callback refers to alive,
    and does nothing if it is run anyway."""
    import weakref

    state = _JobState()
    timer = _timer_on(state)
    alive = weakref.ref(state)
    timer.cancel()
    timer.callback()
    assert timer.cancelled and not state.done
    del state
    gc.collect()
    assert alive() is None
