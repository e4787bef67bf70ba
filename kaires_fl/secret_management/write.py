"""CALYPSO write: a provider encrypts fresh symmetric keys to the trustees' collective key.

One write carries one or more 32-byte keys, each for a *slot* naming its reader in a job:
``"aggregator:<i>"`` (aggregator i of the job, 0-based) or ``"consumer"``. Each key is a
threshold-ElGamal ciphertext under the collective key X (:mod:`kaires_fl.crypto.elgamal`)
whose write proof (a Schnorr proof of knowledge of the encryption randomness, CALYPSO's
write NIZK) hashes a *label* that binds it to

- the LTS (collective key) it is written to,
- the provider's policy id and the policy version in force when it was written,
- the job it is for (empty for an offline submission any later job may use),
- the slot.

So a ciphertext copied into another write — another policy, version, job or slot — fails
its proof, and the ledger's ``calypso.write`` contract refuses it
(:mod:`kaires_fl.secret_management.contracts`). The write's id is the id of the ledger
transaction that carries it (known before commit, so a manifest can name it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kaires_fl.crypto import elgamal
from kaires_fl.crypto.elgamal import Ciphertext
from kaires_fl.crypto.group import Point
from kaires_fl.crypto.sign import H
from kaires_fl.errors import EncodingError, InvalidProof

__all__ = [
    "WRITE_KIND",
    "WriteEntry",
    "aggregator_slot",
    "check_slot",
    "entry_U",
    "entry_ciphertext",
    "entry_label",
    "make_write",
    "verify_write",
    "write_label",
]

#: Ledger transaction kind of a write.
WRITE_KIND = "calypso.write"
_LABEL_TAG = b"kaires-fl/calypso/write-label/v1"
_SLOT = re.compile(r"^(consumer|aggregator:(0|[1-9][0-9]{0,5}))$")


def aggregator_slot(i: int) -> str:
    """The slot of aggregator ``i`` (0-based) of a job."""
    return f"aggregator:{i}"


def check_slot(slot: Any) -> str:
    """Return ``slot`` if it is ``"consumer"`` or ``"aggregator:<i>"``; EncodingError otherwise."""
    if not isinstance(slot, str) or not _SLOT.match(slot):
        raise EncodingError(
            f"key slot {slot!r} is not valid: use 'aggregator:<i>' (0-based) or 'consumer'"
        )
    return slot


def write_label(lts_id: str, policy: str, version: int, job: str, slot: str) -> bytes:
    """The label a written key's proof binds (see the module docstring)."""
    return H(
        _LABEL_TAG,
        lts_id.encode(),
        policy.encode(),
        version.to_bytes(8, "little"),
        job.encode(),
        slot.encode(),
    )


@dataclass(frozen=True)
class WriteEntry:
    """The payload of a ``calypso.write`` transaction (and, with its id, the ledger entry).

    ``keys`` maps each slot to its ciphertext; ``job`` is ``""`` for an offline write.
    """

    lts: str
    policy: str
    version: int
    job: str
    keys: tuple[tuple[str, Ciphertext], ...]

    def to_payload(self) -> dict[str, Any]:
        return {
            "lts": self.lts,
            "policy": self.policy,
            "version": self.version,
            "job": self.job,
            "keys": [[slot, ct.to_bytes().hex()] for slot, ct in self.keys],
        }

    @classmethod
    def from_payload(cls, p: Any, *, check_U: bool = True) -> WriteEntry:
        """Decode (and validate the shape of) a payload; raises EncodingError.

        ``check_U=False``: see :meth:`~kaires_fl.crypto.elgamal.Ciphertext.from_bytes`
        (the ledger, which runs :func:`verify_write` on the entry right away).
        """
        try:
            if set(p) != {"lts", "policy", "version", "job", "keys"}:
                raise EncodingError("a write has exactly lts, policy, version, job, keys")
            keys = []
            for slot, ct in p["keys"]:
                ciphertext = Ciphertext.from_bytes(bytes.fromhex(ct), check_U=check_U)
                keys.append((check_slot(slot), ciphertext))
            entry = cls(str(p["lts"]), str(p["policy"]), p["version"], str(p["job"]), tuple(keys))
        except (KeyError, TypeError, ValueError) as exc:
            raise EncodingError(f"malformed write payload: {exc}; use make_write") from exc
        if not isinstance(entry.version, int) or isinstance(entry.version, bool):
            raise EncodingError("write 'version' must be an integer policy version")
        if not entry.keys or len({s for s, _ in entry.keys}) != len(entry.keys):
            raise EncodingError("a write carries at least one key and each slot at most once")
        return entry

    def slot(self, slot: str) -> Ciphertext:
        """The ciphertext of ``slot``; EncodingError if the write has none."""
        for s, ct in self.keys:
            if s == slot:
                return ct
        raise EncodingError(f"the write has no key for slot {slot!r}")


def make_write(
    X: Point,
    lts_id: str,
    policy: str,
    version: int,
    job: str,
    slots: Sequence[str],
) -> tuple[WriteEntry, dict[str, bytes]]:
    """Provider step: fresh random keys for ``slots``, written to X.

    Returns the write (to submit as a ``calypso.write`` transaction signed by the
    provider) and the plaintext keys by slot (keep them to seal the parts).
    """
    if len(set(slots)) != len(slots) or not slots:
        raise EncodingError("make_write needs at least one slot and distinct slots")
    keys: list[tuple[str, Ciphertext]] = []
    plain: dict[str, bytes] = {}
    for slot in slots:
        check_slot(slot)
        ct, key = elgamal.encapsulate(X, write_label(lts_id, policy, version, job, slot))
        keys.append((slot, ct))
        plain[slot] = key
    return WriteEntry(lts_id, policy, version, job, tuple(keys)), plain


def entry_ciphertext(entry: Mapping[str, Any] | WriteEntry, slot: str) -> Ciphertext:
    """Decode only ``slot``'s ciphertext from a write's ledger entry (or payload).

    A decoded :class:`WriteEntry` is accepted too.

    Raises
    ------
    EncodingError
        if the write has no key for ``slot`` or it does not decode.
    """
    if isinstance(entry, WriteEntry):
        return entry.slot(slot)
    for s, ct in entry["keys"]:
        if s == slot:
            try:
                return Ciphertext.from_bytes(bytes.fromhex(ct))
            except (TypeError, ValueError) as exc:
                raise EncodingError(f"write ciphertext of slot {slot!r} is not hex") from exc
    raise EncodingError(f"the write has no key for slot {slot!r}")


def entry_U(
    entry: Mapping[str, Any] | WriteEntry, slot: str, *, subgroup_check: bool = True
) -> Point:
    """Only U of ``slot``'s ciphertext (all a trustee needs to re-encrypt).

    ``subgroup_check=False``: see :meth:`~kaires_fl.crypto.group.Point.from_bytes`.
    """
    if isinstance(entry, WriteEntry):
        return entry.slot(slot).U
    for s, ct in entry["keys"]:
        if s == slot:
            try:
                return Point.from_bytes(
                    bytes.fromhex(ct[:64]), allow_identity=False, subgroup_check=subgroup_check
                )
            except (TypeError, ValueError) as exc:
                raise EncodingError(f"write ciphertext of slot {slot!r} is not hex") from exc
    raise EncodingError(f"the write has no key for slot {slot!r}")


def entry_label(entry: Mapping[str, Any] | WriteEntry, slot: str) -> bytes:
    """The label of ``slot``'s key in a write's ledger entry (or payload, or WriteEntry)."""
    if isinstance(entry, WriteEntry):
        return write_label(entry.lts, entry.policy, entry.version, entry.job, slot)
    return write_label(entry["lts"], entry["policy"], entry["version"], entry["job"], slot)


def verify_write(entry: WriteEntry, X: Point) -> None:
    """Check every key's write proof against its label (the ledger does this on commit).

    Raises
    ------
    InvalidProof
        naming the slot whose ciphertext was altered or moved from another write.
    """
    for slot, ct in entry.keys:
        label = write_label(entry.lts, entry.policy, entry.version, entry.job, slot)
        try:
            elgamal.verify_ciphertext(ct, X, label)
        except InvalidProof as exc:
            raise InvalidProof(
                f"write proof of slot {slot!r} fails for policy {entry.policy!r} "
                f"v{entry.version}, job {entry.job[:16]!r}: the ciphertext was altered or "
                "copied from another policy, job or slot; the write is refused"
            ) from exc
