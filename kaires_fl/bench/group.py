"""Benchmarks of the group cryptography (Ed25519 group through libsodium).

- ``threshold_decrypt_ms``: one key written to 4 trustees (t = 1); every trustee
  re-encrypts its share to a reader with a DLEQ proof, the reader verifies all four
  shares and the write proof and combines two (Lagrange in the exponent). Target: a
  few ms.
- ``ed25519_scalarmult_per_s``: variable-base scalar multiplications per second.
- ``ed25519_base_scalarmult_per_s``: fixed-base (G) scalar multiplications per second.
- ``dleq_verify_per_s``: Chaum–Pedersen proof verifications per second.
"""

from __future__ import annotations

from kaires_fl.bench import best_time
from kaires_fl.crypto import elgamal, vss
from kaires_fl.crypto.group import H_POINT, Point, Scalar
from kaires_fl.crypto.proofs import dleq_prove, dleq_verify


def run(quick: bool) -> dict[str, float]:
    """Run the group benchmarks; ``quick`` uses fewer repetitions."""
    repeat = 3 if quick else 7
    t, n = 1, 4
    d = vss.deal(Scalar.random_nonzero(), t, n)
    X = vss.public_key(d.commitments)
    pubs = {i: vss.public_share(d.commitments, i) for i in range(n)}
    reader = elgamal.RecipientKey.generate()
    label, ctx = b"bench/policy", b"bench/job"
    ct, key = elgamal.encapsulate(X, label)

    def threshold_decrypt() -> None:
        shares = {
            i: elgamal.reencrypt_share(d.shares[i], ct.U, reader.public, ctx, pubs[i])
            for i in range(n)
        }
        got, bad = elgamal.combine(ct, shares, pubs, X, reader, t, label, ctx)
        if got != key or bad:
            raise AssertionError("threshold decryption benchmark recovered a wrong key")

    s = Scalar.random_nonzero()
    P = H_POINT * Scalar.random_nonzero()
    G = Point.base()
    number = 50 if quick else 200

    x = Scalar.random_nonzero()
    B2 = H_POINT
    X1, X2 = G * x, B2 * x
    proof = dleq_prove(x, G, B2, ctx)

    return {
        "threshold_decrypt_ms": best_time(threshold_decrypt, repeat=repeat, number=3) * 1e3,
        "ed25519_scalarmult_per_s": 1.0 / best_time(lambda: P * s, repeat=repeat, number=number),
        "ed25519_base_scalarmult_per_s": 1.0
        / best_time(lambda: G * s, repeat=repeat, number=number),
        "dleq_verify_per_s": 1.0
        / best_time(
            lambda: dleq_verify(proof, G, X1, B2, X2, ctx), repeat=repeat, number=number // 4
        ),
    }
