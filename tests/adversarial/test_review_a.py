"""Issue 9, adversarial review A: secret management and the ledger contracts, one attacker at
a time with only its role's keys and messages, against the code after issue 9's first pass.
Each attack test fails on the code it was written against and passes with its fix."""

from __future__ import annotations

import contextlib
import copy
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "secret_management"))

from trustee_world import ident, make_world

from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.crypto.sign import H
from kaires_fl.errors import KairesError, LedgerError
from kaires_fl.ledger import data_terms, job_payload
from kaires_fl.ledger.coin import coin_transfer
from kaires_fl.ledger.committees import committee_id, register_payload
from kaires_fl.ledger.contracts import TxEnv
from kaires_fl.ledger.darc import bound_policy_id, darc_key
from kaires_fl.ledger.state import State, StateView
from kaires_fl.ledger.tx import make_tx
from kaires_fl.secret_management import INPUTS_KIND, READ_KIND, WRITE_KIND, inputs_key
from kaires_fl.secret_management.contracts import (
    inputs_close,
    lts_create,
    lts_reshare,
    read_create,
    write_create,
)
from kaires_fl.secret_management.release import read_payload
from kaires_fl.secret_management.write import aggregator_slot, make_write

ALL = [aggregator_slot(i) for i in range(4)]


def _second_committee(w, tag: str) -> tuple[list, list, str]:
    """Register a second committee of four fresh aggregators (t = 1); returns its members."""
    aggs = [ident("agg2", tag, str(i)) for i in range(4)]
    boxes = [
        EnvelopeKeyPair.from_seed(H(b"agg2-x25519", tag.encode(), bytes([i]))) for i in range(4)
    ]
    members = list(zip(aggs, boxes, strict=True))
    w.client.execute(
        aggs[0], "committee.register", register_payload(w.client.chain, members, 1), aggs[1:]
    )
    cid = committee_id([a.public.hex() for a in aggs], [b.public.hex() for b in boxes], 1)
    return aggs, boxes, cid


def _accept_committees(w, who: str, committees: list[str], **terms: Any) -> None:
    """Provider ``who`` evolves its policy to accept ``committees`` (its own key signs)."""
    prov = w.providers[who]
    d = w.client.get(darc_key(w.pid(who)))
    w.client.execute(
        prov,
        "darc.evolve",
        {
            "id": w.pid(who),
            "version": d["version"] + 1,
            "rules": d["rules"],
            "terms": {**d["terms"], **terms, "committees": committees},
        },
    )


def _job(w, providers: list[str], committee: str, consumer=None, min_providers: int = 1) -> str:
    payload = job_payload(
        "count",
        [w.pid(p) if p in w.providers else p for p in providers],
        committee,
        w.consumer_key.public.hex(),
        min_providers=min_providers,
    )
    return w.client.execute(consumer or w.consumer, "job.create", payload).tx_id


def _manifest(wid: str, job: str) -> str:
    return H(b"manifest", wid.encode(), job.encode()).hex()


# -- offline writes: one job, one committee ----------------------------------------------------
def test_an_offline_write_cannot_be_reused_by_a_second_job_with_another_committee():
    """Privacy: a key a provider wrote once (an offline write, usable by "any later job") is
    released to aggregator i of ONE job only. Before, the consumer could close a second
    job's inputs, under another committee the policy also accepts, with the same write: that
    committee's aggregator i then obtained the key sealing the provider's share i of the
    first job, so t faulty aggregators in each committee together held 2t > t shares of
    the provider's data. Now the inputs of the second job are refused and no read of the
    write in it is accepted."""
    w = make_world(seed=71)
    lts = w.committee.lts
    aggs2, boxes2, cid2 = _second_committee(w, "offline")
    _accept_committees(w, "alice", [w.committee_id, cid2])
    # alice writes her keys once (offline) and submits them to the first job
    d = w.client.get(darc_key(w.pid("alice")))
    entry, keys = make_write(lts.X, lts.id, w.pid("alice"), d["version"], "", ALL)
    wid = w.client.execute(w.providers["alice"], WRITE_KIND, entry.to_payload()).tx_id
    job1 = _job(w, ["alice"], w.committee_id)
    w.client.execute(
        w.consumer, INPUTS_KIND, {"job": job1, "manifests": [_manifest(wid, job1)], "writes": [wid]}
    )
    assert w.client.get(inputs_key(job1))["writes"] == [wid]
    # the consumer reuses that write in a second job under the other committee
    job2 = _job(w, ["alice"], cid2)
    with pytest.raises(LedgerError, match="already used by job"):
        w.client.execute(
            w.consumer,
            INPUTS_KIND,
            {"job": job2, "manifests": [_manifest(wid, job2)], "writes": [wid]},
        )
    assert w.client.get(inputs_key(job2)) is None
    # so aggregator 0 of the second committee cannot read alice's first-job key
    payload = read_payload(lts.id, job2, "aggregator:0", boxes2[0], [wid])
    with pytest.raises(LedgerError, match=r"not closed|not among the closed inputs"):
        w.client.execute(aggs2[0], READ_KIND, payload)
    # the first job's own aggregator 0 still reads it
    res = w.committee.release(w.client, w.aggregators[0], w.agg_keys[0], job1, ALL[0], [wid])
    assert res.keys[wid] == keys[ALL[0]]


def test_a_write_under_another_lts_cannot_make_every_aggregators_read_fail():
    """Robustness against a provider: one provider wrote its keys under an LTS of its own
    making (anyone can register one without a trustee registry, a single trustee can with
    one), the consumer closed the inputs with it among the honest writes, and the ledger
    then refused every aggregator's batched read ("write is under another LTS"): the whole
    job failed. The inputs now hold writes under one LTS only (the job's, when it names
    one in ``params["lts"]``, which a job-bound write must then use)."""
    from kaires_fl.crypto.group import Point, Scalar
    from kaires_fl.secret_management.contracts import LTS_KIND

    w = make_world(seed=78)
    lts = w.committee.lts
    mallory = w.providers["bob"]
    X_own = Point.base() * Scalar.random_nonzero()
    own = {
        "n": 1,
        "t": 0,
        "X": X_own.to_bytes().hex(),
        "shares": [X_own.to_bytes().hex()],
        "trustees": [mallory.public.hex()],
        "transcript": "00" * 32,
    }
    own_id = w.client.execute(mallory, LTS_KIND, own).tx_id
    job = _job(w, ["alice", "bob"], w.committee_id)
    wa, _ = w.write("alice", job)
    d = w.client.get(darc_key(w.pid("bob")))
    entry, _ = make_write(X_own, own_id, w.pid("bob"), d["version"], job, ALL)
    wb = w.client.execute(mallory, WRITE_KIND, entry.to_payload()).tx_id
    both = {"job": job, "manifests": [_manifest(x, job) for x in (wa, wb)], "writes": [wa, wb]}
    with pytest.raises(LedgerError, match="under 2 LTSs"):
        w.client.execute(w.consumer, INPUTS_KIND, both)
    w.client.execute(
        w.consumer, INPUTS_KIND, {"job": job, "manifests": [_manifest(wa, job)], "writes": [wa]}
    )
    res = w.committee.release(w.client, w.aggregators[2], w.agg_keys[2], job, ALL[2], [wa])
    assert set(res.keys) == {wa}
    # a job naming its LTS refuses a job-bound write under another one at once
    payload = job_payload(
        "count",
        [w.pid("alice"), w.pid("bob")],
        w.committee_id,
        w.consumer_key.public.hex(),
        params={"lts": lts.id},
        min_providers=1,
    )
    job2 = w.client.execute(w.consumer, "job.create", payload).tx_id
    entry2, _ = make_write(X_own, own_id, w.pid("bob"), d["version"], job2, ALL)
    with pytest.raises(LedgerError, match="names LTS"):
        w.client.execute(mallory, WRITE_KIND, entry2.to_payload())


# -- min_providers counts owners, not policies --------------------------------------------------
def test_min_providers_counts_distinct_owners_not_policies():
    """Privacy (access control): a provider's ``min_providers`` = 3 cannot be met by one
    other (admitted) party creating several data policies under its one key: job.create
    counts distinct policy owners. Before, a consumer and one colluding provider with two
    policies ran a job over the victim and the colluder alone."""
    w = make_world(seed=73)
    _accept_committees(w, "alice", [w.committee_id], min_providers=3)
    mallory = w.providers["bob"]  # colludes with the consumer
    extra = bound_policy_id("second", mallory.public.hex())
    w.client.execute(
        mallory,
        "darc.create",
        {
            "id": extra,
            "rules": {
                "_evolve": f"ed25519:{mallory.public.hex()}",
                "use": f"ed25519:{w.consumer.public.hex()}",
            },
            "terms": data_terms(mallory.public.hex(), min_providers=1, committees=[w.committee_id]),
        },
    )
    with pytest.raises(LedgerError, match="distinct provider"):
        _job(w, ["alice", "bob", extra], w.committee_id)
    # a third real owner satisfies alice's minimum
    carol = ident("provider", "carol")
    w.providers["carol"] = carol
    w.create_policy("carol", [w.consumer])
    _job(w, ["alice", "bob", "carol"], w.committee_id)


def test_the_consumers_own_policy_does_not_count_towards_min_providers():
    """Privacy (access control): a consumer that is also a provider names its own policy
    (zero rows, or rows it knows) next to its victim's, whose policy wants at least two
    providers: the aggregate is then the victim's data. Before, this passed with no
    colluder at all; job.create now leaves the job's signers out of the owner count."""
    w = make_world(seed=77)
    _accept_committees(w, "alice", [w.committee_id], min_providers=2)
    own = bound_policy_id("own", w.consumer.public.hex())
    w.client.execute(
        w.consumer,
        "darc.create",
        {
            "id": own,
            "rules": {
                "_evolve": f"ed25519:{w.consumer.public.hex()}",
                "use": f"ed25519:{w.consumer.public.hex()}",
            },
            "terms": data_terms(
                w.consumer.public.hex(), min_providers=1, committees=[w.committee_id]
            ),
        },
    )
    with pytest.raises(LedgerError, match="other than the job's signers"):
        _job(w, ["alice", own], w.committee_id)
    _job(w, ["alice", "bob", own], w.committee_id)  # bob is a second real provider


# -- typed errors of the calypso contracts (hypothesis) -----------------------------------------
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text(max_size=80)
    | st.sampled_from(["aggregator:0", "consumer", "ab" * 32, "00" * 32]),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=14,
)


def _base():
    w = make_world(seed=74)
    lts = w.committee.lts
    job = _job(w, ["alice", "bob"], w.committee_id)
    wa, _ = w.write("alice", job)
    wb, _ = w.write("bob", job)
    d = w.client.get(darc_key(w.pid("alice")))
    entry, _ = make_write(lts.X, lts.id, w.pid("alice"), d["version"], job, ALL)
    inputs = {"job": job, "manifests": [_manifest(x, job) for x in (wa, wb)], "writes": [wa, wb]}
    node = w.ledger.best_node()
    before = State(dict(node.state.entries), node.state.height)  # inputs still open
    w.client.execute(w.consumer, INPUTS_KIND, inputs)
    after = State(dict(node.state.entries), node.state.height)
    lts_entry = w.client.get(f"calypso/lts/{lts.id}")
    valid = {
        "calypso.write": (before, entry.to_payload(), w.providers["alice"]),
        "calypso.inputs": (before, inputs, w.consumer),
        "calypso.read": (
            after,
            read_payload(lts.id, job, ALL[0], w.agg_keys[0], [wa, wb]),
            w.aggregators[0],
        ),
        "calypso.lts": (
            before,
            {k: lts_entry[k] for k in ("n", "t", "X", "shares", "trustees", "transcript")},
            w.aggregators[0],
        ),
        "calypso.lts.reshare": (
            before,
            {
                "id": lts.id,
                **{k: lts_entry[k] for k in ("n", "t", "shares", "trustees", "transcript")},
            },
            w.aggregators[0],
        ),
        "coin.transfer": (before, {"to": "ab" * 32, "amount": 1}, w.consumer),
    }
    chain = w.client.chain
    w.ledger.close()
    return valid, chain, tuple(lts_entry["trustees"])


VALID, CHAIN, TRUSTEES = _base()
CONTRACTS = {
    "calypso.write": write_create,
    "calypso.inputs": inputs_close,
    "calypso.read": read_create,
    "calypso.lts": lts_create,
    "calypso.lts.reshare": lts_reshare,
    "coin.transfer": coin_transfer,
}


def _run(kind: str, payload: Any) -> None:
    state, _valid, signer = VALID[kind]
    view = StateView(state)
    tx = make_tx(CHAIN, kind, payload, 1, signer)
    env = TxEnv(CHAIN, state.height + 1, 10**12, tx.id, (signer.public.hex(), *TRUSTEES))
    with contextlib.suppress(KairesError):
        CONTRACTS[kind](view, tx, env)
    assert view.writes == {}


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(CONTRACTS)), payload=JSON)
def test_calypso_contracts_on_arbitrary_payloads_raise_typed_errors(kind: str, payload: Any):
    """Robustness: any JSON payload of a calypso.* (or coin.transfer) transaction gives
    writes or a KairesError saying what is wrong, never another exception."""
    _run(kind, payload)


def _mutations() -> st.SearchStrategy[tuple[str, Any]]:
    def mutate(kind: str) -> st.SearchStrategy[tuple[str, Any]]:
        base = VALID[kind][1]

        def paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
            out = [prefix]
            if isinstance(obj, dict):
                for k, v in obj.items():
                    out += paths(v, (*prefix, k))
            elif isinstance(obj, list):
                for i, v in enumerate(obj):
                    out += paths(v, (*prefix, i))
            return out

        def apply(path: tuple, value: Any, delete: bool) -> tuple[str, Any]:
            p = copy.deepcopy(base)
            if not path:
                return kind, value
            parent = p
            for k in path[:-1]:
                parent = parent[k]
            if delete and isinstance(parent, dict):
                parent.pop(path[-1])
            elif delete and isinstance(parent, list):
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
            return kind, p

        return st.builds(apply, st.sampled_from(paths(base)), JSON, st.booleans())

    return st.sampled_from(sorted(VALID)).flatmap(mutate)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_mutations())
def test_calypso_contracts_on_mutated_payloads_raise_typed_errors(case: tuple[str, Any]):
    """Robustness: a valid calypso.* payload with one field replaced or removed (any JSON
    value at any depth) gives writes or a KairesError, never another exception."""
    _run(*case)


def test_the_fuzzed_payloads_start_valid():
    """The property tests mutate payloads the contracts accept (write, inputs, read)."""
    for kind in ("calypso.write", "calypso.inputs", "calypso.read"):
        state, payload, signer = VALID[kind]
        tx = make_tx(CHAIN, kind, payload, 1, signer)
        env = TxEnv(CHAIN, state.height + 1, 10**12, tx.id, (signer.public.hex(),))
        assert CONTRACTS[kind](StateView(state), tx, env), kind


# -- rule evaluation cannot stall the ledger ----------------------------------------------------
class _CountingView(StateView):
    def __init__(self, base: State) -> None:
        super().__init__(base)
        self.reads = 0

    def get(self, key: str) -> Any:
        self.reads += 1
        return super().get(key)


def _delegation_chain(fan: int, depth: int, attacker: str) -> State:
    """Policies p0 … p{depth-1}: each one's ``_sign`` names the next ``fan`` times (the
    last names a key nobody signs with), all created by ``attacker`` alone."""
    entries = {}
    for lvl in range(depth):
        sign = " | ".join([f"darc:p{lvl + 1}"] * fan) if lvl < depth - 1 else f"ed25519:{'ef' * 32}"
        entries[darc_key(f"p{lvl}")] = {
            "id": f"p{lvl}",
            "version": 0,
            "rules": {"_evolve": f"ed25519:{attacker}", "_sign": sign},
            "terms": None,
            "height": 1,
            "time_ms": 0,
            "tx": "00" * 32,
        }
    return State.from_values(entries)


def test_a_chain_of_delegations_cannot_stall_block_execution():
    """Robustness (ledger liveness): anyone may create non-data policies, and a rule's
    ``darc:`` references were evaluated afresh at every occurrence, so a chain of policies
    each naming the next thousands of times made one darc.create cost (refs)^depth on every
    node (10^12 for three levels of maximal rules): the block never finished. Each policy
    is now resolved once per depth and an evaluation visits a bounded number of nodes."""
    attacker = ident("outsider", "rules")
    key_hex = attacker.public.hex()
    state = _delegation_chain(fan=12, depth=5, attacker=key_hex)
    rules = {"_evolve": " | ".join(["darc:p0"] * 12) + f" | ed25519:{key_hex}"}
    payload = {"id": "stall", "rules": rules}
    tx = make_tx(CHAIN, "darc.create", payload, 1, attacker)
    env = TxEnv(CHAIN, 2, 10**12, tx.id, (key_hex,))
    view = _CountingView(state)
    from kaires_fl.ledger.darc import darc_create

    assert darc_key("stall") in darc_create(view, tx, env)
    assert view.reads <= 16, view.reads  # was 12^5 ≈ 2.5e5 policy reads


def test_rule_evaluation_beyond_its_budget_is_a_typed_refusal():
    """Robustness: a rule whose evaluation would visit more nodes than the budget is
    refused with a LedgerError (the contract's recorded reason), deterministically on
    every node; a job naming many such policies shares one budget."""
    from kaires_fl.ledger.darc import evaluate

    small = " | ".join(f"darc:missing{i}" for i in range(100))
    assert evaluate(small, ("ab" * 32,), StateView(State())) is False
    with pytest.raises(LedgerError, match="budget"):
        evaluate(small, ("ab" * 32,), StateView(State()), budget=[50])


def test_a_rule_cannot_delegate_to_a_policy_id_anyone_could_still_create():
    """Access control: a provider whose 'use' rule delegates to a group not created yet
    (``darc:partners``) handed its data to whoever created that id first, with a '_sign'
    rule of their own. A rule may now only delegate to policies on the ledger; once the
    group exists, nobody else can take its id."""
    w = make_world(seed=75)
    alice = w.providers["alice"]
    squatter = ident("outsider", "squatter")
    pid = bound_policy_id("grouped", alice.public.hex())
    rules = {"_evolve": f"ed25519:{alice.public.hex()}", "use": "darc:partners"}
    terms = data_terms(alice.public.hex(), min_providers=1, committees=[w.committee_id])
    with pytest.raises(LedgerError, match="not on the ledger"):
        w.client.execute(alice, "darc.create", {"id": pid, "rules": rules, "terms": terms})
    # the group first, governed by alice, naming the consumer; then the delegating policy
    group = {
        "_evolve": f"ed25519:{alice.public.hex()}",
        "_sign": f"ed25519:{w.consumer.public.hex()}",
    }
    w.client.execute(alice, "darc.create", {"id": "partners", "rules": group})
    w.client.execute(alice, "darc.create", {"id": pid, "rules": rules, "terms": terms})
    with pytest.raises(LedgerError, match="already exists"):
        w.client.execute(
            squatter,
            "darc.create",
            {"id": "partners", "rules": {"_evolve": f"ed25519:{squatter.public.hex()}"}},
        )
    job = _job(w, [pid], w.committee_id)
    assert w.client.get(f"job/{job}")["providers"] == [pid]


def test_a_removed_consumer_cannot_authorise_jobs_by_co_signing():
    """Access control (allow-list): with the registration allow-list on, a consumer the
    roster removed kept authorising jobs: another admitted consumer, with no grant of its
    own, sent job.create with it as co-signer and the policies' 'use' rules counted the
    co-signer. Only admitted consumers among the signers count now."""
    from kaires_fl.ledger import LedgerConfig, LocalLedger

    alice, granted, other = ident("ra", "alice"), ident("ra", "granted"), ident("ra", "other")
    L = LocalLedger(4, config=LedgerConfig(view_timeout=0.05), registration=True)
    try:
        c = L.client()
        aggs = [ident("ra", "agg", str(i)) for i in range(4)]
        boxes = [EnvelopeKeyPair.from_seed(H(b"ra-box", bytes([i]))) for i in range(4)]
        members = list(zip(aggs, boxes, strict=True))
        c.execute(aggs[0], "committee.register", register_payload(c.chain, members, 1), aggs[1:])
        cid = committee_id([a.public.hex() for a in aggs], [b.public.hex() for b in boxes], 1)
        L.admit("provider", [alice.public.hex()])
        L.admit("consumer", [granted.public.hex(), other.public.hex()])
        pid = bound_policy_id("records", alice.public.hex())
        rules = {
            "_evolve": f"ed25519:{alice.public.hex()}",
            "use": f"ed25519:{granted.public.hex()}",
        }
        terms = data_terms(alice.public.hex(), min_providers=1, committees=[cid])
        c.execute(alice, "darc.create", {"id": pid, "rules": rules, "terms": terms})
        payload = job_payload("count", [pid], cid, "cd" * 32)
        # while admitted, the granted consumer may co-sign (its consent): the job includes alice
        ok = c.execute(other, "job.create", payload, cosigners=[granted]).tx_id
        assert c.get(f"job/{ok}")["providers"] == [pid]
        L.admit("consumer", [granted.public.hex()], admit=False)
        with pytest.raises(LedgerError, match="does not allow this consumer"):
            c.execute(other, "job.create", payload, cosigners=[granted])
    finally:
        L.close()


# -- typed errors of the key decoders a peer reaches (hypothesis) -------------------------------
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=96), aad=st.binary(max_size=8))
def test_key_and_envelope_decoders_raise_typed_errors(data: bytes, aad: bytes):
    """Robustness: an X25519 key, a sealed envelope, a symmetric blob or an LTS entry from a
    peer gives a value or a KairesError (EncodingError / InvalidProof), never another
    exception."""
    from kaires_fl.crypto import elgamal
    from kaires_fl.crypto.envelope import open_, open_sealed
    from kaires_fl.secret_management.release import LtsInfo

    with contextlib.suppress(KairesError):
        elgamal.recipient_point_from_x25519(data)
    with contextlib.suppress(KairesError):
        elgamal.recipient_point_from_x25519(data[:32].ljust(32, b"\xff"), subgroup_check=False)
    with contextlib.suppress(KairesError):
        open_sealed(EnvelopeKeyPair.from_seed(b"\x01" * 32), data, aad)
    with contextlib.suppress(KairesError):
        open_(b"\x02" * 32, data, aad)
    entry = {"id": data.hex(), "t": 1, "X": data[:32].hex(), "shares": [data[32:64].hex()]}
    for e in (entry, {**entry, "shares": data.hex()}, {**entry, "X": None}, {}):
        with contextlib.suppress(KairesError):
            LtsInfo.from_entry(e)


# -- one Byzantine trustee's mutated answer never changes a key, a coin or a disclosure ---------
@pytest.fixture(scope="module")
def answers_world():
    from kaires_fl.ledger.jobs import job_key
    from kaires_fl.secret_management import (
        CoinRequest,
        ReleaseRequest,
        evidence_keys,
        prove_entries,
        read_key,
        write_key,
    )
    from kaires_fl.secret_management.dispute import dispute_request

    w = make_world(seed=76)
    lts = w.committee.lts
    job = _job(w, ["alice", "bob"], w.committee_id)
    wa, ka = w.write("alice", job)
    wb, kb = w.write("bob", job)
    w.close(job, [wa, wb])
    payload = read_payload(lts.id, job, ALL[0], w.agg_keys[0], [wa, wb])
    rid = w.client.execute(w.aggregators[0], READ_KIND, payload).tx_id
    req = ReleaseRequest(rid, prove_entries(w.client, evidence_keys(lts.id, rid, job, [wa, wb])))
    dreq = dispute_request(w.client, w.aggregators[0], lts.id, job, rid, wa, ALL[0])
    creq = CoinRequest(lts.id, job, prove_entries(w.client, [job_key(job), inputs_key(job)]))
    trs = w.committee.trustees
    return {
        "w": w,
        "job": job,
        "rid": rid,
        "read": w.client.get(read_key(rid)),
        "writes": {x: w.client.get(write_key(x)) for x in (wa, wb)},
        "keys": {wa: ka[ALL[0]], wb: kb[ALL[0]]},
        "wa": wa,
        "release": {tr.index: tr.release(req) for tr in trs},
        "dispute": {tr.index: tr.dispute(dreq) for tr in trs},
        "coin": {tr.index: tr.coin(creq) for tr in trs},
        "root": w.client.get(inputs_key(job))["root"],
    }


def _mutated(msg: Any, edits: list[tuple[int, int]], cls: Any) -> Any:
    from kaires_fl import schema
    from kaires_fl.errors import EncodingError

    b = bytearray(schema.encode(msg))
    for pos, val in edits:
        b[pos % len(b)] = val
    try:
        return schema.decode(bytes(b), cls)
    except EncodingError:
        return None  # undecodable: dropped, the trustee is silent


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.sampled_from(["release", "dispute", "coin"]),
    j=st.integers(0, 3),
    edits=st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_one_mutated_trustee_answer_changes_no_key_coin_or_disclosure(
    answers_world, which, j, edits
):
    """Robustness against a Byzantine trustee (t_T = 1): whatever bytes trustee j sends in
    place of its answer, the reader recovers the written keys, the coin and the dispute's
    written key unchanged, or gets a KairesError — never another exception, never a wrong
    value."""
    from kaires_fl.secret_management.coin import CoinShare, combine_coin
    from kaires_fl.secret_management.dispute import DisputeShare, combine_dispute
    from kaires_fl.secret_management.release import (
        LtsInfo,
        ReleaseResponse,
        combine_release,
    )

    aw = answers_world
    w = aw["w"]
    lts: LtsInfo = w.committee.lts
    from kaires_fl.crypto.elgamal import RecipientKey

    if which == "release":
        resp = dict(aw["release"])
        resp[j] = _mutated(resp[j], edits, ReleaseResponse)
        with contextlib.suppress(KairesError):
            res = combine_release(
                resp,
                aw["rid"],
                aw["read"],
                aw["writes"],
                lts,
                RecipientKey.from_x25519(w.agg_keys[0]),
            )
            assert res.keys == aw["keys"]
    elif which == "dispute":
        shares = dict(aw["dispute"])
        shares[j] = _mutated(shares[j], edits, DisputeShare)
        with contextlib.suppress(KairesError):
            _proof, key, _faulty = combine_dispute(
                shares, lts, aw["writes"][aw["wa"]], aw["job"], aw["wa"], ALL[0]
            )
            assert key == aw["keys"][aw["wa"]]
    else:
        coins = dict(aw["coin"])
        good, _ = combine_coin(
            coins, dict(enumerate(lts.public_shares)), lts.t, lts.id, aw["job"], aw["root"]
        )
        coins[j] = _mutated(coins[j], edits, CoinShare)
        with contextlib.suppress(KairesError):
            seed, _ = combine_coin(
                coins, dict(enumerate(lts.public_shares)), lts.t, lts.id, aw["job"], aw["root"]
            )
            assert seed == good
