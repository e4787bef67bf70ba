"""Aggregation committees registered on the ledger (policies name them, jobs use them).

An aggregation committee is ``n`` members, each with an Ed25519 key (``sign``: signs
round messages and receipts) and an X25519 key (``box``: receives sealed shares and,
mapped into the Ed25519 group, trustees' re-encrypted keys), and a Shamir degree ``t``
with ``n ≥ 3t + 1``; its receipt quorum is ``2t + 1``.

``committee.register`` — signed by *every* member (sender + cosigners). Payload::

    {"members": [{"sign": hex, "box": hex, "pok": hex}, ...], "t": int}

``pok`` is a Schnorr proof of knowledge of the group secret of ``box``
(:meth:`~kaires_fl.crypto.elgamal.RecipientKey.from_x25519`), bound to the chain, the
committee id and the member (:func:`member_pok`): nobody registers a key it cannot use,
or a key related to someone else's. The committee id is the hash of its members and t
(:func:`committee_id`), so an id cannot be squatted: registering it needs the signature
and proof of every member it names. Writes ``committee/<id>`` =
``{"members": [{"sign", "box"}, ...], "n": n, "t": t, "quorum": 2t + 1}``.

A provider's policy terms list the committee ids it accepts (``terms["committees"]``);
``job.create`` names one registered committee and the ledger fills the job's
aggregators, their keys, the degree and the receipt quorum from this registry.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from kaires_fl.crypto.elgamal import RecipientKey, recipient_point_from_x25519
from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.crypto.proofs import SchnorrProof, schnorr_prove, schnorr_verify
from kaires_fl.crypto.sign import H, Identity
from kaires_fl.errors import EncodingError, InvalidProof, LedgerError
from kaires_fl.ledger.contracts import TxEnv
from kaires_fl.ledger.encoding import canonical
from kaires_fl.ledger.state import StateView
from kaires_fl.ledger.tx import Tx

POK_CONTEXT = b"kaires/ledger/committee-member-pok"
_ID_TAG = b"kaires/ledger/committee-id"
_HEX32 = re.compile(r"^[0-9a-f]{64}$")
_HEX64B = re.compile(r"^[0-9a-f]{128}$")
#: Largest committee the registry accepts (bounds the tx and every job record).
MAX_MEMBERS = 256


def committee_key(cid: str) -> str:
    """State key of committee ``cid``."""
    return f"committee/{cid}"


def quorum_of(t: int) -> int:
    """Receipt quorum of a committee of degree ``t``: 2t + 1 (≥ n − t when n = 3t + 1)."""
    return 2 * t + 1


def committee_id(signs: Sequence[str], boxes: Sequence[str], t: int) -> str:
    """The id of the committee with members ``(signs[i], boxes[i])`` (hex) and degree ``t``.

    Post: a 64-hex-char id that depends on every key, their order and ``t``; anyone can
    recompute it from a committee description (e.g. a Flower provider at enrolment).
    """
    members = [{"box": b, "sign": s} for s, b in zip(signs, boxes, strict=True)]
    return H(_ID_TAG, canonical({"members": members, "t": int(t)})).hex()


def _pok_context(chain: str, cid: str, sign: str) -> bytes:
    return POK_CONTEXT + canonical({"chain": chain, "committee": cid, "member": sign})


def member_pok(chain: str, cid: str, sign: str, box: EnvelopeKeyPair) -> str:
    """Member ``sign``'s proof (hex) that it knows the group secret of its X25519 key ``box``.

    Bound to the ledger ``chain``, committee ``cid`` and the member's Ed25519 key, so it
    cannot be replayed for another committee, ledger or member.
    """
    rk = RecipientKey.from_x25519(box)
    return (
        schnorr_prove(rk.secret, _pok_context(chain, cid, sign), statement=rk.public)
        .to_bytes()
        .hex()
    )


def register_payload(
    chain: str, members: Sequence[tuple[Identity, EnvelopeKeyPair]], t: int
) -> dict[str, Any]:
    """``committee.register`` payload for ``members`` (each member's keys) and degree ``t``.

    Sign the tx with every member: ``client.sign(members[0][0], "committee.register",
    payload, cosigners=[m[0] for m in members[1:]])``. Members that hold their keys
    elsewhere compute their ``pok`` with :func:`member_pok` themselves.
    """
    signs = [i.public.hex() for i, _ in members]
    boxes = [k.public.hex() for _, k in members]
    cid = committee_id(signs, boxes, t)
    return {
        "members": [
            {"sign": s, "box": b, "pok": member_pok(chain, cid, s, k)}
            for s, b, (_, k) in zip(signs, boxes, members, strict=True)
        ],
        "t": t,
    }


def _check_register_payload(p: Any) -> tuple[list[str], list[str], list[str], int]:
    if not isinstance(p, dict) or set(p) != {"members", "t"}:
        raise LedgerError(
            "committee.register payload must be exactly {'members': [...], 't': int}; "
            "use register_payload()"
        )
    t, members = p["t"], p["members"]
    if not isinstance(t, int) or isinstance(t, bool) or t < 0:
        raise LedgerError(f"committee 't' must be an integer >= 0, got {t!r}")
    if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
        raise LedgerError(f"committee 'members' must be a list of 1..{MAX_MEMBERS} members")
    if len(members) < 3 * t + 1:
        raise LedgerError(
            f"a committee of {len(members)} members cannot have degree t = {t}: BFT "
            f"aggregation needs n >= 3t + 1 = {3 * t + 1}; add members or lower t"
        )
    signs, boxes, poks = [], [], []
    for m in members:
        if (
            not isinstance(m, dict)
            or set(m) != {"sign", "box", "pok"}
            or not all(isinstance(m[k], str) for k in m)
            or not _HEX32.match(m["sign"])
            or not _HEX32.match(m["box"])
            or not _HEX64B.match(m["pok"])
        ):
            raise LedgerError(
                "each committee member is {'sign': hex Ed25519 key, 'box': hex X25519 key, "
                "'pok': hex 64-byte proof}; use register_payload()"
            )
        signs.append(m["sign"])
        boxes.append(m["box"])
        poks.append(m["pok"])
    if len(set(signs)) != len(signs) or len(set(boxes)) != len(boxes):
        raise LedgerError("committee members must have distinct Ed25519 and X25519 keys")
    return signs, boxes, poks, t


def committee_register(view: StateView, tx: Tx, env: TxEnv) -> dict[str, Any]:
    """Contract ``committee.register`` (module docstring).

    Pre: ``tx`` signatures verified. Post: ``committee/<id>`` written, or LedgerError
    (not signed by every member, a proof that does not verify, n < 3t + 1, already
    registered).
    """
    signs, boxes, poks, t = _check_register_payload(tx.payload)
    missing = set(signs) - set(env.signers)
    if missing:
        raise LedgerError(
            f"committee.register must be signed by every member; {len(missing)} did not sign "
            f"(e.g. {sorted(missing)[0][:16]}…)"
        )
    cid = committee_id(signs, boxes, t)
    if view.get(committee_key(cid)) is not None:
        raise LedgerError(f"committee {cid[:16]}… is already registered")
    for s, b, pok in zip(signs, boxes, poks, strict=True):
        try:
            Y = recipient_point_from_x25519(bytes.fromhex(b))
            schnorr_verify(
                SchnorrProof.from_bytes(bytes.fromhex(pok)), Y, _pok_context(env.chain, cid, s)
            )
        except (EncodingError, InvalidProof) as exc:
            raise LedgerError(
                f"committee member {s[:16]}…: no valid proof of knowledge of the key of its "
                f"X25519 key ({exc}); compute it with member_pok()"
            ) from exc
    entry = {
        "members": [{"sign": s, "box": b} for s, b in zip(signs, boxes, strict=True)],
        "n": len(signs),
        "t": t,
        "quorum": quorum_of(t),
    }
    return {committee_key(cid): entry}


def get_committee(view: Any, cid: Any) -> dict[str, Any]:
    """The registered committee ``cid`` (``view`` has ``get``).

    Raises
    ------
    LedgerError
        if ``cid`` is not a committee id or no such committee is registered.
    """
    if not isinstance(cid, str) or not _HEX32.match(cid):
        raise LedgerError(f"committee id must be 64 hex characters, got {cid!r}")
    c = view.get(committee_key(cid))
    if c is None:
        raise LedgerError(
            f"committee {cid[:16]}… is not registered on the ledger: its members register it "
            "with committee.register first"
        )
    return c
