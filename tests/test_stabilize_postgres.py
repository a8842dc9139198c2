"""A real Stabilize application on PostgreSQL with our event store in the same database:
Stabilize's `PostgresWorkflowStore` and `PostgresQueue` (its own migrations applied to a
fresh schema), `QueueProcessor` and `Orchestrator`, with our `configure_event_sourcing` over
`PostgresEventStore`. Events recorded inside the workflow store's transactions are written
through its connection (`append(event, connection=conn)`): they commit and roll back with
the workflow state they describe.

Runs against the server named by STABILIZE_EVENTS_POSTGRES_URL (skipped, naming it, when unset).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
import pytest
import stabilize.events as se
import stabilize_events as ours
from conftest import postgres_schema_url
from helpers.stabilize_app import DEDUP_CAPACITY, DRAIN_TIMEOUT, TASKS, reset_globals, stage, workflow
from stabilize import Orchestrator, QueueProcessor, TaskRegistry, Workflow, WorkflowStatus
from stabilize.persistence.postgres.store import PostgresWorkflowStore
from stabilize.queue import dedup
from stabilize.queue.postgres import PostgresQueue


def _apply_stabilize_migrations(url: str) -> None:
    """Stabilize's PostgreSQL migrations (the ``up`` part of each, in order), as its operator runs them."""
    files = sorted(
        (f for f in resources.files("stabilize.migrations").iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    with psycopg.connect(url, autocommit=True) as conn:
        for f in files:
            up = re.split(r"^-- migrate: down\s*$", f.read_text(), flags=re.MULTILINE)[0]
            conn.execute(up.encode())


@dataclass
class PgApp:
    """One Stabilize application on one PostgreSQL schema, events recorded in our store there."""

    url: str
    store: PostgresWorkflowStore
    queue: PostgresQueue
    processor: QueueProcessor
    orchestrator: Orchestrator
    event_store: ours.PostgresEventStore

    def committed_status(self, workflow_id: str) -> str:
        """The workflow's status as committed (read on a connection of its own)."""
        with psycopg.connect(self.url) as conn:
            row = conn.execute(
                "SELECT status FROM pipeline_executions WHERE id = %s", (workflow_id,)
            ).fetchone()
        assert row is not None
        return str(row[0])


@contextmanager
def pg_app() -> Iterator[PgApp]:
    schema, url = postgres_schema_url()
    _apply_stabilize_migrations(url)
    reset_globals()
    dedup.reset_deduplicator()
    dedup.get_deduplicator(expected_items=DEDUP_CAPACITY)
    store = PostgresWorkflowStore(url)
    queue = PostgresQueue(url, table_name="queue_messages")
    event_store = ours.PostgresEventStore(url, create_tables=True)
    ours.configure_event_sourcing(event_store)
    registry = TaskRegistry()
    for name, task in TASKS.items():
        registry.register(name, task)
    app = PgApp(
        url,
        store,
        queue,
        QueueProcessor(queue, store=store, task_registry=registry),
        Orchestrator(queue, store=store),
        event_store,
    )
    try:
        assert event_store.resolved_schema() == schema
        yield app
    finally:
        reset_globals()
        event_store.close()
        queue.close()
        store.close()


def _spy(name: str) -> list[Any]:
    seen: list[Any] = []
    se.get_event_bus().subscribe(name, seen.append)
    return seen


def _stored_and_watched(app: PgApp) -> tuple[Workflow, list[Any], Any]:
    """A stored one-stage workflow, what the bus delivers, and Stabilize's recorder (ours)."""
    wf = workflow("txn", [stage("a")])
    app.store.store(wf)
    recorder = se.get_event_recorder()
    assert recorder is not None
    return wf, _spy("seen"), recorder


class Refused(Exception):
    """Raised by the tests to roll a transaction back."""


def test_event_commits_with_the_workflow_state_on_postgres() -> None:
    with pg_app() as app:
        wf, seen, recorder = _stored_and_watched(app)
        with app.store.transaction(app.queue) as txn:
            wf.status = WorkflowStatus.RUNNING
            wf.start_time = 1_700_000_000_000
            txn.update_workflow_status(wf)
            recorded = recorder.record_workflow_started(wf, source_handler="TestHandler")
            # Written through the transaction's connection: invisible to everyone else until it commits.
            assert app.event_store.count_events() == 0
            assert app.committed_status(wf.id) == "NOT_STARTED"
            assert seen == []
        assert app.committed_status(wf.id) == "RUNNING"
        stored = app.event_store.get_events_for_workflow(wf.id)
        assert [(e.event_id, e.sequence) for e in stored] == [(recorded.event_id, recorded.sequence)]
        assert [e.event_id for e in seen] == [recorded.event_id]


def test_event_rolls_back_with_the_workflow_state_on_postgres() -> None:
    with pg_app() as app:
        wf, seen, recorder = _stored_and_watched(app)
        with pytest.raises(Refused), app.store.transaction(app.queue) as txn:
            wf.status = WorkflowStatus.RUNNING
            txn.update_workflow_status(wf)
            recorder.record_workflow_started(wf, source_handler="TestHandler")
            raise Refused
        assert app.committed_status(wf.id) == "NOT_STARTED"
        assert app.event_store.count_events() == 0 and seen == []
        with app.store.transaction(app.queue):
            created = recorder.record_workflow_created(wf, source_handler="TestHandler")
        assert [e.event_id for e in app.event_store.get_events_for_workflow(wf.id)] == [created.event_id]
        assert [e.event_id for e in seen] == [created.event_id]


def test_a_workflow_run_by_stabilize_on_postgres_is_recorded_in_order() -> None:
    with pg_app() as app:
        wf = workflow("run", [stage("a"), stage("b", after=("a",))])
        app.orchestrator.start(wf)
        app.processor.process_all(timeout=DRAIN_TIMEOUT)
        assert app.store.retrieve(wf.id).status == WorkflowStatus.SUCCEEDED
        events = app.event_store.get_events_for_workflow(wf.id)
        kinds = [e.event_type.value for e in events]
        assert kinds[0] == "workflow.created" and kinds[-1] == "workflow.completed"
        assert kinds.count("stage.completed") == 2 and kinds.count("task.completed") == 2
        sequences = [e.sequence for e in events]
        assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
        # The replay of what was recorded agrees with what Stabilize stored.
        state = ours.EventReplayer(app.event_store).rebuild_workflow_state(wf.id)
        assert state["status"] == "SUCCEEDED"
