"""Privacy budgets on the ledger: debited at job.create, enforced, not resettable."""

from __future__ import annotations

import contextlib
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_world import COMMITTEE, ident, key, make_ledger, pol, policy_payload

from kaires_fl.errors import LedgerError
from kaires_fl.ledger import LocalLedger, StateView, job_payload
from kaires_fl.ledger.budgets import (
    DELTA_SCALE,
    EPSILON_SCALE,
    budget_units,
    cost_units,
    privacy_key,
    privacy_line,
    privacy_status,
)
from kaires_fl.ledger.darc import check_terms, data_terms
from kaires_fl.ledger.jobs import _check_job_payload

ALICE, BOB, CAROL, DAVE, MALLORY = (ident(n) for n in ("alice", "bob", "carol", "dave", "mallory"))
PA, PD = pol(ALICE, "alice"), pol(DAVE, "dave")


def job(providers: list[str], eps: float | None = None, delta: float = 1e-6, **kw: object) -> dict:
    privacy = None if eps is None else {"epsilon": eps, "delta": delta}
    return job_payload("mean", providers, COMMITTEE, "ab" * 32, privacy=privacy, **kw)  # type: ignore[arg-type]


def included(c, r) -> list[str]:  # type: ignore[no-untyped-def]
    return c.get(f"job/{r.tx_id}")["providers"]


def excluded(c, r) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return c.get(f"job/{r.tx_id}")["excluded"]


@pytest.fixture
def world() -> LocalLedger:
    L = make_ledger(4, balances={key(BOB): 1000})
    c = L.client()
    c.execute(ALICE, "darc.create", policy_payload(ALICE, PA, [BOB], privacy_budget=(1.0, 1e-5)))
    c.execute(DAVE, "darc.create", policy_payload(DAVE, PD, [BOB, CAROL]))  # no budget
    yield L
    L.close()


def test_budget_exhausted_after_the_right_number_of_jobs(world: LocalLedger) -> None:
    c = world.client()
    for i in range(10):  # ten jobs of ε = 0.1 spend ε = 1 exactly (decimal accounting)
        r = c.execute(BOB, "job.create", job([PA, PD], eps=0.1))
        assert included(c, r) == [PA, PD], i
        acc = c.get(f"access/{PA}/{r.tx_id}")["privacy"]
        assert acc["epsilon"] == 0.1 and acc["delta"] == 1e-6
        assert acc["spent"]["epsilon"] == pytest.approx(0.1 * (i + 1))
        assert acc["remaining"]["epsilon"] == pytest.approx(1.0 - 0.1 * (i + 1))
        assert acc["budget"] == {"epsilon": 1.0, "delta": 1e-5}
    assert c.get(privacy_key(PA)) == {
        "epsilon_units": EPSILON_SCALE,
        "delta_units": 10 * DELTA_SCALE // 10**6,
        "jobs": 10,
    }
    r = c.execute(BOB, "job.create", job([PA, PD], eps=0.1))
    assert included(c, r) == [PD]
    assert "privacy budget" in excluded(c, r)[PA] and "exhausted" in excluded(c, r)[PA]
    # the spending is unchanged by the refused debit; Dave's (no budget) is still recorded
    assert c.get(privacy_key(PA))["jobs"] == 10
    assert c.get(privacy_key(PD))["jobs"] == 11
    assert c.get(f"access/{PD}/{r.tx_id}")["privacy"]["remaining"] is None
    last = c.get(f"access/{PA}/{r.tx_id}")  # none: the 11th job excluded Alice
    assert last is None
    latest = max(c.accesses(PA), key=lambda proof: proof.value["height"]).value
    line = privacy_line(latest["privacy"])  # what `kaires audit --provider` prints
    assert "this job ε=0.1, δ=1e-06" in line and "remaining ε=0, δ=0" in line
    st_ = privacy_status(StateView(world.best_node().state), PA)
    assert st_["remaining"] == {"epsilon": 0.0, "delta": 0.0} and st_["jobs"] == 10


def test_delta_is_budgeted_too(world: LocalLedger) -> None:
    c = world.client()
    for _ in range(2):
        assert included(c, c.execute(BOB, "job.create", job([PA], eps=0.01, delta=5e-6))) == [PA]
    with pytest.raises(LedgerError, match=r"privacy budget.*exhausted"):
        c.execute(BOB, "job.create", job([PA], eps=0.01, delta=1e-15))


def test_exact_job_is_refused_by_a_budgeted_policy(world: LocalLedger) -> None:
    c = world.client()
    r = c.execute(BOB, "job.create", job([PA, PD]))
    assert included(c, r) == [PD]
    assert "privacy budget: this policy requires differential privacy" in excluded(c, r)[PA]
    assert c.get(privacy_key(PA)) is None and c.get(privacy_key(PD)) is None
    assert "privacy" not in c.get(f"job/{r.tx_id}")
    r2 = c.execute(BOB, "job.create", job([PA, PD], eps=0.5))
    assert c.get(f"job/{r2.tx_id}")["privacy"] == {"epsilon": 0.5, "delta": 1e-6}


def test_split_jobs_never_spend_less_than_the_whole(world: LocalLedger) -> None:
    """A consumer splitting ε = 1 into many tiny jobs pays at least the whole (costs round
    up): after 1 + 10 jobs whose ε sum to more than 1, the last is excluded."""
    c = world.client()
    c.execute(BOB, "job.create", job([PA], eps=0.95))
    tiny = 0.005 + 1e-12  # rounds up to 5_000_001 units
    for _ in range(9):
        assert included(c, c.execute(BOB, "job.create", job([PA], eps=tiny))) == [PA]
    with pytest.raises(LedgerError, match=r"privacy budget"):
        c.execute(BOB, "job.create", job([PA], eps=tiny))
    assert cost_units(tiny, 1e-6)[0] == 5_000_001


def test_budget_cannot_be_reset_by_a_new_policy_version(world: LocalLedger) -> None:
    c = world.client()
    for _ in range(4):
        c.execute(BOB, "job.create", job([PA], eps=0.25))
    with pytest.raises(LedgerError, match=r"privacy budget"):
        c.execute(BOB, "job.create", job([PA], eps=0.25))
    # the owner re-submits the same policy (same budget) as a new version: still exhausted
    again = {**policy_payload(ALICE, PA, [BOB], privacy_budget=(1.0, 1e-5)), "version": 1}
    c.execute(ALICE, "darc.evolve", again)
    with pytest.raises(LedgerError, match=r"privacy budget.*v1 exhausted"):
        c.execute(BOB, "job.create", job([PA], eps=0.25))
    # removing the budget and re-adding it does not reset the spending either
    c.execute(ALICE, "darc.evolve", {**policy_payload(ALICE, PA, [BOB]), "version": 2})
    c.execute(BOB, "job.create", job([PA], eps=0.25))  # no budget: allowed, still recorded
    c.execute(ALICE, "darc.evolve", {**again, "version": 3})
    assert c.get(privacy_key(PA))["epsilon_units"] == 5 * EPSILON_SCALE // 4
    with pytest.raises(LedgerError, match=r"privacy budget"):
        c.execute(BOB, "job.create", job([PA], eps=0.001))
    # the owner may grant more (its data, its choice): what remains is budget − spent
    c.execute(
        ALICE,
        "darc.evolve",
        {**policy_payload(ALICE, PA, [BOB], privacy_budget=(1.5, 1e-5)), "version": 4},
    )
    r = c.execute(BOB, "job.create", job([PA], eps=0.25))
    assert c.get(f"access/{PA}/{r.tx_id}")["privacy"]["remaining"]["epsilon"] == 0.0


def test_non_owner_cannot_reset_or_raise_the_budget(world: LocalLedger) -> None:
    c = world.client()
    c.execute(BOB, "job.create", job([PA], eps=1.0))
    evil = {**policy_payload(ALICE, PA, [BOB], privacy_budget=(100.0, 0.5)), "version": 1}
    with pytest.raises(LedgerError, match=r"_evolve"):
        c.execute(MALLORY, "darc.evolve", evil)
    with pytest.raises(LedgerError, match=r"already exists"):
        c.execute(MALLORY, "darc.create", {k: v for k, v in evil.items() if k != "version"})
    # no contract but job.create writes privacy/: a forged entry in a payload does nothing
    with pytest.raises(LedgerError):
        c.execute(MALLORY, "darc.create", {"id": privacy_key(PA), "rules": {}, "terms": None})
    with pytest.raises(LedgerError, match=r"privacy budget"):
        c.execute(BOB, "job.create", job([PA], eps=0.01))


def test_replayed_job_create_is_refused_and_a_resubmitted_one_pays_again(
    world: LocalLedger,
) -> None:
    c = world.client()
    tx = c.sign(BOB, "job.create", job([PA], eps=0.4))
    c.submit(tx)
    c.wait([tx.id])
    with pytest.raises(LedgerError, match=r"replayed or stale"):
        c.submit(tx)  # a replay of the same signed tx
    assert c.get(privacy_key(PA))["jobs"] == 1
    c.execute(BOB, "job.create", job([PA], eps=0.4))  # the same request again is a new job
    assert c.get(privacy_key(PA))["epsilon_units"] == 8 * EPSILON_SCALE // 10
    with pytest.raises(LedgerError, match=r"privacy budget"):
        c.execute(BOB, "job.create", job([PA], eps=0.4))


def test_provider_named_twice_is_refused() -> None:
    with pytest.raises(LedgerError, match=r"distinct policy ids"):
        job([PA, PA], eps=0.1)


def test_concurrent_jobs_in_one_block_cannot_overspend(world: LocalLedger) -> None:
    c = world.client()
    c.execute(
        DAVE,
        "darc.evolve",
        {**policy_payload(DAVE, PD, [BOB, CAROL], privacy_budget=(1.0, 1e-5)), "version": 1},
    )
    txs = [c.sign(BOB, "job.create", job([PA, PD], eps=0.3)) for _ in range(3)]
    txs += [c.sign(CAROL, "job.create", job([PD], eps=0.3)) for _ in range(2)]
    c.submit_many(txs)
    done = c.wait([t.id for t in txs], proof=False)
    assert len({d.height for d in done}) == 1  # one block
    # five jobs want 0.3 of Dave's ε = 1 each: whatever their order, three get it
    assert c.get(privacy_key(PD))["jobs"] == 3
    assert c.get(privacy_key(PD))["epsilon_units"] == 9 * EPSILON_SCALE // 10
    assert c.get(privacy_key(PA))["jobs"] == 3
    reasons = [d.result.reason for d in done if not d.result.ok]
    reasons += [r for d in done if d.result.ok for r in excluded(c, d).values()]
    assert len(reasons) == 2 and all("privacy budget" in r for r in reasons)


def test_job_privacy_and_budget_are_validated() -> None:
    for bad in (
        {"epsilon": 0.0, "delta": 1e-6},
        {"epsilon": 1.0, "delta": 1.0},
        {"epsilon": float("nan"), "delta": 1e-6},
        {"epsilon": 101.0, "delta": 1e-6},
        {"epsilon": True, "delta": 1e-6},
        {"epsilon": 10**400, "delta": 1e-6},
        {"epsilon": "1.0", "delta": 1e-6},
        {"epsilon": 1.0},
        {"epsilon": 1.0, "delta": 1e-6, "sigma": 0.0},
    ):
        p = job_payload("mean", [PA], COMMITTEE, "ab" * 32)
        p["privacy"] = bad
        with pytest.raises(LedgerError):
            job_payload("mean", [PA], COMMITTEE, "ab" * 32, privacy=bad)
        with pytest.raises(LedgerError):  # the contract's check refuses the hand-built payload
            _check_job_payload(p)
    for bad_b in ((0.0, 1e-6), (1.0, 0.0), (1.0, 1.5), (float("inf"), 1e-6)):
        with pytest.raises(LedgerError, match=r"privacy_budget"):
            data_terms(key(ALICE), privacy_budget=bad_b)
    t = data_terms(key(ALICE))
    assert "privacy_budget" not in t  # old policies keep their exact encoding
    with pytest.raises(LedgerError, match=r"privacy_budget"):
        check_terms({**t, "privacy_budget": {"epsilon": 1.0, "delta": 1e-6}})
    with pytest.raises(LedgerError, match=r"exactly the fields"):
        check_terms({**t, "privacy": [1.0, 1e-6]})


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=1e-6, max_value=10.0), min_size=1, max_size=30),
    st.floats(min_value=1e-3, max_value=50.0),
)
def test_units_never_undercharge(costs: list[float], budget: float) -> None:
    """Against exact rationals: what the ledger admits never exceeds the budget."""
    total_b = budget_units([budget, 0.5])[0]
    assert Fraction(total_b, EPSILON_SCALE) <= Fraction(repr(budget))
    spent, exact = 0, Fraction(0)
    for x in costs:
        u = cost_units(x, 1e-9)[0]
        assert Fraction(u, EPSILON_SCALE) >= Fraction(repr(x))
        if spent + u <= total_b:
            spent += u
            exact += Fraction(repr(x))
    assert exact <= Fraction(repr(budget))


def test_local_committee_set_policy_privacy_budget() -> None:
    """committee.set_policy(label, privacy_budget=...) puts the budget on the ledger; an
    exact job then leaves that provider out (its policy requires differential privacy)."""
    import numpy as np

    from kaires_fl.simulation import LocalCommittee
    from kaires_fl.statistics import LinearRegressionStats

    rng = np.random.default_rng(0)
    data = {f"p{i}": (rng.uniform(-1, 1, (5, 2)), rng.uniform(-1, 1, 5)) for i in range(3)}
    stat = LinearRegressionStats(2, [-1, 1], [-1, 1], granularity="provider", max_rows=10)
    c = LocalCommittee()
    try:
        c.ensure_providers(sorted(data))
        c.set_policy("p0", privacy_budget=(2.0, 1e-5))
        terms = c.client.get(f"darc/{c.provider('p0').policy_id}")["terms"]
        assert terms["privacy_budget"] == [2.0, 1e-5]
        c.set_policy("p0", max_jobs=50)  # other changes keep the budget
        terms = c.client.get(f"darc/{c.provider('p0').policy_id}")["terms"]
        assert terms["privacy_budget"] == [2.0, 1e-5] and terms["max_jobs"] == 50
        r = c.run_job(stat, data)
        assert sorted(r.report["accepted"]) == ["p1", "p2"]
        assert "privacy budget" in r.report["excluded"]["p0"]
    finally:
        c.close()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_JSON, st.fixed_dictionaries({"epsilon": _JSON, "delta": _JSON})))
def test_any_privacy_field_is_validated_with_a_ledger_error(privacy: object) -> None:
    """A peer's payload: whatever the 'privacy' field and a policy's 'privacy_budget' hold,
    validation passes or raises LedgerError (never another exception)."""
    p = job_payload("mean", [PA], COMMITTEE, "ab" * 32)
    p["privacy"] = privacy
    with contextlib.suppress(LedgerError):
        _check_job_payload(p)
    t = {**data_terms(key(ALICE)), "privacy_budget": privacy}
    with contextlib.suppress(LedgerError):
        check_terms(t)
