"""What each page shows, read from a verified :class:`~kaires_fl.explorer.sources.Snapshot`.

Pure functions from a snapshot to plain dicts for the templates (which escape every value).
Ledger values are hostile until shown: any field may have an unexpected type, so every read
goes through :func:`_dict` / :func:`_list` and falls back to "absent".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kaires_fl.errors import AuditError, KairesError
from kaires_fl.explorer import plot
from kaires_fl.explorer.chain import ChainView
from kaires_fl.explorer.sources import Snapshot

#: Blocks per page of the chain table.
PAGE = 50
#: Most jobs (newest first) and data policies the chain page lists.
LIST = 200
#: Field names that carry a privacy cost (differential privacy), shown where present.
PRIVACY_WORDS = ("privacy", "epsilon", "delta", "budget", "dp")


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def when(ms: Any) -> str:
    """A Unix time in ms as UTC text ("-" when absent or not a time)."""
    if not isinstance(ms, int) or isinstance(ms, bool) or ms < 0:
        return "-"
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except (OverflowError, OSError, ValueError):
        return "-"


def verdict(snap: Snapshot) -> dict[str, Any]:
    """The banner of every page: verified from genesis yes/no, and why not."""
    shown = snap.shown
    return {
        "ok": snap.ok,
        "height": shown.height,
        "source": shown.source,
        "chain_id": shown.genesis.chain_id,
        "failures": snap.failures,
        "nodes": len(snap.views),
        "mode": snap.mode,
        "taken": when(int(snap.taken * 1000)),
    }


def _privacy(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The privacy fields of a ledger entry, each as text (ε/δ pairs spelled out)."""
    return {
        k: describe_privacy(v)
        for k, v in entry.items()
        if any(w in k.lower() for w in PRIVACY_WORDS) and v not in ({}, None)
    }


def _eps(x: Any) -> str | None:
    """``{"epsilon": e, "delta": d}`` as "ε = e, δ = d" (None if not such a pair)."""
    if isinstance(x, dict) and set(x) == {"epsilon", "delta"}:
        return f"ε = {x['epsilon']}, δ = {x['delta']}"
    return None


def describe_privacy(x: Any) -> str:
    """A privacy record as text: "ε = 1.0, δ = 1e-06", or for an access record "ε = 1.0,
    δ = 1e-06 spent by this job; … spent in all; … remaining of …"; other shapes as JSON."""
    pair = _eps(x)
    if pair is not None:
        return pair
    if isinstance(x, dict):
        parts = []
        own = _eps({k: x[k] for k in ("epsilon", "delta") if k in x})
        if own is not None:
            parts.append(f"{own} by this job")
        for word, label in (("spent", "spent in all"), ("remaining", "remaining")):
            if _eps(x.get(word)) is not None:
                parts.append(f"{_eps(x[word])} {label}")
        if _eps(x.get("budget")) is not None:
            parts.append(f"of a budget of {_eps(x['budget'])}")
        if parts:
            return "; ".join(parts)
    return json.dumps(x, sort_keys=True, default=str)


def chain_page(snap: Snapshot, page: int = 0) -> dict[str, Any]:
    """Height, nodes' verdicts, a page of blocks (newest first), jobs, providers, plots."""
    v = snap.shown
    blocks = list(reversed(v.blocks))
    pages = max(1, -(-len(blocks) // PAGE))
    page = min(max(page, 0), pages - 1)
    rows = [
        {
            "height": b.height,
            "time": when(b.time_ms),
            "proposer": b.proposer,
            "signers": ", ".join(str(i) for i in b.signers),
            "kinds": _kinds(b),
            "rejected": sum(1 for t in b.txs if not t.ok),
            "hash": b.hash,
        }
        for b in blocks[page * PAGE : (page + 1) * PAGE]
    ]
    jobs = []
    for key, job in v.items("job/"):
        j = _dict(job)
        jobs.append(
            {
                "id": key[len("job/") :],
                "statistic": j.get("statistic"),
                "consumer": j.get("consumer"),
                "status": j.get("status"),
                "height": j.get("height"),
                "providers": len(_list(j.get("providers"))),
                "excluded": len(_dict(j.get("excluded"))),
            }
        )
    jobs.sort(key=lambda r: r["height"] if isinstance(r["height"], int) else 0, reverse=True)
    nodes = [
        {"source": x.source, "offered": x.offered, "height": x.height, "failure": x.failure}
        for x in snap.views
    ]
    recent = v.blocks[-200:]
    providers = providers_list(v)
    return {
        "blocks": rows,
        "page": page,
        "pages": pages,
        "jobs": jobs[:LIST],
        "jobs_total": len(jobs),
        "providers": providers[:LIST],
        "providers_total": len(providers),
        "nodes": nodes,
        "genesis_time": when(v.genesis.time_ms),
        "roster": v.genesis.n,
        "f": v.genesis.f,
        "quorum": v.genesis.quorum,
        "name": v.genesis.name,
        "plot_jobs": plot.jobs_per_day(jobs_per_day(v)),
        "plot_blocks": plot.block_times(
            [b.time_ms for b in recent],
            recent[0].height if recent else 1,
            v.block_time(recent[0].height - 1) if recent else v.genesis.time_ms,
        ),
    }


def _kinds(b: Any) -> str:
    counts: dict[str, int] = {}
    for t in b.txs:
        counts[t.kind] = counts.get(t.kind, 0) + 1
    return ", ".join(k if n == 1 else f"{k} ×{n}" for k, n in counts.items())


def jobs_per_day(v: ChainView) -> dict[str, dict[str, int]]:
    """``{day: {policy id: jobs}}`` from the access records (the day of the job's block)."""
    out: dict[str, dict[str, int]] = {}
    for key, entry in v.items("access/"):
        h = _dict(entry).get("height")
        if not isinstance(h, int) or isinstance(h, bool):
            continue
        prov = key[len("access/") :].rsplit("/", 1)[0]
        day = plot.day_of(v.block_time(h))
        per = out.setdefault(day, {})
        per[prov] = per.get(prov, 0) + 1
    return out


def providers_list(v: ChainView) -> list[dict[str, Any]]:
    """Every data policy (one with terms): id, version, jobs so far, price."""
    out = []
    for key, d in v.items("darc/"):
        d = _dict(d)
        terms = _dict(d.get("terms"))
        if not terms:
            continue
        pid = key[len("darc/") :]
        out.append(
            {
                "id": pid,
                "version": d.get("version"),
                "accesses": len(v.keys(f"access/{pid}/")),
                "price": terms.get("price"),
                "max_jobs": terms.get("max_jobs"),
            }
        )
    return out


def block_page(snap: Snapshot, height: int) -> dict[str, Any] | None:
    """One verified block and its transactions (None if not verified or absent)."""
    v = snap.shown
    if not 1 <= height <= v.height:
        return None
    b = v.blocks[height - 1]
    return {
        "height": b.height,
        "hash": b.hash,
        "time": when(b.time_ms),
        "proposer": b.proposer,
        "view": b.view,
        "signers": b.signers,
        "quorum": v.genesis.quorum,
        "txs": b.txs,
    }


def job_page(snap: Snapshot, job_id: str) -> dict[str, Any] | None:
    """A job: its entry (proven), providers included/excluded, and its receipt."""
    v = snap.shown
    job = v.get(f"job/{job_id}")
    if job is None:
        return None
    job = _dict(job)
    try:
        proof_height: int | None = v.prove(f"job/{job_id}").height
        proof_error = None
    except (AuditError, KairesError) as exc:
        proof_height, proof_error = None, str(exc)
    rec = _dict(v.get(f"receipt/{job_id}"))
    r = _dict(rec.get("receipt"))
    reasons = _dict(r.get("reasons"))
    faulty_reasons = _dict(r.get("faulty_reasons"))
    aggregators = [a for a in _list(job.get("aggregators")) if isinstance(a, str)]
    escrow = _dict(job.get("escrow"))
    paid = _dict(rec.get("paid"))
    consumer = job.get("consumer")
    params = _dict(job.get("params"))
    privacy = {**_privacy(params), **_privacy(job), **_privacy(r), **_privacy(rec)}
    return {
        "id": job_id,
        "statistic": job.get("statistic"),
        "params": {k: val for k, val in params.items() if k not in ("aggregator_keys",)},
        "consumer": consumer,
        "coordinator": job.get("coordinator"),
        "status": job.get("status"),
        "height": job.get("height"),
        "time": when(job.get("time_ms")),
        "committee": job.get("committee"),
        "threshold": job.get("threshold"),
        "aggregators": [
            {"index": i, "key": a, "faulty": faulty_reasons.get(a)}
            for i, a in enumerate(aggregators)
        ],
        "included": [
            {"id": p, "escrow": _dict(escrow.get(p)).get("price")}
            for p in _list(job.get("providers"))
        ],
        "excluded": sorted(_dict(job.get("excluded")).items()),
        "escrow_total": job.get("escrow_total"),
        "proof_height": proof_height,
        "proof_error": proof_error,
        "receipt": None
        if not rec
        else {
            "status": r.get("status"),
            "why": r.get("why"),
            "height": rec.get("height"),
            "accepted": _list(r.get("accepted")),
            "rejected": [(p, reasons.get(p, "")) for p in _list(r.get("rejected"))],
            "faulty": [
                (aggregators.index(a) if a in aggregators else "?", a, faulty_reasons.get(a, ""))
                for a in _list(r.get("faulty"))
            ],
            "num_measurements": r.get("num_measurements"),
            "result_hash": r.get("result_hash"),
            "signatures": len(_dict(rec.get("signatures"))),
            "payments": [(k, amt) for k, amt in paid.items() if k != consumer],
            "refund": paid.get(consumer, 0) if isinstance(consumer, str) else 0,
        },
        "privacy": privacy,
    }


def provider_page(snap: Snapshot, policy_id: str) -> dict[str, Any] | None:
    """A provider's policy versions and every access to its data, each with its inclusion
    proof checked here (None if the ledger never saw that policy)."""
    v = snap.shown
    current = v.get(f"darc/{policy_id}")
    history = v.policy_txs.get(policy_id, [])
    accesses_keys = v.keys(f"access/{policy_id}/")
    if current is None and not history and not accesses_keys:
        return None
    accesses = []
    for key in accesses_keys:
        entry = _dict(v.get(key))
        try:
            proof = v.prove(key)
            status, error = f"proof verified (block {proof.height})", None
        except (AuditError, KairesError) as exc:
            status, error = "proof failed", str(exc)
        accesses.append(
            {
                "key": key,
                "job": entry.get("job"),
                "consumer": entry.get("consumer"),
                "statistic": entry.get("statistic"),
                "version": entry.get("policy_version"),
                "height": entry.get("height"),
                "time": when(v.block_time(entry["height"]))
                if isinstance(entry.get("height"), int)
                else "-",
                "status": status,
                "error": error,
                "privacy": _privacy(entry),
            }
        )
    cur = _dict(current)
    return {
        "id": policy_id,
        "current": cur,
        "terms": _dict(cur.get("terms")),
        "rules": _dict(cur.get("rules")),
        "usage": v.get(f"usage/{policy_id}"),
        "history": history,
        "accesses": accesses,
        "privacy": {k: v.get(k) for k in _privacy_keys(v, policy_id)},
    }


def _privacy_keys(v: ChainView, policy_id: str) -> list[str]:
    return [
        k for prefix in ("privacy/", "budget/", "dp/") for k in v.keys(prefix) if policy_id in k
    ]


def _registration(entry: Any) -> dict[str, Any]:
    """The allow-list's policy entry: required or not, its governors and their quorum."""
    e = _dict(entry)
    return {
        "required": e.get("required") is True,
        "governors": len(_list(e.get("governors"))),
        "quorum": e.get("quorum"),
    }


def committees_page(snap: Snapshot) -> dict[str, Any]:
    """The ledger roster (genesis), the aggregation committees, the trustees' keys, the
    allow-list, and (``--group``) every node's health."""
    v = snap.shown
    g = v.genesis
    proposed = [0] * g.n
    signed = [0] * g.n
    for b in v.blocks:
        if 0 <= b.proposer < g.n:
            proposed[b.proposer] += 1
        for i in b.signers:
            if 0 <= i < g.n:
                signed[i] += 1
    roster = [
        {"index": i, "key": k, "proposed": proposed[i], "signed": signed[i]}
        for i, k in enumerate(g.roster)
    ]
    aggregation = []
    for key, c in v.items("committee/"):
        c = _dict(c)
        aggregation.append(
            {
                "id": key[len("committee/") :],
                "n": c.get("n"),
                "t": c.get("t"),
                "quorum": c.get("quorum"),
                "members": [_dict(m).get("sign") for m in _list(c.get("members"))],
            }
        )
    trustees = []
    for key, lts in v.items("calypso/lts/"):
        lts = _dict(lts)
        trustees.append(
            {
                "id": key[len("calypso/lts/") :],
                "n": lts.get("n"),
                "t": lts.get("t"),
                "height": lts.get("height"),
                "key": lts.get("X"),
                "members": _list(lts.get("trustees")),
            }
        )
    idents: dict[str, int] = {}
    for key in v.keys("ident/"):
        role = key.split("/")[1] if key.count("/") >= 2 else "?"
        idents[role] = idents.get(role, 0) + 1
    group = snap.group
    return {
        "roster": roster,
        "f": g.f,
        "quorum": g.quorum,
        "aggregation": aggregation,
        "trustees": trustees,
        "registration": _registration(v.get("registration")),
        "identities": sorted(idents.items()),
        "health": [{**h.__dict__, "last_block": when(h.last_block_ms)} for h in snap.health],
        "group": None
        if group is None
        else {
            "name": group.name,
            "id": group.id,
            "threshold": group.threshold,
            "trustee_threshold": group.trustee_threshold,
            "registration": group.registration,
        },
    }
