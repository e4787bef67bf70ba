"""Fixtures of the explorer tests: one persisted demo ledger per session (about 1 s of CPU),
copied before any test alters it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kaires_fl.explorer.screenshots import DemoLedger, build_demo_ledger


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoLedger:
    """A LocalCommittee ledger: a job with a rejected provider and a Byzantine aggregator, a
    job naming a provider id full of markup, a refused darc.create of that id."""
    return build_demo_ledger(tmp_path_factory.mktemp("explorer") / "db")


@pytest.fixture
def demo_copy(demo: DemoLedger, tmp_path: Path) -> Path:
    """A private copy of the demo ledger's databases (for tests that tamper with them)."""
    dst = tmp_path / "db"
    shutil.copytree(demo.db_dir, dst)
    return dst
