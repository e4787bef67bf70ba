"""State machine: signatures, replay protection, DARC policies, jobs, receipts, balances."""

from __future__ import annotations

from dataclasses import replace

import pytest
from ledger_world import AGGS, COMMITTEE, FAST, ident, key, make_ledger, pol, policy_payload, rule

from kaires_fl.errors import ConfigError, LedgerError
from kaires_fl.ledger import (
    ContractRegistry,
    LocalLedger,
    StateView,
    Tx,
    TxEnv,
    job_payload,
    make_tx,
    register_contract,
    sign_receipt,
)
from kaires_fl.ledger.contracts import DEFAULT_REGISTRY
from kaires_fl.ledger.darc import check_rule, evaluate, parse_expr

ALICE, BOB, CAROL, DAVE, EVE = (ident(n) for n in ("alice", "bob", "carol", "dave", "eve"))
AGG_KEYS = [key(a) for a in AGGS]
PA, PD, PE = pol(ALICE, "alice"), pol(DAVE, "dave"), pol(EVE, "eve")


def state_root(L: LocalLedger) -> bytes:
    return L.best_node().state.root


def job(providers: list[str], statistic: str = "mean", **kw: object) -> dict:
    return job_payload(statistic, providers, COMMITTEE, "ab" * 32, **kw)  # type: ignore[arg-type]


# -- signatures and counters -------------------------------------------------------------
def test_unsigned_wrongly_signed_and_replayed_rejected(ledger: LocalLedger) -> None:
    c = ledger.client()
    tx = c.sign(ALICE, "darc.create", policy_payload(ALICE, PA, [BOB]))
    unsigned = replace(tx, signatures=())
    with pytest.raises(LedgerError, match=r"signers but 0 signatures"):
        c.submit(unsigned)
    forged = make_tx(ledger.genesis.chain_id, tx.kind, tx.payload, tx.counter, EVE)
    forged = replace(forged, signers=tx.signers)  # claims to be Alice, signed by Eve
    with pytest.raises(LedgerError, match=r"signature of .* is invalid"):
        c.submit(forged)
    altered = replace(tx, payload={**tx.payload, "id": "mallory"})
    with pytest.raises(LedgerError, match=r"is invalid"):
        c.submit(altered)
    root = state_root(ledger)
    assert ledger.best_node().height == 0 and root == state_root(ledger)
    c.submit_and_wait(tx)
    root = state_root(ledger)
    with pytest.raises(LedgerError, match=r"replayed or stale"):
        c.submit(tx)
    # even bypassing the client's dry run, nodes refuse the replay
    c.submit_many([tx])
    ledger.run_for(0.2)
    assert state_root(ledger) == root and ledger.best_node().height == 1
    other_chain = make_tx("00" * 32, tx.kind, tx.payload, 2, ALICE)
    with pytest.raises(LedgerError, match=r"another ledger"):
        c.submit(other_chain)


def test_counter_gap_and_unknown_kind(ledger: LocalLedger) -> None:
    """Robustness: a signed tx that is never submitted (a relay withholding it) does not block
    its signer's later ones; the counters skipped can never be used afterwards."""
    c = ledger.client()
    chain = ledger.genesis.chain_id
    withheld = make_tx(chain, "coin.transfer", {"to": key(ALICE), "amount": 1}, 4, BOB)
    later = make_tx(chain, "coin.transfer", {"to": key(ALICE), "amount": 1}, 5, BOB)
    c.submit_and_wait(later, proof=False)
    with pytest.raises(LedgerError, match=r"stale"):
        c.submit(withheld)
    with pytest.raises(LedgerError, match=r"unknown transaction kind 'nope'"):
        c.execute(BOB, "nope", {})


# -- DARC rules -------------------------------------------------------------------------
def test_rule_expressions() -> None:
    a, b, cc = key(ALICE), key(BOB), key(CAROL)
    e = f"threshold<2/3, ed25519:{a}, ed25519:{b}, ed25519:{cc}>"
    assert evaluate(e, {a, b}) and evaluate(e, {b, cc}) and not evaluate(e, {a})
    e2 = f"ed25519:{a} & (ed25519:{b} | ed25519:{cc})"
    assert evaluate(e2, {a, cc}) and not evaluate(e2, {a}) and not evaluate(e2, {b, cc})
    assert evaluate(f"ed25519:{a} | ed25519:{b} & ed25519:{cc}", {a})  # & binds tighter
    for bad in [
        "",
        "ed25519:zz",
        f"ed25519:{a} &",
        f"threshold<3/2, ed25519:{a}>",
        f"threshold<1/2, ed25519:{a}>",
        f"(ed25519:{a}",
        "darc:",
    ]:
        with pytest.raises(LedgerError):
            parse_expr(bad)


def test_darc_evolve_needs_previous_evolve_rule(ledger: LocalLedger) -> None:
    c = ledger.client()
    owners = f"threshold<2/3, ed25519:{key(ALICE)}, ed25519:{key(CAROL)}, ed25519:{key(DAVE)}>"
    p0 = {"id": "shared", "rules": {"_evolve": owners, "_sign": rule(ALICE)}, "terms": None}
    with pytest.raises(LedgerError, match=r"satisfy its own '_evolve'"):
        c.execute(ALICE, "darc.create", p0)
    c.execute(ALICE, "darc.create", p0, cosigners=[CAROL])
    p1 = {"id": "shared", "version": 1, "rules": {"_evolve": rule(EVE)}, "terms": None}
    root = state_root(ledger)
    with pytest.raises(LedgerError, match=r"rule '_evolve' .* not satisfied"):
        c.execute(ALICE, "darc.evolve", p1)
    with pytest.raises(LedgerError, match=r"not satisfied"):
        c.execute(EVE, "darc.evolve", p1)  # the new rule does not authorise itself
    assert state_root(ledger) == root
    with pytest.raises(LedgerError, match=r"new version must be 1"):
        c.execute(ALICE, "darc.evolve", {**p1, "version": 3}, cosigners=[DAVE])
    c.execute(DAVE, "darc.evolve", p1, cosigners=[CAROL])
    d = c.get("darc/shared")
    assert d["version"] == 1 and d["rules"]["_evolve"] == rule(EVE)
    with pytest.raises(LedgerError, match=r"already exists"):
        c.execute(EVE, "darc.create", {"id": "shared", "rules": {"_evolve": rule(EVE)}})
    # delegation: darc:<id> uses that policy's _sign rule (gone in v1)
    view = StateView(ledger.best_node().state)
    assert not evaluate("darc:shared", {key(ALICE)}, view)


# -- jobs, policies at commit time ------------------------------------------------------------
def test_job_checks_policies_at_commit_time_and_revocation(ledger: LocalLedger) -> None:
    c = ledger.client()
    c.execute(ALICE, "darc.create", policy_payload(ALICE, PA, [BOB], statistics=["mean"]))
    c.execute(DAVE, "darc.create", policy_payload(DAVE, PD, [BOB, CAROL]))
    r = c.execute(BOB, "job.create", job([PA, PD, "nobody"]))
    j = c.get(f"job/{r.tx_id}")
    assert j["providers"] == [PA, PD] and j["status"] == "committed"
    assert "no policy" in j["excluded"]["nobody"]
    r2 = c.execute(CAROL, "job.create", job([PA, PD]))
    j2 = c.get(f"job/{r2.tx_id}")
    assert j2["providers"] == [PD] and "does not allow this consumer" in j2["excluded"][PA]
    r3 = c.execute(BOB, "job.create", job([PA, PD], statistic="histogram"))
    assert "statistic 'histogram'" in c.get(f"job/{r3.tx_id}")["excluded"][PA]
    # revocation: a new version without Bob
    revoked = policy_payload(ALICE, PA, [CAROL])
    c.execute(ALICE, "darc.evolve", {**revoked, "version": 1})
    r4 = c.execute(BOB, "job.create", job([PA, PD]))
    j4 = c.get(f"job/{r4.tx_id}")
    assert j4["providers"] == [PD] and "v1 does not allow" in j4["excluded"][PA]
    # refusing instead of excluding; state unchanged on refusal
    root = state_root(ledger)
    with pytest.raises(LedgerError, match=r"providers excluded"):
        c.execute(BOB, "job.create", job([PA, PD], on_excluded="refuse"))
    assert state_root(ledger) == root
    # the earlier accesses are still listed, with proofs; the revoked job is not
    acc = c.accesses(PA)
    assert {p.value["job"] for p in acc} == {r.tx_id}
    for p in acc:
        p.verify(ledger.genesis)


def test_min_providers_refusal_is_recorded(ledger: LocalLedger) -> None:
    c = ledger.client()
    c.execute(ALICE, "darc.create", policy_payload(ALICE, PA, [BOB], max_jobs=1))
    c.execute(EVE, "darc.create", policy_payload(EVE, PE, [BOB], min_providers=3))
    with pytest.raises(LedgerError, match=r"at least 3 required"):
        c.execute(BOB, "job.create", job([PA, PE]))
    # a job refused inside a block is recorded there with its reason
    tx = c.sign(BOB, "job.create", job([PA, PE]))
    c.submit(tx, check=False)
    got = c.wait([tx.id])[0]
    assert not got.result.ok and "at least 3 required" in got.result.reason
    got.proof.verify(ledger.genesis)  # type: ignore[union-attr]
    assert c.get(f"job/{tx.id}") is None and c.get(f"usage/{PA}") is None
    r = c.execute(BOB, "job.create", job([PA]))
    assert c.get(f"usage/{PA}") == 1 and c.get(f"job/{r.tx_id}")["providers"] == [PA]
    with pytest.raises(LedgerError, match=r"allows 1 jobs, already used 1"):
        c.execute(BOB, "job.create", job([PA]))


def test_expiry_excludes_provider() -> None:
    L = make_ledger(4, balances={key(BOB): 10})
    c = L.client()
    c.execute(DAVE, "darc.create", policy_payload(DAVE, PD, [BOB], expires_height=1))
    c.execute(ALICE, "darc.create", policy_payload(ALICE, PA, [BOB]))
    r = c.execute(BOB, "job.create", job([PD, PA]))
    j = c.get(f"job/{r.tx_id}")
    assert j["providers"] == [PA] and "expired at height 1" in j["excluded"][PD]
    L.close()


# -- escrow, payments, refunds ------------------------------------------------------------
def _three_priced(L: LocalLedger) -> None:
    c = L.client()
    for owner, pid, price in ((ALICE, PA, 10), (DAVE, PD, 20), (EVE, PE, 30)):
        c.execute(owner, "darc.create", policy_payload(owner, pid, [BOB, DAVE], price=price))


def _receipt(
    c, job_id: str, status: str, accepted: list[str], rejected: list[str], signers=AGGS[:3]
) -> dict:
    rec = {
        "status": status,
        "accepted": accepted,
        "rejected": rejected,
        "result_hash": "cd" * 32,
        "faulty": [3],
    }
    sigs = dict(sign_receipt(a, c.chain, job_id, rec) for a in signers)
    return {"job": job_id, "receipt": rec, "signatures": sigs}


def test_escrow_payment_and_refund_arithmetic(ledger: LocalLedger) -> None:
    c = ledger.client()
    _three_priced(ledger)
    supply = sum(c.balance(k) for k in (BOB, ALICE, DAVE, EVE))
    r = c.execute(BOB, "job.create", job([PA, PD, PE]))
    assert c.balance(BOB) == 1000 - 60
    assert c.get(f"job/{r.tx_id}")["escrow_total"] == 60
    c.execute(AGGS[3], "job.receipt", _receipt(c, r.tx_id, "done", [PA, PE], [PD]))
    assert (c.balance(ALICE), c.balance(DAVE), c.balance(EVE)) == (10, 0, 30)
    assert c.balance(BOB) == 1000 - 40
    assert sum(c.balance(k) for k in (BOB, ALICE, DAVE, EVE)) == supply
    assert c.get(f"job/{r.tx_id}")["status"] == "done"
    with pytest.raises(LedgerError, match=r"already has a receipt"):
        c.execute(AGGS[0], "job.receipt", _receipt(c, r.tx_id, "done", [PD], []))
    # a failed job refunds everything
    r2 = c.execute(BOB, "job.create", job([PA, PD, PE]))
    assert c.balance(BOB) == 960 - 60
    c.execute(AGGS[0], "job.receipt", _receipt(c, r2.tx_id, "failed", [], []))
    assert c.balance(BOB) == 960 and c.balance(ALICE) == 10
    assert sum(c.balance(k) for k in (BOB, ALICE, DAVE, EVE)) == supply


def test_insufficient_balance_refused(ledger: LocalLedger) -> None:
    c = ledger.client()
    _three_priced(ledger)
    root = state_root(ledger)
    with pytest.raises(LedgerError, match=r"insufficient balance: consumer .* has 0, .* sum to 60"):
        c.execute(DAVE, "job.create", job([PA, PD, PE]))
    c.execute(ALICE, "darc.evolve", {**policy_payload(ALICE, PA, [CAROL], price=10), "version": 1})
    root = state_root(ledger)
    with pytest.raises(LedgerError, match=r"has 5, .* sum to 10"):
        c.execute(CAROL, "job.create", job([PA]))
    assert state_root(ledger) == root and c.balance(CAROL) == 5
    with pytest.raises(LedgerError, match=r"insufficient balance"):
        c.execute(CAROL, "coin.transfer", {"to": key(ALICE), "amount": 6})
    c.execute(CAROL, "coin.transfer", {"to": key(ALICE), "amount": 5})
    assert c.balance(CAROL) == 0 and c.balance(ALICE) == 5


def test_receipt_signatures(ledger: LocalLedger) -> None:
    c = ledger.client()
    _three_priced(ledger)
    r = c.execute(BOB, "job.create", job([PA]))
    with pytest.raises(LedgerError, match=r"has 2 valid signatures .* quorum is 3"):
        c.execute(AGGS[0], "job.receipt", _receipt(c, r.tx_id, "done", [PA], [], signers=AGGS[:2]))
    with pytest.raises(LedgerError, match=r"not an aggregator"):
        c.execute(
            AGGS[0],
            "job.receipt",
            _receipt(c, r.tx_id, "done", [PA], [], signers=[AGGS[0], EVE]),
        )
    bad = _receipt(c, r.tx_id, "done", [PA], [])
    bad["receipt"]["accepted"] = []  # signatures no longer match the content
    with pytest.raises(LedgerError, match=r"invalid"):
        c.execute(AGGS[0], "job.receipt", bad)
    with pytest.raises(LedgerError, match=r"subsets of the job's providers"):
        c.execute(AGGS[0], "job.receipt", _receipt(c, r.tx_id, "done", [PD], []))
    with pytest.raises(LedgerError, match=r"unknown job"):
        c.execute(AGGS[0], "job.receipt", _receipt(c, "ff" * 32, "done", [], []))
    assert c.balance(ALICE) == 0 and c.get(f"job/{r.tx_id}")["status"] == "committed"


# -- registry ----------------------------------------------------------------------------------
def test_registered_contract_reads_other_entries() -> None:
    reg = DEFAULT_REGISTRY.copy()

    def note(view: StateView, tx: Tx, env: TxEnv) -> dict:
        check_rule(view, tx.payload["policy"], "use", env.signers)
        return {f"note/{env.tx_id}": {"policy": tx.payload["policy"], "height": env.height}}

    register_contract("test.note", note, registry=reg)
    with pytest.raises(ConfigError, match=r"already registered"):
        reg.register("test.note", lambda v, t, e: {})
    with pytest.raises(ConfigError, match=r"already registered"):
        register_contract("darc.create", lambda v, t, e: {})
    L = LocalLedger(4, registry=reg, config=FAST)
    c = L.client()
    with pytest.raises(LedgerError, match=r"policy '.*' does not exist"):
        c.execute(BOB, "test.note", {"policy": PA})
    c.execute(ALICE, "darc.create", policy_payload(ALICE, PA, [BOB]))
    r = c.execute(BOB, "test.note", {"policy": PA})
    assert c.get(f"note/{r.tx_id}") == {"policy": PA, "height": r.height}
    with pytest.raises(LedgerError, match=r"not satisfied"):
        c.execute(CAROL, "test.note", {"policy": PA})
    assert L.verify(replay=True) == r.height
    L.close()


def test_contract_cannot_write_counters() -> None:
    reg = ContractRegistry()
    reg.register("evil", lambda view, tx, env: {f"ctr/{tx.sender}": 0})
    L = LocalLedger(4, registry=reg, config=FAST)
    with pytest.raises(LedgerError, match=r"may not write entry"):
        L.client().execute(BOB, "evil", {})
    L.close()


def test_a_raising_contract_is_a_recorded_rejection_and_writes_nothing() -> None:
    """Robustness: whatever a contract raises on a payload (a typed error that is not a
    LedgerError, a RecursionError, a non-canonical value among its writes) is recorded as
    the tx's rejection on every node, the counter is consumed, no partial write survives,
    and the ledger goes on committing."""
    from kaires_fl.errors import InvalidProof

    def proof_fails(view, tx, env):
        raise InvalidProof("forged")

    def recurse(view, tx, env):
        return recurse(view, tx, env)

    reg = DEFAULT_REGISTRY.copy()
    reg.register("t.proof", proof_fails)
    reg.register("t.recurse", recurse)
    reg.register("t.half", lambda view, tx, env: {"a/1": 1, "a/2": float("nan")})
    L = LocalLedger(4, registry=reg, config=FAST)
    c = L.client()
    txs = [c.sign(BOB, kind, {}) for kind in ("t.proof", "t.recurse", "t.half")]
    done = c.wait(c.submit_many(txs), proof=False)
    reasons = [d.result.reason for d in done]
    assert not any(d.result.ok for d in done)
    assert "InvalidProof: forged" in reasons[0] and "RecursionError" in reasons[1]
    assert "EncodingError" in reasons[2] and c.get("a/1") is None
    assert c.get(f"ctr/{key(BOB)}") == 3  # every refused tx consumed its counter
    c.execute(ALICE, "darc.create", {"id": "after", "rules": {"_evolve": rule(ALICE)}})
    assert L.verify(replay=True) >= 1
    L.close()
