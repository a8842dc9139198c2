"""Realistic workflow runs, simulated through the global `EventRecorder`.

Each scenario builds a `Workflow` of the demo models and drives it the way
Stabilize's handlers do: they set the event context, change the model, then call
the matching ``record_*`` method of the recorder that `configure_event_sourcing`
installed. Nothing here touches the store directly.

Times come from a simulated clock (milliseconds since the epoch, as Stabilize's
models keep them), so durations are realistic while the demo runs in an instant.
The events are stamped with the same clock (the recorder is configured with
``clock=SimClock.timestamp``), so a duration measured between two events'
timestamps agrees with the models' own times.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from stabilize_events import get_event_recorder, set_event_context
from stabilize_events.demo.models import Stage, Task, Trigger, Workflow, WorkflowStatus

if TYPE_CHECKING:
    from stabilize_events import EventRecorder

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(at_ms: int | None = None) -> str:
    """A ULID (26 Crockford base-32 characters, time-ordered), as Stabilize uses for ids."""
    ms = int(time.time() * 1000) if at_ms is None else at_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


#: How long before the wall clock's time the demo's simulated clock starts: the scenarios
#: take about 32 simulated minutes, so their last events are not in the future.
DEMO_LEAD_MS = 35 * 60_000


class SimClock:
    """A clock that moves only when told to: ``now`` in epoch milliseconds.

    ``start_ms`` defaults to `DEMO_LEAD_MS` before the current time.
    """

    def __init__(self, start_ms: int | None = None) -> None:
        self.now = int(time.time() * 1000) - DEMO_LEAD_MS if start_ms is None else start_ms

    def timestamp(self) -> datetime:
        """The clock's time as an aware UTC datetime: the recorder's ``clock``."""
        return datetime.fromtimestamp(self.now / 1000, UTC)

    def advance(self, ms: int) -> int:
        """Move the clock forward by ``ms`` and return the new time."""
        self.now += ms
        return self.now


class Engine:
    """Moves demo models through their lifecycle and records each transition.

    One method per handler action of Stabilize (start a stage, retry a task,
    cancel a workflow...). Each bumps the entity's version, sets its status and
    times from the clock, and records the matching event.
    """

    def __init__(self, recorder: EventRecorder, clock: SimClock) -> None:
        self.recorder = recorder
        self.clock = clock

    # Workflows

    def start_workflow(self, wf: Workflow, actor: str = "system") -> None:
        """Record creation and start, as StartWorkflowHandler does."""
        wf.status = WorkflowStatus.RUNNING
        wf.start_time = self.clock.now
        set_event_context(wf.id, actor=actor)
        self.recorder.record_workflow_created(wf, source_handler="StartWorkflowHandler")
        self.recorder.record_workflow_started(
            wf,
            initial_stage_ids=[s.id for s in wf.initial_stages()],
            source_handler="StartWorkflowHandler",
        )

    def complete_workflow(self, wf: Workflow) -> None:
        """Record a successful end."""
        wf.status = WorkflowStatus.SUCCEEDED
        wf.end_time = self.clock.advance(40)
        set_event_context(wf.id)
        self.recorder.record_workflow_completed(wf, source_handler="CompleteWorkflowHandler")

    def fail_workflow(self, wf: Workflow) -> None:
        """Record a terminal failure."""
        wf.status = WorkflowStatus.TERMINAL
        wf.end_time = self.clock.advance(35)
        set_event_context(wf.id)
        self.recorder.record_workflow_failed(
            wf, error="Workflow ended with status TERMINAL", source_handler="CompleteWorkflowHandler"
        )

    def cancel_workflow(self, wf: Workflow, user: str, reason: str) -> None:
        """Record a cancellation asked for by ``user``."""
        wf.status = WorkflowStatus.CANCELED
        wf.is_canceled = True
        wf.canceled_by = user
        wf.cancellation_reason = reason
        wf.end_time = self.clock.advance(25)
        set_event_context(wf.id, actor=user)
        self.recorder.record_workflow_canceled(wf, source_handler="CompleteWorkflowHandler")

    # Stages

    def _touch_stage(self, stage: Stage, status: WorkflowStatus, actor: str = "system") -> str:
        stage.status = status
        stage.version += 1
        wf_id = stage.execution.id if stage.execution else ""
        set_event_context(wf_id, actor=actor)
        return wf_id

    def start_stage(self, stage: Stage) -> None:
        """Record a stage starting."""
        stage.start_time = self.clock.advance(12)
        self._touch_stage(stage, WorkflowStatus.RUNNING)
        self.recorder.record_stage_started(stage, source_handler="StartStageHandler")

    def complete_stage(self, stage: Stage) -> None:
        """Record a stage succeeding."""
        stage.end_time = self.clock.advance(8)
        self._touch_stage(stage, WorkflowStatus.SUCCEEDED)
        self.recorder.record_stage_completed(stage, source_handler="CompleteStageHandler")

    def fail_stage(self, stage: Stage, error: str) -> None:
        """Record a stage failing terminally."""
        stage.end_time = self.clock.advance(8)
        stage.context["exception"] = {"details": {"error": error}}
        self._touch_stage(stage, WorkflowStatus.TERMINAL)
        self.recorder.record_stage_failed(stage, error=error, source_handler="CompleteStageHandler")

    def skip_stage(self, stage: Stage, reason: str) -> None:
        """Record a stage skipped without running."""
        stage.start_time = stage.end_time = self.clock.advance(5)
        self._touch_stage(stage, WorkflowStatus.SKIPPED)
        self.recorder.record_stage_skipped(stage, reason=reason, source_handler="SkipStageHandler")

    def cancel_stage(self, stage: Stage, user: str) -> None:
        """Record a running stage being canceled by ``user``."""
        stage.end_time = self.clock.advance(15)
        self._touch_stage(stage, WorkflowStatus.CANCELED, actor=user)
        for task in stage.tasks:
            if task.status is WorkflowStatus.RUNNING:
                task.status = WorkflowStatus.CANCELED
                task.end_time = stage.end_time
        self.recorder.record_stage_canceled(stage, source_handler="CancelStageHandler")

    # Tasks

    def _touch_task(self, task: Task, status: WorkflowStatus) -> str:
        task.status = status
        task.version += 1
        stage = task.stage
        wf_id = stage.execution.id if stage is not None and stage.execution is not None else ""
        set_event_context(wf_id)
        return wf_id

    def start_task(self, task: Task) -> None:
        """Record a task starting."""
        task.start_time = self.clock.advance(3)
        wf_id = self._touch_task(task, WorkflowStatus.RUNNING)
        self.recorder.record_task_started(task, wf_id, source_handler="StartTaskHandler")

    def complete_task(self, task: Task, took_ms: int, outputs: dict[str, Any] | None = None) -> None:
        """Record a task succeeding after ``took_ms``; its outputs join the stage's."""
        task.end_time = self.clock.advance(took_ms)
        task.task_exception_details = {}
        wf_id = self._touch_task(task, WorkflowStatus.SUCCEEDED)
        if task.stage is not None and outputs:
            task.stage.outputs.update(outputs)
        stage_outputs = task.stage.outputs if task.stage is not None else outputs
        self.recorder.record_task_completed(
            task, wf_id, outputs=stage_outputs, source_handler="CompleteTaskHandler"
        )

    def retry_task(self, task: Task, attempt: int, error: str, took_ms: int) -> None:
        """Record a transient failure after ``took_ms``: the task will run again."""
        self.clock.advance(took_ms)
        task.task_exception_details = {"exception": error, "attempt": attempt}
        wf_id = self._touch_task(task, WorkflowStatus.RUNNING)
        self.recorder.record_task_retried(task, wf_id, attempt, source_handler="RunTaskHandler")
        self.clock.advance(1000 * 2**attempt)  # backoff before the next attempt

    def fail_task(self, task: Task, error: str, took_ms: int) -> None:
        """Record a task failing terminally after ``took_ms``."""
        task.end_time = self.clock.advance(took_ms)
        task.task_exception_details = {"exception": error}
        wf_id = self._touch_task(task, WorkflowStatus.TERMINAL)
        self.recorder.record_task_failed(task, wf_id, error=error, source_handler="CompleteTaskHandler")

    def run_stage(self, stage: Stage, took_ms: int, outputs: dict[str, Any] | None = None) -> None:
        """Start a stage, run each of its tasks to success, complete it."""
        self.start_stage(stage)
        for task in stage.tasks:
            self.start_task(task)
            self.complete_task(task, took_ms, outputs)
        self.complete_stage(stage)


@dataclass(frozen=True)
class Scenario:
    """A named workflow run: ``build`` makes the workflow, ``play`` drives it."""

    key: str
    title: str
    build: Callable[[str], Workflow]
    play: Callable[[Engine, Workflow], None]


# Parallel stages ---------------------------------------------------------


def _build_parallel(wf_id: str) -> Workflow:
    wf = Workflow(
        id=wf_id,
        application="payments",
        name="deploy-payments-api",
        trigger=Trigger(type="git-push", user="ci-bot"),
        context={"git_sha": "9c4e1f2", "environment": "production"},
    )
    wf.add_stage(
        "build", "Build image", "docker", [("compile", "tasks.Compile"), ("package", "tasks.Package")]
    )
    wf.add_stage("unit", "Unit tests", "pytest", [("run-unit", "tasks.RunPytest")], requires={"build"})
    wf.add_stage(
        "integration",
        "Integration tests",
        "pytest",
        [("run-integration", "tasks.RunPytest")],
        requires={"build"},
    )
    wf.add_stage(
        "deploy", "Deploy", "kubernetes", [("rollout", "tasks.Rollout")], requires={"unit", "integration"}
    )
    return wf


def _play_parallel(engine: Engine, wf: Workflow) -> None:
    engine.start_workflow(wf)
    engine.run_stage(wf.stage("build"), took_ms=41_250, outputs={"image": "payments-api:9c4e1f2"})
    unit, integration = wf.stage("unit"), wf.stage("integration")
    # Both test stages run at the same time; the unit tests finish first.
    engine.start_stage(unit)
    engine.start_stage(integration)
    engine.start_task(unit.tasks[0])
    engine.start_task(integration.tasks[0])
    engine.complete_task(unit.tasks[0], took_ms=18_400, outputs={"passed": 412})
    engine.complete_stage(unit)
    engine.complete_task(integration.tasks[0], took_ms=52_900, outputs={"passed": 57})
    engine.complete_stage(integration)
    engine.run_stage(wf.stage("deploy"), took_ms=23_700, outputs={"replicas": 6})
    engine.complete_workflow(wf)


# A task retried, then succeeding -----------------------------------------


def _build_retry(wf_id: str) -> Workflow:
    wf = Workflow(
        id=wf_id,
        application="analytics",
        name="nightly-etl",
        trigger=Trigger(type="cron", user="scheduler"),
        context={"partition": "2024-11-23"},
    )
    wf.add_stage("extract", "Extract orders", "python", [("extract", "etl.Extract")])
    wf.add_stage("transform", "Transform", "python", [("transform", "etl.Transform")], requires={"extract"})
    wf.add_stage("load", "Load warehouse", "python", [("load", "etl.Load")], requires={"transform"})
    return wf


def _play_retry(engine: Engine, wf: Workflow) -> None:
    engine.start_workflow(wf)
    engine.run_stage(wf.stage("extract"), took_ms=95_000, outputs={"rows": 182_344})
    transform = wf.stage("transform")
    task = transform.tasks[0]
    engine.start_stage(transform)
    engine.start_task(task)
    engine.retry_task(task, 1, "ConnectionResetError: warehouse closed the connection", took_ms=4_100)
    engine.retry_task(task, 2, "TimeoutError: no reply from warehouse in 30s", took_ms=30_000)
    engine.complete_task(task, took_ms=61_800, outputs={"rows_out": 181_977})
    engine.complete_stage(transform)
    engine.run_stage(wf.stage("load"), took_ms=44_300, outputs={"table": "fact_orders"})
    engine.complete_workflow(wf)


# A skipped stage ----------------------------------------------------------


def _build_skipped(wf_id: str) -> Workflow:
    wf = Workflow(
        id=wf_id,
        application="mobile",
        name="release-ios-hotfix",
        trigger=Trigger(type="manual", user="dana"),
        context={"version": "5.12.1", "hotfix": True},
    )
    wf.add_stage("build", "Build app", "xcode", [("archive", "mobile.Archive")])
    wf.add_stage("canary", "Canary rollout", "rollout", [("canary", "mobile.Canary")], requires={"build"})
    wf.add_stage("publish", "Publish", "appstore", [("upload", "mobile.Upload")], requires={"canary"})
    return wf


def _play_skipped(engine: Engine, wf: Workflow) -> None:
    engine.start_workflow(wf, actor="dana")
    engine.run_stage(wf.stage("build"), took_ms=312_000, outputs={"build_number": 4821})
    engine.skip_stage(wf.stage("canary"), reason="canary disabled for hotfix releases")
    engine.run_stage(wf.stage("publish"), took_ms=87_500, outputs={"review": "expedited"})
    engine.complete_workflow(wf)


# A failed workflow --------------------------------------------------------


_MIGRATION_ERROR = 'UniqueViolation: duplicate key value violates unique constraint "orders_pkey"'


def _build_failed(wf_id: str) -> Workflow:
    wf = Workflow(
        id=wf_id,
        application="orders",
        name="migrate-orders-db",
        trigger=Trigger(type="manual", user="lee"),
        context={"migration": "0042_split_order_lines"},
    )
    wf.add_stage("backup", "Backup", "shell", [("pg-dump", "db.Dump")])
    wf.add_stage("migrate", "Migrate schema", "shell", [("apply", "db.ApplyMigration")], requires={"backup"})
    wf.add_stage("verify", "Verify", "python", [("check", "db.Verify")], requires={"migrate"})
    return wf


def _play_failed(engine: Engine, wf: Workflow) -> None:
    engine.start_workflow(wf, actor="lee")
    engine.run_stage(wf.stage("backup"), took_ms=128_000, outputs={"dump": "orders-20241123.sql.gz"})
    migrate = wf.stage("migrate")
    engine.start_stage(migrate)
    engine.start_task(migrate.tasks[0])
    engine.fail_task(migrate.tasks[0], _MIGRATION_ERROR, took_ms=7_300)
    engine.fail_stage(migrate, _MIGRATION_ERROR)
    engine.fail_workflow(wf)  # "verify" never starts


# A canceled workflow ------------------------------------------------------


def _build_canceled(wf_id: str) -> Workflow:
    wf = Workflow(
        id=wf_id,
        application="search",
        name="reindex-products",
        trigger=Trigger(type="manual", user="alice"),
        context={"index": "products-v7"},
    )
    wf.add_stage("snapshot", "Snapshot index", "elasticsearch", [("snapshot", "search.Snapshot")])
    wf.add_stage(
        "reindex", "Reindex", "elasticsearch", [("reindex", "search.Reindex")], requires={"snapshot"}
    )
    return wf


def _play_canceled(engine: Engine, wf: Workflow) -> None:
    engine.start_workflow(wf, actor="alice")
    engine.run_stage(wf.stage("snapshot"), took_ms=15_600, outputs={"snapshot": "snap-products-v7"})
    reindex = wf.stage("reindex")
    engine.start_stage(reindex)
    engine.start_task(reindex.tasks[0])
    engine.clock.advance(240_000)  # four minutes in, someone stops it
    engine.cancel_stage(reindex, user="alice")
    engine.cancel_workflow(wf, user="alice", reason="superseded by reindex with the new analyzer")


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("parallel", "parallel stages", _build_parallel, _play_parallel),
    Scenario("retry", "a task retried twice, then succeeding", _build_retry, _play_retry),
    Scenario("skipped", "a skipped stage", _build_skipped, _play_skipped),
    Scenario("failed", "a failed workflow", _build_failed, _play_failed),
    Scenario("canceled", "a canceled workflow", _build_canceled, _play_canceled),
)


@dataclass
class RecordedWorkflow:
    """A scenario that ran, with the workflow it produced."""

    scenario: Scenario
    workflow: Workflow


def run_scenarios(clock: SimClock) -> list[RecordedWorkflow]:
    """Play every scenario through the global recorder, one after another, on ``clock``.

    `configure_event_sourcing` must have been called, with ``clock=clock.timestamp`` for the
    events to carry the simulated times. Workflows start three simulated minutes apart.
    """
    recorder = get_event_recorder()
    if recorder is None:
        raise RuntimeError("no event recorder: call configure_event_sourcing(store) first")
    engine = Engine(recorder, clock)
    recorded: list[RecordedWorkflow] = []
    for scenario in SCENARIOS:
        wf = scenario.build(new_id(clock.now))
        scenario.play(engine, wf)
        recorded.append(RecordedWorkflow(scenario, wf))
        clock.advance(180_000)
    return recorded
