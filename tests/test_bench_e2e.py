"""The e2e bench's per-aggregator CPU figure: handlers timed, the job unchanged."""

from __future__ import annotations

import numpy as np

from kaires_fl.bench.e2e import RECORD_BITS, _data, _time_aggregators
from kaires_fl.estimators import KairesLinearRegression
from kaires_fl.simulation import LocalCommittee


def test_aggregator_handlers_are_timed_and_the_job_is_unchanged() -> None:
    X, y = _data(300, 3, seed=4)
    committee = LocalCommittee(workers=2)
    try:
        spent = _time_aggregators(committee)
        assert set(spent) == set(committee.aggregator_addresses)
        assert all(v == 0.0 for v in spent.values())
        timed = KairesLinearRegression(
            n_providers=2, granularity="record", frac_bits=RECORD_BITS, committee=committee
        ).fit(X, y)
    finally:
        committee.close()
    # every aggregator handled the job's messages, on some thread, for some CPU time
    assert all(v > 0.0 for v in spent.values()), spent
    plain = KairesLinearRegression(n_providers=2, granularity="record", frac_bits=RECORD_BITS)
    plain.fit(X, y)
    assert np.allclose(timed.coef_, plain.coef_) and np.isclose(timed.intercept_, plain.intercept_)
