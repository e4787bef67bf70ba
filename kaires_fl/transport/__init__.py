"""Transports: how Kaires services talk to each other.

- :mod:`kaires_fl.transport.base`: :class:`Transport` (``address``, ``set_handler``,
  ``send``, ``broadcast``, ``now``, ``call_later``), :class:`Envelope`, :class:`Timer`.
- :mod:`kaires_fl.transport.memory`: :class:`MemoryNetwork`, a deterministic
  discrete-event simulation (simulated clock, seeded randomness) with fault injection:
  drop, delay, duplicate, reorder, partition, crash and restart of a node, plus
  arbitrary message filters. Drive it with ``net.run_until(predicate, timeout)``.
"""

from kaires_fl.transport.base import Envelope, Handler, Timer, Transport
from kaires_fl.transport.memory import LinkFaults, MemoryEndpoint, MemoryNetwork

__all__ = [
    "Envelope",
    "Handler",
    "LinkFaults",
    "MemoryEndpoint",
    "MemoryNetwork",
    "Timer",
    "Transport",
]
