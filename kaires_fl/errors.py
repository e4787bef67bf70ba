"""Typed errors of Kaires-FL.

Every error says what was wrong and what to do about it. All derive from
:class:`KairesError`, so callers can catch the whole family at once.
"""

from __future__ import annotations


class KairesError(Exception):
    """Base class of every error raised by Kaires-FL."""


class ConfigError(KairesError, ValueError):
    """Parameters or configuration that cannot work (e.g. n < 3t+1, sums that could wrap)."""


class EncodingError(KairesError, ValueError):
    """Bytes or values that do not decode canonically (non-canonical field element, bad point)."""


class InvalidSubmission(KairesError):
    """A provider's submission failed validation (bad proof, out of range, inconsistent shares)."""


class InvalidProof(KairesError):
    """A zero-knowledge proof (Schnorr, DLEQ, write proof, FLP) failed to verify."""


class ProtocolError(KairesError):
    """A protocol step could not complete (too many faulty parties, wrong message, timeout)."""


class DecodingError(ProtocolError):
    """Robust reconstruction failed: more wrong or missing shares than the code corrects."""


class AccessDenied(KairesError):
    """The ledger does not authorise this access (no grant, revoked, expired, wrong recipient)."""


class LedgerError(KairesError):
    """A transaction was rejected by the ledger (bad signature, replay, policy violation)."""


class AuditError(KairesError):
    """An audited chain, block or inclusion proof failed verification."""


class KairesWarning(UserWarning):
    """Behaviour the user should know about that changed a result without failing: providers
    rejected, updates clipped, weights capped. The message says how many and why."""


class JobFailed(KairesError):
    """A job produced no aggregate (e.g. every sampled node refused or failed); the
    message says how many nodes took part and the first reasons, shortened."""
