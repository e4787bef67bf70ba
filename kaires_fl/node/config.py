"""A node's key files and a committee's group file: formats, writing, loading, validation.

A node directory (one operator, one identity) holds:

- ``private.toml`` (mode 0600): ``ed25519_seed`` and ``x25519_seed``, 32 bytes each in hex.
  The Ed25519 key signs ledger votes, transactions, round messages and receipts; the
  X25519 key receives sealed shares (DKG, providers) and, mapped into the Ed25519 group,
  trustees' re-encrypted keys.
- ``public.toml``: ``name``, ``address`` (``HOST:PORT``), ``sign`` (Ed25519 public key),
  ``box`` (X25519 public key), ``roles`` ⊆ {ledger, trustee, aggregator}, ``pok`` (with the
  aggregator role: a Schnorr proof of knowledge of the group secret of ``box``, bound to
  ``sign`` and ``box`` — what ``committee.register`` checks on the ledger, see
  :mod:`kaires_fl.ledger.committees`) and ``signature`` (Ed25519 over everything else, so a
  public file altered in transit — another address, another box key — is refused).
- ``dkg-share.toml`` (mode 0600, trustees only): the DKG outcome, written once the DKG
  completes (:func:`save_share`), reloaded by a restarted node (:func:`load_share`).

``group.toml`` (one per committee, identical at every node): ``[group]`` with ``name``,
``threshold`` (the aggregators' Shamir degree t, n_aggregators ≥ 3t + 1),
``trustee_threshold`` (n_trustees ≥ 2t + 1), ``registration`` (providers and consumers
must be admitted by the roster) and ``id`` (the hash of the canonical content: any edit
is detected), then one ``[[node]]`` table per node — its public entry, in order. The
order fixes every index: ledger node i, trustee j and aggregator k are the i-th, j-th and
k-th nodes having that role, with addresses ``ledger-<i>``, ``trustee-<j>``,
``aggregator-<k>``.

Every loader raises :class:`~kaires_fl.errors.ConfigError` with one line: what is wrong,
in which file, what to do.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from kaires_fl.crypto.elgamal import RecipientKey, recipient_point_from_x25519
from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.crypto.group import Point, Scalar
from kaires_fl.crypto.proofs import SchnorrProof, schnorr_prove, schnorr_verify
from kaires_fl.crypto.sign import H, Identity, is_valid
from kaires_fl.errors import ConfigError, EncodingError, InvalidProof
from kaires_fl.ledger.encoding import canonical

__all__ = [
    "PRIVATE_FILE",
    "PUBLIC_FILE",
    "ROLES",
    "SHARE_FILE",
    "Group",
    "NodeKeys",
    "PublicEntry",
    "load_group",
    "load_keys",
    "load_node",
    "load_public",
    "load_share",
    "make_group",
    "parse_address",
    "parse_roles",
    "save_share",
    "setup_node",
    "write_group",
]

PRIVATE_FILE = "private.toml"
PUBLIC_FILE = "public.toml"
SHARE_FILE = "dkg-share.toml"
ROLES = ("ledger", "trustee", "aggregator")
_POK_CONTEXT = b"kaires/node/box-pok"
_ENTRY_CONTEXT = b"kaires/node/public-entry"
_GROUP_TAG = b"kaires/node/group-id"
_ENTRY_FIELDS = frozenset({"name", "address", "sign", "box", "roles", "pok", "signature"})
_GROUP_FIELDS = frozenset({"name", "threshold", "trustee_threshold", "registration", "id"})


# --- small helpers ---------------------------------------------------------------------------


def _hex(value: Any, nbytes: int, what: str, source: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * nbytes:
        raise ConfigError(f"{source}: {what} must be {2 * nbytes} hex characters; regenerate it")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"{source}: {what} is not hex; regenerate it") from None


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found; {_HINT.get(what, 'check the path')}")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML ({exc}); fix or regenerate the file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror}); check it") from None


_HINT = {
    "key file": "run `kaires node setup --dir DIR --address HOST:PORT` first",
    "public file": "run `kaires node setup` for this node, or copy its public.toml here",
    "group file": "make it with `kaires group PUBLIC.toml... --out group.toml`",
}


def _write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (never readable by others, even for an instant)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def _check_private_mode(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{path}: secret file is accessible by others (mode {mode:04o}); run `chmod 600 {path}`"
        )


def parse_address(address: Any, source: str = "address") -> tuple[str, int]:
    """``HOST:PORT`` → (host, port). Raises ConfigError unless 1 ≤ port ≤ 65535."""
    if not isinstance(address, str) or ":" not in address:
        raise ConfigError(f"{source}: address {address!r} must be HOST:PORT (e.g. 127.0.0.1:7770)")
    host, _, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(
            f"{source}: address {address!r} must be HOST:PORT with a port in 1..65535"
        )
    return host, int(port)


def parse_roles(roles: Any, source: str = "roles") -> tuple[str, ...]:
    """Roles as a tuple in canonical order; a comma-separated string or a list."""
    items = roles.split(",") if isinstance(roles, str) else roles
    if not isinstance(items, list | tuple) or not all(isinstance(r, str) for r in items):
        raise ConfigError(f"{source}: roles must be a list of {ROLES}")
    got = {r.strip() for r in items if r.strip()}
    unknown = sorted(got - set(ROLES))
    if unknown or not got:
        raise ConfigError(
            f"{source}: roles {sorted(got) or '[]'} must be a non-empty subset of {list(ROLES)}"
        )
    return tuple(r for r in ROLES if r in got)


# --- keys and public entries -----------------------------------------------------------------


@dataclass(frozen=True)
class NodeKeys:
    """A node's secret keys (from ``private.toml``)."""

    identity: Identity
    box: EnvelopeKeyPair

    @classmethod
    def from_seeds(cls, ed25519_seed: bytes, x25519_seed: bytes) -> NodeKeys:
        return cls(Identity.from_seed(ed25519_seed), EnvelopeKeyPair.from_seed(x25519_seed))


def _pok_context(sign: str, box: str) -> bytes:
    return _POK_CONTEXT + canonical({"box": box, "sign": sign})


def box_pok(keys: NodeKeys) -> str:
    """Proof (hex) that the holder of ``keys.identity`` knows the group secret of its X25519
    key (bound to both public keys: it cannot be replayed for another member or key)."""
    rk = RecipientKey.from_x25519(keys.box)
    ctx = _pok_context(keys.identity.public.hex(), keys.box.public.hex())
    return schnorr_prove(rk.secret, ctx, statement=rk.public).to_bytes().hex()


@dataclass(frozen=True)
class PublicEntry:
    """One node's public description (``public.toml``; one ``[[node]]`` of a group)."""

    name: str
    address: str
    sign: str
    box: str
    roles: tuple[str, ...]
    pok: str
    signature: str

    def to_obj(self, signed: bool = True) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "name": self.name,
            "address": self.address,
            "sign": self.sign,
            "box": self.box,
            "roles": list(self.roles),
            "pok": self.pok,
        }
        if signed:
            obj["signature"] = self.signature
        return obj

    def signing_bytes(self) -> bytes:
        return canonical(self.to_obj(signed=False))

    @classmethod
    def make(cls, keys: NodeKeys, name: str, address: str, roles: Iterable[str]) -> PublicEntry:
        parse_address(address)
        rs = parse_roles(list(roles))
        sign, box = keys.identity.public.hex(), keys.box.public.hex()
        pok = box_pok(keys) if "aggregator" in rs else ""
        unsigned = cls(name, address, sign, box, rs, pok, "")
        sig = keys.identity.sign(_ENTRY_CONTEXT, unsigned.signing_bytes()).hex()
        return cls(name, address, sign, box, rs, pok, sig)

    @classmethod
    def from_obj(cls, obj: Any, source: str) -> PublicEntry:
        """Parse and verify (types, keys, proof, self-signature); ConfigError if anything is off."""
        if not isinstance(obj, dict):
            raise ConfigError(f"{source}: a node entry must be a table")
        missing = sorted(_ENTRY_FIELDS - set(obj))
        extra = sorted(set(obj) - _ENTRY_FIELDS)
        if missing or extra:
            raise ConfigError(
                f"{source}: node entry has missing {missing} / unknown {extra} keys; "
                "regenerate it with `kaires node setup`"
            )
        name = obj["name"]
        if not isinstance(name, str) or not 1 <= len(name) <= 64:
            raise ConfigError(f"{source}: node name must be a string of 1..64 characters")
        parse_address(obj["address"], source)
        sign = _hex(obj["sign"], 32, f"node {name!r} sign key", source).hex()
        box = _hex(obj["box"], 32, f"node {name!r} box key", source).hex()
        roles = parse_roles(obj["roles"], f"{source}: node {name!r}")
        pok = obj["pok"]
        if "aggregator" in roles:
            blob = _hex(pok, 64, f"node {name!r} pok", source)
            try:
                y = recipient_point_from_x25519(bytes.fromhex(box))
                schnorr_verify(SchnorrProof.from_bytes(blob), y, _pok_context(sign, box))
            except (EncodingError, InvalidProof):
                raise ConfigError(
                    f"{source}: node {name!r} has no valid proof of knowledge of its box key; "
                    "its operator regenerates public.toml with `kaires node setup`"
                ) from None
        elif pok != "":
            raise ConfigError(f"{source}: node {name!r} has a pok but not the aggregator role")
        entry = cls(name, obj["address"], sign, box, roles, pok, "")
        sig = _hex(obj["signature"], 64, f"node {name!r} signature", source)
        if not is_valid(bytes.fromhex(sign), _ENTRY_CONTEXT, entry.signing_bytes(), sig):
            raise ConfigError(
                f"{source}: node {name!r}'s entry is not signed by its own key (altered after "
                "setup?); get the operator's original public.toml"
            )
        return cls(entry.name, entry.address, sign, box, roles, pok, sig.hex())


def setup_node(
    node_dir: str | os.PathLike[str],
    address: str,
    roles: Iterable[str] = ROLES,
    name: str | None = None,
    *,
    seeds: tuple[bytes, bytes] | None = None,
) -> PublicEntry:
    """Create a node identity in ``node_dir``: ``private.toml`` (0600) and ``public.toml``.

    ``seeds`` (tests only) fixes the Ed25519 and X25519 seeds; default: fresh random ones.
    Raises ConfigError if ``node_dir`` already holds a private key (never overwritten).
    """
    d = Path(node_dir)
    parse_address(address, "--address")
    rs = parse_roles(list(roles) if not isinstance(roles, str) else roles, "--roles")
    priv = d / PRIVATE_FILE
    if priv.exists():
        raise ConfigError(
            f"{priv}: a node identity already exists; use another --dir (never overwritten)"
        )
    d.mkdir(parents=True, exist_ok=True)
    ed, x = seeds if seeds is not None else (os.urandom(32), os.urandom(32))
    keys = NodeKeys.from_seeds(ed, x)
    entry = PublicEntry.make(keys, name or d.resolve().name, address, rs)
    _write_secret(priv, tomli_w.dumps({"ed25519_seed": ed.hex(), "x25519_seed": x.hex()}).encode())
    (d / PUBLIC_FILE).write_text(tomli_w.dumps(entry.to_obj()))
    return entry


def load_keys(node_dir: str | os.PathLike[str]) -> NodeKeys:
    """The keys in ``node_dir/private.toml`` (must be mode 0600)."""
    path = Path(node_dir) / PRIVATE_FILE
    obj = _read_toml(path, "key file")
    _check_private_mode(path)
    if set(obj) != {"ed25519_seed", "x25519_seed"}:
        raise ConfigError(f"{path}: needs exactly ed25519_seed and x25519_seed; regenerate it")
    return NodeKeys.from_seeds(
        _hex(obj["ed25519_seed"], 32, "ed25519_seed", str(path)),
        _hex(obj["x25519_seed"], 32, "x25519_seed", str(path)),
    )


def load_public(path: str | os.PathLike[str]) -> PublicEntry:
    """A verified public entry from a ``public.toml``."""
    p = Path(path)
    return PublicEntry.from_obj(_read_toml(p, "public file"), str(p))


# --- group -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """A committee description (``group.toml``): its nodes in order and its thresholds."""

    nodes: tuple[PublicEntry, ...]
    threshold: int
    trustee_threshold: int
    registration: bool
    name: str
    id: str

    def content(self) -> dict[str, Any]:
        """Everything but the id, canonically ordered (what the id hashes)."""
        return {
            "group": {
                "name": self.name,
                "threshold": self.threshold,
                "trustee_threshold": self.trustee_threshold,
                "registration": self.registration,
            },
            "node": [e.to_obj() for e in self.nodes],
        }

    def with_role(self, role: str) -> list[PublicEntry]:
        """The nodes having ``role``, in group order (their position is the role index)."""
        return [e for e in self.nodes if role in e.roles]

    def role_index(self, role: str, sign: str) -> int | None:
        """Index of the node with key ``sign`` among the nodes having ``role`` (or None)."""
        for i, e in enumerate(self.with_role(role)):
            if e.sign == sign:
                return i
        return None

    def addresses(self, role: str) -> list[str]:
        """Service addresses of ``role``: ``ledger-<i>``, ``trustee-<j>``, ``aggregator-<k>``."""
        return [f"{role}-{i}" for i in range(len(self.with_role(role)))]

    def node_addresses(self, sign: str) -> list[str]:
        """Every service address hosted by the node with key ``sign``."""
        out = []
        for role in ROLES:
            i = self.role_index(role, sign)
            if i is not None:
                out.append(f"{role}-{i}")
        return out

    @property
    def committee_id(self) -> str:
        """The aggregation committee's ledger id (``ledger.committees.committee_id``)."""
        from kaires_fl.ledger.committees import committee_id

        aggs = self.with_role("aggregator")
        return committee_id([e.sign for e in aggs], [e.box for e in aggs], self.threshold)


def _group_id(content: Mapping[str, Any]) -> str:
    return H(_GROUP_TAG, canonical(dict(content))).hex()


def _check_group(nodes: Sequence[PublicEntry], t: int, t_trustee: int, source: str) -> None:
    if not nodes:
        raise ConfigError(f"{source}: a group needs at least one node")
    for what, key in (("address", "address"), ("name", "name"), ("sign key", "sign")):
        seen: dict[str, str] = {}
        for e in nodes:
            v = getattr(e, key)
            if v in seen:
                raise ConfigError(
                    f"{source}: nodes {seen[v]!r} and {e.name!r} have the same {what} {v[:24]!r}; "
                    "every node needs its own (run `kaires node setup` per node)"
                )
            seen[v] = e.name
    boxes = [e.box for e in nodes]
    if len(set(boxes)) != len(boxes) or set(boxes) & {e.sign for e in nodes}:
        raise ConfigError(f"{source}: two nodes share a box key; every node needs its own keys")
    n_ledger = sum("ledger" in e.roles for e in nodes)
    n_trustee = sum("trustee" in e.roles for e in nodes)
    n_agg = sum("aggregator" in e.roles for e in nodes)
    if n_ledger == 0 or n_trustee == 0 or n_agg == 0:
        raise ConfigError(
            f"{source}: the group has {n_ledger} ledger, {n_trustee} trustee and {n_agg} "
            "aggregator nodes; each role needs at least one node"
        )
    if t < 0 or n_agg < 3 * t + 1:
        raise ConfigError(
            f"{source}: {n_agg} aggregators cannot use threshold t = {t} (BFT Prio needs "
            f"n ≥ 3t + 1 = {3 * t + 1}); add aggregators or lower --threshold"
        )
    if t_trustee < 0 or n_trustee < 2 * t_trustee + 1:
        raise ConfigError(
            f"{source}: {n_trustee} trustees cannot use trustee threshold {t_trustee} (the DKG "
            f"needs n ≥ 2t + 1 = {2 * t_trustee + 1}); add trustees or lower it"
        )


def default_trustee_threshold(n_trustees: int) -> int:
    """max(1, (n − 1) // 3) when n ≥ 3 (as LocalCommittee), else 0."""
    return max(1, (n_trustees - 1) // 3) if n_trustees >= 3 else 0


def make_group(
    entries: Sequence[PublicEntry],
    threshold: int | None = None,
    trustee_threshold: int | None = None,
    *,
    registration: bool = False,
    name: str = "kaires",
) -> Group:
    """A validated :class:`Group` (defaults: t = (n_aggregators − 1) // 3 and
    :func:`default_trustee_threshold`)."""
    nodes = tuple(entries)
    n_agg = sum("aggregator" in e.roles for e in nodes)
    n_tr = sum("trustee" in e.roles for e in nodes)
    t = (max(n_agg, 1) - 1) // 3 if threshold is None else int(threshold)
    tt = default_trustee_threshold(n_tr) if trustee_threshold is None else int(trustee_threshold)
    _check_group(nodes, t, tt, "group")
    g = Group(nodes, t, tt, bool(registration), name, "")
    return Group(nodes, t, tt, bool(registration), name, _group_id(g.content()))


def write_group(group: Group, path: str | os.PathLike[str]) -> None:
    obj = group.content()
    obj["group"]["id"] = group.id
    Path(path).write_text(tomli_w.dumps(obj))


def load_group(path: str | os.PathLike[str]) -> Group:
    """A verified group: every entry checked, thresholds fit, the id matches the content."""
    p = Path(path)
    source = str(p)
    obj = _read_toml(p, "group file")
    if set(obj) != {"group", "node"} or not isinstance(obj["group"], dict):
        raise ConfigError(
            f"{source}: a group file has exactly a [group] table and [[node]] tables; "
            "regenerate it with `kaires group`"
        )
    g = obj["group"]
    if set(g) != _GROUP_FIELDS:
        raise ConfigError(f"{source}: [group] needs exactly {sorted(_GROUP_FIELDS)}; regenerate it")
    t, tt, reg, name, gid = (
        g["threshold"],
        g["trustee_threshold"],
        g["registration"],
        g["name"],
        g["id"],
    )
    if not (isinstance(t, int) and isinstance(tt, int) and not isinstance(t, bool)):
        raise ConfigError(f"{source}: threshold and trustee_threshold must be integers")
    if not isinstance(reg, bool) or not isinstance(name, str) or not isinstance(gid, str):
        raise ConfigError(f"{source}: registration is a boolean, name and id are strings")
    if not isinstance(obj["node"], list):
        raise ConfigError(f"{source}: nodes are [[node]] tables")
    nodes = tuple(PublicEntry.from_obj(e, f"{source} node #{i}") for i, e in enumerate(obj["node"]))
    _check_group(nodes, t, tt, source)
    group = Group(nodes, t, tt, reg, name, "")
    expect = _group_id(group.content())
    if gid != expect:
        raise ConfigError(
            f"{source}: group id {gid[:16]}… does not match its content ({expect[:16]}…): the "
            "file was edited; regenerate it with `kaires group` and redistribute it"
        )
    return Group(nodes, t, tt, reg, name, gid)


def load_node(node_dir: str | os.PathLike[str], group: Group) -> tuple[NodeKeys, PublicEntry]:
    """This node's keys and its entry in ``group``; ConfigError if the files disagree."""
    d = Path(node_dir)
    keys = load_keys(d)
    entry = load_public(d / PUBLIC_FILE)
    if (keys.identity.public.hex(), keys.box.public.hex()) != (entry.sign, entry.box):
        raise ConfigError(
            f"{d / PUBLIC_FILE}: its public keys do not match {d / PRIVATE_FILE}; the files "
            "come from different setups (regenerate public.toml from this directory)"
        )
    mine = [e for e in group.nodes if e.sign == entry.sign]
    if not mine:
        raise ConfigError(
            f"{d}: this node (key {entry.sign[:16]}…) is not in group {group.name!r}; "
            "add its public.toml with `kaires group`"
        )
    if mine[0] != entry:
        raise ConfigError(
            f"{d / PUBLIC_FILE}: differs from this node's entry in the group file; "
            "rebuild group.toml from the current public files"
        )
    return keys, entry


# --- the persisted DKG share -------------------------------------------------------------------


def save_share(node_dir: str | os.PathLike[str], result: Any, session: bytes) -> None:
    """Persist a :class:`~kaires_fl.secret_management.dkg.DkgResult` (mode 0600)."""
    obj = {
        "session": session.hex(),
        "index": result.index,
        "n": result.n,
        "t": result.t,
        "share": result.share.to_bytes().hex(),
        "public_key": result.public_key.to_bytes().hex(),
        "public_shares": [p.to_bytes().hex() for p in result.public_shares],
        "qual": list(result.qual),
        "faulty": {str(k): v for k, v in result.faulty.items()},
        "transcript": result.transcript.hex(),
    }
    path = Path(node_dir) / SHARE_FILE
    tmp = path.with_suffix(".tmp")
    _write_secret(tmp, tomli_w.dumps(obj).encode())
    os.replace(tmp, path)


def load_share(node_dir: str | os.PathLike[str], session: bytes) -> Any | None:
    """The persisted DKG result of this session, or None if there is none yet."""
    from kaires_fl.secret_management.dkg import DkgResult

    path = Path(node_dir) / SHARE_FILE
    if not path.exists():
        return None
    obj = _read_toml(path, "DKG share")
    _check_private_mode(path)
    src = str(path)
    try:
        if obj["session"] != session.hex():
            raise ConfigError(
                f"{src}: the share belongs to another committee (DKG session); move it away "
                "if the group changed"
            )
        result = DkgResult(
            index=int(obj["index"]),
            n=int(obj["n"]),
            t=int(obj["t"]),
            share=Scalar.from_bytes(_hex(obj["share"], 32, "share", src)),
            public_key=Point.from_bytes(_hex(obj["public_key"], 32, "public_key", src)),
            public_shares=tuple(
                Point.from_bytes(_hex(s, 32, "public share", src)) for s in obj["public_shares"]
            ),
            qual=tuple(int(q) for q in obj["qual"]),
            faulty={int(k): str(v) for k, v in obj["faulty"].items()},
            transcript=_hex(obj["transcript"], 32, "transcript", src),
        )
    except (KeyError, TypeError, ValueError, EncodingError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{src}: damaged DKG share ({exc!r}); restore it from a backup") from None
    if not 0 <= result.index < len(result.public_shares) or (
        result.public_shares[result.index] != result.share * Point.base()
    ):
        raise ConfigError(f"{src}: the share does not match its public share; restore a backup")
    return result
