"""Transports: how Kaires services talk to each other.

- :mod:`kaires_fl.transport.base`: :class:`Transport` (``address``, ``set_handler``,
  ``send``, ``broadcast``, ``now``, ``call_later``), :class:`Envelope`, :class:`Timer`.
- :mod:`kaires_fl.transport.memory`: :class:`MemoryNetwork`, a deterministic
  discrete-event simulation (simulated clock, seeded randomness) with fault injection:
  drop, delay, duplicate, reorder, partition, crash and restart of a node, plus
  arbitrary message filters. Drive it with ``net.run_until(predicate, timeout)``.
- :mod:`kaires_fl.transport.tcp`: :class:`TcpNetwork`, the same interface across
  processes over TCP (asyncio streams on an I/O thread, handlers on the driving thread):
  peers authenticated by pinned Ed25519 keys in a signed handshake, frames encrypted
  and authenticated per connection, the typed schema as wire format
  (:mod:`kaires_fl.wire`), size limits, bounded queues, reconnection with backoff.
  Driven like the memory network (``run_until``, ``run_for``, ``run_forever``) on a
  real clock.
"""

from kaires_fl.transport.base import Envelope, Handler, Timer, Transport
from kaires_fl.transport.memory import LinkFaults, MemoryEndpoint, MemoryNetwork
from kaires_fl.transport.tcp import Peer, Reactor, TcpEndpoint, TcpNetwork, client_address

__all__ = [
    "Envelope",
    "Handler",
    "LinkFaults",
    "MemoryEndpoint",
    "MemoryNetwork",
    "Peer",
    "Reactor",
    "TcpEndpoint",
    "TcpNetwork",
    "Timer",
    "Transport",
    "client_address",
]
