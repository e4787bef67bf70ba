"""DKG: honest runs, faulty dealers of every kind, agreement and naming, reference checks."""

from __future__ import annotations

import pytest

from kaires_fl.crypto.group import Point, Scalar
from kaires_fl.crypto.vss import recover_public, recover_secret
from kaires_fl.errors import ConfigError, ProtocolError
from kaires_fl.secret_management.dkg import (
    DkgParticipant,
    make_participants,
    run_dkg,
)
from kaires_fl.secret_management.dkg import _interpolate_coeffs as interpolate_coeffs


def _honest(results, behaviours):
    return [r for i, r in sorted(results.items()) if i not in behaviours]


def _check_agreement(results, behaviours, n, t):
    honest = _honest(results, behaviours)
    assert len(honest) == n - len(behaviours)
    first = honest[0]
    for r in honest:
        assert r.public_key == first.public_key
        assert r.public_shares == first.public_shares
        assert r.qual == first.qual
        assert r.transcript == first.transcript
        assert dict(r.faulty) == dict(first.faulty)
        assert Point.base() * r.share == first.public_shares[r.index]
    # the honest shares are a degree-t sharing of log X: any t + 1 give the same secret
    shares = {r.index: r.share for r in honest}
    x = recover_secret(shares, t)
    assert Point.base() * x == first.public_key
    idx = sorted(shares)
    assert recover_secret({i: shares[i] for i in idx[-(t + 1) :]}, t) == x
    assert recover_public({i: first.public_shares[i] for i in range(n)}, t) == first.public_key
    return first


@pytest.mark.parametrize("n,t", [(4, 1), (7, 2), (3, 1), (1, 0)])
def test_honest_dkg_one_key(n, t):
    res = run_dkg(make_participants(n, t))
    first = _check_agreement(res, {}, n, t)
    assert first.qual == tuple(range(n))
    assert not first.faulty
    assert not first.public_key.is_identity()


@pytest.mark.parametrize(
    "n,t,behaviours,excluded,reconstructed",
    [
        (4, 1, {2: "bad_share"}, {2}, set()),
        (4, 1, {0: "silent"}, {0}, set()),
        (4, 1, {3: "no_justification"}, {3}, set()),
        (4, 1, {1: "bad_extraction"}, set(), {1}),
        (4, 1, {1: "silent_extraction"}, set(), {1}),
        (7, 2, {1: "bad_share", 5: "silent"}, {1, 5}, set()),
        (7, 2, {0: "no_justification", 6: "bad_share"}, {0, 6}, set()),
        (7, 2, {2: "bad_extraction", 3: "silent"}, {3}, {2}),
        (7, 2, {4: "silent_extraction", 5: "bad_share"}, {5}, {4}),
    ],
)
def test_faulty_dealers_excluded_and_named(n, t, behaviours, excluded, reconstructed):
    res = run_dkg(make_participants(n, t, behaviours=behaviours))
    first = _check_agreement(res, behaviours, n, t)
    assert set(first.qual) == set(range(n)) - excluded
    assert set(first.faulty) == excluded | reconstructed
    for d in reconstructed:
        assert "reconstructed" in first.faulty[d]


def test_false_complaints_change_nothing():
    behaviours = {1: "false_complaint"}
    res = run_dkg(make_participants(4, 1, behaviours=behaviours))
    first = _check_agreement(res, behaviours, 4, 1)
    assert first.qual == (0, 1, 2, 3)
    assert not first.faulty


def test_reconstructed_dealer_contribution_is_kept():
    """A dealer withdrawing after QUAL is fixed cannot change the key: x = Σ_QUAL f_d(0)."""
    ps = make_participants(4, 1, behaviours={2: "silent_extraction"})
    res = run_dkg(ps)
    expected = Scalar(sum(p._a[0].value for p in ps))
    assert Point.base() * expected == res[0].public_key


def test_too_many_faulty_dealers_fail_loudly():
    ps = make_participants(3, 1, behaviours={0: "silent", 1: "silent"})
    with pytest.raises(ProtocolError, match="qualified dealers"):
        run_dkg(ps)


def test_bad_parameters():
    with pytest.raises(ConfigError, match="2t \\+ 1"):
        make_participants(4, 2)
    with pytest.raises(ConfigError, match="behaviour"):
        make_participants(4, 1, behaviours={0: "weird"})
    with pytest.raises(ConfigError):
        DkgParticipant(5, 4, 1, make_participants(4, 1)[0].envelope_key, [b"\0" * 32] * 4)


def test_tampered_sealed_share_triggers_complaint_and_justification():
    ps = make_participants(4, 1)
    deals = {p.index: p.deal() for p in ps}
    sealed = {p.index: p.private_shares() for p in ps}
    blob = bytearray(sealed[0][1])
    blob[-1] ^= 1
    sealed[0][1] = bytes(blob)
    complaints = [
        c for p in ps for c in p.receive_deals(deals, {d: s[p.index] for d, s in sealed.items()})
    ]
    assert [(c.complainer, c.dealer) for c in complaints] == [(1, 0)]
    justs = {p.index: j for p in ps if (j := p.justify(complaints)) is not None}
    for p in ps:
        p.receive_justifications(complaints, justs)
    exts = {p.index: e for p in ps if (e := p.extract()) is not None}
    ev = [e for p in ps for e in p.check_extractions(exts)]
    for p in ps:
        p.receive_extraction_complaints(exts, ev)
    res = {p.index: p.finalize({}) for p in ps}
    _check_agreement(res, {}, 4, 1)
    assert res[0].qual == (0, 1, 2, 3)


def test_interpolate_coeffs_matches_reference():
    from kaires_fl.crypto.group import L

    coeffs = [5, 7, 11]
    pts = [(x, sum(c * x**k for k, c in enumerate(coeffs)) % L) for x in (2, 5, 9)]
    assert interpolate_coeffs(pts) == coeffs


@pytest.mark.parametrize("n,t,d", [(3, 1, 0), (4, 1, 2), (7, 2, 5)])
def test_equivocating_dealer_named_and_excluded_in_process(n, t, d):
    """The in-process driver decides as the network broadcast does: a dealer with two
    versions of its deal is named and left out of QUAL; the others agree on one key."""
    behaviours = {d: "equivocate"}
    res = run_dkg(make_participants(n, t, behaviours=behaviours))
    first = _check_agreement(res, behaviours, n, t)
    assert d not in first.qual and set(first.qual) == set(range(n)) - {d}
    assert "equivocated in broadcast round 1" in first.faulty[d]
