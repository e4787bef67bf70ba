"""Privacy budgets on the ledger: what a provider's data may still release.

A data policy may carry ``terms["privacy_budget"] = [epsilon, delta]``: the total
(ε, δ)-differential privacy its owner grants over all jobs. A ``job.create`` that
declares ``privacy = {"epsilon", "delta"}`` (the guarantee its noise gives each included
provider, see :mod:`kaires_fl.privacy`) debits every included provider's spending by that
amount at commit, in the same transaction as the access record (basic composition: the
ε and the δ of successive jobs add). A provider whose budget would be exceeded, or whose
policy has a budget while the job declares no differential privacy, is excluded with a
reason that says "privacy budget".

The spending lives in its own entry ``privacy/<policy id>``, written by ``job.create``
only, keyed by the policy id and not its version: a new version of the policy (by its
owner, the only key that may evolve a bound id) changes the budget, never what was
spent. A failed job is not refunded (the ledger cannot know what a failed job released).

Exact arithmetic: ε and δ are accounted as integers, ε in units of 10⁻⁹
(:data:`EPSILON_SCALE`) and δ in units of 10⁻¹⁵ (:data:`DELTA_SCALE`), from the
shortest decimal form of each float (``repr``: ``0.1`` is exactly 10⁸ units). A job's
cost is rounded up and a budget down, so splitting a job into many small ones never
spends less than the whole; ten jobs of ε = 0.1 exhaust a budget of ε = 1 exactly.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal
from typing import Any

from kaires_fl.errors import LedgerError

EPSILON_SCALE = 10**9
DELTA_SCALE = 10**15
#: Largest ε one job may declare (the :class:`kaires_fl.DP` bound) and a budget may hold.
MAX_JOB_EPSILON = 100.0
MAX_BUDGET_EPSILON = 1e6
#: The reason (prefix) of every exclusion by a budget.
PRIVACY_BUDGET = "privacy budget"
# A private context: the thread's decimal context may have been changed by anyone, and
# every node must round the same way.
_CTX = Context(prec=60)


def privacy_key(provider: str) -> str:
    """State key of the spending of policy ``provider``: ``privacy/<policy id>``."""
    return f"privacy/{provider}"


def _number(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise LedgerError(f"{what} must be a finite number, got {str(x)[:40]!r}")
    try:
        v = float(x)
    except OverflowError:  # an integer beyond any float
        v = math.inf
    if not math.isfinite(v):
        raise LedgerError(f"{what} must be a finite number, got {str(x)[:40]!r}")
    return v


def check_privacy_pair(pair: Any, what: str, max_epsilon: float) -> tuple[float, float]:
    """Validate an (ε, δ) pair given as ``[ε, δ]`` or ``{"epsilon", "delta"}``.

    Post: returns ``(ε, δ)`` with ``0 < ε <= max_epsilon`` and ``0 < δ < 1``.

    Raises
    ------
    LedgerError
        saying which field is wrong.
    """
    if isinstance(pair, dict):
        if set(pair) != {"epsilon", "delta"}:
            raise LedgerError(f"{what} is {{'epsilon': ε, 'delta': δ}}, got fields {sorted(pair)}")
        eps, delta = pair["epsilon"], pair["delta"]
    elif isinstance(pair, list | tuple) and len(pair) == 2:
        eps, delta = pair
    else:
        raise LedgerError(f"{what} is a pair [epsilon, delta], got {pair!r}")
    e, d = _number(eps, f"{what} epsilon"), _number(delta, f"{what} delta")
    if not 0 < e <= max_epsilon or not 0 < d < 1:
        raise LedgerError(
            f"{what} needs 0 < epsilon <= {max_epsilon:g} and 0 < delta < 1, got ({e!r}, {d!r})"
        )
    return e, d


def to_units(x: float, scale: int, *, up: bool) -> int:
    """``x`` (>= 0) in integer units of ``1/scale``, from its shortest decimal form,
    rounded up (a cost) or down (a budget)."""
    q = _CTX.multiply(Decimal(repr(float(x))), Decimal(scale))
    return int(q.to_integral_value(ROUND_CEILING if up else ROUND_FLOOR, _CTX))


def cost_units(epsilon: float, delta: float) -> tuple[int, int]:
    """A job's (ε, δ) in units, rounded up (at least one unit each: nothing is free)."""
    return (
        max(1, to_units(epsilon, EPSILON_SCALE, up=True)),
        max(1, to_units(delta, DELTA_SCALE, up=True)),
    )


def budget_units(budget: Any) -> tuple[int, int]:
    """A policy's ``privacy_budget`` ``[ε, δ]`` in units, rounded down."""
    return to_units(budget[0], EPSILON_SCALE, up=False), to_units(budget[1], DELTA_SCALE, up=False)


def from_units(units: tuple[int, int]) -> dict[str, float]:
    """``{"epsilon", "delta"}`` (floats) of an amount in units."""
    return {"epsilon": units[0] / EPSILON_SCALE, "delta": units[1] / DELTA_SCALE}


def spent_units(view: Any, provider: str) -> tuple[int, int, int]:
    """What policy ``provider`` has spent: ``(ε units, δ units, jobs)`` (zeros if nothing)."""
    s = view.get(privacy_key(provider))
    if s is None:
        return 0, 0, 0
    return int(s["epsilon_units"]), int(s["delta_units"]), int(s["jobs"])


def budget_denies(
    provider: str, version: int, terms: dict[str, Any], cost: tuple[int, int] | None, view: Any
) -> str | None:
    """Why policy ``provider`` (``terms`` of version ``version``) cannot pay a job of
    ``cost`` units (None: a job without differential privacy); None if it can."""
    budget = terms.get("privacy_budget")
    if budget is None:
        return None
    if cost is None:
        return (
            f"{PRIVACY_BUDGET}: this policy requires differential privacy (policy {provider!r} "
            f"v{version} has a budget; declare the job's privacy = {{'epsilon', 'delta'}}, "
            "e.g. run_job(..., dp=DP(epsilon, delta)))"
        )
    total = budget_units(budget)
    eps, delta, jobs = spent_units(view, provider)
    if eps + cost[0] > total[0] or delta + cost[1] > total[1]:
        spent = from_units((eps, delta))
        asks = from_units(cost)
        return (
            f"{PRIVACY_BUDGET} of policy {provider!r} v{version} exhausted: budget "
            f"(ε={budget[0]:g}, δ={budget[1]:g}), spent (ε={spent['epsilon']:g}, "
            f"δ={spent['delta']:g}) over {jobs} jobs, this job asks (ε={asks['epsilon']:g}, "
            f"δ={asks['delta']:g})"
        )
    return None


def debit(
    view: Any, provider: str, terms: dict[str, Any], cost: tuple[int, int]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The new spending entry of ``provider`` after a job of ``cost`` units, and the
    privacy part of its access record (this job's, the total spent, what remains)."""
    eps, delta, jobs = spent_units(view, provider)
    new = (eps + cost[0], delta + cost[1])
    entry = {"epsilon_units": new[0], "delta_units": new[1], "jobs": jobs + 1}
    budget = terms.get("privacy_budget")
    remaining = None
    if budget is not None:
        total = budget_units(budget)
        remaining = from_units((total[0] - new[0], total[1] - new[1]))
    record = {
        **from_units(cost),
        "spent": from_units(new),
        "budget": None if budget is None else {"epsilon": budget[0], "delta": budget[1]},
        "remaining": remaining,
    }
    return entry, record


def privacy_status(view: Any, provider: str) -> dict[str, Any]:
    """What policy ``provider`` has spent and what remains (for audits and UIs).

    Returns ``{"spent": {"epsilon", "delta"}, "jobs": int, "budget": {...} | None,
    "remaining": {...} | None}``.
    """
    eps, delta, jobs = spent_units(view, provider)
    d = view.get(f"darc/{provider}")
    budget = None if d is None or d.get("terms") is None else d["terms"].get("privacy_budget")
    out: dict[str, Any] = {"spent": from_units((eps, delta)), "jobs": jobs, "budget": None}
    out["remaining"] = None
    if budget is not None:
        total = budget_units(budget)
        out["budget"] = {"epsilon": budget[0], "delta": budget[1]}
        out["remaining"] = from_units((max(0, total[0] - eps), max(0, total[1] - delta)))
    return out


def privacy_line(record: Any) -> str:
    """One line of an access record's ``privacy`` part: what the job spent, the total
    spent after it and what remained (``kaires audit --provider``)."""
    try:
        line = (
            f"differential privacy: this job ε={record['epsilon']:g}, δ={record['delta']:g}; "
            f"spent ε={record['spent']['epsilon']:g}, δ={record['spent']['delta']:g}"
        )
        rem = record.get("remaining")
        if rem is None:
            return line + " (no budget)"
        return line + f"; remaining ε={rem['epsilon']:g}, δ={rem['delta']:g}"
    except (KeyError, TypeError, ValueError):
        return "differential privacy: malformed access record"
