"""Building and running small real Stabilize applications, with their events recorded.

`run_scenario` runs one of `SCENARIOS` (a real Stabilize workflow driven by
``QueueProcessor`` and ``Orchestrator``) under one of `CONFIGS`:

- ``"reference"``: Stabilize's own ``stabilize.events.SqliteEventStore`` and recorder;
- ``"path_a"``: Stabilize's ``configure_event_sourcing`` over our `SqliteEventStore`
  (Stabilize's recorder writes through our store);
- ``"path_b"``: our ``configure_event_sourcing`` over our store (our recorder and bus
  installed into Stabilize's handlers).

The event store is on the workflow store's file (``same_file=True``, so events join
the handlers' transactions) or on a file of its own. `normalized` turns a run's
events into plain tuples with the run's own ids replaced by stable names (by
ref_id and task position) and clock times, durations and generated ids masked, so
that two runs' streams can be compared field by field.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import stabilize.events as se
import stabilize_events as ours
from stabilize import (
    Orchestrator,
    QueueProcessor,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    TaskResult,
    Workflow,
    WorkflowStatus,
)
from stabilize.errors import TransientError
from stabilize.queue import dedup
from stabilize.tasks.interface import RetryableTask, Task

logging.getLogger("stabilize").setLevel(logging.CRITICAL)

CONFIGS = ("reference", "path_a", "path_b")

#: How long one drain of the queue may take at most (these workflows take well under a second).
DRAIN_TIMEOUT = 30.0

#: The message deduplication filter's capacity in these small apps.
DEDUP_CAPACITY = 1_000


# -- tasks ----------------------------------------------------------------------------


class OkTask(Task):
    """Succeeds at once, with the stage's ref_id among its outputs."""

    def execute(self, stage: StageExecution) -> TaskResult:
        """Succeed with ``{"done": ref_id}``."""
        return TaskResult.success(outputs={"done": stage.ref_id})


class FlakyTask(RetryableTask):
    """Fails with a `TransientError` on its first attempt, then succeeds (retried at once)."""

    def get_timeout(self) -> dt.timedelta:
        """A generous overall timeout; the retry comes long before it."""
        return dt.timedelta(minutes=5)

    def get_backoff_period(self, stage: StageExecution, duration: dt.timedelta) -> dt.timedelta:
        """No wait between attempts."""
        return dt.timedelta(0)

    def execute(self, stage: StageExecution) -> TaskResult:
        """Raise a transient error (noting the attempt in the context) until one attempt was made."""
        attempts = int(stage.context.get("attempts", 0))
        if attempts < 1:
            raise TransientError("flaky backend", context_update={"attempts": attempts + 1})
        return TaskResult.success(outputs={"attempts": attempts})


class BoomTask(Task):
    """Fails for good: its stage and the workflow end TERMINAL."""

    def execute(self, stage: StageExecution) -> TaskResult:
        """Return a terminal result with an error message."""
        return TaskResult.terminal(error="boom: the backend refused")


class LoopTask(Task):
    """Jumps back to its own stage (with ``attempt`` + 1) until the second attempt, then succeeds."""

    def execute(self, stage: StageExecution) -> TaskResult:
        """``jump_to`` this stage on the first attempt; succeed on the next one."""
        attempt = int(stage.context.get("attempt", 1))
        if attempt < 2:
            return TaskResult.jump_to(stage.ref_id, context={"attempt": attempt + 1})
        return TaskResult.success(outputs={"attempts": attempt})


TASKS: dict[str, type[Task]] = {"ok": OkTask, "flaky": FlakyTask, "boom": BoomTask, "loop": LoopTask}


# -- workflows --------------------------------------------------------------------------


def stage(
    ref_id: str,
    task: str = "ok",
    after: tuple[str, ...] = (),
    context: Mapping[str, Any] | None = None,
) -> StageExecution:
    """A stage ``ref_id`` of one task of kind ``task`` (see `TASKS`), run after the stages ``after``."""
    return StageExecution(
        ref_id=ref_id,
        type=f"{task}-stage",
        name=f"stage {ref_id}",
        requisite_stage_ref_ids=set(after),
        context=dict(context or {}),
        tasks=[
            TaskExecution.create(
                name=f"{task} task of {ref_id}", implementing_class=task, stage_start=True, stage_end=True
            )
        ],
    )


def workflow(name: str, stages: list[StageExecution], context: Mapping[str, Any] | None = None) -> Workflow:
    """A workflow of the application ``dropin`` with these stages."""
    return Workflow.create(application="dropin", name=name, stages=stages, context=dict(context or {}))


@dataclass
class App:
    """One Stabilize application: workflow store, queue, processor and orchestrator on one file,
    with event sourcing configured in one of `CONFIGS`."""

    workflow_url: str
    event_url: str
    config: str
    store: SqliteWorkflowStore
    queue: SqliteQueue
    processor: QueueProcessor
    orchestrator: Orchestrator
    event_store: Any
    #: What each subscriber of the bus Stabilize's handlers publish on received, by subscription id.
    bus_seen: dict[str, list[Any]] = field(default_factory=dict)

    def drain(self) -> None:
        """Process queued messages until the queue is empty."""
        self.processor.process_all(timeout=DRAIN_TIMEOUT)

    def step_until(self, condition: Callable[[], bool], limit: int = 200) -> None:
        """Process one message at a time until ``condition()`` holds."""
        for _ in range(limit):
            if condition():
                return
            if not self.processor.process_one():
                raise AssertionError("the queue ran dry before the condition held")
        raise AssertionError(f"the condition did not hold within {limit} messages")

    def events(self, workflow_id: str) -> list[Any]:
        """The events the event store holds for ``workflow_id``, in sequence order."""
        return list(self.event_store.get_events_for_workflow(workflow_id))

    def spy(self, name: str, **filters: Any) -> list[Any]:
        """Subscribe ``name`` (with the bus's ``filters``) to the bus Stabilize's handlers publish
        on; return the list it appends each event it receives to."""
        seen: list[Any] = []
        self.bus_seen[name] = seen
        se.get_event_bus().subscribe(name, seen.append, **filters)
        return seen


def sqlite_url(path: Path) -> str:
    """The ``sqlite:///`` URL of an absolute path."""
    return f"sqlite:///{path}"


def configure(config: str, event_url: str) -> Any:
    """Open the event store of ``config`` at ``event_url`` and turn event sourcing on with it."""
    if config == "reference":
        store: Any = se.SqliteEventStore(event_url, create_tables=True)
        se.configure_event_sourcing(store)
    elif config == "path_a":
        store = ours.SqliteEventStore(event_url, create_tables=True)
        se.configure_event_sourcing(store)
    elif config == "path_b":
        store = ours.SqliteEventStore(event_url, create_tables=True)
        ours.configure_event_sourcing(store)
    else:
        raise AssertionError(f"unknown config {config!r}")
    return store


def reset_globals() -> None:
    """Switch event sourcing off in both packages (recorders and buses forgotten)."""
    ours.reset_event_recorder()
    ours.reset_event_bus()
    se.reset_event_recorder()
    se.reset_event_bus()


def build_app(directory: Path, config: str, same_file: bool = True) -> App:
    """A fresh application in ``directory`` with event sourcing configured as ``config``, the
    event store on the workflow store's file (``same_file``) or on ``events.db`` beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    # A deduplication filter sized for a test (the default one, sized for 100k messages,
    # takes a tenth of a second per message to check its fill ratio).
    dedup.reset_deduplicator()
    dedup.get_deduplicator(expected_items=DEDUP_CAPACITY)
    workflow_url = sqlite_url(directory / "app.db")
    event_url = workflow_url if same_file else sqlite_url(directory / "events.db")
    store = SqliteWorkflowStore(workflow_url, create_tables=True)
    queue = SqliteQueue(workflow_url, table_name="queue_messages")
    queue._create_table()
    event_store = configure(config, event_url)
    registry = TaskRegistry()
    for name, task in TASKS.items():
        registry.register(name, task)
    processor = QueueProcessor(queue, store=store, task_registry=registry)
    orchestrator = Orchestrator(queue, store=store)
    return App(workflow_url, event_url, config, store, queue, processor, orchestrator, event_store)


@contextmanager
def configured(directory: Path, config: str, same_file: bool = True) -> Iterator[App]:
    """An app configured as ``config`` for the duration of the block; globals reset after it."""
    reset_globals()
    try:
        yield build_app(directory, config, same_file)
    finally:
        reset_globals()


# -- scenarios ---------------------------------------------------------------------------


def _stage_running(app: App, wf: Workflow, ref_id: str) -> Callable[[], bool]:
    def running() -> bool:
        current = app.store.retrieve(wf.id).stage_by_ref_id(ref_id)
        return current is not None and current.status == WorkflowStatus.RUNNING

    return running


def run_through(app: App, wf: Workflow) -> None:
    """Start ``wf`` and process messages until the queue is empty."""
    app.orchestrator.start(wf)
    app.drain()


def pause_then_resume(app: App, wf: Workflow) -> None:
    """Start ``wf``, pause it (the store's ``pause``) while stage ``b`` runs, drain the queue
    (the workflow parks PAUSED), then resume it (``Orchestrator.unpause``) and drain again."""
    app.orchestrator.start(wf)
    app.step_until(_stage_running(app, wf, "b"))
    app.store.pause(wf.id, "alice")
    app.drain()
    paused = app.store.retrieve(wf.id)
    if paused.status != WorkflowStatus.PAUSED:
        raise AssertionError(f"the workflow did not park PAUSED but {paused.status}")
    app.orchestrator.unpause(paused)
    app.drain()


def cancel_midway(app: App, wf: Workflow) -> None:
    """Start ``wf`` and cancel it (``Orchestrator.cancel``) while stage ``b`` runs."""
    app.orchestrator.start(wf)
    app.step_until(_stage_running(app, wf, "b"))
    app.orchestrator.cancel(app.store.retrieve(wf.id), "bob", "no longer needed")
    app.drain()


@dataclass(frozen=True)
class Scenario:
    """A workflow, how it is driven, and the status it must end in."""

    build: Callable[[], Workflow]
    drive: Callable[[App, Workflow], None]
    expected_status: WorkflowStatus
    #: Event types the run must have recorded (what makes the scenario what it is).
    hallmarks: tuple[str, ...] = ()


def _abc(name: str, middle: str = "ok", middle_context: Mapping[str, Any] | None = None) -> Workflow:
    return workflow(
        name,
        [
            stage("a"),
            stage("b", task=middle, after=("a",), context=middle_context),
            stage("c", after=("b",)),
        ],
    )


SCENARIOS: dict[str, Scenario] = {
    "linear": Scenario(
        lambda: _abc("linear"), run_through, WorkflowStatus.SUCCEEDED, ("workflow.completed",)
    ),
    "parallel": Scenario(
        lambda: workflow(
            "parallel",
            [stage("a"), stage("b", after=("a",)), stage("c", after=("a",)), stage("d", after=("b", "c"))],
        ),
        run_through,
        WorkflowStatus.SUCCEEDED,
        ("workflow.completed",),
    ),
    "retry": Scenario(
        lambda: workflow("retry", [stage("a"), stage("b", task="flaky", after=("a",))]),
        run_through,
        WorkflowStatus.SUCCEEDED,
        ("task.retried", "workflow.completed"),
    ),
    "failure": Scenario(
        lambda: _abc("failure", middle="boom"),
        run_through,
        WorkflowStatus.TERMINAL,
        ("task.failed", "stage.failed", "workflow.failed"),
    ),
    "skip": Scenario(
        lambda: _abc("skip", middle_context={"stageEnabled": False}),
        run_through,
        WorkflowStatus.SUCCEEDED,
        ("stage.skipped", "workflow.completed"),
    ),
    "pause_resume": Scenario(
        lambda: _abc("pause"), pause_then_resume, WorkflowStatus.SUCCEEDED, ("workflow.completed",)
    ),
    "cancel": Scenario(
        lambda: _abc("cancel"),
        cancel_midway,
        WorkflowStatus.CANCELED,
        ("stage.canceled", "workflow.canceled"),
    ),
    "jump": Scenario(
        lambda: workflow(
            "jump", [stage("a"), stage("b", task="loop", after=("a",))], context={"_max_jumps": 5}
        ),
        run_through,
        WorkflowStatus.SUCCEEDED,
        ("jump.executed", "workflow.completed"),
    ),
}


@dataclass
class Run:
    """A finished scenario: the app it ran in, its workflow and the events recorded for it."""

    scenario: str
    app: App
    workflow: Workflow
    events: list[Any]
    status: WorkflowStatus

    @property
    def names(self) -> dict[str, str]:
        """This run's ids mapped to stable names (see `id_names`)."""
        return id_names(self.workflow)


def run_scenario(directory: Path, scenario: str, config: str, same_file: bool = True) -> Run:
    """Run ``scenario`` in a fresh app in ``directory`` configured as ``config``; event sourcing is
    switched off again afterwards (the app's stores stay open for reading).

    The bus gets four subscribers first (see `App.bus_seen`): ``all``; ``task-completed``
    (Stabilize's ``EventType.TASK_COMPLETED`` of this workflow); ``stages`` (Stabilize's
    ``EntityType.STAGE`` of this workflow); ``other-workflow`` (another workflow's events).
    """
    spec = SCENARIOS[scenario]
    with configured(directory, config, same_file) as app:
        wf = spec.build()
        app.spy("all")
        app.spy("task-completed", event_types={se.EventType.TASK_COMPLETED}, workflow_filter=wf.id)
        app.spy("stages", entity_types={se.EntityType.STAGE}, workflow_filter=wf.id)
        app.spy("other-workflow", workflow_filter="01ANOTHERWORKF1OWAAAAAAAAA")
        spec.drive(app, wf)
    return Run(scenario, app, wf, app.events(wf.id), app.store.retrieve(wf.id).status)


class RunCache:
    """Runs of (scenario, config, same_file), each made once, on first use, in its own directory."""

    def __init__(self, directory: Path) -> None:
        """Keep runs' files under ``directory``."""
        self._directory = directory
        self._runs: dict[tuple[str, str, bool], Run] = {}

    def get(self, scenario: str, config: str, same_file: bool = True) -> Run:
        """The run of ``scenario`` under ``config``, made now if it was not yet."""
        key = (scenario, config, same_file)
        if key not in self._runs:
            where = self._directory / f"{scenario}-{config}-{'same' if same_file else 'separate'}"
            self._runs[key] = run_scenario(where, scenario, config, same_file)
        return self._runs[key]


# -- normalizing events ------------------------------------------------------------------

#: Keys holding clock times or durations: only whether they are set (and their type) is compared.
CLOCK_KEYS = frozenset({"start_time", "end_time", "timestamp", "paused_ms", "pause_time", "resume_time"})

_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
_ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def id_names(wf: Workflow) -> dict[str, str]:
    """The run's own ids (workflow, stages, tasks) mapped to stable names: by ref_id and task position."""
    names = {wf.id: "workflow"}
    for st in wf.stages:
        names[st.id] = f"stage:{st.ref_id}"
        for position, task in enumerate(st.tasks):
            names[task.id] = f"task:{st.ref_id}:{position}"
    return names


def _is_clock(key: Any) -> bool:
    return isinstance(key, str) and (key in CLOCK_KEYS or "duration" in key)


def canonical(value: Any, names: Mapping[str, str], key: Any = None) -> Any:
    """``value`` as plain data to compare across runs: the run's ids replaced by ``names``
    (other generated ids by ``"<id>"``), clock times and durations by ``("<clock>", kind)``,
    enum members by their values and objects with ``to_dict`` by their dicts."""
    if _is_clock(key):
        # A mean of clock durations is an int or a float by chance: numbers are alike.
        kind = "number" if isinstance(value, int | float) else type(value).__name__
        return None if value is None else ("<clock>", kind)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return ("<clock>", "datetime", value.utcoffset())
    if isinstance(value, str):
        if value in names:
            return names[value]
        if _ULID.match(value):
            return "<id>"
        return ("<clock>", "iso") if _ISO_TIME.match(value) else value
    if hasattr(value, "to_dict"):
        return canonical(value.to_dict(), names)
    if isinstance(value, Mapping):
        return {canonical(k, names): canonical(v, names, k) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [canonical(v, names) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    return value


def normalized(events: list[Any], names: Mapping[str, str]) -> list[tuple[Any, ...]]:
    """Each event as a tuple of its fields, compared across runs: ids by ``names``, clock times
    and durations masked (see `canonical`), the sequence counted from the run's first event."""
    first = events[0].sequence if events else 0
    return [
        (
            e.sequence - first,
            canonical(e.event_type, names),
            canonical(e.entity_type, names),
            names.get(e.entity_id, e.entity_id),
            names.get(e.workflow_id, e.workflow_id),
            e.version,
            e.schema_version,
            canonical(dict(e.data), names),
            names.get(e.metadata.correlation_id, e.metadata.correlation_id),
            e.metadata.causation_id,
            e.metadata.actor,
            e.metadata.source_handler,
            canonical(e.timestamp, names),
        )
        for e in events
    ]


# -- consumers ---------------------------------------------------------------------------

#: What the durable subscriptions of `consumer_results` deliver.
SUBSCRIBED_TYPES = (se.EventType.TASK_COMPLETED, se.EventType.STAGE_COMPLETED, se.EventType.STAGE_STARTED)


def _poll(manager: Any) -> None:
    """One pass of ``manager``'s polling loop: deliver a batch to each subscription and persist
    its position. Stabilize's manager does that in ``_process_pending_events`` (its public
    ``process_once`` does not persist positions); ours in ``process_once``."""
    if isinstance(manager, ours.SubscriptionManager):
        manager.process_once()
    else:
        manager._process_pending_events()


def _delivered(events: list[Any], names: Mapping[str, str], first: int) -> list[tuple[Any, ...]]:
    return [(e.sequence - first, e.event_type.value, names.get(e.entity_id, e.entity_id)) for e in events]


def consumer_results(package: Any, run: Run) -> dict[str, Any]:
    """What ``package``'s consumers (``stabilize.events`` or ``stabilize_events``) make of
    ``run``'s event store, as plain data comparable across runs (see `canonical`):

    - ``state``: ``EventReplayer.rebuild_workflow_state``, and ``as_of`` it at every event;
    - ``timeline``: ``WorkflowTimelineProjection``; ``metrics``: ``StageMetricsProjection``;
    - ``subscription``: a ``SubscriptionManager`` subscription from the beginning, filtered by
      Stabilize's event types and this workflow, delivered by ``process_once``;
    - ``catch_up``: a durable subscription read 4 events at a time, one batch by a first
      manager and the rest by a second one that loads it (a restart).
    """
    store, wf, names = run.app.event_store, run.workflow, run.names
    first = run.events[0].sequence
    replayer = package.EventReplayer(store)
    timeline = package.WorkflowTimelineProjection(wf.id)
    metrics = package.StageMetricsProjection()
    for event in store.get_events_for_workflow(wf.id):
        timeline.apply(event)
        metrics.apply(event)
    filters: dict[str, Any] = {
        "event_types": list(SUBSCRIBED_TYPES),
        "entity_filter": {"workflow_id": wf.id},
        "start_from": "beginning",
    }
    once: list[Any] = []
    manager = package.SubscriptionManager(store, batch_size=1000)
    manager.create_subscription(f"once-{package.__name__}", once.append, **filters)
    count = manager.process_once()

    sub_id = f"durable-{package.__name__}"
    before, after = [], []
    first_manager = package.SubscriptionManager(store, batch_size=4)
    first_manager.create_subscription(sub_id, before.append, **filters)
    _poll(first_manager)
    restarted = package.SubscriptionManager(store, batch_size=4)
    if not restarted.load_subscription(sub_id, after.append):
        raise AssertionError(f"subscription {sub_id} was not persisted")
    for _ in range(len(run.events)):
        _poll(restarted)
    result = {
        "state": replayer.rebuild_workflow_state(wf.id),
        "as_of": [replayer.rebuild_workflow_state(wf.id, as_of_sequence=e.sequence) for e in run.events],
        "timeline": timeline.get_state(),
        "metrics": metrics.to_dict(),
        "subscription": (count, _delivered(once, names, first)),
        "catch_up": (_delivered(before, names, first), _delivered(after, names, first)),
    }
    canonical_result: dict[str, Any] = canonical(result, names)
    return canonical_result
