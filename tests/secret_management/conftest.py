"""Fixtures of the secret-management tests (helpers live in trustee_world)."""

from trustee_world import world

__all__ = ["world"]
