"""The secret-management cothority's ledger contracts (registered on import).

State entries (all values JSON, bytes as lowercase hex):

``calypso/lts/<id>`` — ``calypso.lts``: the trustees' collective key after a DKG::

    {"id", "n", "t", "X", "shares": [X_0 … X_{n-1}], "trustees": [Ed25519 key …],
     "transcript", "height"}

  The transaction must be co-signed by at least n − t of the listed trustees (each
  signs only if its own DKG ended with the same X and X_j) and by nobody else. If the
  genesis state holds a trustee registry ``calypso/trustees`` (a list of hex Ed25519
  keys), every listed trustee must be in it (also for ``calypso.lts.reshare``).

``calypso/write/<id>`` — ``calypso.write`` (:mod:`.write`): a provider's keys::

    {"lts", "policy", "version", "job", "keys": [[slot, ciphertext hex] …],
     "signers", "height"}

  Checked on commit: the LTS exists; the policy exists, its version is the current one
  and its signers satisfy its ``calypso.write`` rule (``_evolve`` if it has none); every
  write proof verifies for its label (so a ciphertext moved from another policy, job or
  slot is refused); for a job-bound write, the job is committed, names this LTS if it
  names one (``params["lts"]``), includes the policy and
  the write carries exactly one key per aggregator slot of the job (and optionally
  ``consumer``).

``calypso/inputs/<job>`` — ``calypso.inputs``: inputs closed (protocol step 3)::

    {"job", "manifests": [hex …], "writes": [write id …], "root", "height"}

  Signed by the job's consumer, or co-signed by at least :func:`inputs_quorum` (2t + 1)
  of its aggregators, once per job; one manifest per write, both distinct; every write
  usable by the job (:func:`check_write_for_job`, which requires a key for every
  aggregator slot); every write under one LTS (the one the job names in
  ``params["lts"]``, if it names one: a single write under another LTS would make every
  aggregator's batched read fail); an offline write (job ``""``) in the inputs of one job
  only (``calypso/used/<write>`` = that job: its slot keys go to whichever committee reads
  them); only the consumer may close an empty set. ``root`` is :func:`inputs_root` (the
  coin is evaluated on it).

``calypso/read/<id>`` — ``calypso.read``: a reader's request for keys, the record of the
release (nothing is released without it)::

    {"lts", "job", "slot", "recipient", "writes": [write id …], "pok", "reader", "height"}

  Signed by the reader the job names for ``slot`` (aggregator i's Ed25519 key, or the
  consumer); ``recipient`` must be the X25519 key the job names for that reader and
  ``pok`` the reader's proof of knowledge of the derived group key, bound to the LTS, job,
  slot, key and writes (:func:`.release.prove_reader_key`); the checks of
  :func:`check_read` must pass (the trustees repeat them on their own).

Reader keys: the consumer's is the job's ``consumer_key``; aggregator i's is
``job["params"]["aggregator_keys"][i]`` (X25519, hex) — the job must name them there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from kaires_fl.crypto.group import Point
from kaires_fl.crypto.sign import H
from kaires_fl.crypto.vss import recover_public
from kaires_fl.errors import AccessDenied, EncodingError, InvalidProof, LedgerError
from kaires_fl.ledger.contracts import TxEnv, register_contract
from kaires_fl.ledger.darc import check_rule, darc_key
from kaires_fl.ledger.encoding import hex_bytes
from kaires_fl.ledger.jobs import job_key
from kaires_fl.ledger.state import StateView
from kaires_fl.ledger.tx import Tx
from kaires_fl.secret_management.write import WRITE_KIND, WriteEntry, check_slot, verify_write

__all__ = [
    "INPUTS_KIND",
    "LTS_KIND",
    "READ_KIND",
    "RESHARE_KIND",
    "TRUSTEE_REGISTRY_KEY",
    "WRITE_KIND",
    "check_read",
    "inputs_key",
    "inputs_root",
    "job_reader",
    "lts_key",
    "read_key",
    "write_key",
    "write_use_key",
]

LTS_KIND = "calypso.lts"
RESHARE_KIND = "calypso.lts.reshare"
INPUTS_KIND = "calypso.inputs"
READ_KIND = "calypso.read"
_HEX32 = re.compile(r"^[0-9a-f]{64}$")


#: Optional state entry (set in the genesis block): the Ed25519 keys allowed as trustees.
TRUSTEE_REGISTRY_KEY = "calypso/trustees"


def _check_registry(view: StateView, trustees: Sequence[str], kind: str) -> None:
    reg = view.get(TRUSTEE_REGISTRY_KEY)
    if reg is None:
        return
    outside = [k[:16] for k in trustees if k not in set(reg)]
    if outside:
        raise LedgerError(
            f"{kind}: trustees {outside} are not in the trustee registry "
            f"({TRUSTEE_REGISTRY_KEY}); only registered trustees may hold an LTS"
        )


def lts_key(lts_id: str) -> str:
    return f"calypso/lts/{lts_id}"


def write_key(write_id: str) -> str:
    return f"calypso/write/{write_id}"


def inputs_key(job_id: str) -> str:
    return f"calypso/inputs/{job_id}"


def read_key(read_id: str) -> str:
    return f"calypso/read/{read_id}"


def write_use_key(write_id: str) -> str:
    """State key recording the one job whose inputs hold offline write ``write_id``."""
    return f"calypso/used/{write_id}"


def inputs_root(job_id: str, manifests: Sequence[str], writes: Sequence[str]) -> str:
    """Hex digest fixing a job's submission set (order-independent)."""
    return H(
        b"kaires-fl/calypso/inputs-root/v1",
        job_id.encode(),
        *(bytes.fromhex(m) for m in sorted(manifests)),
        b"|",
        *(w.encode() for w in sorted(writes)),
    ).hex()


def _point(value: Any, what: str) -> Point:
    return Point.from_bytes(hex_bytes(value, 32, what), allow_identity=False)


def job_reader(job: Mapping[str, Any], slot: str) -> tuple[str, str]:
    """(Ed25519 signer, X25519 recipient key) the job names for ``slot`` (both hex).

    Raises
    ------
    AccessDenied
        if the job has no such reader or names no key for it.
    """
    check_slot(slot)
    if slot == "consumer":
        return job["consumer"], job["consumer_key"]
    i = int(slot.split(":")[1])
    aggs = job["aggregators"]
    keys = (job.get("params") or {}).get("aggregator_keys")
    if i >= len(aggs):
        raise AccessDenied(
            f"job {job['id'][:16]}… has {len(aggs)} aggregators, there is no slot {slot!r}"
        )
    if not isinstance(keys, list) or len(keys) != len(aggs) or not isinstance(keys[i], str):
        raise AccessDenied(
            f"job {job['id'][:16]}… names no X25519 key for {slot!r}: the consumer must put "
            "params['aggregator_keys'] (one hex key per aggregator) in the job"
        )
    return aggs[i], keys[i]


# --- checks shared by the contracts and the trustees ---------------------------------------


def job_lts(job: Mapping[str, Any]) -> str | None:
    """The LTS id the job names in ``params["lts"]`` (None if it names none)."""
    lts = (job.get("params") or {}).get("lts")
    return lts if isinstance(lts, str) else None


def job_slots(job: Mapping[str, Any]) -> set[str]:
    """The aggregator slots a write for ``job`` must cover: one per aggregator."""
    return {f"aggregator:{i}" for i in range(len(job["aggregators"]))}


def check_write_slots(write_id: str, slots: Sequence[str], job: Mapping[str, Any]) -> None:
    """Raise AccessDenied unless a write's ``slots`` cover every aggregator of ``job``.

    Exactly the job's aggregator slots, each once, plus optionally ``"consumer"``: a write
    missing a slot would have that aggregator's (batched) read refused and the aggregator
    blamed; one with a slot beyond the job's aggregators names a reader that does not
    exist.
    """
    need = job_slots(job)
    have = list(slots)
    missing = sorted(need - set(have))
    extra = sorted(set(have) - need - {"consumer"})
    if missing or extra or len(set(have)) != len(have):
        raise AccessDenied(
            f"write {write_id[:16]}… must carry one key for each of the job's "
            f"{len(need)} aggregators (and optionally the consumer): missing {missing}, "
            f"unknown {extra}; write again for every slot"
        )


def check_write_for_job(
    write_id: str, write: Mapping[str, Any], job: Mapping[str, Any], slot: str | None, lts_id: str
) -> None:
    """Raise AccessDenied unless ``job`` may read ``slot`` of ``write`` (see :func:`check_read`).

    ``slot=None`` checks the write as a whole (used when the inputs are closed). Either way
    the write must cover every slot of the job (:func:`check_write_slots`).
    """
    w = write_id[:16]
    if write["lts"] != lts_id:
        raise AccessDenied(f"write {w}… is under LTS {write['lts'][:16]}…, not {lts_id[:16]}…")
    named = job_lts(job)
    if named is not None and write["lts"] != named:
        raise AccessDenied(
            f"write {w}… is under LTS {write['lts'][:16]}…, job {job['id'][:16]}… names LTS "
            f"{named[:16]}…"
        )
    if write["job"] not in ("", job["id"]):
        raise AccessDenied(
            f"write {w}… was made for job {write['job'][:16]}…, not for job {job['id'][:16]}…"
        )
    policy = write["policy"]
    if policy not in job["providers"]:
        why = job.get("excluded", {}).get(policy, "it was not named")
        raise AccessDenied(
            f"write {w}… belongs to provider {policy!r}, which job {job['id'][:16]}… does not "
            f"include ({why}); no key is released for it"
        )
    allowed = job["escrow"][policy]["version"]
    if write["version"] > allowed:
        raise AccessDenied(
            f"write {w}… was made under policy {policy!r} v{write['version']}, after job "
            f"{job['id'][:16]}… was authorised under v{allowed} (a policy change, e.g. a "
            "revocation, came in between); commit a new job"
        )
    slots = [s for s, _ in write["keys"]]
    if slot is not None and slot not in slots:
        raise AccessDenied(f"write {w}… has no key for slot {slot!r}")
    check_write_slots(write_id, slots, job)


def check_read(
    read: Mapping[str, Any],
    job: Mapping[str, Any] | None,
    inputs: Mapping[str, Any] | None,
    writes: Mapping[str, Mapping[str, Any] | None],
    lts_id: str,
    signers: Sequence[str],
) -> Point:
    """Every condition for releasing the keys of ``read`` (used on commit and by trustees).

    ``job``, ``inputs`` and ``writes[id]`` are the ledger entries (None if absent);
    ``signers`` are the keys that count as the read's signer: its sender only (the
    ``reader`` its entry records), on commit and at the trustees alike.

    Raises
    ------
    AccessDenied
        naming the first condition that fails: job not committed, inputs not closed,
        reader or recipient key not the job's, a write not in the job's inputs, not under
        this LTS, for another job, of a provider the job does not include, made under a
        later policy version than the job was authorised under or not covering every slot
        of the job — or the read's proof of knowledge of its recipient key fails
        (:func:`.release.verify_reader_key`).

    Returns
    -------
    Point
        the recipient's group key Y, whose knowledge the read proved.
    """
    if job is None:
        raise AccessDenied(
            f"job {str(read['job'])[:16]}… is not committed on the ledger: commit the job "
            "first (no logged access, no key)"
        )
    if job["status"] != "committed":
        raise AccessDenied(f"job {job['id'][:16]}… is {job['status']}: keys are no longer released")
    if inputs is None:
        raise AccessDenied(
            f"the inputs of job {job['id'][:16]}… are not closed yet: wait for the "
            "calypso.inputs transaction"
        )
    slot = check_slot(read["slot"])
    signer, key = job_reader(job, slot)
    if signer not in signers:
        raise AccessDenied(
            f"the read for {slot!r} of job {job['id'][:16]}… is not signed by that reader "
            f"({signer[:16]}…)"
        )
    if read["recipient"] != key:
        raise AccessDenied(
            f"recipient key {str(read['recipient'])[:16]}… is not the key job "
            f"{job['id'][:16]}… names for {slot!r} ({key[:16]}…): keys are only released to it"
        )
    in_job = set(inputs["writes"])
    if not read["writes"]:
        raise AccessDenied("the read names no write")
    for wid in read["writes"]:
        if wid not in in_job:
            raise AccessDenied(
                f"write {str(wid)[:16]}… is not among the closed inputs of job {job['id'][:16]}…"
            )
        w = writes.get(wid)
        if w is None:
            raise AccessDenied(f"write {str(wid)[:16]}… is not on the ledger")
        check_write_for_job(wid, w, job, slot, lts_id)
    if read.get("lts") != lts_id:
        raise AccessDenied(f"the read is for LTS {str(read.get('lts'))[:16]}…, not {lts_id[:16]}…")
    from kaires_fl.secret_management.release import verify_reader_key

    return verify_reader_key(read)


# --- contracts -----------------------------------------------------------------------------


def inputs_quorum(job: Mapping[str, Any]) -> int:
    """Aggregator signatures that may close ``job``'s inputs without its consumer: 2t + 1.

    t = ⌊(n − 1)/3⌋, the most faults n aggregators tolerate (n ≥ 3t + 1), whatever the
    job's parameters say, so a consumer's choice cannot lower it.
    """
    n = len(job["aggregators"])
    t = (n - 1) // 3
    return min(n, 2 * t + 1)


def _check_key_lists(p: Mapping[str, Any], n: int, kind: str) -> None:
    """Raise LedgerError unless ``p["shares"]`` and ``p["trustees"]`` are lists of n hex
    strings (64 characters; the trustee keys distinct)."""
    for field_ in ("shares", "trustees"):
        v = p[field_]
        if (
            not isinstance(v, list)
            or len(v) != n
            or not all(isinstance(k, str) and _HEX32.match(k) for k in v)
        ):
            raise LedgerError(
                f"{kind}: {field_!r} must list one 64-hex-character value per trustee (n = {n})"
            )
    if len(set(p["trustees"])) != n:
        raise LedgerError(f"{kind}: one distinct trustee key per trustee")


def lts_create(view: StateView, tx: Tx, env: TxEnv) -> dict[str, Any]:
    p = tx.payload
    need = {"n", "t", "X", "shares", "trustees", "transcript"}
    if not isinstance(p, dict) or set(p) != need:
        raise LedgerError(f"calypso.lts payload needs exactly {sorted(need)}; use lts_payload()")
    n, t = p["n"], p["t"]
    if not isinstance(n, int) or not isinstance(t, int) or t < 0 or n < 2 * t + 1:
        raise LedgerError(f"calypso.lts: need n >= 2t + 1, got n={n!r}, t={t!r}")
    _check_key_lists(p, n, LTS_KIND)
    _point(p["X"], "collective key X")
    for s in p["shares"]:
        _point(s, "public share")
    for k in p["trustees"]:
        if not isinstance(k, str) or not _HEX32.match(k):
            raise LedgerError("calypso.lts: trustee keys are hex Ed25519 keys")
    _check_registry(view, p["trustees"], LTS_KIND)
    signers = set(env.signers)
    if not signers <= set(p["trustees"]) or len(signers) < n - t:
        raise LedgerError(
            f"calypso.lts must be co-signed by at least n - t = {n - t} of its trustees and "
            f"nobody else (got {len(signers & set(p['trustees']))} trustee signatures)"
        )
    entry = {**p, "id": env.tx_id, "height": env.height}
    return {lts_key(env.tx_id): entry}


def lts_reshare(view: StateView, tx: Tx, env: TxEnv) -> dict[str, Any]:
    p = tx.payload
    need = {"id", "n", "t", "shares", "trustees", "transcript"}
    if not isinstance(p, dict) or set(p) != need:
        raise LedgerError(f"calypso.lts.reshare payload needs exactly {sorted(need)}")
    if not isinstance(p["id"], str) or not _HEX32.match(p["id"]):
        raise LedgerError("calypso.lts.reshare: 'id' is an LTS id (64 lowercase hex characters)")
    old = view.get(lts_key(p["id"]))
    if old is None:
        raise LedgerError(f"calypso.lts.reshare: LTS {str(p['id'])[:16]}… is not on the ledger")
    n, t = p["n"], p["t"]
    if not isinstance(n, int) or not isinstance(t, int) or t < 0 or n < 2 * t + 1:
        raise LedgerError(f"calypso.lts.reshare: need n >= 2t + 1, got n={n!r}, t={t!r}")
    _check_key_lists(p, n, RESHARE_KIND)
    for k in p["trustees"]:
        if not isinstance(k, str) or not _HEX32.match(k):
            raise LedgerError("calypso.lts.reshare: trustee keys are hex Ed25519 keys")
    _check_registry(view, p["trustees"], RESHARE_KIND)
    shares = {i: _point(s, "public share") for i, s in enumerate(p["shares"])}
    X = _point(old["X"], "collective key X")
    # the new public shares must lie on one degree-t polynomial whose constant term is X
    base = list(range(t + 1))
    if recover_public({i: shares[i] for i in base}, t) != X:
        raise LedgerError("calypso.lts.reshare: the new public shares do not interpolate to X")
    for extra in range(t + 1, n):
        pts = {i: shares[i] for i in base[1:]} | {extra: shares[extra]}
        if recover_public(pts, t) != X:
            raise LedgerError(
                f"calypso.lts.reshare: public share {extra} is not on the new polynomial"
            )
    signers = set(env.signers)
    old_ok = len(signers & set(old["trustees"]))
    new_ok = len(signers & set(p["trustees"]))
    if not signers <= set(old["trustees"]) | set(p["trustees"]):
        raise LedgerError("calypso.lts.reshare: signed by someone who is no trustee")
    if old_ok < old["n"] - old["t"] or new_ok < n - t:
        raise LedgerError(
            f"calypso.lts.reshare needs >= {old['n'] - old['t']} old and >= {n - t} new "
            f"trustee signatures, got {old_ok} and {new_ok}"
        )
    entry = {
        **old,
        "n": n,
        "t": t,
        "shares": p["shares"],
        "trustees": p["trustees"],
        "transcript": p["transcript"],
        "epoch": int(old.get("epoch", 0)) + 1,
        "height": env.height,
    }
    return {lts_key(p["id"]): entry}


def write_create(view: StateView, tx: Tx, env: TxEnv) -> dict[str, Any]:
    # U's subgroup check happens in verify_write below (its scalar multiplication of U).
    entry = WriteEntry.from_payload(tx.payload, check_U=False)
    lts = view.get(lts_key(entry.lts))
    if lts is None:
        raise LedgerError(f"calypso.write: LTS {entry.lts[:16]}… is not on the ledger")
    d = view.get(darc_key(entry.policy))
    if d is None:
        raise LedgerError(f"calypso.write: policy {entry.policy!r} does not exist")
    action = "calypso.write" if "calypso.write" in d["rules"] else "_evolve"
    check_rule(view, entry.policy, action, env.signers)
    if d.get("terms") is None:
        raise LedgerError(f"calypso.write: policy {entry.policy!r} is not a data policy")
    if entry.version != d["version"]:
        raise LedgerError(
            f"calypso.write: written under policy {entry.policy!r} v{entry.version}, but the "
            f"current version is v{d['version']}; write again under it"
        )
    if entry.job:
        job = view.get(job_key(entry.job))
        if job is None or job["status"] != "committed":
            raise LedgerError(f"calypso.write: job {entry.job[:16]}… is not committed")
        if entry.policy not in job["providers"]:
            raise LedgerError(
                f"calypso.write: job {entry.job[:16]}… does not include provider {entry.policy!r}"
            )
        named = job_lts(job)
        if named is not None and entry.lts != named:
            raise LedgerError(
                f"calypso.write: job {entry.job[:16]}… names LTS {named[:16]}…, the write is "
                f"under {entry.lts[:16]}…"
            )
        try:
            check_write_slots(env.tx_id, [slot for slot, _ in entry.keys], job)
        except AccessDenied as exc:
            raise LedgerError(f"calypso.write: {exc}") from exc
    try:
        verify_write(entry, _point(lts["X"], "collective key"))
    except InvalidProof as exc:
        raise LedgerError(f"calypso.write refused: {exc}") from exc
    return {
        write_key(env.tx_id): {
            **entry.to_payload(),
            "signers": list(env.signers),
            "height": env.height,
        }
    }


def inputs_close(view: StateView, tx: Tx, env: TxEnv) -> dict[str, Any]:
    p = tx.payload
    if not isinstance(p, dict) or set(p) != {"job", "manifests", "writes"}:
        raise LedgerError("calypso.inputs payload needs exactly job, manifests, writes")
    if not isinstance(p["job"], str) or not _HEX32.match(p["job"]):
        raise LedgerError("calypso.inputs: 'job' is a job id (64 lowercase hex characters)")
    job = view.get(job_key(p["job"]))
    if job is None or job["status"] != "committed":
        raise LedgerError(f"calypso.inputs: job {str(p['job'])[:16]}… is not committed")
    if view.get(inputs_key(p["job"])) is not None:
        raise LedgerError(f"calypso.inputs: the inputs of job {p['job'][:16]}… are already closed")
    by_consumer = job["consumer"] in env.signers
    aggs = set(job["aggregators"])
    quorum = inputs_quorum(job)
    co_signed = len(aggs & set(env.signers))
    if not by_consumer and co_signed < quorum:
        raise LedgerError(
            f"calypso.inputs must be signed by the job's consumer, or co-signed by at least "
            f"{quorum} of its {len(aggs)} aggregators (2t + 1); got {co_signed}"
        )
    mans, writes = p["manifests"], p["writes"]
    if (
        not isinstance(mans, list)
        or not isinstance(writes, list)
        or not all(isinstance(x, str) and _HEX32.match(x) for x in mans + writes)
    ):
        raise LedgerError(
            "calypso.inputs: manifests and writes are lists of hashes and write ids (64 "
            "lowercase hex characters each)"
        )
    if len(mans) != len(writes):
        raise LedgerError(
            f"calypso.inputs: one manifest per write ({len(mans)} manifests, {len(writes)} writes)"
        )
    if not writes and not by_consumer:
        raise LedgerError(
            "calypso.inputs: an empty submission set can only be closed by the consumer (to "
            "end its job with a refund)"
        )
    for m in mans:
        hex_bytes(m, 32, "manifest hash")
    if len(set(writes)) != len(writes) or len(set(mans)) != len(mans):
        raise LedgerError("calypso.inputs: manifests and writes must be distinct")
    claims: dict[str, Any] = {}
    by_lts: dict[str, list[str]] = {}
    for w in writes:
        entry = view.get(write_key(w)) if isinstance(w, str) and _HEX32.match(w) else None
        if entry is None:
            raise LedgerError(f"calypso.inputs: write {str(w)[:16]}… is not on the ledger")
        try:
            check_write_for_job(w, entry, job, None, entry["lts"])
        except AccessDenied as exc:
            raise LedgerError(f"calypso.inputs: write {w[:16]}… is not usable: {exc}") from exc
        if entry["job"] == "":
            claims[write_use_key(w)] = _claim_offline_write(view, w, job["id"])
        by_lts.setdefault(entry["lts"], []).append(w)
    if len(by_lts) > 1:
        odd = sorted(by_lts.items(), key=lambda kv: (len(kv[1]), kv[0]))[0]
        raise LedgerError(
            f"calypso.inputs: the writes are under {len(by_lts)} LTSs (e.g. {odd[1][0][:16]}… "
            f"under {odd[0][:16]}…): every reader reads the whole set under one LTS, so one "
            "write under another would make every aggregator's read fail; leave it out"
        )
    return {
        **claims,
        inputs_key(p["job"]): {
            "job": p["job"],
            "manifests": sorted(mans),
            "writes": sorted(writes),
            "root": inputs_root(p["job"], mans, writes),
            "height": env.height,
        },
    }


def _claim_offline_write(view: StateView, write_id: str, job_id: str) -> str:
    """The ``calypso/used/<write>`` value for an offline write entering ``job_id``'s inputs.

    An offline write's key for slot i is released to aggregator i of whichever job's
    inputs hold it; were it usable by several jobs (under different committees the
    policy accepts), the faulty aggregators of each would together hold more than t
    shares of the one submission it seals. So it enters the inputs of one job only.

    Raises
    ------
    LedgerError
        if the write is already in another job's closed inputs.
    """
    used = view.get(write_use_key(write_id))
    if used is not None and used != job_id:
        raise LedgerError(
            f"calypso.inputs: offline write {write_id[:16]}… is already used by job "
            f"{str(used)[:16]}…: a write's keys go to one job's aggregators only; the "
            "provider writes again for this job"
        )
    return job_id


def read_create(view: StateView, tx: Tx, env: TxEnv) -> dict[str, Any]:
    p = tx.payload
    if not isinstance(p, dict) or set(p) != {"job", "slot", "recipient", "writes", "lts", "pok"}:
        raise LedgerError(
            "calypso.read payload needs exactly job, slot, recipient, writes, lts, pok (the "
            "reader's proof of knowledge of its key); use read_payload()"
        )
    if (
        not isinstance(p["writes"], list)
        or not all(isinstance(w, str) and _HEX32.match(w) for w in p["writes"])
        or len(set(p["writes"])) != len(p["writes"])
    ):
        raise LedgerError("calypso.read: 'writes' is a list of distinct write ids")
    for k in ("job", "lts", "recipient"):
        if not isinstance(p[k], str) or not _HEX32.match(p[k]):
            raise LedgerError(f"calypso.read: {k!r} is 64 lowercase hex characters")
    if view.get(lts_key(p["lts"])) is None:
        raise LedgerError(f"calypso.read: LTS {str(p['lts'])[:16]}… is not on the ledger")
    job = view.get(job_key(p["job"]))
    writes = {w: view.get(write_key(w)) for w in p["writes"]}
    try:
        # Only the sender counts as reader: it is what the entry records and what the
        # trustees re-check, so a read the ledger accepts is one they will release.
        check_read(p, job, view.get(inputs_key(p["job"])), writes, p["lts"], env.signers[:1])
    except (AccessDenied, EncodingError) as exc:
        raise LedgerError(f"calypso.read refused: {exc}") from exc
    return {read_key(env.tx_id): {**p, "reader": env.signers[0], "height": env.height}}


for _kind, _contract in (
    (LTS_KIND, lts_create),
    (RESHARE_KIND, lts_reshare),
    (WRITE_KIND, write_create),
    (INPUTS_KIND, inputs_close),
    (READ_KIND, read_create),
):
    register_contract(_kind, _contract)
