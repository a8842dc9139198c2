"""`ProjectionRunner`: feed a projection from the store, then live from the bus.

The switch from catch-up to live is where events get lost or applied twice,
so the runner keys everything on the store's sequence:

1. It subscribes to the bus *first*, so nothing published from then on is missed.
2. It reads the store from its position until the store has nothing newer.
3. A live event at or below the position was already applied (by the
   catch-up, or earlier) and is dropped. A live event further ahead than the
   next sequence means some events were not seen live (published before the
   subscription, published out of order by concurrent writers, or dropped by
   a failing ``apply``): the runner reads them from the store first, then
   applies the live one.

Catch-up and live deliveries take the same lock, so the projection sees one
event at a time, in sequence order, each exactly once. The position survives
`stop`; `start` resumes from it. To resume in another process, construct the
runner with ``from_sequence`` and a projection restored to that point.

The bus must carry the events of this store (the recorder publishes each
event after storing it). Events published with sequence 0 were never stored
and cannot be placed in the order; the runner ignores them.

Events committed by other processes never reach this process's bus. With
``poll_interval`` the runner also follows the store itself, in a thread of its
own: it catches up whenever the store signals a commit (PostgreSQL: its
LISTEN/NOTIFY channel, so events from other processes and machines arrive
within milliseconds) and at the latest every ``poll_interval`` seconds (the
fallback, and the only wake-up on stores without notifications).

The runner relies on the store's reads never stepping over a sequence that may
still commit (true of every store here: the SQLite and in-memory stores assign
sequences under the write lock; PostgreSQL's reads stop below the lowest
sequence of a transaction still open). A live event ahead of what the store
can return yet is left for the next catch-up rather than applied out of order.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from stabilize_events.defaults import PROJECTION_BATCH_SIZE
from stabilize_events.errors import ArgumentTypeError, InvalidArgumentError
from stabilize_events.store.capabilities import WaitsForEvents

if TYPE_CHECKING:
    from stabilize_events._core import Event
    from stabilize_events.bus import EventBus
    from stabilize_events.projections.base import Projection
    from stabilize_events.store.interface import EventStore

logger = logging.getLogger(__name__)

_runner_ids = itertools.count(1)


class ProjectionRunner:
    """Keeps one `Projection` up to date from an `EventStore` and an `EventBus`.

    ::

        runner = ProjectionRunner(store, StageMetricsProjection())
        runner.start()        # catch up from the store, then follow the bus
        ...
        runner.stop()         # unsubscribe; runner.position is kept
        runner.start()        # catch up what was missed meanwhile, then live again

    ``bus`` defaults to the process-wide bus (`get_event_bus`). ``from_sequence``
    is the last sequence already folded into ``projection`` (0: none).
    ``batch_size`` is how many events one store read returns. ``poll_interval``
    (seconds; default None: the bus only) makes the running runner also follow the
    store, for events other processes commit: woken by the store's notifications
    where it has them (`PostgresEventStore`), else by the interval.

    If ``apply`` raises during a catch-up, the error propagates to the caller of
    `start` or `catch_up` and the position stays at the last event applied. If
    it raises on a live event, the bus logs it (the runner records it in
    `last_error`) and the event is applied again from the store before the next
    live one: an event is never skipped, so a projection that always fails on
    one event stops advancing until it is fixed.
    """

    def __init__(
        self,
        store: EventStore,
        projection: Projection,
        bus: EventBus | None = None,
        *,
        from_sequence: int = 0,
        batch_size: int = PROJECTION_BATCH_SIZE,
        subscription_id: str | None = None,
        poll_interval: float | None = None,
    ) -> None:
        """Prepare a runner; nothing is read or subscribed until `start` or `catch_up`."""
        if isinstance(projection, type) or not callable(getattr(projection, "apply", None)):
            raise ArgumentTypeError(
                f"projection must be a Projection (an object with apply(event) and a name), not "
                f"{projection!r}; pass an instance, e.g. StageMetricsProjection()"
            )
        if from_sequence < 0:
            raise InvalidArgumentError(f"from_sequence must be >= 0, not {from_sequence}")
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, not {batch_size}")
        if poll_interval is not None and not poll_interval > 0:
            raise InvalidArgumentError(f"poll_interval must be > 0 seconds or None, not {poll_interval}")
        self._poll_interval = poll_interval
        self._follower: threading.Thread | None = None
        self._stop_following = threading.Event()
        self._last_follow_error: Exception | None = None
        self._store = store
        self._projection = projection
        self._bus = bus
        self._batch_size = batch_size
        self._subscription_id = subscription_id or f"projection-runner-{projection.name}-{next(_runner_ids)}"
        self._lock = threading.Lock()
        self._position = from_sequence
        self._applied = 0
        self._running = False
        self._last_error: Exception | None = None

    # -- state -----------------------------------------------------------------

    @property
    def projection(self) -> Projection:
        """The projection this runner feeds."""
        return self._projection

    @property
    def position(self) -> int:
        """The sequence of the last event applied (or skipped by the projection's filter)."""
        return self._position

    @property
    def events_applied(self) -> int:
        """How many events were handed to ``projection.apply`` by this runner."""
        return self._applied

    @property
    def running(self) -> bool:
        """Whether the runner is following the bus."""
        return self._running

    @property
    def subscription_id(self) -> str:
        """The id under which the runner subscribes to the bus."""
        return self._subscription_id

    @property
    def last_error(self) -> Exception | None:
        """The last error ``apply`` raised on an event, or None."""
        return self._last_error

    # -- control ---------------------------------------------------------------

    def start(self) -> int:
        """Subscribe to the bus, then catch up from the store; return the events read from it.

        Starting a running runner only catches up.
        """
        with self._lock:
            if not self._running:
                bus = self._bus
                if bus is None:
                    from stabilize_events.bus import get_event_bus

                    bus = self._bus = get_event_bus()
                # Subscribed before reading the store: an event committed after
                # the read arrives through the bus, one committed before it is
                # found by the read; the sequence check drops the overlap.
                bus.subscribe(self._subscription_id, self._on_live)
                self._running = True
                if self._poll_interval is not None:
                    self._stop_following.clear()
                    self._follower = threading.Thread(
                        target=self._follow, name=f"{self._subscription_id}-follower", daemon=True
                    )
                    self._follower.start()
            return self._catch_up_locked()

    def stop(self) -> None:
        """Stop following the bus (and the store). The projection and `position` are kept for
        a later `start`."""
        with self._lock:
            if self._running and self._bus is not None:
                self._bus.unsubscribe(self._subscription_id)
            self._running = False
            follower, self._follower = self._follower, None
        self._stop_following.set()
        if follower is not None and follower is not threading.current_thread():
            follower.join(timeout=10)

    def catch_up(self) -> int:
        """Apply every stored event after `position`; return how many were read.

        Usable without `start`, to rebuild a projection from the store alone.
        """
        with self._lock:
            return self._catch_up_locked()

    def __enter__(self) -> ProjectionRunner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def last_follow_error(self) -> Exception | None:
        """The last error the thread following the store met (a store read or an ``apply``;
        it retries after the next wake-up), or None."""
        return self._last_follow_error

    # -- internals -------------------------------------------------------------

    def _follow(self) -> None:
        """The follower thread: catch up on every store notification, or every poll interval."""
        assert self._poll_interval is not None
        waiter = None
        if isinstance(self._store, WaitsForEvents):
            try:
                waiter = self._store.open_notification_waiter()
            except Exception as error:
                logger.warning("projection runner polls only: cannot listen for new events (%r)", error)
        try:
            while not self._stop_following.is_set():
                self._wait_for_news(waiter, self._poll_interval)
                if self._stop_following.is_set():
                    return
                try:
                    with self._lock:
                        if self._running:
                            self._catch_up_locked()
                    self._last_follow_error = None
                except Exception as error:
                    # Nothing was applied past the position: the next wake-up reads again.
                    self._last_follow_error = error
                    logger.warning("projection %s: catching up failed: %r", self._projection.name, error)
        finally:
            if waiter is not None:
                waiter.close()

    def _wait_for_news(self, waiter: Any, interval: float) -> None:
        """Return after ``interval`` seconds, or sooner on a store notification or `stop`."""
        if waiter is None:
            self._stop_following.wait(interval)
            return
        deadline = time.monotonic() + interval
        while not self._stop_following.is_set():
            left = deadline - time.monotonic()
            # Short waits: `stop` is noticed within a tenth of a second.
            if left <= 0 or waiter.wait(min(left, 0.1)):
                return

    def _catch_up_locked(self) -> int:
        read = self._store.get_events_since
        batch_size = self._batch_size
        total = 0
        while True:
            events = read(self._position, batch_size)
            if not events:
                return total
            self._apply_in_order(events)
            total += len(events)
            if len(events) < batch_size:
                return total

    def _apply_in_order(self, events: list[Event]) -> None:
        """Apply events read from the store, moving the position after each one."""
        projection = self._projection
        apply = projection.apply
        wants = projection.handles_event_type
        applied = 0
        try:
            for event in events:
                if wants(event):
                    apply(event)
                    applied += 1
                self._position = event.sequence
        finally:
            self._applied += applied

    def _on_live(self, event: Event) -> None:
        """Bus handler: apply ``event`` if it is the next one, after any it overtook."""
        sequence = event.sequence
        if sequence <= 0:
            return
        with self._lock:
            # Checked under the lock: a delivery already queued when stop() ran
            # must not move the position of a stopped runner.
            if not self._running or sequence <= self._position:
                return
            try:
                if sequence > self._position + 1:
                    # Events between the position and this one were not seen
                    # live: fill the gap from the store (it normally returns
                    # this event too, which then counts as applied).
                    self._catch_up_locked()
                if sequence == self._position + 1:
                    self._apply_in_order([event])
                # Still further ahead: a lower sequence is not committed yet (a store whose
                # reads stop there, as PostgreSQL's does); the next catch-up applies both.
            except Exception as error:
                self._last_error = error
                logger.warning(
                    "projection %s failed at sequence %d; it will be retried from the store: %r",
                    self._projection.name,
                    self._position + 1,
                    error,
                )
                raise

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"ProjectionRunner({self._projection.name!r}, position={self._position}, {state})"
