"""Threshold ElGamal: write, re-encrypt to a reader, verify and combine with faulty trustees."""

from __future__ import annotations

from itertools import combinations

import pytest

from kaires_fl.crypto import elgamal, vss
from kaires_fl.crypto.elgamal import Ciphertext, ExponentShare, RecipientKey
from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.crypto.group import Point, Scalar, hash_to_point
from kaires_fl.crypto.proofs import DLEQProof
from kaires_fl.errors import EncodingError, InvalidProof, ProtocolError

G = Point.base()
LABEL = b"policy-17/job-3"
CTX = b"job-3/aggregator-1"


class Committee:
    def __init__(self, t: int, n: int) -> None:
        self.t, self.n = t, n
        self.x = Scalar.random_nonzero()
        d = vss.deal(self.x, t, n)
        self.shares = d.shares
        self.X = vss.public_key(d.commitments)
        self.pubs = {i: vss.public_share(d.commitments, i) for i in range(n)}

    def reencrypt(self, ct: Ciphertext, reader: RecipientKey, parties: range | list[int]) -> dict:
        return {
            i: elgamal.reencrypt_share(self.shares[i], ct.U, reader.public, CTX, self.pubs[i])
            for i in parties
        }


@pytest.fixture(scope="module")
def com() -> Committee:
    return Committee(1, 4)


def test_any_t_plus_1_shares_recover_the_key(com: Committee) -> None:
    reader = RecipientKey.generate()
    ct, key = elgamal.encapsulate(com.X, LABEL)
    elgamal.verify_ciphertext(ct, com.X, LABEL)
    shares = com.reencrypt(ct, reader, range(com.n))
    for subset in combinations(range(com.n), com.t + 1):
        got, bad = elgamal.combine(
            ct, {i: shares[i] for i in subset}, com.pubs, com.X, reader, com.t, LABEL, CTX
        )
        assert got == key and bad == []


def test_larger_committee_every_subset() -> None:
    c = Committee(2, 7)
    reader = RecipientKey.from_seed(b"\x05" * 32)
    key = bytes(range(32))
    ct = elgamal.encrypt(c.X, key, LABEL)
    shares = c.reencrypt(ct, reader, range(c.n))
    for subset in list(combinations(range(c.n), 3))[::4]:
        got, _ = elgamal.combine(
            ct, {i: shares[i] for i in subset}, c.pubs, c.X, reader, c.t, LABEL, CTX
        )
        assert got == key


def test_recombined_value_matches_direct_computation(com: Committee) -> None:
    """Σ λ_i u_i = x·(U + Y), checked against the dealer's x (reference)."""
    reader = RecipientKey.generate()
    ct, _ = elgamal.encapsulate(com.X, LABEL)
    base = ct.U + reader.public
    shares = {i: elgamal.exponent_share(com.shares[i], base, b"c") for i in range(com.n)}
    value, bad = elgamal.combine_exponent(shares, base, com.pubs, com.t, b"c")
    assert value == base * com.x and bad == []


def _wrong_shares(com: Committee, ct: Ciphertext, reader: RecipientKey) -> dict[str, object]:
    good = elgamal.reencrypt_share(com.shares[0], ct.U, reader.public, CTX)
    other_reader = RecipientKey.generate()
    flipped = bytearray(good.to_bytes())
    flipped[40] ^= 1
    out = {
        "bad point encoding": b"\xff" * 32 + good.proof.to_bytes(),
        "wrong length": good.to_bytes()[:-1],
        "bad proof": ExponentShare(
            good.value, DLEQProof(good.proof.challenge, good.proof.response + 1)
        ),
        "flipped proof byte": bytes(flipped),
        "wrong value, valid-looking": ExponentShare(good.value + G, good.proof),
        "share for another recipient": elgamal.reencrypt_share(
            com.shares[0], ct.U, other_reader.public, CTX
        ),
        "share for another context": elgamal.reencrypt_share(
            com.shares[0], ct.U, reader.public, b"other job"
        ),
        "another trustee's share": elgamal.reencrypt_share(com.shares[1], ct.U, reader.public, CTX),
        "share under a wrong key with its own proof": elgamal.reencrypt_share(
            Scalar.random(), ct.U, reader.public, CTX
        ),
    }
    assert sorted(out) == sorted(WRONG_KINDS)
    return out


WRONG_KINDS = [
    "bad point encoding",
    "wrong length",
    "bad proof",
    "flipped proof byte",
    "wrong value, valid-looking",
    "share for another recipient",
    "share for another context",
    "another trustee's share",
    "share under a wrong key with its own proof",
]


@pytest.mark.parametrize("kind", WRONG_KINDS)
def test_t_wrong_shares_are_named_and_key_recovered(com: Committee, kind: str) -> None:
    reader = RecipientKey.generate()
    ct, key = elgamal.encapsulate(com.X, LABEL)
    shares: dict = com.reencrypt(ct, reader, range(com.n))
    shares[0] = _wrong_shares(com, ct, reader)[kind]  # trustee 0 is faulty (t = 1)
    got, bad = elgamal.combine(ct, shares, com.pubs, com.X, reader, com.t, LABEL, CTX)
    assert got == key
    assert bad == [0]
    with pytest.raises(InvalidProof):
        w = shares[0]
        if isinstance(w, bytes):
            try:
                w = ExponentShare.from_bytes(w)
            except EncodingError as exc:
                raise InvalidProof("undecodable") from exc
        elgamal.verify_reencrypted_share(w, ct.U, reader.public, com.pubs[0], CTX)


def test_t_wrong_shares_in_a_larger_committee() -> None:
    c = Committee(2, 7)
    reader = RecipientKey.generate()
    ct, key = elgamal.encapsulate(c.X, LABEL)
    shares: dict = c.reencrypt(ct, reader, range(c.n))
    shares[1] = b"\x00" * 96
    shares[5] = elgamal.reencrypt_share(c.shares[5], ct.U, RecipientKey.generate().public, CTX)
    shares[3] = None  # missing reply: not named as bad
    got, bad = elgamal.combine(ct, shares, c.pubs, c.X, reader, c.t, LABEL, CTX)
    assert got == key and bad == [1, 5]


def test_fewer_than_t_plus_1_valid_raises(com: Committee) -> None:
    reader = RecipientKey.generate()
    ct, _ = elgamal.encapsulate(com.X, LABEL)
    shares: dict = com.reencrypt(ct, reader, range(com.n))
    shares[0] = b"junk"
    shares[1] = elgamal.reencrypt_share(com.shares[1], ct.U, reader.public, b"replayed")
    shares[2] = None
    with pytest.raises(ProtocolError, match=r"parties \[0, 1\]"):
        elgamal.combine(ct, shares, com.pubs, com.X, reader, com.t, LABEL, CTX)
    with pytest.raises(ProtocolError):
        elgamal.combine(ct, {3: shares[3]}, com.pubs, com.X, reader, com.t, LABEL, CTX)


def test_unknown_party_is_named(com: Committee) -> None:
    reader = RecipientKey.generate()
    ct, key = elgamal.encapsulate(com.X, LABEL)
    shares: dict = com.reencrypt(ct, reader, range(com.n))
    shares[9] = shares[0]
    got, bad = elgamal.combine(ct, shares, com.pubs, com.X, reader, com.t, LABEL, CTX)
    assert got == key and bad == [9]


def test_wrong_reader_cannot_use_shares(com: Committee) -> None:
    reader, thief = RecipientKey.generate(), RecipientKey.generate()
    ct, _ = elgamal.encapsulate(com.X, LABEL)
    shares = com.reencrypt(ct, reader, range(com.n))
    # The thief's combine rejects every share (they are bound to the reader's key).
    with pytest.raises(ProtocolError):
        elgamal.combine(ct, shares, com.pubs, com.X, thief, com.t, LABEL, CTX)


def test_ciphertext_tampering_rejected(com: Committee) -> None:
    ct, _ = elgamal.encapsulate(com.X, LABEL)
    raw = ct.to_bytes()
    assert Ciphertext.from_bytes(raw) == ct
    with pytest.raises(InvalidProof, match="label"):
        elgamal.verify_ciphertext(ct, com.X, b"another policy")
    with pytest.raises(InvalidProof):
        elgamal.verify_ciphertext(ct, com.X + G, LABEL)
    for pos in (0, 33, 70, 100, 140):
        bad = bytearray(raw)
        bad[pos] ^= 0x02
        try:
            forged = Ciphertext.from_bytes(bytes(bad))
        except EncodingError:
            continue
        with pytest.raises(InvalidProof):
            elgamal.verify_ciphertext(forged, com.X, LABEL)
    # combine refuses a ciphertext whose write proof fails
    reader = RecipientKey.generate()
    shares = com.reencrypt(ct, reader, range(com.n))
    other = Ciphertext(ct.U, ct.C + G, ct.wrapped, ct.proof)
    with pytest.raises(InvalidProof):
        elgamal.combine(other, shares, com.pubs, com.X, reader, com.t, LABEL, CTX)


def test_ciphertext_decoding_errors(com: Committee) -> None:
    ct, _ = elgamal.encapsulate(com.X, LABEL)
    raw = ct.to_bytes()
    with pytest.raises(EncodingError):
        Ciphertext.from_bytes(raw[:-1])
    with pytest.raises(EncodingError, match="identity"):
        Ciphertext.from_bytes(Point.identity().to_bytes() + raw[32:])
    with pytest.raises(EncodingError):
        elgamal.encrypt(com.X, b"short", LABEL)
    with pytest.raises(EncodingError):
        elgamal.encrypt(Point.identity(), bytes(32), LABEL)


def test_crafted_u_refused(com: Committee) -> None:
    reader = RecipientKey.generate()
    with pytest.raises(ProtocolError, match="refuse"):
        elgamal.reencrypt_share(com.shares[0], -reader.public, reader.public, CTX)
    with pytest.raises(ProtocolError):
        elgamal.exponent_share(com.shares[0], Point.identity(), CTX)


def test_threshold_coin_with_exponent_shares(com: Committee) -> None:
    """Base H_p(m): the combined value is x·H_p(m), whichever t + 1 trustees answer."""
    base = hash_to_point(b"job-3/inputs-root")
    shares = {i: elgamal.exponent_share(com.shares[i], base, b"coin") for i in range(com.n)}
    values = {
        elgamal.combine_exponent({i: shares[i] for i in s}, base, com.pubs, com.t, b"coin")[
            0
        ].to_bytes()
        for s in combinations(range(com.n), 2)
    }
    assert values == {(base * com.x).to_bytes()}
    assert ExponentShare.from_bytes(shares[0].to_bytes()) == shares[0]


def test_decrypt_with_whole_secret_matches(com: Committee) -> None:
    ct, key = elgamal.encapsulate(com.X, LABEL)
    assert elgamal.decrypt(ct, com.x, com.X, LABEL) == key
    assert elgamal.decrypt(ct, com.x + 1, com.X, LABEL) != key


def test_recipient_key_from_x25519_envelope_key(com: Committee) -> None:
    """Trustees derive the reader's group key from its X25519 public key alone."""
    for i in range(8):
        kp = EnvelopeKeyPair.from_seed(bytes([i]) * 32)
        rk = RecipientKey.from_x25519(kp)
        assert rk.public == G * rk.secret
        assert elgamal.recipient_point_from_x25519(kp.public) == rk.public
    kp = EnvelopeKeyPair.generate()
    reader = RecipientKey.from_x25519(kp.private)
    Y = elgamal.recipient_point_from_x25519(kp.public)
    ct, key = elgamal.encapsulate(com.X, LABEL)
    shares = {i: elgamal.reencrypt_share(com.shares[i], ct.U, Y, CTX) for i in range(com.n)}
    got, bad = elgamal.combine(ct, shares, com.pubs, com.X, reader, com.t, LABEL, CTX)
    assert got == key and bad == []


@pytest.mark.parametrize(
    "public",
    [bytes(32), (1).to_bytes(32, "little"), (2**255 - 20).to_bytes(32, "little"), b"\xff" * 32],
)
def test_recipient_point_rejects_bad_x25519_keys(public: bytes) -> None:
    with pytest.raises(EncodingError):
        elgamal.recipient_point_from_x25519(public)


def test_batch_reencryption_recovers_every_key_and_binds_reader_and_contexts(
    com: Committee,
) -> None:
    reader, other = RecipientKey.generate(), RecipientKey.generate()
    written = [elgamal.encapsulate(com.X, LABEL) for _ in range(3)]
    cts = [ct for ct, _ in written]
    ctxs = [CTX + bytes([k]) for k in range(3)]
    bases = elgamal.reencryption_bases([ct.U for ct in cts], reader.public)
    answers = {
        i: elgamal.reencrypt_batch(com.shares[i], bases, reader.public, ctxs, com.pubs[i])
        for i in range(com.n)
    }
    for i, (values, proof) in answers.items():
        # reference: the per-share values are exactly x_i·(U_k + Y)
        assert values == [(ct.U + reader.public) * com.shares[i] for ct in cts]
        elgamal.verify_reencrypted_batch(values, proof, bases, reader.public, com.pubs[i], ctxs)
    lam = vss.lagrange_coefficients([0, 2])
    for k, (ct, key) in enumerate(written):
        xb = answers[0][0][k] * lam[0] + answers[2][0][k] * lam[1]
        assert elgamal.recover_key(ct, xb - com.X * reader.secret, LABEL) == key
    values, proof = answers[1]
    other_bases = elgamal.reencryption_bases([ct.U for ct in cts], other.public)
    bad = {
        "another reader": (values, other_bases, other.public, com.pubs[1], ctxs),
        "another trustee's key": (values, bases, reader.public, com.pubs[0], ctxs),
        "other contexts": (values, bases, reader.public, com.pubs[1], ctxs[::-1]),
        "one wrong value": ([*values[:2], values[2] + G], bases, reader.public, com.pubs[1], ctxs),
        "a value from another trustee": (
            [answers[0][0][0], *values[1:]],
            bases,
            reader.public,
            com.pubs[1],
            ctxs,
        ),
    }
    for name, (vs, bs, Y, pub, cx) in bad.items():
        with pytest.raises(InvalidProof):
            elgamal.verify_reencrypted_batch(vs, proof, bs, Y, pub, cx)
        assert name
    with pytest.raises(InvalidProof, match="values for"):
        elgamal.verify_reencrypted_batch(values[:2], proof, bases, reader.public, com.pubs[1], ctxs)


def test_recipient_matches_x25519_agrees_with_decoding() -> None:
    for i in range(8):
        kp = EnvelopeKeyPair.from_seed(bytes([i]) * 32)
        rk = RecipientKey.from_x25519(kp)
        assert elgamal.recipient_matches_x25519(rk.public, kp.public)
        assert rk.public == elgamal.recipient_point_from_x25519(kp.public)
        other = EnvelopeKeyPair.from_seed(bytes([i + 100]) * 32)
        assert not elgamal.recipient_matches_x25519(rk.public, other.public)
        assert not elgamal.recipient_matches_x25519(-rk.public, kp.public)  # other sign
        assert not elgamal.recipient_matches_x25519(rk.public, kp.public[:31])
    assert not elgamal.recipient_matches_x25519(Point.identity(), bytes(32))


def test_trustee_never_multiplies_its_share_by_a_torsioned_base(com: Committee) -> None:
    """Unchecked U / Y (as a trustee decodes them): a bad base is refused, nothing leaks."""
    torsion = Point.from_bytes(
        bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
        subgroup_check=False,
    )
    reader = RecipientKey.generate()
    ct, _ = elgamal.encapsulate(com.X, LABEL)
    bad_U = Point.from_bytes((ct.U + torsion).to_bytes(), subgroup_check=False)
    bases = elgamal.reencryption_bases([ct.U, bad_U], reader.public)
    with pytest.raises(EncodingError, match="refused the scalar multiplication"):
        elgamal.reencrypt_batch(com.shares[0], bases, reader.public, [CTX, CTX], com.pubs[0])
    bad_Y = Point.from_bytes((reader.public + torsion).to_bytes(), subgroup_check=False)
    with pytest.raises(EncodingError):
        elgamal.reencrypt_batch(
            com.shares[0],
            elgamal.reencryption_bases([ct.U], bad_Y),
            bad_Y,
            [CTX],
            com.pubs[0],
        )


def test_recipient_shared_with_is_y_times_X(com: Committee) -> None:
    reader = RecipientKey.generate()
    assert reader.shared_with(com.X) == com.X * reader.secret
    assert reader.shared_with(G) == reader.public  # and per X, not one value for all
    assert reader.shared_with(com.X) == com.X * reader.secret
