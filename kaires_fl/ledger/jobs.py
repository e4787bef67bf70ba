"""Jobs (the access records), receipts, and the fair exchange of data for payment.

``job.create`` — the consumer (tx sender) asks for a computation. Payload::

    {"statistic": str, "params": {...}, "providers": [policy id, ...],
     "committee": committee id, "consumer_key": hex,
     "min_providers": int, "on_excluded": "exclude" | "refuse",
     "coordinator": hex Ed25519 key (optional; default the consumer's),
     "privacy": {"epsilon": ε, "delta": δ} (optional: the job's differential privacy)}

The committee must be registered (:mod:`kaires_fl.ledger.committees`); the consumer
chooses neither the aggregators, their keys, the degree nor the receipt quorum: the
ledger fills them from the registry (``aggregators``, ``params["aggregator_keys"]``,
``params["degree"]`` = t, ``threshold`` = 2t + 1, ``committee``). A payload carrying any
of them is refused. The job records its ``coordinator``: the Ed25519 key whose signature
the aggregators require on every coordinator message of the job (the consumer's own key
unless the payload names another) — whoever relays first cannot take the job over. With
the registration allow-list on, the consumer must be admitted.

At commit time every named provider's policy is checked (:func:`policy_denies`):
providers it does not allow — wrong consumer, statistic, job limit, expiry, a committee
the policy does not name ("committee not accepted by the policy"), an owner removed
from the allow-list — are excluded with the reason recorded (or, with ``"refuse"``,
the job is refused). The job is refused if fewer providers remain than
``max(min_providers, every included policy's min_providers)``, or if the policies the
job's signers do not own ask for more distinct owners other than those signers than
there are (:func:`distinct_owners`: several policies of one key are one provider, and the
consumer's own data hides nobody's), or if the consumer
cannot pay Σ prices of the included providers, which are escrowed. Writes
``job/<id>`` (id = tx id), ``access/<provider>/<id>`` for each included provider,
``usage/<provider>`` (jobs counted against ``max_jobs``) and the consumer's balance.

Privacy budgets (:mod:`kaires_fl.ledger.budgets`): a job declaring ``privacy`` debits each
included provider's ``privacy/<provider>`` by its (ε, δ) in the same transaction, and its
access records say what the job spent, the total spent and what remains; a provider whose
policy's ``privacy_budget`` would be exceeded, or that has a budget while the job declares
no privacy, is excluded with a reason that says "privacy budget". The job entry records
``privacy`` (what the aggregators' noise must give, see :mod:`kaires_fl.privacy`).

``job.receipt`` — the aggregators' report. Payload::

    {"job": id, "receipt": {"status": "done" | "failed", "accepted": [...],
     "rejected": [...], "result_hash": hex, "faulty": [...], ...},
     "signatures": {hex key: hex sig}}

It needs the committee's quorum (2t + 1) of valid signatures of distinct members
(:func:`sign_receipt`); anyone may submit it. ``done`` pays each accepted provider's
price to its payee and refunds the rest to the consumer; ``failed`` refunds
everything. One receipt per job.
"""

from __future__ import annotations

import re
from typing import Any

from kaires_fl.crypto.sign import H, Identity, verify
from kaires_fl.errors import EncodingError, InvalidProof, LedgerError
from kaires_fl.ledger.budgets import (
    MAX_JOB_EPSILON,
    budget_denies,
    check_privacy_pair,
    cost_units,
    debit,
    privacy_key,
)
from kaires_fl.ledger.coin import balance, balance_key
from kaires_fl.ledger.committees import get_committee
from kaires_fl.ledger.contracts import TxEnv
from kaires_fl.ledger.darc import darc_key, evaluate, policy_owner
from kaires_fl.ledger.encoding import canonical, hex_bytes
from kaires_fl.ledger.identities import (
    CONSUMER,
    PROVIDER,
    check_registered,
    ident_key,
    registration_required,
)
from kaires_fl.ledger.state import StateView
from kaires_fl.ledger.tx import Tx

RECEIPT_CONTEXT = b"kaires/ledger/receipt"
_HEX32 = re.compile(r"^[0-9a-f]{64}$")


def job_key(job_id: str) -> str:
    return f"job/{job_id}"


def access_key(provider: str, job_id: str) -> str:
    return f"access/{provider}/{job_id}"


def usage_key(provider: str) -> str:
    return f"usage/{provider}"


def receipt_key(job_id: str) -> str:
    return f"receipt/{job_id}"


#: The exclusion reason of a provider whose policy does not name the job's committee.
COMMITTEE_NOT_ACCEPTED = "committee not accepted by the policy"


def policy_denies(
    view: StateView,
    provider: str,
    statistic: str,
    signers: tuple[str, ...],
    env: TxEnv,
    committee: str | None = None,
) -> str | None:
    """Why ``provider``'s current policy refuses this job (None if it allows it).

    ``committee`` (an id) is checked against the policy's accepted committees when given.
    """
    return _policy_denies(
        view.get(darc_key(provider)), view, provider, statistic, signers, env, committee
    )


def _policy_denies(
    d: Any,
    view: StateView,
    provider: str,
    statistic: str,
    signers: tuple[str, ...],
    env: TxEnv,
    committee: str | None = None,
    registration: bool | None = None,
    budget: list[int] | None = None,
) -> str | None:
    if d is None:
        return f"provider {provider!r} has no policy on the ledger"
    v = d["version"]
    terms = d.get("terms")
    if terms is None:
        return f"policy {provider!r} v{v} has no data terms"
    rule = d["rules"].get("use")
    if rule is None or not evaluate(rule, signers, view, budget=budget):
        return f"policy {provider!r} v{v} does not allow this consumer (rule 'use')"
    if "*" not in terms["statistics"] and statistic not in terms["statistics"]:
        return f"policy {provider!r} v{v} does not allow statistic {statistic!r}"
    used = view.get(usage_key(provider)) or 0
    if terms["max_jobs"] is not None and used >= terms["max_jobs"]:
        return f"policy {provider!r} v{v} allows {terms['max_jobs']} jobs, already used {used}"
    if terms["expires_height"] is not None and env.height > terms["expires_height"]:
        return f"policy {provider!r} v{v} expired at height {terms['expires_height']}"
    if terms["expires_time_ms"] is not None and env.time_ms > terms["expires_time_ms"]:
        return f"policy {provider!r} v{v} expired at time {terms['expires_time_ms']} ms"
    if committee is not None and committee not in terms["committees"]:
        return f"policy {provider!r} v{v}: {COMMITTEE_NOT_ACCEPTED} ({committee[:16]}…)"
    if registration is None:
        registration = registration_required(view)
    if registration:
        owner = policy_owner(provider)
        try:
            check_registered(view, owner or "", PROVIDER)
        except LedgerError:
            return f"policy {provider!r}: its owner is not on the registration allow-list"
    return None


def consumer_signers(
    view: StateView, signers: tuple[str, ...], registration: bool
) -> tuple[str, ...]:
    """The signers of a ``job.create`` that count towards the policies' ``use`` rules.

    With the allow-list on, only admitted consumers: a consumer removed from it (or never
    admitted) must not keep authorising jobs by co-signing another consumer's.
    """
    if not registration:
        return signers
    return tuple(s for s in signers if view.get(ident_key(CONSUMER, s)) is not None)


def distinct_owners(policies: list[str], exclude: tuple[str, ...] = ()) -> int:
    """How many distinct providers ``policies`` (ids) belong to: their owner keys (an
    unbound id counts as its own owner), leaving out the keys in ``exclude``.

    One admitted key may own several data policies; it is still one provider towards any
    ``min_providers``. ``job.create`` excludes the job's signers (its consumer and
    co-signers): a consumer's own data hides nobody's from it.
    """
    return len({policy_owner(p) or p for p in policies} - set(exclude))


#: Rule nodes the 'use' rules of one job's policies may visit together (a job naming
#: thousands of policies whose rules were made costly must not stall every node).
MAX_JOB_RULE_VISITS = 1 << 18

_COMMITTEE_FIELDS = ("aggregators", "threshold")
_COMMITTEE_PARAMS = ("aggregator_keys", "degree")
MAX_JOB_PROVIDERS = 4096


def _check_job_payload(p: Any) -> None:
    """Validate a ``job.create`` payload's shape (LedgerError saying what is wrong)."""
    need = {"statistic", "params", "providers", "committee", "consumer_key"}
    allowed = need | {"min_providers", "on_excluded", "coordinator", "privacy"}
    if isinstance(p, dict) and any(k in p for k in _COMMITTEE_FIELDS):
        raise LedgerError(
            "job.create takes no 'aggregators' or 'threshold': name a registered committee "
            "('committee': id); the ledger fills its members, degree and receipt quorum"
        )
    if not isinstance(p, dict) or not need <= set(p) or not set(p) <= allowed:
        raise LedgerError(
            f"job payload needs fields {sorted(need)} (optional: min_providers, "
            "on_excluded, coordinator, privacy); use job_payload()"
        )
    if not isinstance(p["statistic"], str) or not isinstance(p["params"], dict):
        raise LedgerError("job 'statistic' must be a string and 'params' a dict")
    if any(k in p["params"] for k in _COMMITTEE_PARAMS):
        raise LedgerError(
            "job 'params' may not set 'aggregator_keys' or 'degree': they come from the "
            "registered committee, the consumer chooses neither"
        )
    provs = p["providers"]
    if (
        not isinstance(provs, list)
        or not 1 <= len(provs) <= MAX_JOB_PROVIDERS
        or not all(isinstance(x, str) for x in provs)
        or len(set(provs)) != len(provs)
    ):
        raise LedgerError(
            f"job 'providers' must be a non-empty list of at most {MAX_JOB_PROVIDERS} "
            "distinct policy ids"
        )
    c = p["committee"]
    if not isinstance(c, str) or not _HEX32.match(c):
        raise LedgerError("job 'committee' must be a registered committee id (64 hex chars)")
    if not isinstance(p["consumer_key"], str):
        raise LedgerError("job 'consumer_key' must be a hex string")
    hex_bytes(p["consumer_key"], 32, "consumer_key (X25519 public key)")
    if "coordinator" in p and (
        not isinstance(p["coordinator"], str) or not _HEX32.match(p["coordinator"])
    ):
        raise LedgerError(
            "job 'coordinator' must be the coordinator's Ed25519 public key (64 hex chars)"
        )
    if p.get("on_excluded", "exclude") not in ("exclude", "refuse"):
        raise LedgerError("job 'on_excluded' must be 'exclude' or 'refuse'")
    mp = p.get("min_providers", 1)
    if not isinstance(mp, int) or isinstance(mp, bool) or mp < 1:
        raise LedgerError("job 'min_providers' must be an integer >= 1")
    if "privacy" in p:
        if not isinstance(p["privacy"], dict):
            raise LedgerError("job 'privacy' is {'epsilon': ε, 'delta': δ}")
        check_privacy_pair(p["privacy"], "job 'privacy'", MAX_JOB_EPSILON)


def job_payload(
    statistic: str,
    providers: list[str],
    committee: str,
    consumer_key: str,
    params: dict[str, Any] | None = None,
    min_providers: int = 1,
    on_excluded: str = "exclude",
    coordinator: str | None = None,
    privacy: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Build a ``job.create`` payload (validated) for registered ``committee`` (an id).

    ``coordinator``: the Ed25519 key (hex) of the job's coordinator (default: the
    consumer's, the tx sender). ``privacy``: ``{"epsilon": ε, "delta": δ}``, the
    differential privacy the job's noise gives each provider, debited from every included
    provider's privacy budget (None: an exact job, which policies with a budget refuse).
    """
    p: dict[str, Any] = {
        "statistic": statistic,
        "params": params or {},
        "providers": list(providers),
        "committee": committee,
        "consumer_key": consumer_key,
        "min_providers": min_providers,
        "on_excluded": on_excluded,
    }
    if coordinator is not None:
        p["coordinator"] = coordinator
    if privacy is not None:
        p["privacy"] = dict(privacy)
    _check_job_payload(p)
    return p


def job_create(view: StateView, tx: Tx, env: TxEnv) -> dict[str, Any]:
    """Contract ``job.create`` (module docstring)."""
    p = tx.payload
    _check_job_payload(p)
    check_registered(view, tx.sender, CONSUMER)
    cid = p["committee"]
    committee = get_committee(view, cid)
    job_id = env.tx_id
    included: list[str] = []
    excluded: dict[str, str] = {}
    escrow: dict[str, dict[str, Any]] = {}
    terms_of: dict[str, dict[str, Any]] = {}
    needed = p.get("min_providers", 1)
    protect = 0  # the largest min_providers of a policy the job's signers do not own
    registration = registration_required(view)
    budget = [MAX_JOB_RULE_VISITS]  # every 'use' rule of the job shares it
    signers = consumer_signers(view, env.signers, registration)
    privacy = None
    cost = None
    if "privacy" in p:
        eps, delta = check_privacy_pair(p["privacy"], "job 'privacy'", MAX_JOB_EPSILON)
        privacy = {"epsilon": eps, "delta": delta}
        cost = cost_units(eps, delta)
    for prov in p["providers"]:
        d = view.get(darc_key(prov))
        reason = _policy_denies(
            d, view, prov, p["statistic"], signers, env, cid, registration, budget
        )
        if reason is None and d is not None:
            reason = budget_denies(prov, d["version"], d["terms"], cost, view)
        if reason is not None or d is None:
            excluded[prov] = reason or "no policy"
            continue
        terms = d["terms"]
        included.append(prov)
        terms_of[prov] = terms
        escrow[prov] = {"payee": terms["payee"], "price": terms["price"], "version": d["version"]}
        needed = max(needed, terms["min_providers"])
        if (policy_owner(prov) or prov) not in env.signers:
            protect = max(protect, terms["min_providers"])
    if excluded and p.get("on_excluded", "exclude") == "refuse":
        raise LedgerError(f"job refused: providers excluded by their policies: {excluded}")
    if len(included) < needed:
        raise LedgerError(
            f"job refused: {len(included)} providers allowed, at least {needed} required "
            f"(min providers); excluded: {excluded}"
        )
    owners = distinct_owners(included, env.signers)
    if owners < protect:
        raise LedgerError(
            f"job refused: its {len(included)} allowed policies belong to {owners} distinct "
            f"provider keys other than the job's signers, a policy requires at least "
            f"{protect} (min providers count owners: several policies of one key are one "
            "provider, and the consumer's own data hides nobody's)"
        )
    total = sum(e["price"] for e in escrow.values())
    have = balance(view, tx.sender)
    if have < total:
        raise LedgerError(
            f"job refused: insufficient balance: consumer {tx.sender[:16]}… has {have}, "
            f"the included providers' prices sum to {total}"
        )
    job = {
        "id": job_id,
        "consumer": tx.sender,
        "statistic": p["statistic"],
        "params": {
            **p["params"],
            "aggregator_keys": [m["box"] for m in committee["members"]],
            "degree": committee["t"],
        },
        "providers": included,
        "excluded": excluded,
        "committee": cid,
        "aggregators": [m["sign"] for m in committee["members"]],
        "threshold": committee["quorum"],
        "consumer_key": p["consumer_key"],
        "coordinator": p.get("coordinator", tx.sender),
        "signers": list(env.signers),  # their own policies protect nobody (min_providers)
        "escrow": escrow,
        "escrow_total": total,
        "status": "committed",
        "height": env.height,
        "time_ms": env.time_ms,
    }
    if privacy is not None:
        job["privacy"] = privacy
    writes: dict[str, Any] = {job_key(job_id): job}
    for prov in included:
        writes[usage_key(prov)] = (view.get(usage_key(prov)) or 0) + 1
        access: dict[str, Any] = {
            "job": job_id,
            "consumer": tx.sender,
            "statistic": p["statistic"],
            "policy_version": escrow[prov]["version"],
            "height": env.height,
        }
        if cost is not None:
            writes[privacy_key(prov)], access["privacy"] = debit(view, prov, terms_of[prov], cost)
        writes[access_key(prov, job_id)] = access
    if total:
        writes[balance_key(tx.sender)] = have - total
    return writes


def receipt_message(chain: str, job_id: str, receipt: Any) -> bytes:
    return H(
        b"kaires/ledger/receipt", canonical({"chain": chain, "job": job_id, "receipt": receipt})
    )


def sign_receipt(identity: Identity, chain: str, job_id: str, receipt: Any) -> tuple[str, str]:
    """An aggregator's signature on a receipt: ``(hex key, hex sig)`` for ``signatures``."""
    sig = identity.sign(RECEIPT_CONTEXT, receipt_message(chain, job_id, receipt))
    return identity.public.hex(), sig.hex()


def job_receipt(view: StateView, tx: Tx, env: TxEnv) -> dict[str, Any]:
    """Contract ``job.receipt`` (module docstring): needs the committee's quorum."""
    p = tx.payload
    if not isinstance(p, dict) or set(p) != {"job", "receipt", "signatures"}:
        raise LedgerError("job.receipt payload is {'job', 'receipt', 'signatures'}")
    job_id, receipt, sigs = p["job"], p["receipt"], p["signatures"]
    if not isinstance(job_id, str) or not _HEX32.match(job_id):
        raise LedgerError("receipt 'job' must be a job id (64 hex chars)")
    job = view.get(job_key(job_id))
    if job is None:
        raise LedgerError(f"receipt for unknown job {job_id!r}: commit the job first")
    if job["status"] != "committed":
        raise LedgerError(f"job {job_id[:16]}… already has a receipt (status {job['status']})")
    if not isinstance(receipt, dict) or receipt.get("status") not in ("done", "failed"):
        raise LedgerError("receipt 'status' must be 'done' or 'failed'")
    for k in ("accepted", "rejected", "faulty"):
        if not isinstance(receipt.get(k), list):
            raise LedgerError(f"receipt field {k!r} must be a list")
    if not isinstance(receipt.get("result_hash"), str):
        raise LedgerError("receipt field 'result_hash' must be a hex string")
    if not all(isinstance(x, str) for k in ("accepted", "rejected") for x in receipt[k]):
        raise LedgerError("receipt accepted/rejected lists must hold policy ids (strings)")
    acc, rej = set(receipt["accepted"]), set(receipt["rejected"])
    incl = set(job["providers"])
    if not acc <= incl or not rej <= incl or acc & rej:
        raise LedgerError(
            "receipt accepted/rejected lists must be disjoint subsets of the job's providers"
        )
    msg = receipt_message(env.chain, job_id, receipt)
    aggs = set(job["aggregators"])
    good = 0
    if not isinstance(sigs, dict):
        raise LedgerError("receipt 'signatures' must map aggregator keys to signatures")
    for pub, sig in sigs.items():
        if pub not in aggs:
            raise LedgerError(f"receipt signed by {pub[:16]}…, not an aggregator of the job")
        if not isinstance(sig, str):
            raise LedgerError(f"receipt signature of aggregator {pub[:16]}… is not hex")
        try:
            verify(hex_bytes(pub, 32, "key"), RECEIPT_CONTEXT, msg, hex_bytes(sig, 64, "sig"))
        except (InvalidProof, EncodingError) as exc:
            raise LedgerError(f"receipt signature of aggregator {pub[:16]}… is invalid") from exc
        good += 1
    quorum = int(job["threshold"])  # the committee's 2t + 1, filled at job.create
    if good < quorum:
        raise LedgerError(
            f"receipt has {good} valid signatures of distinct committee members, the "
            f"committee's quorum is {quorum} (2t + 1)"
        )
    pay: dict[str, int] = {}
    refund = 0
    for prov, e in job["escrow"].items():
        if receipt["status"] == "done" and prov in acc:
            pay[e["payee"]] = pay.get(e["payee"], 0) + e["price"]
        else:
            refund += e["price"]
    if refund:
        pay[job["consumer"]] = pay.get(job["consumer"], 0) + refund
    writes: dict[str, Any] = {
        job_key(job_id): {**job, "status": receipt["status"], "receipt_height": env.height},
        receipt_key(job_id): {
            "job": job_id,
            "receipt": receipt,
            "signatures": sigs,
            "paid": pay,
            "height": env.height,
        },
    }
    for who, amount in pay.items():
        if amount:
            writes[balance_key(who)] = balance(view, who) + amount
    return writes
