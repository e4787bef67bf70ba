"""Differential privacy on the explorer's pages: a job run with ``dp=DP(ε, δ)`` over
providers whose policies carry a privacy budget shows what it spent, and each access shows
what this job spent, what all jobs spent and what remains of the budget."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from kaires_fl.explorer.app import create_app
from kaires_fl.explorer.sources import DbSource


@pytest.fixture(scope="module")
def dp_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    from kaires_fl import DP
    from kaires_fl.simulation import LocalCommittee
    from kaires_fl.statistics import MeanVarianceStats

    db = tmp_path_factory.mktemp("explorer-dp") / "db"
    committee = LocalCommittee(db_dir=db)
    try:
        stat = MeanVarianceStats(2, [(0.0, 10.0), (0.0, 10.0)], max_rows=100, frac_bits=16)
        rng = np.random.default_rng(3)
        data = {f"h{i}": (rng.uniform(0, 10, (6, 2)), np.zeros(6)) for i in range(4)}
        committee.ensure_providers(list(data))
        for label in data:
            committee.set_policy(label, privacy_budget=(4.0, 1e-5))
        result = committee.run_job(stat, data, dp=DP(1.0, 1e-6))
        yield db, result.report["job"], committee.provider("h0").policy_id
    finally:
        committee.close()


def test_job_and_provider_pages_show_privacy_spent(dp_ledger: tuple[Path, str, str]) -> None:
    db, job, provider = dp_ledger
    web = TestClient(create_app(DbSource(db)))
    page = web.get(f"/job/{job}").text
    privacy = re.search(r'<table class="kv" id="privacy">(.*?)</table>', page, re.S)
    assert privacy is not None and "ε = 1.0, δ = 1e-06" in privacy.group(1)
    page = web.get(f"/provider/{provider}").text
    assert "privacy budget (ε, δ)" in page and "[4.0, 1e-05]" in page
    accesses = re.search(r'<table id="accesses">(.*?)</table>', page, re.S)
    assert accesses is not None
    row: Any = accesses.group(1)
    assert "ε = 1.0, δ = 1e-06 by this job" in row
    assert "ε = 3.0, δ = 9e-06 remaining" in row and "of a budget of ε = 4.0, δ = 1e-05" in row
    assert "proof verified" in row
