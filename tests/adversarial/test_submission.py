"""Adversarial tests of sealed submissions (issue 9, findings 6 and 9, and the cached-digest
suspicion): a provider signs what it likes with its own key; honest parties refuse it alone
with a typed error and the job goes on for everyone else."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pytest

from kaires_fl import schema
from kaires_fl.aggregation.submission import (
    MANIFEST_CONTEXT,
    SealedSubmission,
    manifest_signing_bytes,
    seal_parts,
    sign_manifest,
)
from kaires_fl.arith.circuits import SumVec
from kaires_fl.arith.flp import FlpBBCGGI19
from kaires_fl.crypto.sign import H, Identity, is_valid
from kaires_fl.errors import AccessDenied, EncodingError, InvalidSubmission
from kaires_fl.roles import provider as provider_mod
from kaires_fl.simulation import LocalCommittee
from kaires_fl.statistics import CountStats

ROWS = {f"p{i}": 10 + i for i in range(4)}
DATA = {k: (np.zeros((r, 2)), None) for k, r in ROWS.items()}
STAT = CountStats("provider", max_rows=100, max_measurements=16)
FLP = FlpBBCGGI19(SumVec(3, 4))


@pytest.fixture(scope="module")
def committee() -> Any:
    c = LocalCommittee()
    yield c
    c.close()


def _cheat(committee: Any, label: str, forge: Any) -> Any:
    """Make provider ``label`` run the attacker's code: it seals with its own keys, then
    ``forge(identity, measurements, submission) -> submission`` changes what it sends."""
    cheat = committee.provider(label)
    identity = cheat.identity

    def submit(ledger: Any, job: Any, statistic: Any, meas: np.ndarray, lts_id: str) -> Any:
        lts = ledger.get(provider_mod.lts_key(lts_id))
        policy = ledger.get(provider_mod.darc_key(cheat.policy_id))
        meas = forge.measurements(meas)
        tx, sub = provider_mod.seal_submission(
            identity,
            cheat.policy_id,
            job,
            provider_mod.flp_for(statistic),
            meas,
            lts_id=lts_id,
            lts_X=lts["X"],
            policy_version=int(policy["version"]),
            sign_write=lambda kind, payload: ledger.sign(identity, kind, payload),
        )
        return tx, forge.submission(identity, sub)

    cheat.submit = submit  # type: ignore[method-assign]
    return cheat


class _Inflate:
    def __init__(self, times: int) -> None:
        self.times = times

    def measurements(self, meas: np.ndarray) -> np.ndarray:
        return np.repeat(meas, self.times, axis=0)

    def submission(self, identity: Identity, sub: SealedSubmission) -> SealedSubmission:
        return sub


class _BadBatch:
    """Signs a manifest whose batch is ``value`` (built without the schema's constructor,
    as raw bytes would be; the signature is valid over its canonical encoding)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def measurements(self, meas: np.ndarray) -> np.ndarray:
        return meas

    def submission(self, identity: Identity, sub: SealedSubmission) -> SealedSubmission:
        m = msgspec.structs.replace(sub.manifest)
        msgspec.structs.force_setattr(m, "batch", self.value)
        sig = identity.sign(MANIFEST_CONTEXT, manifest_signing_bytes(m))
        assert is_valid(identity.public, MANIFEST_CONTEXT, manifest_signing_bytes(m), sig)
        forged = msgspec.structs.replace(sub, signature=sig)
        msgspec.structs.force_setattr(forged, "manifest", m)
        return forged


def _others_count(cheater: str) -> int:
    return sum(r for k, r in ROWS.items() if k != cheater)


def test_batch_inflation_in_provider_granularity_is_refused_alone(committee: Any) -> None:
    """Robustness: a provider's local statistic counts once (B = 1 in provider granularity).
    A provider that seals its count 50 times (each a valid count, with a valid proof) is
    refused alone, naming the batch and the limit; the others' count is exact."""
    _cheat(committee, "p3", _Inflate(50))
    try:
        r = committee.run_job(STAT, DATA)
    finally:
        del committee.provider("p3").submit
    assert r.report["status"] == "done"
    assert "p3" not in r.report["accepted"] and sorted(r.report["accepted"]) == ["p0", "p1", "p2"]
    assert "batch of 50" in r.report["rejected"]["p3"] and "1..1" in r.report["rejected"]["p3"]
    assert r.aggregate == {"count": _others_count("p3")}


@pytest.mark.parametrize("value", [-1, 0, 2**64 - 1, "3", 1.5])
def test_out_of_range_batch_in_a_signed_manifest_is_refused_and_the_job_goes_on(
    committee: Any, value: Any
) -> None:
    """Robustness: a validly signed manifest with batch −1, 0, 2^64 − 1 or a wrongly typed batch
    gets its provider refused with a typed error (no ValueError aborting the job); the
    others' aggregate is exact."""
    _cheat(committee, "p2", _BadBatch(value))
    try:
        r = committee.run_job(STAT, DATA)
    finally:
        del committee.provider("p2").submit
    assert r.report["status"] == "done"
    assert sorted(r.report["accepted"]) == ["p0", "p1", "p3"]
    assert "batch" in r.report["rejected"]["p2"]
    assert r.aggregate == {"count": _others_count("p2")}


def _sealed(batch: int = 2) -> tuple[Identity, SealedSubmission]:
    ident = Identity.generate()
    meas = FLP.valid.encode(np.random.default_rng(0).integers(0, 16, (batch, 3)))
    parts = seal_parts(FLP, meas, job="a" * 64, provider="p", circuit="c" * 64, n=4, t=1)
    return ident, sign_manifest(
        ident, parts, job="a" * 64, provider="p", circuit="c" * 64, write="b" * 64
    )


@pytest.mark.parametrize("value", [-1, 0, -(2**63), 2**64 - 1, "3", 1.5, True, None, [1]])
def test_signed_wire_bytes_with_a_bad_batch_decode_to_an_encoding_error(value: Any) -> None:
    """Robustness: the bytes a malicious provider sends (a manifest with batch = value,
    validly signed over exactly those bytes) are refused by the decoder with EncodingError,
    never another exception. (2^70 does not fit MessagePack; the JSON form of a manifest
    refuses it too: tests/aggregation/test_submission.py.)"""
    ident, sub = _sealed()
    raw = {"type": "Manifest", **sub.manifest.to_obj(), "batch": value}
    body = msgspec.msgpack.encode(raw)
    ctx = MANIFEST_CONTEXT
    sig = ident.sign(ctx, len(ctx).to_bytes(2, "little") + ctx + body)
    data = msgspec.msgpack.encode(
        {
            "type": "SealedSubmission",
            "manifest": msgspec.Raw(body),
            "signature": sig,
            "meas_parts": list(sub.meas_parts),
            "proof_parts": list(sub.proof_parts),
        }
    )
    with pytest.raises(EncodingError, match="batch"):
        SealedSubmission.from_bytes(data)
    # the same bytes with a good batch decode to a submission that passes every check
    good = msgspec.msgpack.encode({**raw, "batch": 2})
    sig = ident.sign(ctx, len(ctx).to_bytes(2, "little") + ctx + good)
    ok = SealedSubmission(
        schema.decode(good, type(sub.manifest)), sig, sub.meas_parts, sub.proof_parts
    )
    ok.check(4, max_batch=2)


def test_a_manifest_mutated_after_signing_no_longer_verifies_and_has_a_new_hash() -> None:
    """Fairness/robustness: the manifest hash the inputs record and the signature are both
    computed from the manifest's current fields; changing a field in place after signing
    (a relay holding the object) changes the hash and breaks the signature — no digest
    cached on the object survives the change."""
    _, sub = _sealed(batch=2)
    m = sub.manifest
    before = m.hash
    sub.check(4, max_batch=2)
    if isinstance(m, msgspec.Struct):
        msgspec.structs.force_setattr(m, "batch", 1)
    else:  # the old frozen dataclass
        object.__setattr__(m, "batch", 1)
    assert m.hash != before
    assert m.hash == H(MANIFEST_CONTEXT, schema.encode(m))
    with pytest.raises(InvalidSubmission, match="not signed"):
        sub.check(4)
    with pytest.raises(AttributeError):
        m.batch = 2  # type: ignore[misc]


def test_provider_deals_shares_only_to_a_registered_committee_its_policy_accepts(
    committee: Any,
) -> None:
    """Privacy: a provider seals its shares only for the committed job, only to the
    registered committee its own policy accepts, with that committee's n and t. A relay
    (coordinator) that hands it the job with its own aggregators and degree 0, or naming a
    committee the attacker registered itself, or a job whose committee the provider no
    longer accepts, gets AccessDenied before anything is written or sealed."""
    from kaires_fl.crypto.envelope import EnvelopeKeyPair
    from kaires_fl.ledger.committees import committee_id, register_payload
    from kaires_fl.ledger.jobs import job_key

    client = committee.client
    victim, other = committee.ensure_providers(["v", "p0"])
    consumer = committee.consumer
    payload = consumer.job_payload(
        STAT, [victim.policy_id, other.policy_id], committee.committee_id, min_providers=2
    )
    done = client.execute(consumer.identity, "job.create", payload)
    assert done.result.ok, done.result.reason
    job = client.get(job_key(done.tx_id))
    assert victim.policy_id in job["providers"]
    meas = victim.measure(STAT, np.zeros((5, 2)), None)

    def submit(j: Any) -> Any:
        return victim.submit(client, j, STAT, meas, committee.lts_id)

    # The attacker's own committee, registered on the ledger with keys it holds.
    members = [(Identity.generate(), EnvelopeKeyPair.generate()) for _ in range(4)]
    ids = [i for i, _ in members]
    payload = register_payload(client.chain, members, 1)
    client.execute(ids[0], "committee.register", payload, cosigners=ids[1:])
    c2 = committee_id([i.public.hex() for i in ids], [k.public.hex() for _, k in members], 1)
    mine = {
        "aggregators": [i.public.hex() for i in ids],
        "params": {**job["params"], "aggregator_keys": [k.public.hex() for _, k in members]},
    }
    relayed = [
        {**job, **mine, "params": {**mine["params"], "degree": 0}},  # its keys, degree 0
        {**job, **mine, "committee": c2},  # a registered committee the policy never named
        {**job, "params": {**job["params"], "degree": 0}},  # the right keys, degree 0
    ]
    for forged in relayed:
        with pytest.raises(AccessDenied, match="nothing sent"):
            submit(forged)
    # The relay cannot bypass the ledger either: the committee check alone refuses them.
    for forged in relayed:
        with pytest.raises(AccessDenied):
            provider_mod.check_job_committee(
                forged,
                client.get(provider_mod.darc_key(victim.policy_id)),
                client.get(provider_mod.committee_key(forged["committee"])),
            )
    # The provider drops the committee from its policy: the committed job is refused.
    cur = client.get(provider_mod.darc_key(victim.policy_id))
    client.execute(
        victim.identity,
        "darc.evolve",
        victim.policy_payload(
            [committee.consumer.public], committees=[], version=cur["version"] + 1
        ),
    )
    with pytest.raises(AccessDenied, match="does not accept"):
        submit(job)


def test_record_batches_cannot_take_the_job_past_its_measurement_budget(
    committee: Any,
) -> None:
    """Robustness/fairness: in record granularity each batch is within the row cap, but a
    provider inflating its batch must not take the job's total past what the statistic's
    field is sized for (the sums could wrap, or the consumer's decoding fail after everyone
    was paid). The largest batch is dropped; the others' count is exact."""
    stat = CountStats("record", max_measurements=64)
    rows = {"p0": 10, "p1": 11, "p2": 12, "p3": 12}
    data = {k: (np.zeros((r, 2)), None) for k, r in rows.items()}
    _cheat(committee, "p3", _Inflate(5))  # 60 valid records, each within max_batch = 64
    try:
        r = committee.run_job(stat, data)
    finally:
        del committee.provider("p3").submit
    assert r.report["status"] == "done"
    assert sorted(r.report["accepted"]) == ["p0", "p1", "p2"]
    assert "batch of 60" in r.report["rejected"]["p3"]
    assert r.aggregate == {"count": 33}


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("linear_regression", {"n_features": 10**7, "x_bounds": 1.0, "y_bounds": 1.0}),
        (
            "linear_regression",
            {"n_features": 3, "x_bounds": 1.0, "y_bounds": 1.0, "n_targets": 10**6},
        ),
        ("covariance", {"n_features": 10**7, "bounds": 1.0}),
        ("mean_variance", {"n_features": 10**9, "bounds": 1.0}),
        ("logistic_regression", {"n_features": 10**6, "n_classes": 2, "x_bounds": 1.0}),
    ],
)
def test_a_job_naming_huge_sizes_is_refused_before_any_allocation(kind, params):
    """Robustness (aggregators): a job's statistic parameters come from the ledger, written by
    any consumer; rebuilding the statistic must refuse sizes that would allocate O(d²) memory
    (np.triu_indices(10^7) is ~10^14 entries) with a ConfigError, at once."""
    import time

    from kaires_fl.errors import ConfigError
    from kaires_fl.statistics import from_params

    t0 = time.process_time()
    with pytest.raises(ConfigError, match="exceeds the limit"):
        from_params(kind, params)
    assert time.process_time() - t0 < 5.0
