"""The secret-management cothority end to end, on a ledger client and its in-memory network.

What the other roles call (see the package docstring for the exact signatures):

- :meth:`TrusteeCommittee.setup` — run the DKG among n trustees, register the LTS on the
  ledger (co-signed by every trustee whose own DKG agrees) and start the trustee nodes.
- :func:`provider_write` — a provider writes fresh keys for a job's slots (one tx).
- :func:`close_inputs` — the consumer or an aggregator closes a job's inputs.
- :meth:`TrusteeCommittee.release` — a reader commits its read, asks every trustee,
  verifies and combines (returns the keys and the trustees named faulty).
- :meth:`TrusteeCommittee.coin` — the job's coin, once its inputs are closed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kaires_fl.crypto.elgamal import RecipientKey
from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.crypto.sign import H, Identity
from kaires_fl.errors import AccessDenied, ConfigError, KairesError
from kaires_fl.ledger.darc import darc_key
from kaires_fl.ledger.jobs import job_key
from kaires_fl.secret_management.coin import combine_coin
from kaires_fl.secret_management.contracts import (
    INPUTS_KIND,
    LTS_KIND,
    READ_KIND,
    inputs_key,
    lts_key,
)
from kaires_fl.secret_management.dkg import (
    DkgResult,
    make_participants,
    run_dkg,
    run_dkg_on_network,
)
from kaires_fl.secret_management.evidence import prove_entries
from kaires_fl.secret_management.release import (
    LtsInfo,
    Refusal,
    ReleaseRequest,
    ReleaseResult,
    SealedAnswer,
    combine_release,
    evidence_keys,
    open_answer,
    read_payload,
    writes_from_evidence,
)
from kaires_fl.secret_management.trustee import (
    CoinRequest,
    Trustee,
    TrusteeNode,
    collect_answers,
    lts_payload,
    make_trustee,
)
from kaires_fl.secret_management.write import WRITE_KIND, make_write

__all__ = ["TrusteeCommittee", "close_inputs", "provider_write"]


@dataclass
class TrusteeCommittee:
    """A running trustee committee: its LTS, its trustees and their network addresses."""

    lts: LtsInfo
    trustees: list[Trustee | None]
    addresses: list[str]
    nodes: list[TrusteeNode] = field(default_factory=list)
    dkg_faulty: Mapping[int, str] = field(default_factory=dict)
    identities: list[Identity] = field(default_factory=list, repr=False)
    results: dict[int, DkgResult] = field(default_factory=dict, repr=False)

    @classmethod
    def setup(
        cls,
        client: Any,
        n: int = 4,
        t: int = 1,
        *,
        faults: Mapping[int, str] | None = None,
        dkg_faults: Mapping[int, str] | None = None,
        name: str = "trustee",
        seed: bytes = b"",
        network_dkg: bool = False,
    ) -> TrusteeCommittee:
        """DKG + LTS registration + trustee nodes on ``client``'s network.

        With ``network_dkg`` the DKG itself runs over the network in timed rounds
        (:class:`~.dkg.DkgNode`); otherwise in process (:func:`~.dkg.run_dkg`).

        ``faults`` maps a trustee index to a release behaviour
        (:data:`~.trustee.TRUSTEE_BEHAVIOURS`: "crash", "byzantine", "wrong_proof", …);
        ``dkg_faults`` to a DKG behaviour (:data:`~.dkg.BEHAVIOURS`). A trustee that
        crashed in the DKG gets no share and never answers.

        Raises
        ------
        ConfigError
            on bad parameters; :class:`~kaires_fl.errors.LedgerError` if the LTS is refused.
        """
        faults = dict(faults or {})
        dkg_faults = dict(dkg_faults or {})
        for j in (*faults, *dkg_faults):
            if not 0 <= j < n:
                raise ConfigError(f"trustee fault index {j} is outside 0..{n - 1}")
        identities = [
            Identity.from_seed(H(b"kaires-fl/trustee", name.encode(), seed, str(j).encode()))
            for j in range(n)
        ]
        participants = make_participants(
            n,
            t,
            behaviours=dkg_faults,
            session=H(b"dkg", name.encode(), seed),
            identities=identities,
        )
        addresses = [f"{name}-{j}" for j in range(n)]
        if network_dkg:
            results = run_dkg_on_network(client.network, participants, addresses)
        else:
            results = run_dkg(participants)
        honest = [j for j in range(n) if j not in dkg_faults]
        ref = results[honest[0]]
        payload = lts_payload(ref, [i.public for i in identities])
        approvers = [
            identities[j] for j in sorted(results) if Trustee.approve_lts(results[j], payload)
        ]
        committed = client.execute(approvers[0], LTS_KIND, payload, cosigners=approvers[1:])
        lts = LtsInfo.from_entry(client.get(lts_key(committed.tx_id)))
        trustees: list[Trustee | None] = []
        nodes: list[TrusteeNode] = []
        for j in range(n):
            res = results.get(j)
            if res is None:  # crashed during the DKG: holds no share, never answers
                trustees.append(None)
                continue
            tr = make_trustee(res, lts, client.genesis, faults.get(j, "honest"), identities[j])
            trustees.append(tr)
            nodes.append(TrusteeNode(tr, client.network.endpoint(addresses[j])))
        return cls(lts, trustees, addresses, nodes, dict(ref.faulty), identities, dict(results))

    def reshare(
        self,
        client: Any,
        new_n: int,
        new_t: int,
        *,
        faults: Mapping[int, str] | None = None,
        reshare_faults: Mapping[int, str] | None = None,
        name: str = "trustee-next",
        seed: bytes = b"",
    ) -> TrusteeCommittee:
        """Hand the key to ``new_n`` new trustees (threshold ``new_t`` + 1); X is unchanged.

        The old trustees (``reshare_faults``: their :data:`~.reshare.RESHARE_BEHAVIOURS`)
        deal, the new ones verify and combine; the LTS entry keeps its id and X and gets
        the new public shares and trustees (``calypso.lts.reshare``, co-signed by enough
        old and new trustees). This committee's nodes stop answering.
        """
        from kaires_fl.secret_management.contracts import RESHARE_KIND
        from kaires_fl.secret_management.reshare import run_reshare

        new_ids = [
            Identity.from_seed(H(b"kaires-fl/trustee", name.encode(), seed, str(k).encode()))
            for k in range(new_n)
        ]
        new_results = run_reshare(
            self.results,
            self.lts,
            new_n,
            new_t,
            behaviours=reshare_faults,
            session=H(b"reshare", self.lts.id.encode(), name.encode(), seed),
        )
        ref = new_results[0]
        payload = {
            "id": self.lts.id,
            "n": new_n,
            "t": new_t,
            "shares": [p.to_bytes().hex() for p in ref.public_shares],
            "trustees": [i.public.hex() for i in new_ids],
            "transcript": ref.transcript.hex(),
        }
        old_signers = [self.identities[j] for j in sorted(self.results)]
        new_signers = [
            new_ids[k] for k in sorted(new_results) if new_results[k].transcript == ref.transcript
        ]
        signers = old_signers + new_signers
        client.execute(signers[0], RESHARE_KIND, payload, cosigners=signers[1:])
        lts = LtsInfo.from_entry(client.get(lts_key(self.lts.id)))
        for node in self.nodes:
            node.transport.set_handler(None)
        addresses = [f"{name}-{k}" for k in range(new_n)]
        trustees: list[Trustee | None] = []
        nodes: list[TrusteeNode] = []
        for k in range(new_n):
            tr = make_trustee(
                new_results[k], lts, client.genesis, (faults or {}).get(k, "honest"), new_ids[k]
            )
            trustees.append(tr)
            nodes.append(TrusteeNode(tr, client.network.endpoint(addresses[k])))
        return TrusteeCommittee(
            lts, trustees, addresses, nodes, dict(ref.faulty), new_ids, dict(new_results)
        )

    # -- reader -------------------------------------------------------------------------
    def release(
        self,
        client: Any,
        reader: Identity,
        reader_key: EnvelopeKeyPair,
        job_id: str,
        slot: str,
        writes: Sequence[str],
        *,
        timeout: float = 1.0,
    ) -> ReleaseResult:
        """Reader step: commit a read for ``writes``, ask every trustee, verify, combine.

        Raises
        ------
        LedgerError
            if the ledger refuses the read (the reason says why: not authorised).
        AccessDenied
            if every answering trustee refused (with the first reason).
        ProtocolError
            if fewer than t + 1 valid shares arrive for some key.
        """
        payload = read_payload(self.lts.id, job_id, slot, reader_key, writes)
        read_id = client.execute(reader, READ_KIND, payload).tx_id
        return self.fetch(client, read_id, reader_key, timeout=timeout)

    def fetch(
        self, client: Any, read_id: str, reader_key: EnvelopeKeyPair, *, timeout: float = 1.0
    ) -> ReleaseResult:
        """Ask the trustees for the keys of the committed read ``read_id`` and combine."""
        from kaires_fl.secret_management.contracts import read_key

        read = client.get(read_key(read_id))
        if read is None:
            raise AccessDenied(f"read {read_id[:16]}… is not committed: commit it first")
        keys = evidence_keys(self.lts.id, read_id, read["job"], read["writes"])
        evidence = prove_entries(client, keys)
        endpoint = client.network.endpoint(f"reader-{read_id[:12]}")
        sealed = collect_answers(
            client.network, endpoint, self.addresses, ReleaseRequest(read_id, evidence), timeout
        )
        answers = {j: _opened(a, reader_key, read_id, j) for j, a in sealed.items()}
        refusals = [a for a in answers.values() if isinstance(a, Refusal)]
        if refusals and len(refusals) > len(answers) - (self.lts.t + 1):
            raise AccessDenied(
                f"{len(refusals)} trustees refused the release: {refusals[0].reason}"
            )
        proven = evidence.verify(client.genesis)
        return combine_release(
            answers,
            read_id,
            read,
            writes_from_evidence(proven, read["writes"]),
            self.lts,
            RecipientKey.from_x25519(reader_key),
        )

    # -- coin ---------------------------------------------------------------------------
    def coin(
        self, client: Any, job_id: str, *, timeout: float = 1.0
    ) -> tuple[bytes, dict[int, str]]:
        """The job's coin seed (32 bytes) and the trustees named faulty.

        Raises
        ------
        AccessDenied
            if the job's inputs are not closed (every honest trustee refuses).
        """
        evidence = prove_entries(client, [job_key(job_id), inputs_key(job_id)])
        endpoint = client.network.endpoint(f"coin-{job_id[:12]}")
        answers = collect_answers(
            client.network,
            endpoint,
            self.addresses,
            CoinRequest(self.lts.id, job_id, evidence),
            timeout,
        )
        refusals = [a for a in answers.values() if isinstance(a, Refusal)]
        if len(refusals) > len(answers) - (self.lts.t + 1):
            raise AccessDenied(f"{len(refusals)} trustees refused the coin: {refusals[0].reason}")
        inputs = evidence.verify(client.genesis)[inputs_key(job_id)]
        shares = {j: (None if isinstance(a, Refusal) else a) for j, a in answers.items()}
        seed, faulty = combine_coin(
            shares,
            dict(enumerate(self.lts.public_shares)),
            self.lts.t,
            self.lts.id,
            job_id,
            inputs["root"],
        )
        for j, a in answers.items():
            if isinstance(a, Refusal):
                faulty[j] = f"refused: {a.reason}"
        return seed, dict(sorted(faulty.items()))


def _opened(answer: Any, reader_key: EnvelopeKeyPair, read_id: str, j: int) -> Any:
    """A trustee's answer as the reader sees it: sealed answers opened (a plain Refusal —
    sent before the read was known — kept; anything else that does not open is kept as
    is, so combine_release names its sender faulty)."""
    if isinstance(answer, SealedAnswer) and answer.read == read_id and answer.trustee == j:
        try:
            return open_answer(answer, reader_key)
        except KairesError:
            return answer
    return answer


# --- provider / coordinator --------------------------------------------------------------------


def provider_write(
    client: Any,
    provider: Identity,
    lts: LtsInfo,
    policy: str,
    job: str,
    slots: Sequence[str],
) -> tuple[str, dict[str, bytes]]:
    """Provider step 2.3: write fresh keys for ``slots`` of ``job`` (``""``: offline).

    Returns (write id, {slot: 32-byte key}). The write id is the id of the committed
    ``calypso.write`` transaction (put it in the manifest).

    Raises
    ------
    LedgerError
        if the ledger refuses the write (unknown policy, not the policy's owner, job does
        not include the provider, …).
    """
    d = client.get(darc_key(policy))
    if d is None:
        raise AccessDenied(f"policy {policy!r} is not on the ledger: create it first")
    entry, keys = make_write(lts.X, lts.id, policy, d["version"], job, slots)
    committed = client.execute(provider, WRITE_KIND, entry.to_payload())
    return committed.tx_id, keys


def close_inputs(
    client: Any, signer: Identity, job_id: str, manifests: Sequence[str], writes: Sequence[str]
) -> str:
    """Step 3: record the job's submission set; returns the inputs root (hex)."""
    client.execute(
        signer, INPUTS_KIND, {"job": job_id, "manifests": list(manifests), "writes": list(writes)}
    )
    return str(client.get(inputs_key(job_id))["root"])
