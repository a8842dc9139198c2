"""Upcasting: migrating stored events from older payload schemas to the current one.

Register one function per step (``v1 -> v2``, ``v2 -> v3``...); replay runs
every event older than `CURRENT_SCHEMA_VERSION` through the chain of the
global migrator. Events written by a newer build are never migrated down:
replay skips them with a warning, since their layout is unknown here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from stabilize_events._core import Event
from stabilize_events.errors import InvalidArgumentError
from stabilize_events.types import CURRENT_SCHEMA_VERSION

logger = logging.getLogger(__name__)

Migration = Callable[[Event], Event]


class EventMigrator:
    """A registry of single-step schema migrations, applied in chains."""

    def __init__(self) -> None:
        self._migrations: dict[tuple[int, int], Migration] = {}

    def register(self, from_version: int, to_version: int) -> Callable[[Migration], Migration]:
        """Decorator registering a function that turns a ``from_version`` event into a ``to_version`` one."""
        if to_version != from_version + 1:
            raise InvalidArgumentError(
                f"a migration goes one version up; got v{from_version} -> v{to_version}"
            )

        def decorator(func: Migration) -> Migration:
            self._migrations[(from_version, to_version)] = func
            return func

        return decorator

    def migrate(self, event: Event, target_version: int | None = None, strict: bool = True) -> Event:
        """``event`` migrated step by step to ``target_version`` (default: current).

        A missing step raises `InvalidArgumentError` (a ``ValueError``) when ``strict``;
        otherwise the event is returned as migrated so far. An event newer than the target
        is refused (the same error when strict, else returned unchanged with a warning).
        """
        target = CURRENT_SCHEMA_VERSION if target_version is None else target_version
        version = event.schema_version
        if version == target:
            return event
        if version > target:
            message = (
                f"event {event.event_id} has schema v{version}, newer than v{target}; refusing to apply it "
                "(migrations only go up: read it with the newer build that wrote it)"
            )
            if strict:
                raise InvalidArgumentError(message)
            logger.warning("%s", message)
            return event
        while version < target:
            step = self._migrations.get((version, version + 1))
            if step is None:
                if strict:
                    raise InvalidArgumentError(
                        f"no migration registered from schema v{version} to v{version + 1}, needed for "
                        f"event {event.event_id} (schema v{event.schema_version}); register one with "
                        f"@migrator.register({version}, {version + 1}) on a function taking the v{version} "
                        f"Event and returning it as v{version + 1}"
                    )
                return event
            event = step(event)
            version += 1
        return event

    @property
    def registered_migrations(self) -> list[tuple[int, int]]:
        """The registered steps, sorted."""
        return sorted(self._migrations)


_migrator: EventMigrator | None = None
_lock = threading.Lock()


def get_event_migrator() -> EventMigrator:
    """The global migrator replay uses (empty until migrations are registered)."""
    global _migrator
    with _lock:
        if _migrator is None:
            _migrator = EventMigrator()
        return _migrator


def reset_event_migrator() -> None:
    """Forget the global migrator and its migrations (for tests)."""
    global _migrator
    with _lock:
        _migrator = None
