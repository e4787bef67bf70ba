"""``kaires explorer --group``: a deployed committee of 4 node processes on loopback (free
ports, readiness polled, every node stopped in a finally). The explorer downloads every
reachable ledger node's chain, verifies each from the group's genesis, and shows the
nodes' health; a stopped node shows as unreachable while the others still verify."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from kaires_fl.demo import init_local_committee
from kaires_fl.explorer.app import create_app, make_source
from kaires_fl.explorer.screenshots import tamper_block
from kaires_fl.explorer.sources import GroupSource
from kaires_fl.node.host import LEDGER_FILE
from kaires_fl.node.process import committee_down, committee_up, spawn_node, stop_nodes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("explorer-group")
    path = init_local_committee(root)
    try:
        assert committee_up(root, detach=True, timeout=90.0, out=lambda s: None) == 0
        yield path
    finally:
        committee_down(root, grace=5.0, out=lambda s: None)


def test_group_chain_verified_and_health_shown(group: Path) -> None:
    source = make_source(group=str(group))  # what `kaires explorer --group` serves
    assert isinstance(source, GroupSource)
    snap = source.snapshot()
    assert snap.ok, snap.failures
    assert len(snap.views) == 4 and snap.shown.height >= 1
    assert all(h.reachable and h.ready for h in snap.health)
    web = TestClient(create_app(source))
    page = web.get("/committees").text
    health = re.search(r'<table id="health">(.*?)</table>', page, re.S)
    assert health is not None
    assert health.group(1).count('<tr class="ok">') == 4
    assert "registration on" in page or "registration off" in page
    chain = web.get("/").text
    assert "verified from genesis: <b>yes</b>" in chain


def test_group_stopped_node_is_unreachable_others_verify(group: Path) -> None:
    stop_nodes([group.parent / "node-3"], grace=5.0, out=lambda s: None)
    source = GroupSource(group, refresh=0.0, timeout=5.0)
    deadline = time.monotonic() + 60
    while True:
        snap = source.snapshot()
        down = [h for h in snap.health if h.name == "node-3"]
        if down and not down[0].reachable:
            break
        assert time.monotonic() < deadline, "node-3 still answers after it was stopped"
    assert snap.ok and len(snap.views) == 3, snap.failures
    assert sum(h.reachable for h in snap.health) == 3


def test_group_node_serving_an_altered_chain_fails_verification(group: Path) -> None:
    """node-2's database is altered while it is down (a block's recorded outcome flipped),
    then it runs again and serves that chain: the explorer names it and the block, and
    still shows the chain the honest nodes serve."""
    root = group.parent
    stop_nodes([root / "node-2"], grace=5.0, out=lambda s: None)
    tamper_block(root / "node-2" / LEDGER_FILE, 1)
    proc = spawn_node(root / "node-2", group)
    try:
        source = GroupSource(group, refresh=0.0, timeout=5.0)
        deadline = time.monotonic() + 60
        while True:
            snap = source.snapshot()
            if any(v.source == "node-2" for v in snap.views):
                break
            assert proc.poll() is None, (root / "node-2" / "node.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "node-2 did not come back"
        assert not snap.ok
        failures = dict(snap.failures)
        assert list(failures) == ["node-2"]
        assert failures["node-2"].startswith("block 1: ")
        assert snap.shown.source != "node-2" and snap.shown.ok
        page = TestClient(create_app(source)).get("/").text
        assert "verified from genesis: <b>no</b>" in page
        assert "<li><b>node-2</b>: block 1: " in page
    finally:
        stop_nodes([root / "node-2"], grace=5.0, procs={"node-2": proc}, out=lambda s: None)
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
