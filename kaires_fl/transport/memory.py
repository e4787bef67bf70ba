"""In-memory network: a deterministic discrete-event simulation with fault injection.

Every endpoint of one :class:`MemoryNetwork` shares a simulated clock. Sending a
message schedules its delivery at ``now + latency (+ injected delay)``; timers are
events on the same queue. Nothing happens until someone drives the loop with
:meth:`MemoryNetwork.run_until` / :meth:`run_for` / :meth:`step`, so a test controls
time exactly and runs as fast as the handlers compute (a 4-node ledger commit takes
milliseconds of wall time whatever the simulated timeouts are).

Faults (all seeded, hence reproducible):

- :class:`LinkFaults` per link, per source, per destination or global: ``drop`` and
  ``duplicate`` probabilities, extra ``delay`` range, ``reorder`` probability (a
  reordered message gets a random extra delay of up to ``reorder_window``);
- :meth:`partition` / :meth:`heal`: messages cross only within a group;
- :meth:`crash` / :meth:`restart`: a crashed endpoint neither sends, receives nor runs
  timers; after a restart the service attaches a new handler (its state is whatever
  it reloads from its own storage);
- :meth:`add_filter`: an arbitrary predicate on envelopes (targeted drops in tests).

With ``wire=True`` every :class:`kaires_fl.schema.Message` payload is encoded with
:func:`kaires_fl.schema.encode` when sent and decoded (validated) again for delivery, so
receivers see what a real network would hand their decoder (a fresh object, no shared
state with the sender, nothing outside the schema); a payload that does not encode raises
at the sender as on a network, one that does not decode is dropped (``stats["undecodable"]``).
Other payloads pass by reference as in the default mode.

Handlers may call :meth:`run_until` recursively (a service waiting for a ledger
commit); the loop is re-entrant.

Parallel delivery (``workers > 1``): the messages at the head of the queue that are due
at the same instant to endpoints of :attr:`MemoryNetwork.parallel` (a committee's
aggregators and trustees, whose handlers share no state but the network) form a batch:
each endpoint handles its messages of the batch in queue order, different endpoints side
by side on ``workers`` threads — numba kernels, hashing and libsodium release the GIL.
What a handler of a batch sends or schedules is held back and entered in the queue when
the batch ends, message by message in queue order: sequence numbers, fault-injection
draws and hence every later event are those of one thread (anything a handler adds is
due at or after the batch's instant, behind it in the queue either way). A handler in a
batch must not drive the loop (:meth:`MemoryNetwork.run_until` raises ``ProtocolError``
there); if a handler raises, its endpoint's later messages in the batch are dropped, the
other endpoints' have run, and the first error in queue order is raised.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kaires_fl import schema
from kaires_fl.errors import ConfigError, EncodingError, ProtocolError
from kaires_fl.transport.base import Envelope, Handler, Timer, Transport


@dataclass(frozen=True)
class LinkFaults:
    """Faults applied to messages on a link.

    Preconditions: probabilities in [0, 1]; ``delay`` is a (low, high) range in seconds.
    """

    drop: float = 0.0
    duplicate: float = 0.0
    delay: tuple[float, float] = (0.0, 0.0)
    reorder: float = 0.0
    reorder_window: float = 0.01

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"LinkFaults.{name} = {p} is not a probability in [0, 1]")
        if not 0.0 <= self.delay[0] <= self.delay[1]:
            raise ConfigError(f"LinkFaults.delay = {self.delay} must be 0 <= low <= high")


NO_FAULTS = LinkFaults()


class MemoryEndpoint(Transport):
    """An endpoint of a :class:`MemoryNetwork` (created by :meth:`MemoryNetwork.endpoint`)."""

    def __init__(self, network: MemoryNetwork, address: str) -> None:
        self.network = network
        self.address = address
        self.handler: Handler | None = None
        # Bumped on crash: timers created before it are ignored.
        self.epoch = 0

    def set_handler(self, handler: Handler | None) -> None:
        self.handler = handler

    def send(self, dst: str, payload: Any) -> None:
        self.network._send(self.address, dst, payload)

    def now(self) -> float:
        return self.network.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        epoch = self.epoch

        def fire() -> None:
            if self.epoch == epoch and self.address not in self.network.crashed:
                callback()

        return self.network.schedule(delay, fire)


class MemoryNetwork:
    """A simulated network of :class:`MemoryEndpoint` s sharing one simulated clock.

    Parameters
    ----------
    seed:
        Seed of the fault-injection randomness.
    latency:
        Base one-way delay of every message (seconds of simulated time).
    wire:
        Round-trip every schema message through its wire encoding (see module docstring).
    workers:
        Threads of a parallel batch (module docstring); 1 = every handler on the caller's
        thread. Only endpoints added to :attr:`parallel` are ever batched.
    """

    def __init__(
        self, seed: int = 0, latency: float = 0.001, wire: bool = False, workers: int = 1
    ) -> None:
        if latency < 0:
            raise ConfigError(f"latency must be >= 0, got {latency}")
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        #: Addresses whose handlers may run side by side (module docstring).
        self.parallel: set[str] = set()
        # The held-back sends and timers of the batch handler running on this thread.
        self._held = threading.local()
        self.now = 0.0
        self.latency = latency
        self.wire = wire
        self.rng = random.Random(seed)
        self.endpoints: dict[str, MemoryEndpoint] = {}
        self.crashed: set[str] = set()
        self.faults: dict[tuple[str | None, str | None], LinkFaults] = {}
        self.filters: list[Callable[[Envelope], bool]] = []
        self.groups: list[frozenset[str]] | None = None
        self.stats = {"sent": 0, "delivered": 0, "dropped": 0, "duplicated": 0, "undecodable": 0}
        self._queue: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()

    # -- topology -----------------------------------------------------------------
    def endpoint(self, address: str) -> MemoryEndpoint:
        """The endpoint named ``address`` (created on first use)."""
        ep = self.endpoints.get(address)
        if ep is None:
            ep = self.endpoints[address] = MemoryEndpoint(self, address)
        return ep

    def set_faults(
        self, faults: LinkFaults | None, src: str | None = None, dst: str | None = None
    ) -> None:
        """Apply ``faults`` to messages from ``src`` to ``dst`` (None = any); None clears."""
        if faults is None:
            self.faults.pop((src, dst), None)
        else:
            self.faults[(src, dst)] = faults

    def add_filter(self, keep: Callable[[Envelope], bool]) -> Callable[[], None]:
        """Drop every envelope for which ``keep(envelope)`` is False; returns a remover."""
        self.filters.append(keep)
        return lambda: self.filters.remove(keep) if keep in self.filters else None

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: messages cross only within one group.

        Endpoints not listed in any group form one more group together.
        """
        gs = [frozenset(g) for g in groups]
        listed = frozenset().union(*gs) if gs else frozenset()
        rest = frozenset(self.endpoints) - listed
        self.groups = [*gs, rest] if rest else gs

    def heal(self) -> None:
        """Remove the partition."""
        self.groups = None

    def crash(self, address: str) -> None:
        """Crash ``address``: it stops sending, receiving and running timers."""
        self.crashed.add(address)
        ep = self.endpoints.get(address)
        if ep is not None:
            ep.epoch += 1
            ep.handler = None

    def restart(self, address: str) -> MemoryEndpoint:
        """Bring ``address`` back; the caller attaches a fresh handler to the returned endpoint."""
        self.crashed.discard(address)
        return self.endpoint(address)

    def reachable(self, src: str, dst: str) -> bool:
        if src in self.crashed or dst in self.crashed:
            return False
        if self.groups is None or src == dst:
            return True
        return any(src in g and dst in g for g in self.groups)

    # -- events -------------------------------------------------------------------
    def schedule(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` at ``now + delay`` (simulated seconds)."""
        timer = Timer(self.now + max(0.0, delay), callback)
        held = getattr(self._held, "ops", None)
        if held is not None:  # a handler of a parallel batch: queued when the batch ends
            held.append(timer)
        else:
            heapq.heappush(self._queue, (timer.when, next(self._seq), timer))
        return timer

    def _link_faults(self, src: str, dst: str) -> LinkFaults:
        f = self.faults
        if not f:
            return NO_FAULTS
        return (
            f.get((src, dst)) or f.get((src, None)) or f.get((None, dst)) or f.get((None, None))
        ) or NO_FAULTS

    def _over_the_wire(self, payload: schema.Message) -> schema.Message | None:
        """``decode(encode(payload))`` (None if it does not decode); raises EncodingError
        if it does not encode."""
        try:
            data = schema.encode(payload)
        except (TypeError, ValueError, OverflowError, NotImplementedError) as exc:
            raise EncodingError(
                f"{type(payload).__name__} does not encode to the wire: {exc}"
            ) from exc
        try:
            return schema.decode(data, type(payload))
        except EncodingError:
            return None

    def _send(self, src: str, dst: str, payload: Any) -> None:
        held = getattr(self._held, "ops", None)
        if held is None:
            self.stats["sent"] += 1
        undecodable = False
        if self.wire and isinstance(payload, schema.Message):
            payload = self._over_the_wire(payload)  # in a batch: on the handler's thread
            undecodable = payload is None
        if held is not None:
            held.append((src, dst, payload, undecodable))
        else:
            self._post(src, dst, payload, undecodable)

    def _post(self, src: str, dst: str, payload: Any, undecodable: bool) -> None:
        """Enter a sent message in the queue (faults drawn here, in queue order)."""
        if undecodable:
            self.stats["undecodable"] += 1
            return
        if not self.reachable(src, dst):
            self.stats["dropped"] += 1
            return
        lf = self._link_faults(src, dst)
        copies = 1
        if lf is not NO_FAULTS:
            if lf.drop and self.rng.random() < lf.drop:
                self.stats["dropped"] += 1
                return
            if lf.duplicate and self.rng.random() < lf.duplicate:
                copies = 2
                self.stats["duplicated"] += 1
        for _ in range(copies):
            delay = self.latency
            if lf is not NO_FAULTS:
                if lf.delay[1] > 0:
                    delay += self.rng.uniform(*lf.delay)
                if lf.reorder and self.rng.random() < lf.reorder:
                    delay += self.rng.uniform(0.0, lf.reorder_window)
            seq = next(self._seq)
            env = Envelope(src, dst, payload, self.now, self.now + delay, seq)
            if self.filters and not all(keep(env) for keep in self.filters):
                self.stats["dropped"] += 1
                continue
            heapq.heappush(self._queue, (env.deliver_at, seq, env))

    def _handler_for(self, env: Envelope) -> Handler | None:
        """The handler ``env`` reaches, counted as delivered; None (counted as dropped) if
        a partition or crash since it was sent cuts it off."""
        ep = self.endpoints.get(env.dst)
        if not self.reachable(env.src, env.dst) or ep is None or ep.handler is None:
            self.stats["dropped"] += 1
            return None
        self.stats["delivered"] += 1
        return ep.handler

    def _deliver(self, env: Envelope) -> None:
        handler = self._handler_for(env)
        if handler is not None:
            handler(env.src, env.payload)

    def _batch_after(self, first: Envelope) -> list[Envelope]:
        """Pop the messages queued right after ``first`` that belong to its batch: due at
        the same instant to endpoints of :attr:`parallel` (stops at anything else, so what
        is left keeps its queue order)."""
        batch = [first]
        while self._queue:
            when, _, nxt = self._queue[0]
            if isinstance(nxt, Timer) or when != first.deliver_at or nxt.dst not in self.parallel:
                break
            heapq.heappop(self._queue)
            batch.append(nxt)
        return batch

    def _deliver_batch(self, batch: list[Envelope]) -> None:
        """Each endpoint handles its messages of ``batch`` in order, endpoints side by side;
        then what each message's handler sent or scheduled is queued, in batch order, and
        the first handler error in that order is raised."""
        handlers = [self._handler_for(env) for env in batch]
        by_dst: dict[str, list[int]] = {}
        for i, env in enumerate(batch):
            by_dst.setdefault(env.dst, []).append(i)
        results: list[tuple[list[Any], BaseException | None]] = [([], None)] * len(batch)

        def run(indices: list[int]) -> None:
            for i in indices:
                held: list[Any] = []
                self._held.ops = held
                try:
                    handler = handlers[i]
                    if handler is not None:
                        handler(batch[i].src, batch[i].payload)
                    results[i] = (held, None)
                except BaseException as exc:  # re-raised below, in queue order
                    results[i] = (held, exc)
                    return  # this endpoint's later messages: as if the loop had stopped
                finally:
                    self._held.ops = None

        groups = list(by_dst.values())
        if len(groups) == 1:
            run(groups[0])
        else:
            with ThreadPoolExecutor(min(self.workers, len(groups))) as pool:
                list(pool.map(run, groups))
        error: BaseException | None = None
        for held, exc in results:
            for op in held:
                if isinstance(op, Timer):
                    heapq.heappush(self._queue, (op.when, next(self._seq), op))
                else:
                    self.stats["sent"] += 1
                    self._post(*op)
            error = error or exc
        if error is not None:
            raise error

    def step(self) -> bool:
        """Process the next event — or the next parallel batch (module docstring); returns
        False if there is none."""
        while self._queue:
            when, _, item = heapq.heappop(self._queue)
            if isinstance(item, Timer):
                if item.cancelled:
                    continue
                self.now = max(self.now, when)
                item.callback()
            else:
                self.now = max(self.now, when)
                batch = (
                    self._batch_after(item)
                    if self.workers > 1 and item.dst in self.parallel
                    else [item]
                )
                if len(batch) > 1:
                    self._deliver_batch(batch)
                else:
                    self._deliver(item)
            return True
        return False

    def run_until(
        self, done: Callable[[], bool], timeout: float = 60.0, max_events: int | None = None
    ) -> bool:
        """Process events until ``done()`` holds; False if ``timeout`` simulated seconds pass.

        Raises
        ------
        ProtocolError
            if ``max_events`` events were processed without ``done()`` becoming true.
        """
        if getattr(self._held, "ops", None) is not None:
            raise ProtocolError(
                "a handler running in a parallel batch drove the network (run_until); "
                "leave its endpoint out of MemoryNetwork.parallel"
            )
        deadline = self.now + timeout
        count = 0
        while not done():
            # A cancelled timer at the head must not let step() reach past the deadline.
            while (
                self._queue and isinstance(self._queue[0][2], Timer) and self._queue[0][2].cancelled
            ):
                heapq.heappop(self._queue)
            if not self._queue or self._queue[0][0] > deadline:
                self.now = max(self.now, deadline)
                return done()
            self.step()
            count += 1
            if max_events is not None and count >= max_events:
                raise ProtocolError(
                    f"simulation did not settle within {max_events} events; a service is "
                    "looping (raise max_events only if the workload really needs it)"
                )
        return True

    def run_for(self, duration: float) -> None:
        """Process every event in the next ``duration`` simulated seconds."""
        self.run_until(lambda: False, timeout=duration)

    def pending(self) -> int:
        """Number of queued events (messages and timers, including cancelled timers)."""
        return len(self._queue)
