"""Audit: verify_chain names the first bad block; inclusion proofs verify offline only if true."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_world import COMMITTEE, ident, key, make_ledger, pol, policy_payload

from kaires_fl.crypto.sign import H
from kaires_fl.errors import AuditError, EncodingError
from kaires_fl.ledger import (
    LocalLedger,
    StateProof,
    TxProof,
    TxResult,
    job_payload,
    verify_chain,
    verify_job,
)
from kaires_fl.ledger.encoding import canonical, decode_canonical
from kaires_fl.ledger.merkle import (
    BUCKET_BITS,
    StateTree,
    bucket_of,
    merkle_path,
    merkle_root,
    verify_path,
    verify_state_proof,
)

ALICE, BOB = ident("alice"), ident("bob")
AGG = [key(ident(f"agg{i}")) for i in range(4)]


@pytest.fixture(scope="module")
def chain() -> LocalLedger:
    L = make_ledger(4, balances={key(BOB): 100})
    c = L.client()
    c.execute(ALICE, "darc.create", policy_payload(ALICE, "alice", [BOB], price=3))
    c.execute(BOB, "job.create", job_payload("mean", [pol(ALICE, "alice")], COMMITTEE, "ab" * 32))
    c.execute(BOB, "coin.transfer", {"to": key(ALICE), "amount": 7})
    L.run_for(0.1)
    return L


def test_verify_chain_accepts_and_replays(chain: LocalLedger) -> None:
    c = chain.client()
    raws = c.raw_blocks()
    assert verify_chain(raws, chain.genesis) == 3
    assert verify_chain(raws, chain.genesis, replay=True) == 3
    assert chain.verify(replay=True) == 3
    assert verify_chain([chain.block(h) for h in (1, 2, 3)], chain.genesis) == 3


def test_tampering_any_byte_names_the_block(chain: LocalLedger) -> None:
    raws = chain.client().raw_blocks()
    target = bytearray(raws[1])  # block 2 holds the job
    step = 1 if len(target) < 6000 else 3
    for pos in range(0, len(target), step):
        bad = bytearray(target)
        bad[pos] ^= 0x01
        with pytest.raises(AuditError, match=r"^block 2: "):
            verify_chain([raws[0], bytes(bad), raws[2]], chain.genesis)


def test_tampering_stored_block_in_sqlite(chain: LocalLedger) -> None:
    L = make_ledger(4)
    c = L.client()
    for i in range(3):
        c.execute(
            ALICE, "darc.create", {"id": f"x{i}", "rules": {"_evolve": f"ed25519:{key(ALICE)}"}}
        )
    L.run_for(0.1)
    nd = L.best_node()
    raw = bytearray(nd.store.raw_block(2))  # type: ignore[arg-type]
    raw[raw.index(b'"height":2') + 9] = ord("7")
    nd.store.conn.execute("UPDATE blocks SET data = ? WHERE height = 2", (bytes(raw),))
    with pytest.raises(AuditError, match=r"^block 2: "):
        verify_chain((r for _, r in nd.store.raw_blocks()), L.genesis)
    L.close()


def test_missing_reordered_or_foreign_blocks(chain: LocalLedger) -> None:
    raws = chain.client().raw_blocks()
    with pytest.raises(AuditError, match=r"^block 2: has height 3"):
        verify_chain([raws[0], raws[2]], chain.genesis)
    other = make_ledger(4, name="other")
    with pytest.raises(AuditError, match=r"^block 1: "):
        verify_chain(raws, other.genesis)
    other.close()
    b1, cert1 = chain.block(1)
    short = replace(cert1, votes=cert1.votes[:2])
    with pytest.raises(AuditError, match=r"block 1: .*2 signatures, needs 3"):
        verify_chain([(b1, short)], chain.genesis)
    dup = replace(cert1, votes=(cert1.votes[0],) * 3)
    with pytest.raises(AuditError, match=r"repeated"):
        verify_chain([(b1, dup)], chain.genesis)


def test_tx_proof_verifies_offline_and_rejects_tampering(chain: LocalLedger) -> None:
    c = chain.client()
    b2, _ = chain.block(2)
    proof = c.prove_tx(b2.txs[0].id)
    proof.verify(chain.genesis)
    again = TxProof.from_bytes(proof.to_bytes())
    again.verify(chain.genesis)
    assert again == proof and again.height == 2
    with pytest.raises(AuditError, match=r"Merkle path"):
        replace(proof, result=TxResult(False, "no")).verify(chain.genesis)
    with pytest.raises(AuditError, match=r"Merkle path"):
        replace(proof, tx=replace(proof.tx, payload={"x": 1})).verify(chain.genesis)
    cert = proof.block.cert
    assert cert is not None
    forged = replace(cert, votes=((cert.votes[0][0], bytes(64)), *cert.votes[1:]))
    with pytest.raises(AuditError, match=r"signature of node"):
        replace(proof, block=replace(proof.block, cert=forged)).verify(chain.genesis)
    blob = bytearray(proof.to_bytes())
    blob[-5] ^= 1
    with pytest.raises((AuditError, EncodingError)):
        TxProof.from_bytes(bytes(blob)).verify(chain.genesis)
    short_path = {**decode_canonical(proof.to_bytes()), "path": [[True]]}
    with pytest.raises(EncodingError, match="Merkle path step"):
        TxProof.from_bytes(canonical(short_path))


def test_state_and_job_proofs(chain: LocalLedger) -> None:
    c = chain.client()
    b2, _ = chain.block(2)
    job_id = b2.txs[0].id
    p = c.prove_job(job_id)
    j = verify_job(StateProof.from_bytes(p.to_bytes()), chain.genesis, job_id)
    assert j["providers"] == [pol(ALICE, "alice")] and j["aggregators"] == AGG
    assert j["height"] == 2 and j["committee"] == COMMITTEE
    assert j["consumer"] == key(BOB) and j["threshold"] == 3
    with pytest.raises(AuditError, match=r"not job"):
        verify_job(p, chain.genesis, "00" * 32)
    with pytest.raises(AuditError, match=r"does not hold the claimed value"):
        replace(p, value={**p.value, "providers": ["mallory"]}).verify(chain.genesis)
    absent = c.prove("job/" + "00" * 32)
    assert absent.value is None
    absent.verify(chain.genesis)
    with pytest.raises(AuditError, match=r"not on the ledger"):
        verify_job(replace(absent, key="job/" + "00" * 32), chain.genesis, "00" * 32)
    with pytest.raises(AuditError, match=r"present, not absent"):
        replace(p, value=None).verify(chain.genesis)
    other = make_ledger(4, name="elsewhere")
    with pytest.raises(AuditError):
        p.verify(other.genesis)
    other.close()
    acc = c.accesses(pol(ALICE, "alice"))
    assert len(acc) == 1 and acc[0].value["job"] == job_id
    assert acc[0].verify(chain.genesis)["consumer"] == key(BOB)
    assert c.balance(ALICE) == 7 and c.balance(BOB) == 100 - 3 - 7


def test_genesis_state_proof_before_any_block() -> None:
    L = make_ledger(4, balances={key(BOB): 9})
    p = L.client().prove(f"bal/{key(BOB)}")
    assert p.height == 0 and p.verify(L.genesis) == 9
    with pytest.raises(AuditError):
        replace(p, value=10).verify(L.genesis)
    L.close()


# -- Merkle structures against slow references ---------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=8), min_size=1, max_size=40), st.data())
def test_list_tree_paths(leaves: list[bytes], data: st.DataObject) -> None:
    digests = [H(x) for x in leaves]
    root = merkle_root(digests)
    i = data.draw(st.integers(0, len(digests) - 1))
    verify_path(digests[i], merkle_path(digests, i), root)
    with pytest.raises(AuditError):
        verify_path(H(b"other", leaves[i]), merkle_path(digests, i), root)
    if len(digests) > 1:
        assert merkle_root(digests[:-1]) != root


def _reference_root(entries: dict[str, bytes]) -> bytes:
    """Slow reference: rebuild every bucket and the whole tree from the definition."""
    buckets: list[list[tuple[str, bytes]]] = [[] for _ in range(1 << BUCKET_BITS)]
    for k, v in entries.items():
        d = hashlib.sha256(b"kaires/state/key/" + k.encode()).digest()
        b = int.from_bytes(d, "big") >> (256 - BUCKET_BITS)
        assert b == bucket_of(k)
        buckets[b].append((k, hashlib.sha256(b"kaires/state/value/" + v).digest()))
    level = []
    for pairs in buckets:
        blob = b"kaires/state/bucket"
        for k, vh in sorted(pairs):
            blob += len(k.encode()).to_bytes(4, "big") + k.encode() + vh
        level.append(hashlib.sha256(blob).digest())
    while len(level) > 1:
        level = [
            hashlib.sha256(b"kaires/merkle/node" + level[i] + level[i + 1]).digest()
            for i in range(0, len(level), 2)
        ]
    return level[0]


@settings(max_examples=10, deadline=None)
@given(
    st.dictionaries(st.text(min_size=1, max_size=6), st.binary(max_size=4), max_size=30),
    st.dictionaries(
        st.text(min_size=1, max_size=6), st.none() | st.binary(max_size=4), max_size=10
    ),
)
def test_state_tree_matches_reference(base: dict[str, bytes], writes: dict) -> None:
    t = StateTree()
    t.apply(base)
    assert t.root == _reference_root(base)
    predicted = t.root_with(writes)
    t.apply(writes)
    after = {**base, **{k: v for k, v in writes.items() if v is not None}}
    for k, v in writes.items():
        if v is None:
            after.pop(k, None)
    assert t.root == predicted == _reference_root(after)
    for k in [*list(after)[:5], "absent-key"]:
        pairs, sibs = t.proof(k)
        verify_state_proof(k, after.get(k), pairs, sibs, t.root)
        with pytest.raises(AuditError):
            verify_state_proof(k, b"\xffwrong", pairs, sibs, t.root)


def test_canonical_encoding_is_strict() -> None:
    from kaires_fl.ledger.encoding import decode_canonical

    assert decode_canonical(canonical({"b": 1, "a": [1, "x"]})) == {"a": [1, "x"], "b": 1}
    for bad in [b'{"b":1, "a":2}', b'{"b":1,"a":2}', b"{", b'{"a":1e2}']:
        with pytest.raises(EncodingError):
            decode_canonical(bad)
