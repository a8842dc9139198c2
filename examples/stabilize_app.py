#!/usr/bin/env python3
"""A Stabilize app recording its events into stabilize-events' SQLite store.

It is Stabilize's own event sourcing setup with one line changed: the event store is
``stabilize_events.SqliteEventStore`` instead of ``stabilize.events.SqliteEventStore``.
Everything else (the workflow store, the queue, the handlers, ``EventReplayer`` and the
projections) is Stabilize's.

The workflow fans out and back in::

            fetch
          /   |   \\
      parse  flaky  count        (flaky fails once with a TransientError; Stabilize retries it)
          \\   |   /
            report

Run from the repository root after ``pip install '.[stabilize]'``::

    python examples/stabilize_app.py

The database is written to a temporary directory, removed at the end.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from stabilize import (
    Orchestrator,
    PythonTask,
    QueueProcessor,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    Task,
    TaskExecution,
    TaskRegistry,
    TaskResult,
    TransientError,
    Workflow,
)
from stabilize.events import (
    EventReplayer,
    StageMetricsProjection,
    WorkflowTimelineProjection,
    configure_event_sourcing,
    get_event_bus,
    reset_event_bus,
    reset_event_recorder,
)
from stabilize.persistence.connection import get_connection_manager
from stabilize_events import SqliteEventStore  # the one changed line: was `from stabilize.events import ...`


class FlakyUploadTask(Task):
    """Fails with a transient error on its first attempt, then succeeds (Stabilize retries it)."""

    def execute(self, stage: StageExecution) -> TaskResult:
        """Raise `TransientError` until the stage context shows one failed attempt."""
        attempts = int(stage.context.get("upload_attempts", 0))
        if attempts < 1:
            raise TransientError(
                "upload endpoint busy", retry_after=0.05, context_update={"upload_attempts": attempts + 1}
            )
        return TaskResult.success(outputs={"uploaded": True, "attempts": attempts + 1})


def python_stage(ref_id: str, name: str, script: str, after: set[str]) -> StageExecution:
    """A stage running ``script`` in one `PythonTask`, after the stages ``after``."""
    return StageExecution(
        ref_id=ref_id,
        type="python",
        name=name,
        requisite_stage_ref_ids=after,
        context={"script": script},
        tasks=[
            TaskExecution.create(name=name, implementing_class="python", stage_start=True, stage_end=True)
        ],
    )


def build_workflow() -> Workflow:
    """The fan-out/fan-in workflow: fetch, then parse, flaky upload and count, then report."""
    flaky = StageExecution(
        ref_id="upload",
        type="upload",
        name="Upload (flaky)",
        requisite_stage_ref_ids={"fetch"},
        context={},
        tasks=[
            TaskExecution.create(
                name="Upload", implementing_class="flaky_upload", stage_start=True, stage_end=True
            )
        ],
    )
    return Workflow.create(
        application="stabilize-events-example",
        name="Fan-out and back",
        stages=[
            python_stage("fetch", "Fetch", "RESULT = {'rows': list(range(10))}", set()),
            python_stage("parse", "Parse", "RESULT = {'parsed': 10}", {"fetch"}),
            flaky,
            python_stage("count", "Count", "RESULT = {'count': 10}", {"fetch"}),
            python_stage("report", "Report", "RESULT = {'report': 'done'}", {"parse", "upload", "count"}),
        ],
    )


def run(directory: Path) -> None:
    """Run the workflow with event sourcing on, all stores in ``directory``/app.db; print its history."""
    url = f"sqlite:///{directory / 'app.db'}"
    reset_event_bus()
    reset_event_recorder()

    store = SqliteWorkflowStore(url, create_tables=True)
    queue = SqliteQueue(url, table_name="queue_messages")
    queue._create_table()  # as Stabilize's examples do
    event_store = SqliteEventStore(url, create_tables=True)
    configure_event_sourcing(event_store)  # Stabilize's handlers now record into our store

    metrics = StageMetricsProjection()
    get_event_bus().subscribe("metrics", metrics.apply)

    registry = TaskRegistry()
    registry.register("python", PythonTask)
    registry.register("flaky_upload", FlakyUploadTask)
    processor = QueueProcessor(queue, store=store, task_registry=registry)
    orchestrator = Orchestrator(queue)

    workflow = build_workflow()
    store.store(workflow)
    orchestrator.start(workflow)
    processor.process_all(timeout=60.0)
    get_event_bus().shutdown(wait=True)  # let the metrics subscriber see every event

    events = event_store.get_events_for_workflow(workflow.id)
    final = store.retrieve(workflow.id)
    print(f"Workflow {workflow.name!r}: {final.status.name}, {len(events)} events in {event_store!r}")

    timeline = WorkflowTimelineProjection(workflow.id)
    for event in events:
        timeline.apply(event)
    state = timeline.get_state()
    print(f"\nTimeline ({len(state.entries)} entries, {state.total_duration_ms} ms):")
    for entry in state.entries:
        name = entry.entity_name or entry.entity_id
        duration = f" ({entry.duration_ms} ms)" if entry.duration_ms is not None else ""
        print(f"  {entry.event_type:<18} {entry.entity_type:<8} {name}{duration}")

    print("\nStage metrics:")
    for stage_type, m in sorted(metrics.get_state().items()):
        print(
            f"  {stage_type:<7} executions={m.execution_count} succeeded={m.success_count} "
            f"failed={m.failure_count} success_rate={m.success_rate:.0f}%"
        )

    replayed: dict[str, Any] = EventReplayer(event_store).rebuild_workflow_state(workflow.id)
    print(f"\nReplayed state: status={replayed['status']}, {len(replayed['stages'])} stages")
    for stage in sorted(replayed["stages"].values(), key=lambda s: str(s.get("name"))):
        print(f"  stage {stage.get('name')}: {stage.get('status')}")
    retried = [t for t in replayed["tasks"].values() if t.get("retry_count")]
    for task in retried:
        print(f"  task {task.get('name')} retried {task['retry_count']} time(s), then {task.get('status')}")

    event_store.close()
    get_connection_manager().close_sqlite_connection(url)


def main() -> None:
    """Run the app in a temporary directory."""
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="stabilize-events-example-") as directory:
        run(Path(directory))


if __name__ == "__main__":
    main()
