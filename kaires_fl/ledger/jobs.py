"""Jobs (the access records), receipts, and the fair exchange of data for payment.

``job.create`` — the consumer (tx sender) asks for a computation. Payload::

    {"statistic": str, "params": {...}, "providers": [policy id, ...],
     "aggregators": [hex Ed25519 key, ...], "threshold": int,
     "consumer_key": hex, "min_providers": int, "on_excluded": "exclude" | "refuse"}

At commit time every named provider's policy is checked (:func:`policy_denies`):
providers it does not allow are excluded with the reason recorded (or, with
``"refuse"``, the job is refused). The job is refused if fewer providers remain than
``max(min_providers, every included policy's min_providers)`` or if the consumer
cannot pay Σ prices of the included providers, which are escrowed. Writes
``job/<id>`` (id = tx id), ``access/<provider>/<id>`` for each included provider,
``usage/<provider>`` (jobs counted against ``max_jobs``) and the consumer's balance.

``job.receipt`` — the aggregators' report. Payload::

    {"job": id, "receipt": {"status": "done" | "failed", "accepted": [...],
     "rejected": [...], "result_hash": hex, "faulty": [...], ...},
     "signatures": {hex key: hex sig}}

It needs ``threshold`` valid signatures (:func:`sign_receipt`) from the job's
aggregators; anyone may submit it. ``done`` pays each accepted provider's price to its
payee and refunds the rest to the consumer; ``failed`` refunds everything. One
receipt per job.
"""

from __future__ import annotations

import re
from typing import Any

from kaires_fl.crypto.sign import H, Identity, verify
from kaires_fl.errors import EncodingError, InvalidProof, LedgerError
from kaires_fl.ledger.coin import balance, balance_key
from kaires_fl.ledger.contracts import TxEnv
from kaires_fl.ledger.darc import darc_key, evaluate
from kaires_fl.ledger.encoding import canonical, hex_bytes
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


def policy_denies(
    view: StateView, provider: str, statistic: str, signers: tuple[str, ...], env: TxEnv
) -> str | None:
    """Why ``provider``'s current policy refuses this job (None if it allows it)."""
    return _policy_denies(view.get(darc_key(provider)), view, provider, statistic, signers, env)


def _policy_denies(
    d: Any, view: StateView, provider: str, statistic: str, signers: tuple[str, ...], env: TxEnv
) -> str | None:
    if d is None:
        return f"provider {provider!r} has no policy on the ledger"
    v = d["version"]
    terms = d.get("terms")
    if terms is None:
        return f"policy {provider!r} v{v} has no data terms"
    rule = d["rules"].get("use")
    if rule is None or not evaluate(rule, signers, view):
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
    return None


def _check_job_payload(p: Any) -> None:
    need = {"statistic", "params", "providers", "aggregators", "threshold", "consumer_key"}
    allowed = need | {"min_providers", "on_excluded"}
    if not isinstance(p, dict) or not need <= set(p) or not set(p) <= allowed:
        raise LedgerError(
            f"job payload needs fields {sorted(need)} (optional: min_providers, "
            "on_excluded); use job_payload()"
        )
    if not isinstance(p["statistic"], str) or not isinstance(p["params"], dict):
        raise LedgerError("job 'statistic' must be a string and 'params' a dict")
    provs, aggs = p["providers"], p["aggregators"]
    if not isinstance(provs, list) or not provs or len(set(provs)) != len(provs):
        raise LedgerError("job 'providers' must be a non-empty list of distinct policy ids")
    if (
        not isinstance(aggs, list)
        or not aggs
        or len(set(aggs)) != len(aggs)
        or not all(isinstance(a, str) and _HEX32.match(a) for a in aggs)
    ):
        raise LedgerError("job 'aggregators' must be distinct hex Ed25519 keys")
    t = p["threshold"]
    if not isinstance(t, int) or isinstance(t, bool) or not 1 <= t <= len(aggs):
        raise LedgerError(f"job 'threshold' must be in 1..{len(aggs)}, got {t!r}")
    if not isinstance(p["consumer_key"], str):
        raise LedgerError("job 'consumer_key' must be a hex string")
    hex_bytes(p["consumer_key"], None, "consumer_key")
    if p.get("on_excluded", "exclude") not in ("exclude", "refuse"):
        raise LedgerError("job 'on_excluded' must be 'exclude' or 'refuse'")
    mp = p.get("min_providers", 1)
    if not isinstance(mp, int) or isinstance(mp, bool) or mp < 1:
        raise LedgerError("job 'min_providers' must be an integer >= 1")


def job_payload(
    statistic: str,
    providers: list[str],
    aggregators: list[str],
    threshold: int,
    consumer_key: str,
    params: dict[str, Any] | None = None,
    min_providers: int = 1,
    on_excluded: str = "exclude",
) -> dict[str, Any]:
    """Build a ``job.create`` payload (validated)."""
    p = {
        "statistic": statistic,
        "params": params or {},
        "providers": list(providers),
        "aggregators": list(aggregators),
        "threshold": threshold,
        "consumer_key": consumer_key,
        "min_providers": min_providers,
        "on_excluded": on_excluded,
    }
    _check_job_payload(p)
    return p


def job_create(view: StateView, tx: Tx, env: TxEnv) -> dict[str, Any]:
    p = tx.payload
    _check_job_payload(p)
    job_id = env.tx_id
    included: list[str] = []
    excluded: dict[str, str] = {}
    escrow: dict[str, dict[str, Any]] = {}
    needed = p.get("min_providers", 1)
    for prov in p["providers"]:
        d = view.get(darc_key(prov))
        reason = _policy_denies(d, view, prov, p["statistic"], env.signers, env)
        if reason is not None or d is None:
            excluded[prov] = reason or "no policy"
            continue
        terms = d["terms"]
        included.append(prov)
        escrow[prov] = {"payee": terms["payee"], "price": terms["price"], "version": d["version"]}
        needed = max(needed, terms["min_providers"])
    if excluded and p.get("on_excluded", "exclude") == "refuse":
        raise LedgerError(f"job refused: providers excluded by their policies: {excluded}")
    if len(included) < needed:
        raise LedgerError(
            f"job refused: {len(included)} providers allowed, at least {needed} required "
            f"(min providers); excluded: {excluded}"
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
        "params": p["params"],
        "providers": included,
        "excluded": excluded,
        "aggregators": p["aggregators"],
        "threshold": p["threshold"],
        "consumer_key": p["consumer_key"],
        "escrow": escrow,
        "escrow_total": total,
        "status": "committed",
        "height": env.height,
        "time_ms": env.time_ms,
    }
    writes: dict[str, Any] = {job_key(job_id): job}
    for prov in included:
        writes[usage_key(prov)] = (view.get(usage_key(prov)) or 0) + 1
        writes[access_key(prov, job_id)] = {
            "job": job_id,
            "consumer": tx.sender,
            "statistic": p["statistic"],
            "policy_version": escrow[prov]["version"],
            "height": env.height,
        }
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
    p = tx.payload
    job_id, receipt, sigs = p["job"], p["receipt"], p["signatures"]
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
        try:
            verify(hex_bytes(pub, 32, "key"), RECEIPT_CONTEXT, msg, hex_bytes(sig, 64, "sig"))
        except (InvalidProof, EncodingError) as exc:
            raise LedgerError(f"receipt signature of aggregator {pub[:16]}… is invalid") from exc
        good += 1
    if good < job["threshold"]:
        raise LedgerError(
            f"receipt has {good} aggregator signatures, the job requires {job['threshold']}"
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
