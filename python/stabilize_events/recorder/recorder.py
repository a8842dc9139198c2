"""`EventRecorder`: turns workflow, stage and task transitions into stored, published events.

Each ``record_*`` method reads what it needs from a workflow, stage or task
object (any object with the attributes of Stabilize's models: see the
``*Like`` protocols below), builds the event with the payload Stabilize
writes, appends it to the event store and then publishes it on the event bus.

Versions follow Stabilize: workflow created is version 1, started 2, and
completed/failed/canceled 3; paused/resumed carry the first stage's version;
stage and task events carry the entity's own ``version``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence, Sized
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from stabilize_events._core import Event, EventMetadata
from stabilize_events.bus import get_event_bus
from stabilize_events.errors import ArgumentTypeError
from stabilize_events.recorder.context import get_event_metadata
from stabilize_events.stabilize_bridge import TransactionScope
from stabilize_events.store.interface import EventStore
from stabilize_events.types import EntityType, EventType

logger = logging.getLogger(__name__)


# -- what the recorder reads from the models ---------------------------------
# Read-only properties, so that plain attributes, dataclass fields and real
# properties (Stabilize's weakref-backed ``stage.execution``) all satisfy them.


class StatusLike(Protocol):
    """A status (Stabilize's ``WorkflowStatus``); only its ``name`` is recorded."""

    @property
    def name(self) -> str: ...


class _Valued(Protocol):
    @property
    def value(self) -> Any: ...


class _Identified(Protocol):
    @property
    def id(self) -> str: ...


class _Versioned(Protocol):
    @property
    def version(self) -> int: ...


class TriggerLike(Protocol):
    """What started a workflow; only its ``type`` is recorded."""

    @property
    def type(self) -> str: ...


class PausedLike(Protocol):
    """A workflow's pause bookkeeping (times in epoch milliseconds)."""

    @property
    def paused_by(self) -> str: ...
    @property
    def pause_time(self) -> int | None: ...
    @property
    def resume_time(self) -> int | None: ...
    @property
    def paused_ms(self) -> int: ...


class WorkflowLike(Protocol):
    """The attributes of a workflow (Stabilize's ``Workflow``) that the recorder reads."""

    @property
    def id(self) -> str: ...
    @property
    def application(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> _Valued: ...
    @property
    def status(self) -> StatusLike: ...
    @property
    def trigger(self) -> TriggerLike | None: ...
    @property
    def stages(self) -> Sequence[_Versioned]: ...
    @property
    def context(self) -> dict[str, Any]: ...
    @property
    def start_time(self) -> int | None: ...
    @property
    def end_time(self) -> int | None: ...
    @property
    def canceled_by(self) -> str | None: ...
    @property
    def cancellation_reason(self) -> str | None: ...
    @property
    def paused(self) -> PausedLike | None: ...
    def initial_stages(self) -> Sized: ...


class StageLike(Protocol):
    """The attributes of a stage (Stabilize's ``StageExecution``) that the recorder reads."""

    @property
    def id(self) -> str: ...
    @property
    def execution(self) -> _Identified | None: ...
    @property
    def version(self) -> int: ...
    @property
    def ref_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> StatusLike: ...
    @property
    def start_time(self) -> int | None: ...
    @property
    def end_time(self) -> int | None: ...
    @property
    def outputs(self) -> dict[str, Any]: ...
    @property
    def parent_stage_id(self) -> str | None: ...
    @property
    def tasks(self) -> Sized: ...
    def is_synthetic(self) -> bool: ...


class TaskLike(Protocol):
    """The attributes of a task (Stabilize's ``TaskExecution``) that the recorder reads."""

    @property
    def id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def implementing_class(self) -> str: ...
    @property
    def status(self) -> StatusLike: ...
    @property
    def start_time(self) -> int | None: ...
    @property
    def end_time(self) -> int | None: ...
    @property
    def task_exception_details(self) -> Mapping[str, Any] | None: ...
    @property
    def stage(self) -> _Identified | None: ...


# -- event addressing ---------------------------------------------------------


class _Subject(NamedTuple):
    """Which entity an event is about, and the version it reaches."""

    entity_type: EntityType
    entity_id: str
    workflow_id: str
    version: int


def _workflow_subject(workflow: WorkflowLike, version: int) -> _Subject:
    return _Subject(EntityType.WORKFLOW, workflow.id, workflow.id, version)


def _stage_subject(stage: StageLike) -> _Subject:
    execution = stage.execution
    return _Subject(EntityType.STAGE, stage.id, execution.id if execution else "", stage.version)


def _task_subject(task: TaskLike, workflow_id: str) -> _Subject:
    return _Subject(EntityType.TASK, task.id, workflow_id, task.version)


def _elapsed(start: int | None, end: int | None) -> int | None:
    """``end - start`` when both are set (and non-zero, as Stabilize checks), else None."""
    return end - start if start and end else None


def _pause_version(workflow: WorkflowLike) -> int:
    # Stabilize versions pause/resume events by the first stage's version.
    return workflow.stages[0].version if workflow.stages else 1


def _can_join(store: EventStore, scope: TransactionScope) -> bool:
    """Whether ``store`` can write inside ``scope``'s transaction. A store of another package
    (Stabilize's own) has no `EventStore.can_join`: it joins, as Stabilize decides, when its
    URL is the one the scope's database was opened with."""
    if isinstance(store, EventStore):
        return store.can_join(scope.connection)
    url = getattr(store, "_connection_string", None)
    return url is not None and url == scope.url


def require_event_store(event_store: object) -> None:
    """Refuse, at the call, what cannot store events (a URL, None), rather than fail at the
    first event recorded. Any object with ``append`` and ``append_batch`` is taken (ours or
    Stabilize's stores)."""
    if all(callable(getattr(event_store, name, None)) for name in ("append", "append_batch")):
        return
    hint = (
        f"open one first, e.g. SqliteEventStore({event_store!r})"
        if isinstance(event_store, str)
        else "pass SqliteEventStore(url), InMemoryEventStore() or PostgresEventStore(url)"
    )
    raise ArgumentTypeError(
        f"event_store must be an event store, not {type(event_store).__name__} {event_store!r}; "
        f"nothing was configured ({hint})"
    )


class EventRecorder:
    """Records an event for every state transition: appends it to a store, then publishes it.

    Every ``record_*`` method returns the event as stored (with its sequence).
    ``connection`` is handed to the store's ``append`` so that a store able to
    join the caller's transaction can do so; ``source_handler`` names the
    component recording the event in its metadata, whose other fields come
    from `set_event_context`.
    """

    def __init__(
        self,
        event_store: EventStore,
        publish_to_bus: bool = True,
        *,
        transaction_scope: Callable[[], TransactionScope | None] | None = None,
        metadata: Callable[[str | None], EventMetadata] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Record into ``event_store``; with ``publish_to_bus``, also publish on the global bus.

        ``transaction_scope`` returns the store transaction open on the current
        thread, if any (Stabilize's workflow stores bind one per handler; see
        `stabilize_bridge`). While one is open, an event whose store can join its
        connection (`EventStore.can_join`) is written inside it, and publication
        waits in the scope's ``pending`` list until it commits (dropped on
        rollback), as Stabilize's own recorder does. Default: None, no scopes.

        ``metadata`` gives each event's metadata from its source handler (default:
        `get_event_metadata`, the context `set_event_context` set).

        ``clock`` gives the timestamp of each event the recorder builds (an aware
        ``datetime``): for runs on a simulated clock, such as the demo's, whose events
        must be stamped with the simulation's time. Default None: the time the event is
        built, as `Event` takes it.
        """
        require_event_store(event_store)
        self._event_store = event_store
        self._clock = clock
        self._publish_to_bus = publish_to_bus
        self._transaction_scope = transaction_scope
        self._metadata = metadata or get_event_metadata

    def _scope(self, connection: Any | None) -> tuple[TransactionScope | None, Any | None]:
        """The open transaction scope (if any) and the connection to append through."""
        if connection is not None or self._transaction_scope is None:
            return None, connection
        scope = self._transaction_scope()
        if scope is not None and _can_join(self._event_store, scope):
            return scope, scope.connection
        return scope, None

    def _publish(self, scope: TransactionScope | None, recorded: list[Event]) -> None:
        if scope is not None:
            scope.pending.extend(recorded)
        elif len(recorded) == 1:
            get_event_bus().publish(recorded[0])
        else:
            get_event_bus().publish_batch(recorded)

    # -- persistence and publication -----------------------------------------

    def _record(self, event: Event, connection: Any | None = None) -> Event:
        """Append ``event`` to the store, then publish the stored event.

        A store failure is logged and raised (the transition was not recorded);
        a bus failure is only logged, since the event is already durable.
        """
        scope, connection = self._scope(connection)
        try:
            recorded = self._event_store.append(event, connection=connection)
        except Exception as error:
            logger.error(
                "failed to persist %s event for %s %s: %s",
                event.event_type.value,
                event.entity_type.value,
                event.entity_id,
                error,
            )
            raise
        if self._publish_to_bus:
            try:
                self._publish(scope, [recorded])
            except Exception as error:
                logger.warning("failed to publish event %s to the bus: %s", recorded.event_id, error)
        return recorded

    def _record_batch(self, events: list[Event], connection: Any | None = None) -> list[Event]:
        """Append ``events`` atomically, then publish them in order (see `_record`)."""
        if not events:
            return []
        scope, connection = self._scope(connection)
        try:
            recorded = self._event_store.append_batch(events, connection=connection)
        except Exception as error:
            logger.error("failed to persist a batch of %d events: %s", len(events), error)
            raise
        if self._publish_to_bus:
            try:
                self._publish(scope, recorded)
            except Exception as error:
                logger.warning("failed to publish %d events to the bus: %s", len(recorded), error)
        return recorded

    def _emit(
        self,
        event_type: EventType,
        subject: _Subject,
        data: dict[str, Any],
        connection: Any | None,
        source_handler: str | None,
    ) -> Event:
        """Build the event for ``subject`` with the current context's metadata, and record it."""
        event = Event(
            event_type=event_type,
            entity_type=subject.entity_type,
            entity_id=subject.entity_id,
            workflow_id=subject.workflow_id,
            version=subject.version,
            data=data,
            metadata=self._metadata(source_handler),
            timestamp=None if self._clock is None else self._clock(),
        )
        return self._record(event, connection)

    def _emit_stage(
        self,
        event_type: EventType,
        stage: StageLike,
        connection: Any | None,
        source_handler: str | None,
        **details: Any,
    ) -> Event:
        """Record a stage event: every stage payload opens with ref_id, type and name."""
        data = {"ref_id": stage.ref_id, "type": stage.type, "name": stage.name, **details}
        return self._emit(event_type, _stage_subject(stage), data, connection, source_handler)

    # -- workflow events -------------------------------------------------------

    def record_workflow_created(
        self, workflow: WorkflowLike, connection: Any | None = None, source_handler: str | None = None
    ) -> Event:
        """Record that a workflow was created (version 1), with its shape and trigger type."""
        trigger = workflow.trigger
        data = {
            "application": workflow.application,
            "name": workflow.name,
            "type": workflow.type.value,
            "trigger_type": trigger.type if trigger else "manual",
            "stage_count": len(workflow.stages),
            "initial_stage_count": len(workflow.initial_stages()),
        }
        subject = _workflow_subject(workflow, 1)
        return self._emit(EventType.WORKFLOW_CREATED, subject, data, connection, source_handler)

    def record_workflow_started(
        self,
        workflow: WorkflowLike,
        initial_stage_ids: list[str] | None = None,
        connection: Any | None = None,
        source_handler: str | None = None,
    ) -> Event:
        """Record that a workflow started (version 2), with its context and first stages."""
        data = {
            "start_time": workflow.start_time,
            "initial_stage_ids": initial_stage_ids or [],
            "context": workflow.context,
        }
        subject = _workflow_subject(workflow, 2)
        return self._emit(EventType.WORKFLOW_STARTED, subject, data, connection, source_handler)

    def record_workflow_completed(
        self, workflow: WorkflowLike, connection: Any | None = None, source_handler: str | None = None
    ) -> Event:
        """Record that a workflow finished (version 3), with its final status and duration."""
        data = {
            "status": workflow.status.name,
            "end_time": workflow.end_time,
            "duration_ms": _elapsed(workflow.start_time, workflow.end_time),
        }
        subject = _workflow_subject(workflow, 3)
        return self._emit(EventType.WORKFLOW_COMPLETED, subject, data, connection, source_handler)

    def record_workflow_failed(
        self,
        workflow: WorkflowLike,
        error: str,
        connection: Any | None = None,
        source_handler: str | None = None,
    ) -> Event:
        """Record that a workflow failed with ``error`` (version 3)."""
        data = {"status": workflow.status.name, "error": error, "end_time": workflow.end_time}
        subject = _workflow_subject(workflow, 3)
        return self._emit(EventType.WORKFLOW_FAILED, subject, data, connection, source_handler)

    def record_workflow_canceled(
        self, workflow: WorkflowLike, connection: Any | None = None, source_handler: str | None = None
    ) -> Event:
        """Record that a workflow was canceled (version 3), by whom and why."""
        data = {
            "canceled_by": workflow.canceled_by,
            "reason": workflow.cancellation_reason,
            "end_time": workflow.end_time,
        }
        subject = _workflow_subject(workflow, 3)
        return self._emit(EventType.WORKFLOW_CANCELED, subject, data, connection, source_handler)

    def record_workflow_paused(
        self, workflow: WorkflowLike, connection: Any | None = None, source_handler: str | None = None
    ) -> Event:
        """Record that a workflow was paused, by whom and when."""
        paused = workflow.paused
        data = {
            "paused_by": paused.paused_by if paused else None,
            "pause_time": paused.pause_time if paused else None,
        }
        subject = _workflow_subject(workflow, _pause_version(workflow))
        return self._emit(EventType.WORKFLOW_PAUSED, subject, data, connection, source_handler)

    def record_workflow_resumed(
        self, workflow: WorkflowLike, connection: Any | None = None, source_handler: str | None = None
    ) -> Event:
        """Record that a paused workflow was resumed, and how long it had been paused."""
        paused = workflow.paused
        data = {
            "resume_time": paused.resume_time if paused else None,
            "paused_ms": paused.paused_ms if paused else None,
        }
        subject = _workflow_subject(workflow, _pause_version(workflow))
        return self._emit(EventType.WORKFLOW_RESUMED, subject, data, connection, source_handler)

    # -- stage events ------------------------------------------------------------

    def record_stage_started(
        self, stage: StageLike, connection: Any | None = None, source_handler: str | None = None
    ) -> Event:
        """Record that a stage started, with its place in the workflow and task count."""
        return self._emit_stage(
            EventType.STAGE_STARTED,
            stage,
            connection,
            source_handler,
            start_time=stage.start_time,
            is_synthetic=stage.is_synthetic(),
            parent_stage_id=stage.parent_stage_id,
            task_count=len(stage.tasks),
        )

    def record_stage_completed(
        self, stage: StageLike, connection: Any | None = None, source_handler: str | None = None
    ) -> Event:
        """Record that a stage finished, with its status, duration and outputs."""
        return self._emit_stage(
            EventType.STAGE_COMPLETED,
            stage,
            connection,
            source_handler,
            status=stage.status.name,
            end_time=stage.end_time,
            duration_ms=_elapsed(stage.start_time, stage.end_time),
            outputs=stage.outputs,
        )

    def record_stage_failed(
        self,
        stage: StageLike,
        error: str,
        connection: Any | None = None,
        source_handler: str | None = None,
    ) -> Event:
        """Record that a stage failed with ``error``."""
        return self._emit_stage(
            EventType.STAGE_FAILED,
            stage,
            connection,
            source_handler,
            status=stage.status.name,
            error=error,
            end_time=stage.end_time,
        )

    def record_stage_skipped(
        self,
        stage: StageLike,
        reason: str,
        connection: Any | None = None,
        source_handler: str | None = None,
    ) -> Event:
        """Record that a stage was skipped, and why."""
        return self._emit_stage(EventType.STAGE_SKIPPED, stage, connection, source_handler, reason=reason)

    def record_stage_suspended(
        self, stage: StageLike, connection: Any | None = None, source_handler: str | None = None
    ) -> Event:
        """Record that a stage is waiting for a signal.

        Without it a wait (for a human approval, say) is an unexplained gap and
        replay would show the stage as still running.
        """
        return self._emit_stage(EventType.STAGE_SUSPENDED, stage, connection, source_handler)

    def record_stage_resumed(
        self,
        stage: StageLike,
        signal_name: str = "",
        connection: Any | None = None,
        source_handler: str | None = None,
    ) -> Event:
        """Record that a suspended stage was resumed by the signal ``signal_name``."""
        return self._emit_stage(
            EventType.STAGE_RESUMED, stage, connection, source_handler, signal_name=signal_name
        )

    def record_stage_canceled(
        self, stage: StageLike, connection: Any | None = None, source_handler: str | None = None
    ) -> Event:
        """Record that a stage was canceled."""
        return self._emit_stage(EventType.STAGE_CANCELED, stage, connection, source_handler)

    # -- task events ---------------------------------------------------------------

    def record_task_started(
        self,
        task: TaskLike,
        workflow_id: str,
        connection: Any | None = None,
        source_handler: str | None = None,
    ) -> Event:
        """Record that a task started, with its implementation and stage."""
        stage = task.stage
        data = {
            "name": task.name,
            "implementing_class": task.implementing_class,
            "start_time": task.start_time,
            "stage_id": stage.id if stage else None,
        }
        subject = _task_subject(task, workflow_id)
        return self._emit(EventType.TASK_STARTED, subject, data, connection, source_handler)

    def record_task_completed(
        self,
        task: TaskLike,
        workflow_id: str,
        outputs: dict[str, Any] | None = None,
        connection: Any | None = None,
        source_handler: str | None = None,
    ) -> Event:
        """Record that a task finished, with its status, duration and ``outputs``."""
        data = {
            "name": task.name,
            "status": task.status.name,
            "end_time": task.end_time,
            "duration_ms": _elapsed(task.start_time, task.end_time),
            "outputs": outputs or {},
        }
        subject = _task_subject(task, workflow_id)
        return self._emit(EventType.TASK_COMPLETED, subject, data, connection, source_handler)

    def record_task_failed(
        self,
        task: TaskLike,
        workflow_id: str,
        error: str,
        connection: Any | None = None,
        source_handler: str | None = None,
    ) -> Event:
        """Record that a task failed with ``error``, keeping its exception details."""
        data = {
            "name": task.name,
            "status": task.status.name,
            "error": error,
            "end_time": task.end_time,
            # An empty details mapping is stored as None, as Stabilize does.
            "exception_details": task.task_exception_details or None,
        }
        subject = _task_subject(task, workflow_id)
        return self._emit(EventType.TASK_FAILED, subject, data, connection, source_handler)

    def record_task_retried(
        self,
        task: TaskLike,
        workflow_id: str,
        attempt: int,
        connection: Any | None = None,
        source_handler: str | None = None,
    ) -> Event:
        """Record that a task is being retried (``attempt``), with the error that caused it."""
        details = task.task_exception_details
        data = {
            "name": task.name,
            "attempt": attempt,
            "last_error": details.get("exception") if details else None,
        }
        subject = _task_subject(task, workflow_id)
        return self._emit(EventType.TASK_RETRIED, subject, data, connection, source_handler)

    def record_task_suspended(
        self,
        task: TaskLike,
        workflow_id: str,
        connection: Any | None = None,
        source_handler: str | None = None,
    ) -> Event:
        """Record that a task is waiting for a signal (not in Stabilize 0.33, which has the type only).

        Like `record_stage_suspended`, the payload only identifies the entity:
        the task's name and its stage (the fields replay needs to place it).
        """
        stage = task.stage
        data = {"name": task.name, "stage_id": stage.id if stage else None}
        subject = _task_subject(task, workflow_id)
        return self._emit(EventType.TASK_SUSPENDED, subject, data, connection, source_handler)

    # -- generic state changes -------------------------------------------------------

    def record_status_change(
        self,
        entity_type: EntityType,
        entity_id: str,
        workflow_id: str,
        old_status: StatusLike,
        new_status: StatusLike,
        version: int = 1,
        connection: Any | None = None,
        source_handler: str | None = None,
    ) -> Event:
        """Record that an entity's status went from ``old_status`` to ``new_status`` (by name)."""
        data = {"old_status": old_status.name, "new_status": new_status.name}
        subject = _Subject(entity_type, entity_id, workflow_id, version)
        return self._emit(EventType.STATUS_CHANGED, subject, data, connection, source_handler)

    def record_context_updated(
        self,
        entity_type: EntityType,
        entity_id: str,
        workflow_id: str,
        context: dict[str, Any],
        version: int = 1,
        connection: Any | None = None,
        source_handler: str | None = None,
    ) -> Event:
        """Record that an entity's context was updated to ``context``."""
        subject = _Subject(entity_type, entity_id, workflow_id, version)
        return self._emit(
            EventType.CONTEXT_UPDATED, subject, {"context": context}, connection, source_handler
        )

    def record_outputs_updated(
        self,
        entity_type: EntityType,
        entity_id: str,
        workflow_id: str,
        outputs: dict[str, Any],
        version: int = 1,
        connection: Any | None = None,
        source_handler: str | None = None,
    ) -> Event:
        """Record that an entity's outputs were updated to ``outputs``."""
        subject = _Subject(entity_type, entity_id, workflow_id, version)
        return self._emit(
            EventType.OUTPUTS_UPDATED, subject, {"outputs": outputs}, connection, source_handler
        )

    def record_jump_executed(
        self,
        workflow_id: str,
        from_stage_id: str,
        to_stage_id: str,
        jump_type: str,
        version: int = 1,
        connection: Any | None = None,
        source_handler: str | None = None,
    ) -> Event:
        """Record a dynamic jump (or restart) from one stage to another, as a workflow event."""
        data = {"from_stage_id": from_stage_id, "to_stage_id": to_stage_id, "jump_type": jump_type}
        subject = _Subject(EntityType.WORKFLOW, workflow_id, workflow_id, version)
        return self._emit(EventType.JUMP_EXECUTED, subject, data, connection, source_handler)
