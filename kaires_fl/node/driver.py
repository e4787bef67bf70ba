"""The job driver of :class:`~kaires_fl.simulation.LocalCommittee`, run against Nodes.

:class:`NetworkCommittee` reuses ``LocalCommittee``'s client-side code unchanged — provider
policies, the job request, the sealed submissions, the untrusted coordinator, the coin
and the consumer's result — but the ledger, trustees and aggregators are the services
hosted by :class:`~kaires_fl.node.host.Node` s (their keys stay in the nodes). The driver
holds only client keys (consumer, coordinator, providers). Two front ends:

- :class:`NodeCommittee`: over in-process :class:`~kaires_fl.node.host.Node` s (reads the
  ledger through one node's ledger, ``via``), on a network the caller drives with
  ``run_until`` (the in-memory network in tests);
- :class:`~kaires_fl.node.client.RemoteCommittee` (``kaires_fl.connect("group.toml")``):
  over TCP to separate node processes, reading a verified replica of the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kaires_fl.aggregation.job import Coordinator
from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.crypto.sign import H, Identity
from kaires_fl.errors import ConfigError, ProtocolError
from kaires_fl.ledger.client import LedgerClient
from kaires_fl.ledger.darc import DEFAULT_MAX_JOBS, DEFAULT_MIN_PROVIDERS, darc_key
from kaires_fl.node.config import Group
from kaires_fl.node.host import Node, NodeLedger
from kaires_fl.roles.consumer import Consumer
from kaires_fl.roles.provider import Provider
from kaires_fl.secret_management.release import LtsInfo
from kaires_fl.simulation import ROLES, LocalCommittee


@dataclass
class _Trustees:
    """What the driver needs of the trustee committee: the LTS and the addresses."""

    lts: LtsInfo
    addresses: list[str]


@dataclass(frozen=True)
class PublicKeyRef:
    """A member's public key (what :class:`LocalCommittee` keeps as an ``Identity``; a
    client of a deployed committee knows only the public half)."""

    public: bytes


class NetworkCommittee(LocalCommittee):
    """The job driver of :class:`LocalCommittee` over a committee reached on ``network``.

    Holds only client keys — ``consumer`` and ``coordinator_id`` — and reads the ledger
    through ``ledger`` (a :class:`~kaires_fl.node.host.NodeLedger` over a node's own
    ledger node, or over a client's verified replica: :mod:`kaires_fl.node.client`).
    ``prefix`` is prepended to the driver's addresses (``coordinator``,
    ``coordinator-coin``, ``coordinator-ledger``): a TCP client may only use
    ``client-<key hex>/…``.

    Pre: ``lts`` is the group's long-term secret on the ledger, and the aggregation
    committee ``group.committee_id`` is in the ledger state.
    """

    def __init__(
        self,
        network: Any,
        ledger: NodeLedger,
        group: Group,
        lts: LtsInfo,
        consumer: Consumer,
        coordinator_id: Identity,
        *,
        prefix: str = "",
        price: int = 0,
        min_providers: int = DEFAULT_MIN_PROVIDERS,
        max_jobs: int | None = DEFAULT_MAX_JOBS,
        round_timeout: float = 2.0,
    ) -> None:
        if group.registration:
            raise ConfigError(
                "this driver cannot admit providers on a ledger with registration on "
                "(admission over the network comes later); use a group without registration"
            )
        self.group = group
        self.network = network
        self.faults = {r: {} for r in ROLES}
        aggs = group.with_role("aggregator")
        self.n_aggregators, self.threshold = len(aggs), group.threshold
        self.price, self.min_providers, self.max_jobs = price, min_providers, max_jobs
        self.registration = False
        self.workers = 1  # the providers' submissions are sealed on the caller's thread
        self.consumer = consumer
        self.coordinator_id = coordinator_id
        self.coin_address = prefix + "coordinator-coin"
        self.ledger = ledger  # type: ignore[assignment]  # the LocalLedger surface, duck-typed
        self.client = LedgerClient(ledger, prefix + "coordinator-ledger")  # type: ignore[arg-type]
        self.trustees = _Trustees(lts, group.addresses("trustee"))  # type: ignore[assignment]
        self.lts_id = lts.id
        self.committee_id = group.committee_id
        if self.client.get(f"committee/{self.committee_id}") is None:
            raise ProtocolError("the aggregation committee is not on the ledger")
        #: The aggregators' public keys (signing, re-encryption), as the group lists them.
        self.aggregator_ids = [PublicKeyRef(bytes.fromhex(e.sign)) for e in aggs]  # type: ignore[misc]
        self.aggregator_keys = [PublicKeyRef(bytes.fromhex(e.box)) for e in aggs]  # type: ignore[misc]
        self.aggregator_addresses = group.addresses("aggregator")
        self.aggregators = []
        self.coordinator = Coordinator(
            network.endpoint(prefix + "coordinator"),
            network,
            self.client,
            self.aggregator_addresses,
            self.trustees.addresses,
            self.coordinator_id,
            round_timeout=round_timeout,
            lts_id=lts.id,
        )
        self.providers = {}
        self._trustee_faults = {}
        self.setup_seconds = 0.0

    def ensure_providers(
        self, labels: Sequence[Any], grants: Sequence[Consumer] | None = None
    ) -> list[Provider]:
        """As :meth:`LocalCommittee.ensure_providers`, adopting providers whose policy is
        already on the ledger (created by an earlier driver of the same committee)."""
        for lb in dict.fromkeys(str(x) for x in labels):
            if lb not in self.providers:
                p = Provider(lb, self.provider_identity(lb))
                if self.client.get(darc_key(p.policy_id)) is not None:
                    self.providers[lb] = p
        return super().ensure_providers(labels, grants)

    def register_committee(self) -> str:
        """The committee is registered in genesis (see :func:`~.host.group_genesis`)."""
        return self.committee_id

    def close(self) -> None:
        """Nothing to close here (subclasses close what they own)."""


class NodeCommittee(NetworkCommittee):
    """Run jobs (``run_job``) through ready Nodes; see the module docstring.

    Parameters
    ----------
    nodes:
        The committee's nodes (all ready: see :func:`~kaires_fl.node.host.bootstrap`).
    via:
        Index in ``nodes`` of the node whose ledger the driver reads.
    seed:
        Derives the driver's client keys (consumer, coordinator).
    """

    def __init__(
        self,
        nodes: list[Node],
        *,
        via: int = 0,
        seed: int = 0,
        price: int = 0,
        min_providers: int = DEFAULT_MIN_PROVIDERS,
        max_jobs: int | None = DEFAULT_MAX_JOBS,
        round_timeout: float = 2.0,
    ) -> None:
        if not nodes or not all(nd.ready for nd in nodes):
            raise ConfigError("NodeCommittee needs ready nodes: run bootstrap() first")
        node = nodes[via]
        self.nodes = nodes
        tag = str(seed).encode()
        consumer = Consumer(
            "consumer",
            Identity.from_seed(H(b"kaires/node-driver/consumer", tag)),
            EnvelopeKeyPair.from_seed(H(b"kaires/node-driver/consumer-x25519", tag)),
        )
        assert node.lts is not None
        super().__init__(
            node.network,
            NodeLedger(node.network, node.ledger_node, node.ledger_addresses, node.genesis),
            node.group,
            node.lts,
            consumer,
            Identity.from_seed(H(b"kaires/node-driver/coordinator", tag)),
            price=price,
            min_providers=min_providers,
            max_jobs=max_jobs,
            round_timeout=round_timeout,
        )

    def close(self) -> None:
        """Nothing to close: the nodes belong to the caller."""


__all__: list[Any] = ["NetworkCommittee", "NodeCommittee", "PublicKeyRef"]
