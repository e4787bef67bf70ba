"""CALYPSO write proofs (binding to policy, version, job, slot) and the threshold-VRF coin."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from kaires_fl.crypto.elgamal import RecipientKey, combine, reencrypt_share
from kaires_fl.crypto.group import Point
from kaires_fl.errors import EncodingError, InvalidProof, ProtocolError
from kaires_fl.secret_management.coin import coin_share, combine_coin
from kaires_fl.secret_management.dkg import make_participants, run_dkg
from kaires_fl.secret_management.write import (
    WriteEntry,
    aggregator_slot,
    make_write,
    verify_write,
    write_label,
)


@pytest.fixture(scope="module")
def dkg():
    return run_dkg(make_participants(4, 1))


def _pub(dkg):
    return dkg[0].public_key, dict(enumerate(dkg[0].public_shares))


def test_write_roundtrip_and_trustee_decryption(dkg):
    X, pubs = _pub(dkg)
    slots = [aggregator_slot(i) for i in range(4)]
    entry, keys = make_write(X, "lts1", "pol-a", 1, "job1", slots)
    verify_write(entry, X)
    assert WriteEntry.from_payload(entry.to_payload()) == entry
    reader = RecipientKey.generate()
    for slot in slots:
        ct = entry.slot(slot)
        shares = {j: reencrypt_share(dkg[j].share, ct.U, reader.public, b"ctx") for j in (1, 3)}
        label = write_label("lts1", "pol-a", 1, "job1", slot)
        key, bad = combine(ct, shares, pubs, X, reader, 1, label, b"ctx")
        assert key == keys[slot] and bad == []


@pytest.mark.parametrize(
    "field,value",
    [("policy", "pol-b"), ("version", 2), ("job", "job2"), ("lts", "lts2")],
)
def test_write_nizk_rejects_ciphertext_moved(dkg, field, value):
    X, _ = _pub(dkg)
    entry, _ = make_write(X, "lts1", "pol-a", 1, "job1", ["aggregator:0", "consumer"])
    moved = dataclasses.replace(entry, **{field: value})
    with pytest.raises(InvalidProof, match="write proof of slot"):
        verify_write(moved, X)


def test_write_nizk_rejects_slot_swap_and_tamper(dkg):
    X, _ = _pub(dkg)
    entry, _ = make_write(X, "lts1", "pol-a", 1, "", ["aggregator:0", "aggregator:1"])
    (s0, c0), (s1, c1) = entry.keys
    with pytest.raises(InvalidProof, match="aggregator:0"):
        verify_write(dataclasses.replace(entry, keys=((s0, c1), (s1, c0))), X)
    bad = dataclasses.replace(c0, wrapped=bytes([c0.wrapped[0] ^ 1]) + c0.wrapped[1:])
    with pytest.raises(InvalidProof):
        verify_write(dataclasses.replace(entry, keys=((s0, bad), (s1, c1))), X)
    other = run_dkg(make_participants(4, 1))[0].public_key
    with pytest.raises(InvalidProof):
        verify_write(entry, other)


def test_write_payload_validation(dkg):
    X, _ = _pub(dkg)
    entry, _ = make_write(X, "lts1", "pol-a", 1, "", ["consumer"])
    p = entry.to_payload()
    for bad in (
        {**p, "keys": [["reader:0", p["keys"][0][1]]]},
        {**p, "keys": []},
        {**p, "keys": p["keys"] * 2},
        {**p, "version": "1"},
        {**p, "extra": 1},
        {**p, "keys": [["consumer", "zz"]]},
    ):
        with pytest.raises(EncodingError):
            WriteEntry.from_payload(bad)
    with pytest.raises(EncodingError):
        make_write(X, "lts1", "pol-a", 1, "", ["consumer", "consumer"])


def test_coin_unique_from_any_t_plus_1(dkg):
    _, pubs = _pub(dkg)
    shares = {j: coin_share(j, dkg[j].share, pubs[j], "lts1", "job1", "root1") for j in range(4)}
    seeds = set()
    for subset in ((0, 1), (2, 3), (0, 3), (1, 2)):
        seed, faulty = combine_coin(
            {j: shares[j] for j in subset}, pubs, 1, "lts1", "job1", "root1"
        )
        assert faulty == {}
        seeds.add(seed)
    assert len(seeds) == 1
    other, _ = combine_coin(
        {j: coin_share(j, dkg[j].share, pubs[j], "lts1", "job1", "root2") for j in (0, 1)},
        pubs,
        1,
        "lts1",
        "job1",
        "root2",
    )
    assert other not in seeds


def test_coin_names_wrong_and_silent_trustees(dkg):
    _, pubs = _pub(dkg)
    good = {j: coin_share(j, dkg[j].share, pubs[j], "L", "J", "R") for j in range(4)}
    wrong_value = msgspec.structs.replace(
        good[1], share=dataclasses.replace(good[1].share, value=good[1].share.value + Point.base())
    )
    wrong_root = coin_share(2, dkg[2].share, pubs[2], "L", "J", "R2")
    seed_ref, _ = combine_coin({0: good[0], 3: good[3]}, pubs, 1, "L", "J", "R")
    seed, faulty = combine_coin(
        {0: good[0], 1: wrong_value, 2: wrong_root, 3: good[3]}, pubs, 1, "L", "J", "R"
    )
    assert seed == seed_ref
    assert set(faulty) == {1, 2}
    seed, faulty = combine_coin({0: None, 1: good[1], 2: good[2], 3: None}, pubs, 1, "L", "J", "R")
    assert seed == seed_ref and set(faulty) == {0, 3} and "silent" in faulty[0]
    with pytest.raises(ProtocolError):
        combine_coin({0: good[0], 1: wrong_value}, pubs, 1, "L", "J", "R")
