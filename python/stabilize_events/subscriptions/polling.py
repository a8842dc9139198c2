"""`Poller`: the thread that delivers rounds of batches until stopped, idling when up to date."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from stabilize_events.store.capabilities import NotificationWaiter, WaitsForEvents

logger = logging.getLogger("stabilize_events.subscriptions")


class Poller:
    """Runs ``deliver_round`` over and over on a daemon thread between `start` and `stop`.

    ``deliver_round`` delivers a batch to each subscription and returns whether one of
    them is still behind; then the next round starts at once, else the poller waits
    ``poll_interval`` seconds. A store that `WaitsForEvents` cuts that wait short when
    another process commits. Setting ``stop`` (what `stop` does) ends the wait and the loop.
    """

    def __init__(
        self,
        deliver_round: Callable[[], bool],
        poll_interval: float,
        stop: threading.Event,
        store: object,
    ) -> None:
        """A poller not yet running."""
        self._deliver_round = deliver_round
        self._poll_interval = poll_interval
        self._stop = stop
        self._store = store
        self._thread: threading.Thread | None = None
        self._running = False
        #: The last error of a round itself (a store read failing), or None.
        self.last_error: str | None = None

    @property
    def running(self) -> bool:
        """Whether the polling thread runs."""
        return self._running

    def start(self) -> None:
        """Start the polling thread (no-op if it runs)."""
        if self._running:
            return
        self._running = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="subscription-manager", daemon=True)
        self._thread.start()
        logger.info("subscription manager started")

    def stop(self, timeout: float) -> None:
        """Stop polling; wait up to ``timeout`` seconds for the round in progress to finish."""
        self._running = False
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=timeout)
            if thread.is_alive():
                logger.warning("subscription manager thread still delivering after %.1fs", timeout)
            self._thread = None
        logger.info("subscription manager stopped")

    def _open_waiter(self) -> NotificationWaiter | None:
        """The store's notification waiter (PostgreSQL: LISTEN), or None to poll only."""
        if not isinstance(self._store, WaitsForEvents):
            return None
        try:
            return self._store.open_notification_waiter()
        except Exception as error:
            logger.warning("subscription manager polls only: cannot listen for new events (%r)", error)
            return None

    def _idle(self, waiter: NotificationWaiter | None) -> None:
        """Wait ``poll_interval`` seconds, or less when the store signals a new event or stop() runs."""
        if waiter is None:
            self._stop.wait(self._poll_interval)
            return
        deadline = time.monotonic() + self._poll_interval
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            # Short waits, so that stop() is noticed soon even while the server stays silent.
            if left <= 0 or waiter.wait(min(left, 0.1)):
                return

    def _loop(self) -> None:
        waiter = self._open_waiter()
        try:
            while not self._stop.is_set():
                try:
                    behind = self._deliver_round()
                    self.last_error = None
                except Exception as error:
                    # A store failure, not a handler's: nothing was delivered past
                    # the saved position, so waiting and reading again is safe.
                    self.last_error = repr(error)
                    logger.exception("subscription poll failed")
                    behind = False
                if not behind:
                    self._idle(waiter)
        finally:
            if waiter is not None:
                waiter.close()


__all__ = ["Poller"]
