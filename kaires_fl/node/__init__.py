"""Kaires nodes: one operator's identity and services, hosted on any transport.

- :mod:`kaires_fl.node.config`: ``private.toml`` / ``public.toml`` / ``group.toml`` /
  ``dkg-share.toml`` — writing, loading and validation (:class:`ConfigError` with one line).
- :mod:`kaires_fl.node.host`: :class:`Node` (ledger node, trustee, aggregator of one
  identity; DKG and LTS bootstrap over the network; restart from the directory) and
  :func:`bootstrap`.
- :mod:`kaires_fl.node.driver`: :class:`NodeCommittee`, the job driver of
  :class:`~kaires_fl.simulation.LocalCommittee` run against Nodes.
"""

from kaires_fl.node.config import (
    Group,
    NodeKeys,
    PublicEntry,
    load_group,
    load_keys,
    load_node,
    load_public,
    make_group,
    setup_node,
    write_group,
)

__all__ = [
    "Group",
    "NodeKeys",
    "PublicEntry",
    "load_group",
    "load_keys",
    "load_node",
    "load_public",
    "make_group",
    "setup_node",
    "write_group",
]
