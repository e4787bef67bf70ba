"""Node files: round trips and every validation error (one clear ConfigError line)."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest
import tomli_w

from kaires_fl.errors import ConfigError
from kaires_fl.node.config import (
    PRIVATE_FILE,
    PUBLIC_FILE,
    SHARE_FILE,
    Group,
    PublicEntry,
    _group_id,
    load_group,
    load_keys,
    load_node,
    load_public,
    load_share,
    make_group,
    parse_address,
    parse_roles,
    save_share,
    setup_node,
    write_group,
)
from kaires_fl.secret_management.dkg import make_participants, run_dkg


def _seeds(i: int) -> tuple[bytes, bytes]:
    return bytes([i + 1]) * 32, bytes([i + 101]) * 32


def _committee(tmp: Path, n: int = 4, **kw: object) -> tuple[list[PublicEntry], Group]:
    entries = [
        setup_node(tmp / f"node-{i}", f"127.0.0.1:{7000 + i}", name=f"node-{i}", seeds=_seeds(i))
        for i in range(n)
    ]
    group = make_group(entries, **kw)  # type: ignore[arg-type]
    write_group(group, tmp / "group.toml")
    return entries, group


def _one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def _rewrite(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    obj = tomllib.loads(path.read_text())
    edit(obj)
    path.write_text(tomli_w.dumps(obj))


# --- round trips -------------------------------------------------------------------------------


def test_setup_writes_private_0600_and_public_round_trips(tmp_path: Path) -> None:
    entry = setup_node(tmp_path / "a", "10.0.0.1:7770", "ledger,aggregator", seeds=_seeds(0))
    priv = tmp_path / "a" / PRIVATE_FILE
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert load_public(tmp_path / "a" / PUBLIC_FILE) == entry
    assert entry.roles == ("ledger", "aggregator") and entry.pok and entry.name == "a"
    keys = load_keys(tmp_path / "a")
    assert keys.identity.public.hex() == entry.sign and keys.box.public.hex() == entry.box
    # a trustee-only/ledger node carries no proof of knowledge
    other = setup_node(tmp_path / "b", "10.0.0.2:7770", ["trustee", "ledger"], seeds=_seeds(1))
    assert other.pok == "" and other.roles == ("ledger", "trustee")


def test_group_round_trip_and_indices(tmp_path: Path) -> None:
    entries, group = _committee(tmp_path)
    again = load_group(tmp_path / "group.toml")
    assert again == group and again.id == group.id and len(group.id) == 64
    assert group.threshold == 1 and group.trustee_threshold == 1 and not group.registration
    assert group.addresses("trustee") == [f"trustee-{j}" for j in range(4)]
    assert group.node_addresses(entries[2].sign) == ["ledger-2", "trustee-2", "aggregator-2"]
    keys, entry = load_node(tmp_path / "node-1", group)
    assert entry == entries[1] and keys.identity.public.hex() == entry.sign


def test_group_id_depends_on_content(tmp_path: Path) -> None:
    entries, group = _committee(tmp_path)
    assert make_group(entries, registration=True).id != group.id
    assert make_group(entries[::-1]).id != group.id
    assert make_group(entries).id == group.id


def test_share_round_trip_0600(tmp_path: Path) -> None:
    results = run_dkg(make_participants(4, 1, session=b"s"))
    save_share(tmp_path, results[2], b"s" * 32)
    path = tmp_path / SHARE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    back = load_share(tmp_path, b"s" * 32)
    assert back == results[2]
    assert load_share(tmp_path / "nowhere", b"s" * 32) is None
    with pytest.raises(ConfigError, match="another committee") as exc:
        load_share(tmp_path, b"t" * 32)
    _one_line(exc)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_share(tmp_path, b"s" * 32)
    os.chmod(path, 0o600)
    _rewrite(path, lambda o: o.update(index=1))  # the share is not x_1
    with pytest.raises(ConfigError, match="does not match its public share"):
        load_share(tmp_path, b"s" * 32)


# --- validation errors ---------------------------------------------------------------------------


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key file not found.*kaires node setup") as exc:
        load_keys(tmp_path)
    _one_line(exc)


def test_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    setup_node(tmp_path / "a", "127.0.0.1:1")
    os.chmod(tmp_path / "a" / PRIVATE_FILE, 0o644)
    with pytest.raises(ConfigError, match=r"mode 0644.*chmod 600") as exc:
        load_keys(tmp_path / "a")
    _one_line(exc)


def test_setup_never_overwrites_an_identity(tmp_path: Path) -> None:
    setup_node(tmp_path / "a", "127.0.0.1:1")
    before = (tmp_path / "a" / PRIVATE_FILE).read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        setup_node(tmp_path / "a", "127.0.0.1:2")
    assert (tmp_path / "a" / PRIVATE_FILE).read_bytes() == before


@pytest.mark.parametrize(
    "text", ["ed25519_seed = ", "[x\ny = 1", 'ed25519_seed = "00"\n', "a = 1\n"]
)
def test_malformed_private_toml(tmp_path: Path, text: str) -> None:
    path = tmp_path / PRIVATE_FILE
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as exc:
        load_keys(tmp_path)
    assert str(path) in _one_line(exc)


def test_malformed_group_toml(tmp_path: Path) -> None:
    (tmp_path / "group.toml").write_text("[group\nthreshold = 1")
    with pytest.raises(ConfigError, match="malformed TOML") as exc:
        load_group(tmp_path / "group.toml")
    _one_line(exc)
    with pytest.raises(ConfigError, match=r"group file not found.*kaires group"):
        load_group(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "address", ["localhost", "host:0", "host:65536", ":7770", "host:http", 7770]
)
def test_bad_address(address: object) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_address(address)


@pytest.mark.parametrize("roles", ["", "ledger,miner", ["root"], 3])
def test_bad_roles(roles: object) -> None:
    with pytest.raises(ConfigError, match="roles"):
        parse_roles(roles)


def test_public_key_that_does_not_match_the_private_one(tmp_path: Path) -> None:
    _, group = _committee(tmp_path)
    (tmp_path / "node-0" / PUBLIC_FILE).write_bytes(
        (tmp_path / "node-1" / PUBLIC_FILE).read_bytes()
    )
    with pytest.raises(ConfigError, match="do not match") as exc:
        load_node(tmp_path / "node-0", group)
    _one_line(exc)


def test_altered_public_entry_is_refused(tmp_path: Path) -> None:
    setup_node(tmp_path / "a", "127.0.0.1:1", seeds=_seeds(0))
    path = tmp_path / "a" / PUBLIC_FILE
    _rewrite(path, lambda o: o.update(address="203.0.113.9:1"))  # redirected in transit
    with pytest.raises(ConfigError, match="not signed by its own key") as exc:
        load_public(path)
    _one_line(exc)


def test_bad_proof_of_knowledge_is_refused(tmp_path: Path) -> None:
    a = setup_node(tmp_path / "a", "127.0.0.1:1", seeds=_seeds(0))
    setup_node(tmp_path / "b", "127.0.0.1:2", seeds=_seeds(1))
    path = tmp_path / "b" / PUBLIC_FILE
    _rewrite(path, lambda o: o.update(pok=a.pok))  # another member's proof
    with pytest.raises(ConfigError, match="proof of knowledge"):
        load_public(path)
    _rewrite(path, lambda o: o.update(pok="", roles=["ledger", "aggregator"]))
    with pytest.raises(ConfigError, match="pok"):
        load_public(path)


def test_missing_and_unknown_keys_in_public_file(tmp_path: Path) -> None:
    setup_node(tmp_path / "a", "127.0.0.1:1")
    path = tmp_path / "a" / PUBLIC_FILE
    _rewrite(path, lambda o: o.update(extra=1))
    with pytest.raises(ConfigError, match="unknown \\['extra'\\]"):
        load_public(path)
    _rewrite(path, lambda o: (o.pop("extra"), o.pop("box")))
    with pytest.raises(ConfigError, match="missing \\['box'\\]"):
        load_public(path)


def test_duplicate_addresses_and_keys(tmp_path: Path) -> None:
    a = setup_node(tmp_path / "a", "127.0.0.1:1", name="a")
    b = setup_node(tmp_path / "b", "127.0.0.1:1", name="b")
    c = setup_node(tmp_path / "c", "127.0.0.1:3", name="c")
    d = setup_node(tmp_path / "d", "127.0.0.1:4", name="d")
    with pytest.raises(ConfigError, match="same address") as exc:
        make_group([a, b, c, d], 0)
    _one_line(exc)
    namesake = PublicEntry.make(load_keys(tmp_path / "b"), "a", "127.0.0.1:5", b.roles)
    with pytest.raises(ConfigError, match="same name"):
        make_group([a, c, d, namesake], 0)
    # the same key under another name and address: re-signed by its owner
    keys = load_keys(tmp_path / "c")
    twin = PublicEntry.make(keys, "twin", "127.0.0.1:9", c.roles)
    with pytest.raises(ConfigError, match="same sign key"):
        make_group([a, c, d, twin], 0)


def test_thresholds_that_do_not_fit(tmp_path: Path) -> None:
    entries, _ = _committee(tmp_path)
    with pytest.raises(ConfigError, match="n ≥ 3t \\+ 1 = 7") as exc:
        make_group(entries, threshold=2)
    _one_line(exc)
    with pytest.raises(ConfigError, match="n ≥ 2t \\+ 1 = 5"):
        make_group(entries, trustee_threshold=2)
    with pytest.raises(ConfigError, match="threshold"):
        make_group(entries, threshold=-1)
    ledger_only = [
        setup_node(tmp_path / f"l{i}", f"127.0.0.1:{8000 + i}", "ledger") for i in range(2)
    ]
    with pytest.raises(ConfigError, match="each role needs at least one node"):
        make_group(ledger_only)


def test_group_file_edited_after_it_was_made(tmp_path: Path) -> None:
    _committee(tmp_path)
    path = tmp_path / "group.toml"
    _rewrite(path, lambda o: o["group"].update(registration=True))
    with pytest.raises(ConfigError, match="does not match its content") as exc:
        load_group(path)
    _one_line(exc)


def test_group_file_with_consistent_id_but_bad_threshold(tmp_path: Path) -> None:
    _, group = _committee(tmp_path)
    content = group.content()
    content["group"]["threshold"] = 2
    content["group"]["id"] = ""
    c = dict(content)
    c["group"] = {k: v for k, v in content["group"].items() if k != "id"}
    content["group"]["id"] = _group_id(c)
    path = tmp_path / "group.toml"
    path.write_text(tomli_w.dumps(content))
    with pytest.raises(ConfigError, match="cannot use threshold t = 2"):
        load_group(path)


def test_group_file_shape_errors(tmp_path: Path) -> None:
    _committee(tmp_path)
    path = tmp_path / "group.toml"
    _rewrite(path, lambda o: o["group"].update(threshold="1"))
    with pytest.raises(ConfigError, match="integers"):
        load_group(path)
    _rewrite(path, lambda o: o.update(extra={}))
    with pytest.raises(ConfigError, match="exactly a \\[group\\] table"):
        load_group(path)


def test_node_not_in_group(tmp_path: Path) -> None:
    _, group = _committee(tmp_path)
    setup_node(tmp_path / "stranger", "127.0.0.1:9999")
    with pytest.raises(ConfigError, match="not in group") as exc:
        load_node(tmp_path / "stranger", group)
    _one_line(exc)
