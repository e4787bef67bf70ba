"""Set-up shared by every test (the Flower simulations of tests/strategies and tests/node).

Ray starts its worker processes — a simulation's ClientApp actors — at niceness 15 (its
``RAY_worker_niceness`` setting). Beside any process at the default niceness (another
test run, a benchmark, a CI neighbour) they then get a few percent of a core: under two
busy loops on this 2-core machine, the example's 3-round simulation took 95–230 s instead
of 15 s (all of it the actors waiting for a CPU), and on a busier machine it exceeded the
suite's 300 s per-test timeout. The simulations here run their actors at the default
niceness, as the ServerApp's own process (docs/flower.md, *Simulation under load*).
"""

from __future__ import annotations

import pytest

#: Ray's setting of its worker processes' niceness (read when ``ray.init`` starts Ray).
RAY_WORKER_NICENESS = "RAY_worker_niceness"


@pytest.fixture(autouse=True)
def _ray_actors_at_default_niceness(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RAY_WORKER_NICENESS, "0")
