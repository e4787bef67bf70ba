"""Sealed submissions (protocol.md §2): Shamir shares under per-aggregator keys, signed manifest.

A provider turns a batch of encoded measurements ``(B, MEAS_LEN)`` into

* for every aggregator ``i`` a fresh 32-byte key ``k_i`` and two AEAD blobs under it: the
  *measurement part* (its Shamir share of the measurements and of a random mask ``ρ``) and
  the *proof part* (its Shamir share of the FLP proofs);
* a *key commitment* ``H(job, provider, i, k_i)`` per aggregator, so that a revealed key can
  be checked by anyone (ChaCha20-Poly1305 alone is not key-committing);
* a :class:`Manifest` signed by the provider: job, provider, B, circuit id, the hashes of
  every part, the key commitments and a reference to the CALYPSO write carrying the keys.

The joint randomness of the FLP is Fiat–Shamir over the hashes of the measurement parts
(:func:`joint_rand_seed`), so the proof is made after — and bound to — the shares.

The keys themselves are CALYPSO-written to the trustees by the caller
(:mod:`kaires_fl.roles.provider`), which then signs the manifest with the write's reference.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from kaires_fl.arith import sharing
from kaires_fl.arith.flp import FlpBBCGGI19
from kaires_fl.crypto import envelope
from kaires_fl.crypto.sign import H, Identity, verify
from kaires_fl.errors import EncodingError, InvalidProof, InvalidSubmission
from kaires_fl.ledger.encoding import canonical

MANIFEST_CONTEXT = b"kaires/aggregation/manifest"

#: Provider fault behaviours understood by :func:`seal_parts` (simulation and tests).
PROVIDER_FAULTS = ("out_of_range", "inconsistent_shares", "bad_proof")


@dataclass(frozen=True)
class Manifest:
    """What a provider signs about one submission (all bytes as lowercase hex)."""

    job: str
    provider: str  # the provider's policy id on the ledger
    signer: str  # the provider's Ed25519 key (its policy's owner)
    batch: int
    circuit: str
    meas_parts: tuple[str, ...]
    proof_parts: tuple[str, ...]
    key_commits: tuple[str, ...]
    write: str

    def to_obj(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "provider": self.provider,
            "signer": self.signer,
            "batch": self.batch,
            "circuit": self.circuit,
            "meas_parts": list(self.meas_parts),
            "proof_parts": list(self.proof_parts),
            "key_commits": list(self.key_commits),
            "write": self.write,
        }

    def body(self) -> bytes:
        return canonical(self.to_obj())

    @cached_property
    def hash(self) -> bytes:
        return H(MANIFEST_CONTEXT, self.body())


@dataclass(frozen=True)
class SealedSubmission:
    """A provider's submission as the coordinator sees it: nothing in it is plaintext.

    ``meas_parts[i]`` / ``proof_parts[i]`` are AEAD blobs only aggregator ``i`` can open
    (after the trustees release ``k_i``); ``signature`` is the provider's over the manifest.
    """

    manifest: Manifest
    signature: bytes
    meas_parts: tuple[bytes, ...]
    proof_parts: tuple[bytes, ...]

    def only(self, i: int) -> SealedSubmission:
        """The submission as aggregator ``i`` gets it: its own two parts, the others empty."""
        n = len(self.meas_parts)
        return (
            SealedSubmission(
                self.manifest,
                self.signature,
                tuple(p if j == i else b"" for j, p in enumerate(self.meas_parts)),
                tuple(p if j == i else b"" for j, p in enumerate(self.proof_parts)),
            )
            if 0 <= i < n
            else self
        )

    def check(self, n: int, parts: Sequence[int] | None = None) -> None:
        """Check the signature and that the parts (all, or ``parts``) match the manifest.

        Raises
        ------
        InvalidSubmission
            naming what does not match (the coordinator or the network altered it, or the
            provider is faulty).
        """
        m = self.manifest
        try:
            verify(bytes.fromhex(m.signer), MANIFEST_CONTEXT, m.body(), self.signature)
        except (InvalidProof, ValueError) as exc:
            raise InvalidSubmission(
                f"manifest of provider {m.provider[:16]}… is not signed by it: {exc}"
            ) from exc
        if not (
            len(m.meas_parts) == len(m.proof_parts) == len(m.key_commits) == n
            and len(self.meas_parts) == len(self.proof_parts) == n
        ):
            raise InvalidSubmission(
                f"submission of {m.provider[:16]}… has parts for "
                f"{len(m.meas_parts)} aggregators, the committee has {n}"
            )
        for i in range(n) if parts is None else parts:
            if part_hash(self.meas_parts[i]).hex() != m.meas_parts[i] or (
                part_hash(self.proof_parts[i]).hex() != m.proof_parts[i]
            ):
                raise InvalidSubmission(
                    f"part {i} of provider {m.provider[:16]}…'s submission does not match "
                    "its signed manifest: it was altered in transit"
                )


@dataclass
class SealedParts:
    """Output of :func:`seal_parts`: the provider's secrets stay here, never in a message."""

    keys: list[bytes]
    meas_parts: list[bytes]
    proof_parts: list[bytes]
    key_commits: list[bytes]
    batch: int
    meas: np.ndarray = field(repr=False)
    meas_hashes: list[str] = field(default_factory=list)
    proof_hashes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PartShares:
    """Aggregator ``i``'s opened part: shares of the measurements, proofs and mask ``ρ``."""

    meas: np.ndarray  # (B, MEAS_LEN)
    proof: np.ndarray  # (B, PROOF_LEN)
    rho: np.ndarray  # (1,)


def part_hash(blob: bytes) -> bytes:
    return H(b"kaires/aggregation/part", blob)


def key_commit(job: str, provider: str, i: int, key: bytes) -> bytes:
    """Commitment to aggregator ``i``'s key (binding: a revealed key is checkable by all)."""
    return H(
        b"kaires/aggregation/key-commit",
        job.encode(),
        provider.encode(),
        i.to_bytes(4, "little"),
        key,
    )


def _aad(kind: bytes, job: str, provider: str, i: int) -> bytes:
    return H(
        b"kaires/aggregation/aad", kind, job.encode(), provider.encode(), i.to_bytes(4, "little")
    )


def joint_rand_seed(
    job: str, provider: str, circuit: str, meas_part_hashes: Sequence[str]
) -> bytes:
    """Fiat–Shamir seed of the FLP joint randomness: binds the job, provider and every share."""
    return H(
        b"kaires/aggregation/joint-rand",
        job.encode(),
        provider.encode(),
        circuit.encode(),
        *[bytes.fromhex(h) for h in meas_part_hashes],
    )


def seal_parts(
    flp: FlpBBCGGI19,
    meas: np.ndarray,
    *,
    job: str,
    provider: str,
    circuit: str,
    n: int,
    t: int,
    keys: Sequence[bytes] | None = None,
    fault: str | None = None,
) -> SealedParts:
    """Share, prove and seal a batch of measurements for ``n`` aggregators (protocol.md §2).

    Pre: ``meas`` is ``(B, MEAS_LEN)`` elements of ``flp.field``; ``fault`` is None or one
    of :data:`PROVIDER_FAULTS` (a deliberately faulty provider, for simulation); ``keys``
    are the n 32-byte keys CALYPSO-written for the aggregators (fresh random ones if None).
    Post: ``keys[i]`` opens ``meas_parts[i]`` and ``proof_parts[i]``; the joint randomness
    of the proofs is derived from the hashes of the measurement parts.
    """
    F = flp.field
    meas = np.asarray(meas)
    if meas.ndim != 2 or meas.shape[1] != flp.MEAS_LEN or meas.dtype != F.DTYPE:
        raise EncodingError(
            f"measurements must be {F.__name__} elements of shape (B, {flp.MEAS_LEN}); "
            f"got {meas.shape} {meas.dtype}"
        )
    if fault is not None and fault not in PROVIDER_FAULTS:
        raise EncodingError(f"unknown provider fault {fault!r}; use one of {PROVIDER_FAULTS}")
    B = meas.shape[0]
    if fault == "out_of_range":
        # A value the circuit must refuse: every circuit here range-checks its first entry
        # (a bit or a bounded integer), and 2 + (any bit) is never a bit.
        meas = meas.copy()
        meas[:, 0] = F.add(meas[:, 0], F.elements(F.MODULUS // 2))
    rho = F.random((1,))
    meas_sh = sharing.share(F, meas, n, t)  # (n, B, MEAS_LEN)
    rho_sh = sharing.share(F, rho, n, t)  # (n, 1)
    if fault == "inconsistent_shares":
        meas_sh[n - 1] = F.add(meas_sh[n - 1], F.random(meas_sh[n - 1].shape))
    if keys is None:
        keys = [secrets.token_bytes(32) for _ in range(n)]
    keys = list(keys)
    if len(keys) != n or any(len(k) != 32 for k in keys):
        raise EncodingError(f"seal_parts needs {n} keys of 32 bytes (one per aggregator)")
    meas_parts = [
        envelope.seal(
            keys[i], F.encode(meas_sh[i]) + F.encode(rho_sh[i]), _aad(b"meas", job, provider, i)
        )
        for i in range(n)
    ]
    mhashes = [part_hash(p).hex() for p in meas_parts]
    joint_rand = flp.derive_joint_rand(joint_rand_seed(job, provider, circuit, mhashes))
    proof = flp.prove(meas, flp.random_prove_rand((B,)), joint_rand if flp.JOINT_RAND_LEN else None)
    if fault == "bad_proof":
        proof = proof.copy()
        proof[:, -1] = F.add(proof[:, -1], F.ones((B,)))
    proof_sh = sharing.share(F, proof, n, t)
    proof_parts = [
        envelope.seal(keys[i], F.encode(proof_sh[i]), _aad(b"proof", job, provider, i))
        for i in range(n)
    ]
    commits = [key_commit(job, provider, i, keys[i]) for i in range(n)]
    phashes = [part_hash(p).hex() for p in proof_parts]
    return SealedParts(keys, meas_parts, proof_parts, commits, B, meas, mhashes, phashes)


def sign_manifest(
    identity: Identity,
    parts: SealedParts,
    *,
    job: str,
    provider: str,
    circuit: str,
    write: str,
) -> SealedSubmission:
    """The provider's signed manifest over ``parts`` and the CALYPSO write reference ``write``."""
    m = Manifest(
        job=job,
        provider=provider,
        signer=identity.public.hex(),
        batch=parts.batch,
        circuit=circuit,
        meas_parts=tuple(parts.meas_hashes or [part_hash(p).hex() for p in parts.meas_parts]),
        proof_parts=tuple(parts.proof_hashes or [part_hash(p).hex() for p in parts.proof_parts]),
        key_commits=tuple(c.hex() for c in parts.key_commits),
        write=write,
    )
    sig = identity.sign(MANIFEST_CONTEXT, m.body())
    return SealedSubmission(m, sig, tuple(parts.meas_parts), tuple(parts.proof_parts))


def open_part(
    flp: FlpBBCGGI19,
    manifest: Manifest,
    i: int,
    key: bytes,
    meas_blob: bytes,
    proof_blob: bytes,
    *,
    hashes_checked: bool = False,
) -> PartShares:
    """Aggregator ``i``'s shares from its released key (or anyone's, from a revealed key).

    ``hashes_checked``: the caller already checked both blobs against the manifest.

    Raises
    ------
    InvalidSubmission
        if the key does not match the signed commitment, a blob does not match its hash
        or does not decrypt, or the plaintext is not ``B`` canonical share vectors: the
        provider (who signed the manifest) is at fault.
    """
    F = flp.field
    job, prov, B = manifest.job, manifest.provider, manifest.batch
    if key_commit(job, prov, i, key).hex() != manifest.key_commits[i]:
        raise InvalidSubmission(
            f"released key {i} of provider {prov[:16]}… does not match its signed commitment: "
            "the provider wrote a different key than it committed to"
        )
    if not hashes_checked and (
        part_hash(meas_blob).hex() != manifest.meas_parts[i]
        or part_hash(proof_blob).hex() != manifest.proof_parts[i]
    ):
        raise InvalidSubmission(f"part {i} of provider {prov[:16]}… does not match its manifest")
    try:
        mplain = envelope.open_(key, meas_blob, _aad(b"meas", job, prov, i))
        pplain = envelope.open_(key, proof_blob, _aad(b"proof", job, prov, i))
        mlen = B * flp.MEAS_LEN * F.ENCODED_SIZE
        meas = F.decode(mplain[:mlen], (B, flp.MEAS_LEN))
        rho = F.decode(mplain[mlen:], (1,))
        proof = F.decode(pplain, (B, flp.PROOF_LEN))
    except (InvalidProof, EncodingError) as exc:
        raise InvalidSubmission(
            f"part {i} of provider {prov[:16]}… does not open to {B} share vectors: {exc}"
        ) from exc
    return PartShares(meas, proof, rho)
