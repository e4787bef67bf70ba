"""The transport interface every Kaires service runs on.

A service (ledger node, trustee, aggregator) is an *endpoint*: it has an address,
sends messages to other addresses and receives them through one handler
``handler(src, payload)``. It never sleeps or blocks: it asks the transport for a
timer with :meth:`Transport.call_later` and reacts when it fires. Time is read from
:meth:`Transport.now` (seconds), never from the wall clock, so the same code runs on
the simulated clock of :mod:`kaires_fl.transport.memory` and on a real network.

Payloads are immutable values: protocol messages are :class:`kaires_fl.schema.Message`
structs (their canonical encoding is the wire format), other values are frozen
dataclasses, tuples or bytes. The in-memory transport passes them by reference (or, with
``MemoryNetwork(wire=True)``, through their wire encoding); a network transport
serialises them, so a payload must not rely on identity or be mutated after it is sent,
and a handler must accept the bytes of a message as well as the message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[[str, Any], None]


@dataclass(frozen=True)
class Envelope:
    """One message in flight: ``src`` → ``dst`` carrying ``payload``.

    ``sent_at`` and ``deliver_at`` are transport times (seconds); ``seq`` orders
    messages with equal delivery times deterministically.
    """

    src: str
    dst: str
    payload: Any
    sent_at: float
    deliver_at: float
    seq: int = 0


@dataclass
class Timer:
    """A pending callback; :meth:`cancel` makes it a no-op."""

    when: float
    callback: Callable[[], None] = field(repr=False)
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True
        # A cancelled timer stays queued until its time comes (in a simulation, many jobs
        # later): it must not keep what its callback refers to (a whole job's state) alive.
        self.callback = _cancelled


def _cancelled() -> None:
    """What a cancelled :class:`Timer` runs, if anything still runs it."""


class Transport(ABC):
    """One endpoint of a network.

    Postconditions: :meth:`send` never raises for an unreachable or crashed peer (the
    message is simply lost, as on a real network); delivery is at most once unless the
    network duplicates, and in no particular order unless the network preserves it.
    """

    address: str

    @abstractmethod
    def set_handler(self, handler: Handler | None) -> None:
        """Install the function called as ``handler(src, payload)`` for each delivery."""

    @abstractmethod
    def send(self, dst: str, payload: Any) -> None:
        """Send ``payload`` to ``dst`` (fire and forget)."""

    def broadcast(self, dsts: Iterable[str], payload: Any) -> None:
        """Send ``payload`` to each of ``dsts`` (including this endpoint if listed)."""
        for d in dsts:
            self.send(d, payload)

    @abstractmethod
    def now(self) -> float:
        """Current transport time in seconds."""

    @abstractmethod
    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback()`` after ``delay`` seconds unless cancelled or this endpoint crashed."""
