"""A small world on a real in-process ledger: trustees, providers with policies, a job."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.crypto.sign import H, Identity
from kaires_fl.ledger import LedgerConfig, LocalLedger, data_terms, job_payload
from kaires_fl.ledger.committees import committee_id, register_payload
from kaires_fl.ledger.darc import bound_policy_id
from kaires_fl.secret_management.committee import TrusteeCommittee, close_inputs, provider_write
from kaires_fl.secret_management.write import aggregator_slot


def ident(*label: str) -> Identity:
    return Identity.from_seed(H(b"test", *(s.encode() for s in label)))


@dataclass
class World:
    ledger: LocalLedger
    client: Any
    committee: TrusteeCommittee
    consumer: Identity
    consumer_key: EnvelopeKeyPair
    aggregators: list[Identity]
    agg_keys: list[EnvelopeKeyPair]
    providers: dict[str, Identity]
    jobs: list[str] = field(default_factory=list)
    committee_id: str = ""

    def pid(self, name: str) -> str:
        """Policy id of provider ``name`` (bound to its key)."""
        return bound_policy_id(name, self.providers[name].public.hex())

    def register_committee(self, t: int = 1) -> None:
        members = list(zip(self.aggregators, self.agg_keys, strict=True))
        payload = register_payload(self.client.chain, members, t)
        ids = [a for a, _ in members]
        self.client.execute(ids[0], "committee.register", payload, cosigners=ids[1:])
        self.committee_id = committee_id(
            [a.public.hex() for a in self.aggregators], [k.public.hex() for k in self.agg_keys], t
        )

    def create_policy(self, name: str, consumers: list[Identity]) -> None:
        prov = self.providers[name]
        use = " | ".join(f"ed25519:{c.public.hex()}" for c in consumers)
        self.client.execute(
            prov,
            "darc.create",
            {
                "id": self.pid(name),
                "rules": {"_evolve": f"ed25519:{prov.public.hex()}", "use": use},
                "terms": data_terms(
                    prov.public.hex(), min_providers=1, committees=[self.committee_id]
                ),
            },
        )

    def evolve_policy(self, name: str, consumers: list[Identity]) -> None:
        prov = self.providers[name]
        d = self.client.get(f"darc/{self.pid(name)}")
        use = " | ".join(f"ed25519:{c.public.hex()}" for c in consumers) or (f"ed25519:{'0' * 64}")
        self.client.execute(
            prov,
            "darc.evolve",
            {
                "id": self.pid(name),
                "version": d["version"] + 1,
                "rules": {"_evolve": f"ed25519:{prov.public.hex()}", "use": use},
                "terms": d["terms"],
            },
        )

    def create_job(self, providers: list[str], consumer: Identity | None = None) -> str:
        consumer = consumer or self.consumer
        payload = job_payload(
            "count",
            [self.pid(p) for p in providers],
            self.committee_id,
            self.consumer_key.public.hex(),
        )
        job = self.client.execute(consumer, "job.create", payload).tx_id
        self.jobs.append(job)
        return job

    def write(self, provider: str, job: str) -> tuple[str, dict[str, bytes]]:
        slots = [aggregator_slot(i) for i in range(len(self.aggregators))] + ["consumer"]
        return provider_write(
            self.client,
            self.providers[provider],
            self.committee.lts,
            self.pid(provider),
            job,
            slots,
        )

    def close(self, job: str, writes: list[str]) -> str:
        mans = [H(b"manifest", w.encode()).hex() for w in writes]
        return close_inputs(self.client, self.consumer, job, mans, writes)


def make_world(
    n_trustees: int = 4, t: int = 1, faults=None, dkg_faults=None, seed=0, registry=None
) -> World:
    ledger = LocalLedger(n=4, seed=seed, config=LedgerConfig(view_timeout=0.05), registry=registry)
    client = ledger.client()
    committee = TrusteeCommittee.setup(
        client, n_trustees, t, faults=faults, dkg_faults=dkg_faults, seed=str(seed).encode()
    )
    w = World(
        ledger=ledger,
        client=client,
        committee=committee,
        consumer=ident("consumer"),
        consumer_key=EnvelopeKeyPair.from_seed(H(b"consumer-x25519")),
        aggregators=[ident("agg", str(i)) for i in range(4)],
        agg_keys=[EnvelopeKeyPair.from_seed(H(b"agg-x25519", bytes([i]))) for i in range(4)],
        providers={p: ident("provider", p) for p in ("alice", "bob")},
    )
    w.register_committee()
    for p in ("alice", "bob"):
        w.create_policy(p, [w.consumer])
    return w


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()
