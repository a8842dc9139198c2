"""Wiring our recorder and bus into a Stabilize application's handlers.

Stabilize's handlers find their recorder through
``stabilize.events.recorder.get_event_recorder()`` and publish deferred
events through ``stabilize.events.bus.get_event_bus()``; its workflow stores
bind a per-thread transaction scope (``stabilize.events.txn_scope``) around
each handler's writes. `attach` puts our recorder and bus in those two places,
and `StabilizeHooks.current_scope` lets our recorder join the scope's
transaction, as Stabilize's own recorder does.

`load` checks, before anything is changed, that the installed Stabilize has
the event model and hooks this module relies on, and raises
`IntegrationError` naming what differs otherwise: a mismatch is found when
configuring, never as a bad row later.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import sys
import threading
from dataclasses import dataclass
from enum import Enum
from types import ModuleType
from typing import Any, Protocol

from stabilize_events import _core
from stabilize_events._core import EventMetadata
from stabilize_events.errors import IntegrationError
from stabilize_events.types import STABILIZE_ENUM_MODULE, EntityType, EventType

#: What to install to use this integration.
INSTALL_HINT = "pip install 'stabilize-events[stabilize]'"

#: The fields of Stabilize's ``Event`` dataclass that our stores read from it: ours.
EVENT_FIELDS = frozenset(_core.EVENT_FIELDS)

#: The module globals Stabilize's ``get_event_recorder`` and ``get_event_bus`` return.
_RECORDER = "_event_recorder"
_BUS = "_event_bus"

_attach_lock = threading.Lock()
logger = logging.getLogger(__name__)


class TransactionScope(Protocol):
    """A store transaction bound to the current thread (Stabilize's ``TxnScope``)."""

    @property
    def connection(self) -> Any:
        """The connection whose transaction is open."""

    @property
    def url(self) -> str | None:
        """The URL the connection's database was opened with."""

    @property
    def pending(self) -> list[Any]:
        """Events to publish once the transaction commits (dropped on rollback)."""


def stabilize_installed() -> bool:
    """Whether the ``stabilize`` package can be imported in this environment (a None entry
    in ``sys.modules``, which makes ``import stabilize`` fail, counts as not installed)."""
    if "stabilize" in sys.modules:
        return sys.modules["stabilize"] is not None
    return importlib.util.find_spec("stabilize") is not None


@dataclass(frozen=True)
class StabilizeHooks:
    """The parts of an installed Stabilize that our recorder and bus plug into."""

    recorder_module: ModuleType
    bus_module: ModuleType
    txn_scope_module: ModuleType
    context_module: ModuleType

    def current_scope(self) -> TransactionScope | None:
        """The store transaction bound to this thread by Stabilize's workflow store, if any."""
        scope: TransactionScope | None = self.txn_scope_module.current_scope()
        return scope

    def event_metadata(self, source_handler: str | None = None) -> EventMetadata:
        """Metadata for an event recorded in a Stabilize handler: the context Stabilize's
        handlers set (``stabilize.events.set_event_context``, the workflow id as correlation
        id), or ours (`set_event_context`) while Stabilize's is unset on this thread."""
        from stabilize_events.recorder.context import get_event_metadata  # it imports this module

        theirs = self.context_module.get_event_metadata(source_handler)
        if (theirs.correlation_id, theirs.causation_id, theirs.actor) == ("", None, "system"):
            return get_event_metadata(source_handler)
        return EventMetadata(theirs.correlation_id, theirs.causation_id, theirs.actor, source_handler)

    def attach(self, recorder: Any, bus: Any) -> None:
        """Make Stabilize's handlers record through ``recorder`` and publish on ``bus``.

        Stabilize's previous bus is shut down, as its own ``configure_event_bus`` does.
        """
        with _attach_lock:
            previous = getattr(self.bus_module, _BUS)
            setattr(self.recorder_module, _RECORDER, recorder)
            setattr(self.bus_module, _BUS, bus)
        if previous is not None and previous is not bus:
            previous.shutdown(wait=False)

    def detach(self, recorder: Any = None, bus: Any = None) -> None:
        """Unhook ``recorder`` and ``bus`` from Stabilize, where they are still the ones installed."""
        with _attach_lock:
            if recorder is not None and getattr(self.recorder_module, _RECORDER) is recorder:
                setattr(self.recorder_module, _RECORDER, None)
            if bus is not None and getattr(self.bus_module, _BUS) is bus:
                setattr(self.bus_module, _BUS, None)


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(
            f"Stabilize is not installed (importing {name} failed: {error}); install it with "
            f"{INSTALL_HINT}, or pass stabilize=False to configure without it"
        ) from error


def _members(enum: type[Enum]) -> dict[str, Any]:
    return {m.name: m.value for m in enum}


def _check_enum(theirs: Any, ours: type[Enum]) -> None:
    if not isinstance(theirs, type) or not issubclass(theirs, Enum):
        raise IntegrationError(
            f"Stabilize's {STABILIZE_ENUM_MODULE}.{ours.__name__} is not an Enum; this build of "
            f"stabilize-events supports Stabilize 0.33 (upgrade stabilize-events or pin stabilize)"
        )
    mine, other = _members(ours), _members(theirs)
    if mine != other:
        differ = sorted(set(mine.items()) ^ set(other.items()))
        raise IntegrationError(
            f"Stabilize's {ours.__name__} differs from ours in {differ}: events could not be "
            f"exchanged faithfully; upgrade stabilize-events to a build matching this Stabilize, "
            f"or pin stabilize to 0.33"
        )


def load() -> StabilizeHooks:
    """Import Stabilize's event hooks and check its event model matches ours.

    Raises ImportError (naming the extra to install) when Stabilize is missing
    and `IntegrationError` when its enums, ``Event`` fields or hooks differ.
    """
    base = _import(STABILIZE_ENUM_MODULE)
    recorder_module = _import("stabilize.events.recorder.instance")
    bus_module = _import("stabilize.events.bus")
    txn_scope_module = _import("stabilize.events.txn_scope")
    context_module = _import("stabilize.events.recorder.context")
    _check_enum(getattr(base, "EventType", None), EventType)
    _check_enum(getattr(base, "EntityType", None), EntityType)
    event_class: Any = getattr(base, "Event", None)
    is_dataclass = isinstance(event_class, type) and dataclasses.is_dataclass(event_class)
    fields = {f.name for f in dataclasses.fields(event_class)} if is_dataclass else set()
    if fields != EVENT_FIELDS:
        raise IntegrationError(
            f"Stabilize's Event has fields {sorted(fields)}, not the {sorted(EVENT_FIELDS)} this build "
            f"stores; upgrade stabilize-events to a build matching this Stabilize, or pin stabilize to 0.33"
        )
    for module, name in (
        (recorder_module, _RECORDER),
        (bus_module, _BUS),
        (txn_scope_module, "current_scope"),
        (context_module, "get_event_metadata"),
    ):
        if not hasattr(module, name):
            raise IntegrationError(
                f"Stabilize's {module.__name__} has no {name}, which this build hooks into; upgrade "
                f"stabilize-events to a build matching this Stabilize, or pin stabilize to 0.33"
            )
    return StabilizeHooks(recorder_module, bus_module, txn_scope_module, context_module)


def share_files_with_stabilize() -> None:
    """Make Stabilize open its SQLite files in WAL mode, the mode our store keeps a file in.

    Stabilize sets ``PRAGMA journal_mode`` on every connection it opens (``DELETE``
    unless configured otherwise), and SQLite refuses to take a file out of WAL
    mode while another connection has it open ("database is locked"): with our
    store open on its file, each new Stabilize connection would fail. So, when
    this process has imported Stabilize, its SQLite configuration is set to WAL,
    as ``STABILIZE_SQLITE_JOURNAL_MODE=WAL`` would. Nothing is imported otherwise.
    """
    if "stabilize" not in sys.modules or sys.modules["stabilize"] is None:
        return
    try:
        config_module = importlib.import_module("stabilize.persistence.sqlite_config")
        config = config_module.get_sqlite_config()
        mode = str(config.get_effective_value("journal_mode")).upper()
    except (ImportError, AttributeError):
        return  # a Stabilize without this configuration: nothing to align
    if mode != "WAL":
        config.journal_mode = "WAL"
        logger.info("Stabilize's SQLite journal mode set to WAL (was %s) to share files with our store", mode)


def loaded_hooks() -> StabilizeHooks | None:
    """The hooks of a Stabilize this process has already imported, else None (importing nothing)."""
    if "stabilize.events.txn_scope" not in sys.modules:
        return None
    try:
        return load()
    except (ImportError, IntegrationError):
        return None


__all__ = [
    "EVENT_FIELDS",
    "INSTALL_HINT",
    "StabilizeHooks",
    "TransactionScope",
    "load",
    "loaded_hooks",
    "share_files_with_stabilize",
    "stabilize_installed",
]
