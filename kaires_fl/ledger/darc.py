"""DARC-like policies: versioned rule sets over identities, and providers' data policies.

A policy (entry ``darc/<id>``) is::

    {"id": str, "version": int, "rules": {action: expression}, "terms": {...} | None,
     "height": int, "time_ms": int, "tx": str}

Expressions (CALYPSO's DARC rules)::

    expr := conj ("|" conj)*          OR
    conj := atom ("&" atom)*          AND
    atom := "ed25519:<64 hex>" | "darc:<id>" | "(" expr ")"
          | "threshold<m/n," expr ("," expr)* ">"   (exactly n operands, >= m true)

``darc:<id>`` delegates to that policy's ``_sign`` rule (depth-limited). The rule
``_evolve`` is mandatory: a new version must be signed so that the *previous* version's
``_evolve`` holds (revocation is just a new version). A provider's data policy carries
``terms`` (see :func:`check_terms`) and its ``use`` rule names the consumers allowed.

Contracts: ``darc.create`` (payload ``{"id", "rules", "terms"}``, signed to satisfy its
own ``_evolve``) and ``darc.evolve`` (payload ``{"id", "version", "rules", "terms"}``,
``version`` = old + 1).

Owner-bound ids: an id ending in ``.<64 hex>`` (:func:`bound_policy_id`) belongs to that
Ed25519 key; every create or evolve of it must be signed by that key, and a data policy
(one with ``terms``) must have such an id. A predictable id (``provider.<label>``)
therefore cannot be squatted: the squatter's own id differs from the owner's.

Registration allow-list: when the ledger's registration policy requires it
(:mod:`kaires_fl.ledger.identities`), the owner of a data policy must be an admitted
provider.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Collection, Mapping
from typing import Any

from kaires_fl.crypto.sign import H
from kaires_fl.errors import LedgerError
from kaires_fl.ledger.budgets import MAX_BUDGET_EPSILON, check_privacy_pair
from kaires_fl.ledger.contracts import TxEnv
from kaires_fl.ledger.identities import PROVIDER, check_registered
from kaires_fl.ledger.state import StateView
from kaires_fl.ledger.tx import Tx

_TOKEN = re.compile(
    r"\s*(ed25519:[0-9a-f]{64}|darc:[A-Za-z0-9_.:/-]+|threshold<\d{1,4}/\d{1,4},|[|&(),>])"
)
_ID = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}$")
_HEX32 = re.compile(r"^[0-9a-f]{64}$")
MAX_DEPTH = 8
#: Longest rule expression and deepest nesting a policy may use (bounds parsing).
MAX_RULE_CHARS = 1 << 17
MAX_NESTING = 32
#: Defaults of :func:`data_terms`: a job needs at least two providers, and a policy
#: answers a bounded number of jobs (bounds differencing across jobs; see threat-model).
DEFAULT_MIN_PROVIDERS = 2
DEFAULT_MAX_JOBS = 100
#: Most committees one policy may name.
MAX_COMMITTEES = 64

Expr = tuple[Any, ...]


def darc_key(darc_id: str) -> str:
    return f"darc/{darc_id}"


def policy_owner(darc_id: str) -> str | None:
    """The owner key (hex) an id is bound to (``<name>.<64 hex>``), or None if unbound."""
    if len(darc_id) > 65 and darc_id[-65] == "." and _HEX32.match(darc_id[-64:]):
        return darc_id[-64:]
    return None


def bound_policy_id(name: str, owner: str) -> str:
    """A policy id bound to ``owner`` (hex Ed25519 key): ``<name>.<owner>``.

    ``name`` is sanitised to the id alphabet and shortened (with a hash suffix, so distinct
    long names stay distinct) to fit the 128-character id limit.
    """
    if not _HEX32.match(owner):
        raise LedgerError(f"a policy owner is a hex Ed25519 key, got {owner!r}")
    text = re.sub(r"[^A-Za-z0-9_.:/-]", "_", name) or "policy"
    if len(text) > 63:
        text = text[:50] + "-" + H(name.encode()).hex()[:12]
    return f"{text}.{owner}"


#: Parsed expressions kept (bounded by their total length, not their number: 4096
#: maximal rules would otherwise pin half a gigabyte on every node).
_PARSED: OrderedDict[str, Expr] = OrderedDict()
_PARSED_CHARS = [0]
MAX_PARSED_CHARS = 1 << 22


def parse_expr(text: str) -> Expr:
    """Parse a rule expression into a tree (cached, at most :data:`MAX_PARSED_CHARS`).

    Raises
    ------
    LedgerError
        naming the offending position if ``text`` is not a valid expression.
    """
    if isinstance(text, str):
        tree = _PARSED.get(text)
        if tree is not None:
            _PARSED.move_to_end(text)
            return tree
    tree = _parse_expr(text)
    if len(text) <= MAX_PARSED_CHARS // 16:
        _PARSED[text] = tree
        _PARSED_CHARS[0] += len(text)
        while _PARSED_CHARS[0] > MAX_PARSED_CHARS:
            old, _ = _PARSED.popitem(last=False)
            _PARSED_CHARS[0] -= len(old)
    return tree


def _parse_expr(text: str) -> Expr:
    if not isinstance(text, str) or len(text) > MAX_RULE_CHARS:
        raise LedgerError(
            f"a rule expression is a string of at most {MAX_RULE_CHARS} characters; "
            "delegate long allow-lists to other policies (darc:<id>)"
        )
    tokens: list[str] = []
    pos = 0
    text_s = text.rstrip()
    while pos < len(text_s):
        m = _TOKEN.match(text_s, pos)
        if m is None:
            raise LedgerError(f"rule expression {text[:80]!r}: cannot parse at position {pos}")
        tokens.append(m.group(1))
        pos = m.end()
    if not tokens:
        raise LedgerError("empty rule expression (to allow nobody, omit the rule)")
    i = 0
    nesting = 0

    def peek() -> str | None:
        return tokens[i] if i < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal i
        if i >= len(tokens):
            raise LedgerError(f"rule expression {text[:80]!r} ends early")
        t = tokens[i]
        if expected is not None and t != expected:
            raise LedgerError(f"rule expression {text[:80]!r}: expected {expected!r}, found {t!r}")
        i += 1
        return t

    def expr() -> Expr:
        parts = [conj()]
        while peek() == "|":
            take()
            parts.append(conj())
        if len(parts) == 1:
            return parts[0]
        if all(e[0] == "key" for e in parts):
            return ("anyof", frozenset(e[1] for e in parts))  # a plain allow-list
        return ("or", *parts)

    def conj() -> Expr:
        parts = [atom()]
        while peek() == "&":
            take()
            parts.append(atom())
        return parts[0] if len(parts) == 1 else ("and", *parts)

    def atom() -> Expr:
        nonlocal nesting
        t = take()
        if t == "(" or t.startswith("threshold<"):
            nesting += 1
            if nesting > MAX_NESTING:
                raise LedgerError(f"rule expression nests deeper than {MAX_NESTING} levels")
        if t.startswith("ed25519:"):
            return ("key", t[8:])
        if t.startswith("darc:"):
            return ("darc", t[5:])
        if t == "(":
            e = expr()
            take(")")
            nesting -= 1
            return e
        if t.startswith("threshold<"):
            m_s, n_s = t[10:-1].split("/")
            m, n = int(m_s), int(n_s)
            ops = [expr()]
            while peek() == ",":
                take()
                ops.append(expr())
            take(">")
            nesting -= 1
            if len(ops) != n or not 1 <= m <= n:
                raise LedgerError(
                    f"rule expression {text[:80]!r}: threshold<{m}/{n}> needs 1 <= m <= n and "
                    f"exactly n = {n} operands, got {len(ops)}"
                )
            return ("thr", m, *ops)
        raise LedgerError(f"rule expression {text[:80]!r}: unexpected {t!r}")

    tree = expr()
    if i != len(tokens):
        raise LedgerError(f"rule expression {text[:80]!r}: trailing {tokens[i]!r}")
    return tree


#: Most rule nodes one evaluation visits (``darc:`` references resolved once per depth):
#: bounds the work a transaction's rules cost every node. A plain allow-list is one node.
MAX_RULE_VISITS = 1 << 16


def evaluate(
    expr: str | Expr,
    signers: Collection[str],
    view: StateView | None = None,
    depth: int = 0,
    *,
    budget: list[int] | None = None,
) -> bool:
    """Whether the set of ``signers`` (hex keys) satisfies ``expr``.

    ``view`` resolves ``darc:<id>`` references (their ``_sign`` rule); without it they
    are false. Each referenced policy is evaluated once per depth (memoised), and at
    most ``budget[0]`` nodes are visited (default :data:`MAX_RULE_VISITS`; pass one
    list to share a budget across several evaluations, as ``job.create`` does).

    Raises
    ------
    LedgerError
        if the evaluation would visit more nodes than the budget allows (a rule, or a
        chain of delegations, made to stall every ledger node).
    """
    if budget is None:
        budget = [MAX_RULE_VISITS]
    memo: dict[tuple[str, int], bool] = {}
    return _evaluate(expr, frozenset(signers), view, depth, budget, memo)


def _evaluate(
    expr: str | Expr,
    signers: frozenset[str],
    view: StateView | None,
    depth: int,
    budget: list[int],
    memo: dict[tuple[str, int], bool],
) -> bool:
    budget[0] -= 1
    if budget[0] < 0:
        raise LedgerError(
            "rule evaluation exceeds its budget of visited nodes: a rule (or its chain of "
            "darc: delegations) is too costly; simplify the policy's rules"
        )
    tree = parse_expr(expr) if isinstance(expr, str) else expr
    op = tree[0]
    if op == "key":
        return tree[1] in signers
    if op == "anyof":
        return not tree[1].isdisjoint(signers)
    if op == "or":
        return any(_evaluate(e, signers, view, depth, budget, memo) for e in tree[1:])
    if op == "and":
        return all(_evaluate(e, signers, view, depth, budget, memo) for e in tree[1:])
    if op == "thr":
        return sum(_evaluate(e, signers, view, depth, budget, memo) for e in tree[2:]) >= tree[1]
    if op == "darc":
        if view is None or depth >= MAX_DEPTH:
            return False
        key = (tree[1], depth)
        got = memo.get(key)
        if got is None:
            d = view.get(darc_key(tree[1]))
            rule = None if d is None else d["rules"].get("_sign")
            got = rule is not None and _evaluate(rule, signers, view, depth + 1, budget, memo)
            memo[key] = got
        return got
    raise LedgerError(f"unknown rule node {op!r}")


def check_rule(
    view: StateView, darc_id: str, action: str, signers: Collection[str]
) -> dict[str, Any]:
    """Raise LedgerError unless policy ``darc_id``'s rule for ``action`` holds for ``signers``.

    Returns the policy entry (for callers that need its terms).
    """
    d = view.get(darc_key(darc_id))
    if d is None:
        raise LedgerError(f"policy {darc_id!r} does not exist")
    rule = d["rules"].get(action)
    if rule is None:
        raise LedgerError(f"policy {darc_id!r} v{d['version']} has no rule for {action!r}")
    if not evaluate(rule, signers, view):
        raise LedgerError(
            f"policy {darc_id!r} v{d['version']} rule {action!r} = {rule!r} is not satisfied "
            "by the transaction's signers"
        )
    return d


TERM_FIELDS: dict[str, type | tuple[type, ...]] = {
    "statistics": list,
    "max_jobs": (int, type(None)),
    "expires_height": (int, type(None)),
    "expires_time_ms": (int, type(None)),
    "min_providers": int,
    "price": int,
    "payee": str,
    "committees": list,
}


#: Optional term: the policy's total (ε, δ) privacy budget (:mod:`kaires_fl.ledger.budgets`).
PRIVACY_BUDGET_TERM = "privacy_budget"


def check_terms(terms: Any) -> None:
    """Validate a data policy's terms.

    ``statistics`` (kinds allowed, ``"*"`` = any), ``max_jobs`` (None = unlimited),
    ``expires_height`` / ``expires_time_ms`` (None = never; a job is allowed while
    ``height <= expires_height`` and ``time <= expires_time_ms``), ``min_providers``
    (>= 1), ``price`` per job (>= 0), ``payee`` (hex key paid for accepted data),
    ``committees`` (ids of the registered aggregation committees a job may use; at most
    :data:`MAX_COMMITTEES`, distinct; empty = no job), and optionally ``privacy_budget``
    (``[ε, δ]``, 0 < ε <= 10⁶, 0 < δ < 1: the differential privacy all jobs together may
    spend; a policy with it only answers jobs that declare their privacy).
    """
    if terms is None:
        return
    if not isinstance(terms, dict) or not set(TERM_FIELDS) <= set(terms) <= set(TERM_FIELDS) | {
        PRIVACY_BUDGET_TERM
    }:
        raise LedgerError(
            f"policy terms must have exactly the fields {sorted(TERM_FIELDS)} (and optionally "
            f"{PRIVACY_BUDGET_TERM!r}); use data_terms()"
        )
    if PRIVACY_BUDGET_TERM in terms:
        b = terms[PRIVACY_BUDGET_TERM]
        if not isinstance(b, list):
            raise LedgerError(f"policy term 'privacy_budget' is a list [epsilon, delta], got {b!r}")
        check_privacy_pair(b, "policy term 'privacy_budget'", MAX_BUDGET_EPSILON)
    for k, t in TERM_FIELDS.items():
        v = terms[k]
        if not isinstance(v, t) or isinstance(v, bool):
            raise LedgerError(f"policy term {k!r} has the wrong type: {v!r}")
    if not all(isinstance(s, str) for s in terms["statistics"]):
        raise LedgerError("policy term 'statistics' must list statistic kinds (strings)")
    if terms["min_providers"] < 1 or terms["price"] < 0:
        raise LedgerError("policy terms need min_providers >= 1 and price >= 0")
    if terms["max_jobs"] is not None and terms["max_jobs"] < 0:
        raise LedgerError("policy term max_jobs must be >= 0 or None")
    if not re.fullmatch(r"[0-9a-f]{64}", terms["payee"]):
        raise LedgerError("policy term 'payee' must be a hex Ed25519 public key")
    cs = terms["committees"]
    if (
        len(cs) > MAX_COMMITTEES
        or not all(isinstance(c, str) and _HEX32.match(c) for c in cs)
        or len(set(cs)) != len(cs)
    ):
        raise LedgerError(
            f"policy term 'committees' must list at most {MAX_COMMITTEES} distinct committee "
            "ids (64 hex chars each; see committees.committee_id)"
        )


def data_terms(
    payee: str,
    statistics: Collection[str] = ("*",),
    max_jobs: int | None = DEFAULT_MAX_JOBS,
    expires_height: int | None = None,
    expires_time_ms: int | None = None,
    min_providers: int = DEFAULT_MIN_PROVIDERS,
    price: int = 0,
    committees: Collection[str] = (),
    privacy_budget: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Build a data policy's ``terms`` (validated; see :func:`check_terms`).

    Defaults are the safe ones: at least :data:`DEFAULT_MIN_PROVIDERS` providers per job,
    at most :data:`DEFAULT_MAX_JOBS` jobs (``max_jobs=None`` is unlimited, on request), and
    no committee (name the ones you accept in ``committees``). ``privacy_budget=(ε, δ)``:
    the total differential privacy the policy's jobs may spend (None: no budget, and
    jobs without differential privacy are allowed).
    """
    t: dict[str, Any] = {
        "statistics": list(statistics),
        "max_jobs": max_jobs,
        "expires_height": expires_height,
        "expires_time_ms": expires_time_ms,
        "min_providers": min_providers,
        "price": price,
        "payee": payee,
        "committees": list(committees),
    }
    if privacy_budget is not None:
        t[PRIVACY_BUDGET_TERM] = [float(privacy_budget[0]), float(privacy_budget[1])]
    check_terms(t)
    return t


def _check_rules(rules: Any) -> None:
    if not isinstance(rules, dict) or not all(isinstance(v, str) for v in rules.values()):
        raise LedgerError("policy rules must map action names to expression strings")
    if "_evolve" not in rules:
        raise LedgerError("policy rules must include '_evolve' (who may change the policy)")
    for r in rules.values():
        parse_expr(r)


def _references(tree: Expr) -> set[str]:
    """The policy ids a parsed expression delegates to (``darc:<id>``)."""
    if tree[0] == "darc":
        return {tree[1]}
    if tree[0] in ("or", "and"):
        return set().union(*(_references(e) for e in tree[1:]))
    if tree[0] == "thr":
        return set().union(*(_references(e) for e in tree[2:]))
    return set()


def _check_references(rules: Mapping[str, str], darc_id: str, view: StateView) -> None:
    """Raise LedgerError if a rule delegates to a policy that is not on the ledger.

    A ``darc:<id>`` naming no policy yet could be created by anyone, with a ``_sign`` rule
    of their choosing: the first to create it would satisfy every rule delegating to it
    (squatting a group's id). So a rule may only name existing policies (or its own).
    """
    for r in rules.values():
        for ref in sorted(_references(parse_expr(r))):
            if ref != darc_id and view.get(darc_key(ref)) is None:
                raise LedgerError(
                    f"policy {darc_id[:40]!r}: rule delegates to darc:{ref[:40]}, which is not "
                    "on the ledger (anyone could create it and satisfy the rule); create that "
                    "policy first"
                )


def _entry(darc_id: str, version: int, payload: Mapping[str, Any], env: TxEnv) -> dict[str, Any]:
    return {
        "id": darc_id,
        "version": version,
        "rules": payload["rules"],
        "terms": payload.get("terms"),
        "height": env.height,
        "time_ms": env.time_ms,
        "tx": env.tx_id,
    }


def _check_owner(
    darc_id: str, terms: Any, view: StateView, env: TxEnv, old_terms: Any = None
) -> None:
    """An owner-bound id needs its owner's signature; a data policy needs a bound id, and
    a new one (created, or terms added to a policy without) an owner admitted as a provider
    when the ledger requires registration. A removed owner may still change its policy
    (e.g. revoke grants); ``job.create`` excludes it anyway."""
    owner = policy_owner(darc_id)
    if owner is None:
        if terms is not None:
            raise LedgerError(
                f"data policy id {darc_id!r} is not bound to its owner: use "
                "bound_policy_id(name, owner key) (an unbound id could be squatted)"
            )
        return
    if owner not in env.signers:
        raise LedgerError(
            f"policy id {darc_id[:40]}… is bound to key {owner[:16]}…, which did not sign: only "
            "that key may create or change it"
        )
    if terms is not None and old_terms is None:
        check_registered(view, owner, PROVIDER)


def darc_create(view: StateView, tx: Tx, env: TxEnv) -> dict[str, Any]:
    p = tx.payload
    if not isinstance(p, dict) or "id" not in p or "rules" not in p:
        raise LedgerError("darc.create payload is {'id', 'rules', 'terms'}")
    darc_id = p["id"]
    if not isinstance(darc_id, str) or not _ID.match(darc_id):
        raise LedgerError(f"policy id {darc_id!r} must match {_ID.pattern}")
    if set(p) - {"id", "rules", "terms"}:
        raise LedgerError(
            f"darc.create payload has unknown fields {sorted(set(p) - {'id', 'rules', 'terms'})}"
        )
    if view.get(darc_key(darc_id)) is not None:
        raise LedgerError(f"policy {darc_id!r} already exists: evolve it instead")
    _check_rules(p["rules"])
    _check_references(p["rules"], darc_id, view)
    check_terms(p.get("terms"))
    _check_owner(darc_id, p.get("terms"), view, env)
    if not evaluate(p["rules"]["_evolve"], env.signers, view):
        raise LedgerError(f"policy {darc_id!r}: the creator must satisfy its own '_evolve' rule")
    return {darc_key(darc_id): _entry(darc_id, 0, p, env)}


_EVOLVE_NEED = {"id", "version", "rules"}
_EVOLVE_FIELDS = _EVOLVE_NEED | {"terms"}


def darc_evolve(view: StateView, tx: Tx, env: TxEnv) -> dict[str, Any]:
    p = tx.payload
    if not isinstance(p, dict) or not _EVOLVE_NEED <= set(p) <= _EVOLVE_FIELDS:
        raise LedgerError("darc.evolve payload is {'id', 'version', 'rules', 'terms'}")
    darc_id = p["id"]
    if not isinstance(darc_id, str):
        raise LedgerError(f"policy id must be a string, got {darc_id!r}")
    old = check_rule(view, darc_id, "_evolve", env.signers)
    if p["version"] != old["version"] + 1:
        raise LedgerError(
            f"policy {darc_id!r}: new version must be {old['version'] + 1}, got {p['version']}"
        )
    _check_rules(p["rules"])
    _check_references(p["rules"], darc_id, view)
    check_terms(p.get("terms"))
    _check_owner(darc_id, p.get("terms"), view, env, old.get("terms"))
    return {darc_key(darc_id): _entry(darc_id, p["version"], p, env)}
