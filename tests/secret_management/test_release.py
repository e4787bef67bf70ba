"""Key release gated by the ledger: happy path, Byzantine trustees, every refusal."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest
from trustee_world import ident, make_world

from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.crypto.sign import H, Identity
from kaires_fl.errors import AccessDenied, ConfigError, InvalidProof, LedgerError, ProtocolError
from kaires_fl.ledger.jobs import job_key
from kaires_fl.secret_management import (
    READ_KIND,
    ReleaseRequest,
    Trustee,
    TrusteeCommittee,
    close_inputs,
    evidence_keys,
    prove_entries,
    read_key,
    read_payload,
)
from kaires_fl.secret_management.evidence import StateEvidence


@pytest.fixture(scope="module")
def job_world(world):
    job = world.create_job(["alice", "bob"])
    wa, ka = world.write("alice", job)
    wb, kb = world.write("bob", job)
    world.close(job, [wa, wb])
    return world, job, {wa: ka, wb: kb}


def test_happy_path_batched_release_every_slot(job_world):
    w, job, written = job_world
    ids = list(written)
    for i in range(4):
        res = w.committee.release(
            w.client, w.aggregators[i], w.agg_keys[i], job, f"aggregator:{i}", ids
        )
        assert res.faulty == {} and res.refused == {}
        assert res.keys == {wid: written[wid][f"aggregator:{i}"] for wid in ids}
    res = w.committee.release(w.client, w.consumer, w.consumer_key, job, "consumer", ids[:1])
    assert res.keys == {ids[0]: written[ids[0]]["consumer"]}


def test_release_is_recorded_on_the_ledger(job_world):
    w, job, written = job_world
    ids = list(written)
    payload = read_payload(w.committee.lts.id, job, "aggregator:2", w.agg_keys[2], ids)
    read_id = w.client.execute(w.aggregators[2], READ_KIND, payload).tx_id
    entry = w.client.get(read_key(read_id))
    assert entry["recipient"] == w.agg_keys[2].public.hex()
    assert entry["reader"] == w.aggregators[2].public.hex()
    assert w.client.verify_chain() >= 1


@pytest.mark.parametrize(
    "faults",
    [
        {1: "wrong_share"},
        {2: "wrong_proof"},
        {3: "crash"},
        {0: "byzantine"},
    ],
)
def test_t_byzantine_trustees_named_key_recovered(faults):
    w = make_world(faults=faults, seed=1)
    job = w.create_job(["alice"])
    wa, ka = w.write("alice", job)
    w.close(job, [wa])
    res = w.committee.release(w.client, w.aggregators[0], w.agg_keys[0], job, "aggregator:0", [wa])
    assert res.keys[wa] == ka["aggregator:0"]
    assert set(res.faulty) == set(faults)


def test_seven_trustees_two_byzantine():
    faults = {1: "wrong_share", 4: "wrong_proof"}
    w = make_world(n_trustees=7, t=2, faults=faults, seed=2)
    job = w.create_job(["alice", "bob"])
    wa, ka = w.write("alice", job)
    w.close(job, [wa])
    res = w.committee.release(w.client, w.aggregators[3], w.agg_keys[3], job, "aggregator:3", [wa])
    assert res.keys[wa] == ka["aggregator:3"]
    assert set(res.faulty) == {1, 4}


def test_too_many_byzantine_trustees_fail_loudly():
    w = make_world(faults={0: "wrong_share", 1: "crash", 2: "wrong_proof"}, seed=3)
    job = w.create_job(["alice"])
    wa, _ = w.write("alice", job)
    w.close(job, [wa])
    with pytest.raises(ProtocolError, match="t \\+ 1"):
        w.committee.release(w.client, w.aggregators[0], w.agg_keys[0], job, "aggregator:0", [wa])


def test_dkg_faulty_trustees_still_release():
    w = make_world(dkg_faults={2: "bad_share"}, seed=4)
    assert 2 in w.committee.dkg_faulty
    job = w.create_job(["alice"])
    wa, ka = w.write("alice", job)
    w.close(job, [wa])
    res = w.committee.release(w.client, w.aggregators[1], w.agg_keys[1], job, "aggregator:1", [wa])
    assert res.keys[wa] == ka["aggregator:1"]


# --- refusals: every honest trustee refuses, nothing is released -----------------------------


def _ask_all(w, read_id, evidence):
    """Ask each honest trustee directly; returns the errors (and asserts no release)."""
    errors = []
    for tr in w.committee.trustees:
        before = tr.released
        with pytest.raises((AccessDenied, InvalidProof)) as info:
            tr.release(ReleaseRequest(read_id, evidence))
        assert tr.released == before
        errors.append(info.value)
    return errors


def _refused(w):
    """A throwaway client for transactions expected to be refused (a refused dry run
    reserves the signer's counter in the client that signed it)."""
    return w.ledger.client()


def _forced_read(w, signer, payload):
    """A read the ledger refused (its rejection is recorded): trustees must refuse it too."""
    c = _refused(w)
    tx = c.sign(signer, READ_KIND, payload)
    c.submit(tx, check=False)
    (c,) = c.wait([tx.id])
    assert not c.result.ok
    return tx.id, c.result.reason


def test_no_committed_job(world):
    w = world
    wa, _ = w.write("alice", "")
    fake_job = H(b"no such job").hex()
    payload = read_payload(w.committee.lts.id, fake_job, "aggregator:0", w.agg_keys[0], [wa])
    with pytest.raises(LedgerError, match="not committed"):
        _refused(w).execute(w.aggregators[0], READ_KIND, payload)
    read_id, reason = _forced_read(w, w.aggregators[0], payload)
    assert "not committed" in reason
    ev = prove_entries(w.client, evidence_keys(w.committee.lts.id, read_id, fake_job, [wa]))
    errs = _ask_all(w, read_id, ev)
    assert all(isinstance(e, AccessDenied) and "not committed" in str(e) for e in errs)


def test_job_for_another_recipient(job_world):
    w, job, written = job_world
    ids = list(written)
    mallory = EnvelopeKeyPair.from_seed(H(b"mallory"))
    # aggregator 0 asks for its keys to go to another key: the ledger refuses ...
    payload = read_payload(w.committee.lts.id, job, "aggregator:0", mallory, ids)
    with pytest.raises(LedgerError, match="recipient key"):
        _refused(w).execute(w.aggregators[0], READ_KIND, payload)
    read_id, _ = _forced_read(w, w.aggregators[0], payload)
    ev = prove_entries(w.client, evidence_keys(w.committee.lts.id, read_id, job, ids))
    errs = _ask_all(w, read_id, ev)
    assert all("not committed" in str(e) for e in errs)
    # ... and an outsider cannot read slot 0 even with aggregator 0's key named
    payload = read_payload(w.committee.lts.id, job, "aggregator:0", w.agg_keys[0], ids)
    with pytest.raises(LedgerError, match="not signed by that reader"):
        _refused(w).execute(ident("outsider"), READ_KIND, payload)


def test_read_cannot_be_redirected(job_world):
    """A committed read's shares are re-encrypted to the job's key, useless to anyone else."""
    w, job, written = job_world
    ids = list(written)
    payload = read_payload(w.committee.lts.id, job, "aggregator:1", w.agg_keys[1], ids)
    read_id = w.client.execute(w.aggregators[1], READ_KIND, payload).tx_id
    with pytest.raises(ProtocolError, match="not the one the read names"):
        w.committee.fetch(w.client, read_id, w.agg_keys[2])


def test_refused_read_is_not_released_even_with_other_evidence(job_world):
    """Evidence of another, committed read does not make a refused read releasable."""
    w, job, written = job_world
    ids = list(written)
    mallory = EnvelopeKeyPair.from_seed(H(b"mallory2"))
    payload = read_payload(w.committee.lts.id, job, "aggregator:0", mallory, ids)
    read_id, _ = _forced_read(w, w.aggregators[0], payload)
    good = read_payload(w.committee.lts.id, job, "aggregator:0", w.agg_keys[0], ids)
    good_id = w.client.execute(w.aggregators[0], READ_KIND, good).tx_id
    ev_good = prove_entries(w.client, evidence_keys(w.committee.lts.id, good_id, job, ids))
    errs = _ask_all(w, read_id, ev_good)
    assert all(isinstance(e, InvalidProof) and "does not cover" in str(e) for e in errs)
    ev_bad = prove_entries(w.client, evidence_keys(w.committee.lts.id, read_id, job, ids))
    errs = _ask_all(w, read_id, ev_bad)
    assert all(isinstance(e, AccessDenied) and "not committed" in str(e) for e in errs)
    # the committed read is released, to its own recipient only
    assert w.committee.trustees[0].release(ReleaseRequest(good_id, ev_good)) is not None


def test_revoked_policy(world):
    w = world
    w.providers["carol"] = ident("provider", "carol")
    w.create_policy("carol", [w.consumer])
    w.evolve_policy("carol", [])  # revocation
    job = w.create_job(["alice", "carol"])
    assert w.pid("carol") in w.client.get(job_key(job))["excluded"]
    wc, _ = w.write("carol", "")  # an offline write under the revoking version
    wa, _ = w.write("alice", job)
    mans = [H(b"manifest", x.encode()).hex() for x in (wa, wc)]
    with pytest.raises(LedgerError, match="not usable"):
        close_inputs(_refused(w), w.consumer, job, mans, [wa, wc])
    w.close(job, [wa])
    payload = read_payload(w.committee.lts.id, job, "aggregator:0", w.agg_keys[0], [wc])
    with pytest.raises(LedgerError):
        _refused(w).execute(w.aggregators[0], READ_KIND, payload)
    read_id, reason = _forced_read(w, w.aggregators[0], payload)
    assert "not among the closed inputs" in reason
    ev = prove_entries(w.client, evidence_keys(w.committee.lts.id, read_id, job, [wc]))
    errs = _ask_all(w, read_id, ev)
    assert all(isinstance(e, AccessDenied) for e in errs)


def test_job_from_before_revocation_replayed():
    """A job authorised under v1 cannot read what the provider wrote after revoking."""
    w = make_world(seed=5)
    old_job = w.create_job(["alice"])
    w_old, k_old = w.write("alice", "")  # offline write under v1
    w.evolve_policy("alice", [])  # revoke the consumer (v2)
    w.evolve_policy("alice", [w.consumer])  # later re-grant (v3) for new jobs only
    w_new, _ = w.write("alice", "")  # offline write under v3
    # the coordinator tries to slip the new write into the old job's inputs: refused
    mans = [H(b"manifest", x.encode()).hex() for x in (w_old, w_new)]
    with pytest.raises(LedgerError, match="after job"):
        close_inputs(_refused(w), w.consumer, old_job, mans, [w_old, w_new])
    w.close(old_job, [w_old])
    ok = w.committee.release(
        w.client, w.aggregators[0], w.agg_keys[0], old_job, "aggregator:0", [w_old]
    )
    assert ok.keys[w_old] == k_old["aggregator:0"]
    payload = read_payload(w.committee.lts.id, old_job, "aggregator:0", w.agg_keys[0], [w_new])
    with pytest.raises(LedgerError, match="not among the closed inputs"):
        _refused(w).execute(w.aggregators[0], READ_KIND, payload)
    read_id, _ = _forced_read(w, w.aggregators[0], payload)
    ev = prove_entries(w.client, evidence_keys(w.committee.lts.id, read_id, old_job, [w_new]))
    # the trustees refuse the refused read; and even a committed-looking request for the new
    # write with the old job is refused by their own version check
    errs = _ask_all(w, read_id, ev)
    assert all(isinstance(e, AccessDenied) for e in errs)
    # replaying the old job transaction itself is refused by the ledger (signer counter)
    (c,) = w.client.wait([old_job])
    with pytest.raises(LedgerError):
        w.client.submit(c.proof.tx)


def test_forged_evidence(job_world):
    w, job, written = job_world
    ids = list(written)
    payload = read_payload(w.committee.lts.id, job, "aggregator:3", w.agg_keys[3], ids)
    read_id = w.client.execute(w.aggregators[3], READ_KIND, payload).tx_id
    ev = prove_entries(w.client, evidence_keys(w.committee.lts.id, read_id, job, ids))
    # 1. change the proven read entry's recipient
    p0 = ev.proofs[0]
    forged_read = dataclasses.replace(p0, value={**p0.value, "recipient": "00" * 32})
    # 2. drop a certificate vote
    blk = p0.block
    forged_cert = dataclasses.replace(blk.cert, votes=blk.cert.votes[:1])
    forged_block = dataclasses.replace(blk, cert=forged_cert)
    # 3. claim the inputs are absent / another job
    cases = [
        StateEvidence.of((forged_read, *ev.proofs[1:])),
        StateEvidence.of(tuple(dataclasses.replace(p, block=forged_block) for p in ev.proofs)),
        StateEvidence.of(
            (ev.proofs[0], dataclasses.replace(ev.proofs[1], value=None), *ev.proofs[2:])
        ),
        StateEvidence.of(ev.proofs[:1]),
        # 4. an entry whose value bytes were swapped for another entry's
        msgspec.structs.replace(
            ev,
            entries=(
                msgspec.structs.replace(ev.entries[0], value=ev.entries[1].value),
                *ev.entries[1:],
            ),
        ),
    ]
    for case in cases:
        errs = _ask_all(w, read_id, case)
        assert all(isinstance(e, InvalidProof) for e in errs)


def test_evidence_from_another_ledger_is_refused(job_world):
    w, _, _ = job_world
    other = make_world(seed=9)
    ojob = other.create_job(["alice"])
    ow, _ = other.write("alice", ojob)
    other.close(ojob, [ow])
    payload = read_payload(other.committee.lts.id, ojob, "aggregator:0", other.agg_keys[0], [ow])
    rid = other.client.execute(other.aggregators[0], READ_KIND, payload).tx_id
    ev = prove_entries(other.client, evidence_keys(other.committee.lts.id, rid, ojob, [ow]))
    errs = _ask_all(w, rid, ev)
    assert all(isinstance(e, InvalidProof) for e in errs)


def test_trustee_refuses_mismatched_lts(job_world):
    w, _, _ = job_world
    other = TrusteeCommittee.setup(w.client, 4, 1, name="other-trustees")
    t0 = w.committee.trustees[0]
    with pytest.raises(ConfigError, match="public share"):
        Trustee(
            dataclasses.replace(_result_of(t0), public_shares=other.lts.public_shares),
            w.committee.lts,
            w.client.genesis,
        )


def _result_of(tr):
    from kaires_fl.secret_management.dkg import DkgResult

    return DkgResult(
        tr.index, tr.lts.n, tr.lts.t, tr._share, tr.lts.X, tr.lts.public_shares, (), {}, b""
    )


def test_trustee_version_check_on_its_own():
    """check_read (what every trustee runs) refuses a later-version write even if the
    inputs entry listed it."""
    from kaires_fl.secret_management import check_read, write_key

    w = make_world(seed=6)
    job = w.create_job(["alice"])
    w.evolve_policy("alice", [w.consumer])  # v1, same grant
    w_new, _ = w.write("alice", "")
    jobe = w.client.get(job_key(job))
    read = {
        "job": job,
        "slot": "aggregator:0",
        "recipient": w.agg_keys[0].public.hex(),
        "writes": [w_new],
        "lts": w.committee.lts.id,
    }
    inputs = {"writes": [w_new]}
    with pytest.raises(AccessDenied, match="v1, after job"):
        check_read(
            read,
            jobe,
            inputs,
            {w_new: w.client.get(write_key(w_new))},
            w.committee.lts.id,
            [w.aggregators[0].public.hex()],
        )


def test_write_contract_rejects_ciphertext_moved_to_another_policy(world):
    """Bob copies Alice's ciphertexts into a write under his own policy: refused on commit."""
    from kaires_fl.ledger.darc import darc_key
    from kaires_fl.secret_management import WRITE_KIND, make_write

    w = world
    lts = w.committee.lts
    job = w.create_job(["alice", "bob"])
    va = w.client.get(darc_key(w.pid("alice")))["version"]
    entry, _ = make_write(
        lts.X, lts.id, w.pid("alice"), va, job, [f"aggregator:{i}" for i in range(4)]
    )
    moved = {
        **entry.to_payload(),
        "policy": w.pid("bob"),
        "version": w.client.get(darc_key(w.pid("bob")))["version"],
    }
    with pytest.raises(LedgerError, match="write proof of slot 'aggregator:0' fails"):
        _refused(w).execute(w.providers["bob"], WRITE_KIND, moved)
    # and Bob cannot write under Alice's policy either
    with pytest.raises(LedgerError, match="not satisfied"):
        _refused(w).execute(w.providers["bob"], WRITE_KIND, entry.to_payload())
    # a write for a job that does not include the provider is refused
    job2 = w.create_job(["bob"])
    e2, _ = make_write(
        lts.X, lts.id, w.pid("alice"), va, job2, [f"aggregator:{i}" for i in range(4)]
    )
    with pytest.raises(LedgerError, match="does not include provider"):
        _refused(w).execute(w.providers["alice"], WRITE_KIND, e2.to_payload())


def test_trustee_registry_in_genesis_is_enforced():
    from kaires_fl.ledger import LedgerConfig, LocalLedger
    from kaires_fl.secret_management.contracts import TRUSTEE_REGISTRY_KEY

    registered = [
        Identity.from_seed(H(b"kaires-fl/trustee", b"trustee", b"", str(j).encode())).public.hex()
        for j in range(4)
    ]
    ledger = LocalLedger(
        n=4,
        seed=51,
        config=LedgerConfig(view_timeout=0.05),
        state={TRUSTEE_REGISTRY_KEY: registered},
    )
    c = TrusteeCommittee.setup(ledger.client(), 4, 1)  # the registered identities: accepted
    assert c.lts.n == 4
    with pytest.raises(LedgerError, match="not in the trustee registry"):
        TrusteeCommittee.setup(ledger.client(), 4, 1, name="rogue")


def test_read_must_be_sent_by_the_reader(job_world):
    """The read entry records its sender as the reader (what trustees check), so the ledger
    refuses a read in which the job's reader is only a co-signer."""
    w, job, written = job_world
    ids = list(written)
    payload = read_payload(w.committee.lts.id, job, "aggregator:3", w.agg_keys[3], ids)
    with pytest.raises(LedgerError, match="not signed by that reader"):
        _refused(w).execute(ident("outsider"), READ_KIND, payload, cosigners=[w.aggregators[3]])


def test_block_cache_checks_each_entry_path_once_and_tampered_bytes_every_time(
    job_world, monkeypatch
):
    """The aggregators' requests of one job prove the same entries: a trustee's cache
    skips a Merkle path that passed against the same root, never one with other bytes."""
    from kaires_fl.secret_management import evidence as evidence_mod
    from kaires_fl.secret_management.evidence import BlockCache

    w, job, written = job_world
    ids = list(written)
    payload = read_payload(w.committee.lts.id, job, "aggregator:1", w.agg_keys[1], ids)
    read_id = w.client.execute(w.aggregators[1], READ_KIND, payload).tx_id
    ev = prove_entries(w.client, evidence_keys(w.committee.lts.id, read_id, job, ids))
    calls = []
    real = evidence_mod.verify_state_proof
    monkeypatch.setattr(
        evidence_mod, "verify_state_proof", lambda *a: (calls.append(a[0]), real(*a))[1]
    )
    cache = BlockCache()
    genesis = w.ledger.genesis
    first = ev.verify(genesis, cache=cache)
    assert len(calls) == len(ev.entries) == len(ids) + 3
    calls.clear()
    assert ev.verify(genesis, cache=cache) == first and calls == []
    # the same entry with another value (or path) is checked, and fails
    swapped = msgspec.structs.replace(
        ev,
        entries=(
            msgspec.structs.replace(ev.entries[0], value=ev.entries[1].value),
            *ev.entries[1:],
        ),
    )
    with pytest.raises(InvalidProof, match="does not verify"):
        swapped.verify(genesis, cache=cache)
    assert calls == [ev.entries[0].key]
    bad_path = msgspec.structs.replace(
        ev,
        entries=(
            msgspec.structs.replace(
                ev.entries[0], siblings=(b"\x00" * 32, *ev.entries[0].siblings[1:])
            ),
            *ev.entries[1:],
        ),
    )
    for _ in range(2):  # a failure is never remembered
        with pytest.raises(InvalidProof):
            bad_path.verify(genesis, cache=cache)
    assert calls == [ev.entries[0].key] * 3
    # bounded: the oldest passes are forgotten and checked again
    small = BlockCache(entries=2)
    ev.verify(genesis, cache=small)
    assert len(small.entries) == 2
