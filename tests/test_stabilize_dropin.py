"""The drop-in, proved with the real Stabilize engine (0.33.1).

Real workflows (see `stabilize_app.SCENARIOS`: linear, parallel branches, a
transient failure retried, a terminal failure, a skipped stage, pause then
resume, cancel, a dynamic jump) run through ``QueueProcessor`` and
``Orchestrator`` under three configurations: Stabilize's own event store
(the reference), Stabilize's recorder over our store (path A) and our
recorder and bus wired into Stabilize (path B). Their event streams,
what Stabilize's (and our) consumers make of them, the transactions the
events join, and the errors on bad input are compared and checked here.

Pause/resume note: Stabilize 0.33.1 records no ``workflow.paused`` or
``workflow.resumed`` event (its handlers never call those recorder methods);
the scenario shows the pause in the stage and task versions of the stream.
"""

from __future__ import annotations

import dataclasses
import enum
import sqlite3
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stabilize.events as se
import stabilize.events.base as se_base
import stabilize_events as ours
from helpers.stabilize_app import (
    CONFIGS,
    SCENARIOS,
    App,
    Run,
    RunCache,
    configured,
    consumer_results,
    normalized,
    reset_globals,
    run_through,
    sqlite_url,
    stage,
    workflow,
)
from stabilize import WorkflowStatus
from stabilize.persistence.sqlite.transaction import AtomicTransaction
from stabilize.queue.messages import RunTask
from stabilize_events.errors import ArgumentTypeError, IntegrationError, InvalidArgumentError

OUR_PATHS = ("path_a", "path_b")
#: Scenarios also run with the event store on a file of its own.
SEPARATE_FILE_SCENARIOS = ("linear", "cancel")


@pytest.fixture(autouse=True)
def _fresh_globals() -> Iterator[None]:
    """Every test starts and ends with event sourcing off in both packages."""
    reset_globals()
    yield
    reset_globals()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> RunCache:
    """Each (scenario, config, same_file) run once for the whole module."""
    return RunCache(tmp_path_factory.mktemp("dropin-runs"))


def _first_difference(expected: list[Any], got: list[Any]) -> str:
    for index, (want, have) in enumerate(zip(expected, got, strict=False)):
        if want != have:
            return f"event {index} differs:\n  expected {want}\n  got      {have}"
    return f"{len(expected)} events expected, {len(got)} recorded"


def _assert_same_stream(reference: Run, run: Run) -> None:
    expected = normalized(reference.events, reference.names)
    got = normalized(run.events, run.names)
    assert got == expected, _first_difference(expected, got)


# -- 1. the same events --------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario_runs_as_designed(runs: RunCache, scenario: str, config: str) -> None:
    """Each scenario ends in its status and records the events that make it what it is."""
    run = runs.get(scenario, config)
    spec = SCENARIOS[scenario]
    assert run.status == spec.expected_status
    recorded = {e.event_type.value for e in run.events}
    assert set(spec.hallmarks) <= recorded
    assert len({(e.entity_id, e.event_type.value, e.version) for e in run.events}) == len(run.events)


@pytest.mark.parametrize("config", OUR_PATHS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_same_events_as_stabilize(runs: RunCache, scenario: str, config: str) -> None:
    """Field by field (ids mapped by ref_id, clocks aside), our paths record Stabilize's stream."""
    _assert_same_stream(runs.get(scenario, "reference"), runs.get(scenario, config))


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("scenario", SEPARATE_FILE_SCENARIOS)
def test_same_events_with_event_store_on_its_own_file(runs: RunCache, scenario: str, config: str) -> None:
    """On a file of its own the event store gets the same stream (appended outside the
    handlers' transactions), and the workflow file holds no events."""
    run = runs.get(scenario, config, same_file=False)
    assert run.app.event_url != run.app.workflow_url
    _assert_same_stream(runs.get(scenario, "reference"), run)
    workflow_file = run.app.workflow_url.removeprefix("sqlite:///")
    with sqlite3.connect(workflow_file) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not tables & {"event_log", "events"}


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("scenario", ["linear", "retry", "cancel"])
def test_bus_delivers_each_stored_event_once(runs: RunCache, scenario: str, config: str) -> None:
    """Every stored event reaches the bus once, after its commit, as stored (id and sequence)."""
    run = runs.get(scenario, config)
    seen = run.app.bus_seen["all"]
    assert [(e.event_id, e.sequence) for e in seen] == [(e.event_id, e.sequence) for e in run.events]


@pytest.mark.parametrize("config", OUR_PATHS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_bus_filters_by_stabilize_types_and_workflow(runs: RunCache, scenario: str, config: str) -> None:
    """Subscribers filtering by Stabilize's EventType/EntityType and a workflow get what they get
    over Stabilize's store: exactly the stored events that match, in order."""
    reference, run = runs.get(scenario, "reference"), runs.get(scenario, config)
    for name, wanted in (
        ("task-completed", lambda e: e.event_type == se.EventType.TASK_COMPLETED),
        ("stages", lambda e: e.entity_type == se.EntityType.STAGE),
    ):
        got = run.app.bus_seen[name]
        assert [e.event_id for e in got] == [e.event_id for e in run.events if wanted(e)]
        assert normalized(got, run.names) == normalized(reference.app.bus_seen[name], reference.names)
    assert run.app.bus_seen["task-completed"]
    assert run.app.bus_seen["other-workflow"] == []


# -- 2. consumers ----------------------------------------------------------------------------


@pytest.mark.parametrize("config", OUR_PATHS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_stabilize_consumers_over_our_store(runs: RunCache, scenario: str, config: str) -> None:
    """Stabilize's replayer (also as of each event), projections and durable subscriptions give
    over our store what they give over Stabilize's."""
    expected = consumer_results(se, runs.get(scenario, "reference"))
    got = consumer_results(se, runs.get(scenario, config))
    for key in expected:
        assert got[key] == expected[key], key


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_our_consumers_over_stabilize_store(runs: RunCache, scenario: str) -> None:
    """Our replayer, projections and subscriptions give over Stabilize's store what they give over
    ours, and what Stabilize's consumers give."""
    reference = runs.get(scenario, "reference")
    over_theirs = consumer_results(ours, reference)
    over_ours = consumer_results(ours, runs.get(scenario, "path_b"))
    stabilize_answer = consumer_results(se, reference)
    for key in stabilize_answer:
        assert over_theirs[key] == over_ours[key], key
        assert over_theirs[key] == stabilize_answer[key], key


def test_consumer_results_see_the_run(runs: RunCache) -> None:
    """The compared consumer results are not empty: the replayed state is the run's outcome and
    the durable subscription, resumed after a restart, delivers each matching event once."""
    run = runs.get("retry", "path_b")
    results = consumer_results(se, run)
    assert results["state"]["status"] == "SUCCEEDED"
    assert results["as_of"][0]["status"] != results["as_of"][-1]["status"]
    before, after = results["catch_up"]
    matching = [e for e in run.events if e.event_type in SUBSCRIBED]
    assert before and after
    assert len(before) + len(after) == len(matching) == results["subscription"][0]


SUBSCRIBED = {se.EventType.TASK_COMPLETED, se.EventType.STAGE_COMPLETED, se.EventType.STAGE_STARTED}


# -- 3. transactions with the real engine ------------------------------------------------------


def _committed_status(app: App, workflow_id: str) -> str:
    """The workflow's status as committed (read on a connection of its own)."""
    with sqlite3.connect(app.workflow_url.removeprefix("sqlite:///")) as conn:
        row = conn.execute("SELECT status FROM pipeline_executions WHERE id = ?", (workflow_id,)).fetchone()
    return str(row[0])


class Refused(Exception):
    """Raised by the tests to roll a transaction back."""


@pytest.mark.parametrize("config", OUR_PATHS)
def test_event_commits_with_workflow_state(tmp_path: Path, config: str) -> None:
    """Recorded inside a store transaction, an event is invisible (and unpublished) until the
    transaction commits, then visible together with the workflow state it wrote."""
    with configured(tmp_path, config) as app:
        wf = workflow("txn", [stage("a")])
        app.store.store(wf)
        seen = app.spy("seen")
        recorder = se.get_event_recorder()
        assert recorder is not None
        with app.store.transaction(app.queue) as txn:
            wf.status = WorkflowStatus.RUNNING
            wf.start_time = 1_700_000_000_000
            txn.update_workflow_status(wf)
            recorded = recorder.record_workflow_started(wf, source_handler="TestHandler")
            assert app.event_store.count_events() == 0
            assert _committed_status(app, wf.id) == "NOT_STARTED"
            assert seen == []
        assert _committed_status(app, wf.id) == "RUNNING"
        stored = app.events(wf.id)
        assert [(e.event_id, e.sequence) for e in stored] == [(recorded.event_id, recorded.sequence)]
        assert [e.event_id for e in seen] == [recorded.event_id]


@pytest.mark.parametrize("config", OUR_PATHS)
def test_event_rolls_back_with_workflow_state(tmp_path: Path, config: str) -> None:
    """An event recorded in a store transaction that rolls back is gone with the workflow state,
    and never published; the next committed one is stored and published alone."""
    with configured(tmp_path, config) as app:
        wf = workflow("txn", [stage("a")])
        app.store.store(wf)
        seen = app.spy("seen")
        recorder = se.get_event_recorder()
        assert recorder is not None
        with pytest.raises(Refused), app.store.transaction(app.queue) as txn:
            wf.status = WorkflowStatus.RUNNING
            txn.update_workflow_status(wf)
            recorder.record_workflow_started(wf, source_handler="TestHandler")
            raise Refused
        assert _committed_status(app, wf.id) == "NOT_STARTED"
        assert app.event_store.count_events() == 0
        assert seen == []
        with app.store.transaction(app.queue):
            created = recorder.record_workflow_created(wf, source_handler="TestHandler")
        assert [e.event_id for e in app.events(wf.id)] == [created.event_id]
        assert [e.event_id for e in seen] == [created.event_id]


@pytest.mark.parametrize("config", OUR_PATHS)
def test_failing_handler_leaves_no_event(
    tmp_path: Path, config: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real handler that records inside its transaction and then fails (RunTask records
    ``task.retried`` and then cannot queue the retry) leaves no event and publishes none, while
    the events committed before it are stored and published."""
    original = AtomicTransaction.push_message

    def refuse_retries(self: AtomicTransaction, message: Any, delay: float = 0) -> None:
        if isinstance(message, RunTask) and message.retry_count:
            raise Refused("the queue refused the retry")
        original(self, message, delay)

    monkeypatch.setattr(AtomicTransaction, "push_message", refuse_retries)
    with configured(tmp_path, config) as app:
        wf = workflow("retry", [stage("a", task="flaky")])
        seen = app.spy("all")
        with pytest.raises(Refused):
            run_through(app, wf)
        committed = ["workflow.created", "workflow.started", "stage.started", "task.started"]
        assert [e.event_type.value for e in app.events(wf.id)] == committed
        assert [e.event_type.value for e in seen] == committed
        stage_a = app.store.retrieve(wf.id).stage_by_ref_id("a")
        assert stage_a is not None and "attempts" not in stage_a.context


# -- 4. bad input ----------------------------------------------------------------------------


def _event(workflow_id: str = "wf-1") -> ours.Event:
    return ours.create_workflow_event(
        ours.EventType.WORKFLOW_CREATED, workflow_id, 1, {"name": "w"}, ours.EventMetadata(correlation_id="c")
    )


@pytest.mark.parametrize("other", ["another-file", "memory", "not-sqlite"])
def test_append_through_a_foreign_connection_writes_nothing(tmp_path: Path, other: str) -> None:
    """A connection to another file, an in-memory database or a non-SQLite object is refused
    with a clear error, and neither database changes."""
    store = ours.SqliteEventStore(sqlite_url(tmp_path / "ours.db"), create_tables=True)
    other_store = ours.SqliteEventStore(sqlite_url(tmp_path / "other.db"), create_tables=True)
    store.append(_event())
    other_store.append(_event())
    connection: Any
    error: type[Exception]
    if other == "another-file":
        connection, error, match = sqlite3.connect(tmp_path / "other.db"), InvalidArgumentError, "other.db"
    elif other == "memory":
        connection, error, match = sqlite3.connect(":memory:"), InvalidArgumentError, "in-memory"
    else:
        connection, error, match = object(), ArgumentTypeError, "sqlite3.Connection"
    with pytest.raises(error, match=match):
        store.append(_event(), connection=connection)
    with pytest.raises(error, match="nothing was written"):
        store.append_batch([_event(), _event()], connection=connection)
    assert store.count_events() == 1
    assert other_store.count_events() == 1
    if isinstance(connection, sqlite3.Connection):
        assert not connection.in_transaction
        if other == "memory":
            assert connection.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


def test_in_memory_store_refuses_any_connection(tmp_path: Path) -> None:
    """An in-memory store has no file a caller's connection could share."""
    store = ours.SqliteEventStore("sqlite:///:memory:", create_tables=True)
    connection = sqlite3.connect(tmp_path / "x.db")
    assert not store.can_join(connection)
    with pytest.raises(InvalidArgumentError, match="in-memory"):
        store.append(_event(), connection=connection)
    assert store.count_events() == 0


def test_stabilize_missing(tmp_path: Path) -> None:
    """Where ``import stabilize`` fails, everything of ours works; configuring wires nothing,
    and requiring Stabilize names the extra to install."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["stabilize"] = None
        from types import SimpleNamespace

        import stabilize_events as ours
        from stabilize_events import stabilize_bridge

        assert not stabilize_bridge.stabilize_installed()
        store = ours.SqliteEventStore({sqlite_url(tmp_path / "alone.db")!r}, create_tables=True)
        recorder = ours.configure_event_sourcing(store)
        seen = []
        ours.get_event_bus().subscribe("s", seen.append, event_types={{ours.EventType.WORKFLOW_CREATED}})
        wf = SimpleNamespace(
            id="wf", application="app", name="w", type=SimpleNamespace(value="PIPELINE"), trigger=None,
            stages=[], initial_stages=lambda: [],
        )
        recorder.record_workflow_created(wf, source_handler="Script")
        assert [e.workflow_id for e in store.get_events_for_workflow("wf")] == ["wf"]
        assert [e.workflow_id for e in seen] == ["wf"]
        assert ours.EventReplayer(store).rebuild_workflow_state("wf")["name"] == "w"
        ours.reset_event_recorder()
        ours.reset_event_bus()
        try:
            ours.configure_event_sourcing(store, stabilize=True)
        except ImportError as error:
            assert "stabilize-events[stabilize]" in str(error), error
        else:
            raise AssertionError("configure_event_sourcing(stabilize=True) did not raise")
        assert ours.get_event_recorder() is None
        assert sys.modules["stabilize"] is None
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def _fake_base(**replacements: Any) -> types.ModuleType:
    fake = types.ModuleType(se_base.__name__)
    fake.__dict__.update({k: v for k, v in vars(se_base).items() if k != "__name__"})
    fake.__dict__.update(replacements)
    return fake


def _enum_with(base: type[enum.Enum], **members: str) -> type[enum.Enum]:
    values = {m.name: m.value for m in base} | members
    changed = enum.Enum(base.__name__, values)  # type: ignore[misc]
    changed.__module__ = se_base.__name__
    return changed


@dataclasses.dataclass(frozen=True)
class _EventWithTenant(se_base.Event):
    tenant: str = ""


MISMATCHES = {
    "extra-event-type": (
        lambda: {"EventType": _enum_with(se_base.EventType, WORKFLOW_ARCHIVED="wf.archived")}
    ),
    "changed-entity-type": (lambda: {"EntityType": _enum_with(se_base.EntityType, STAGE="phase")}),
    "extra-event-field": (lambda: {"Event": _EventWithTenant}),
}


@pytest.mark.parametrize("mismatch", list(MISMATCHES))
def test_a_different_stabilize_event_model_configures_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mismatch: str
) -> None:
    """A Stabilize whose event model differs from ours: IntegrationError naming the difference,
    and neither package's recorder or bus changes."""
    theirs = se.SqliteEventStore(sqlite_url(tmp_path / "theirs.db"), create_tables=True)
    se.configure_event_sourcing(theirs)
    ours.configure_event_sourcing(ours.InMemoryEventStore(), stabilize=False)
    before = (se.get_event_recorder(), se.get_event_bus(), ours.get_event_recorder(), ours.get_event_bus())
    monkeypatch.setitem(sys.modules, se_base.__name__, _fake_base(**MISMATCHES[mismatch]()))
    hint = {
        "extra-event-type": "WORKFLOW_ARCHIVED",
        "changed-entity-type": "phase",
        "extra-event-field": "tenant",
    }
    with pytest.raises(IntegrationError, match=hint[mismatch]):
        ours.configure_event_sourcing(
            ours.SqliteEventStore(sqlite_url(tmp_path / "ours.db"), create_tables=True)
        )
    after = (se.get_event_recorder(), se.get_event_bus(), ours.get_event_recorder(), ours.get_event_bus())
    assert all(b is a for b, a in zip(before, after, strict=True))


# -- 5. resetting ours unhooks Stabilize's handlers ------------------------------------------------


def test_reset_event_recorder_stops_stabilize_recording(tmp_path: Path) -> None:
    """After our reset_event_recorder, Stabilize's handlers record nothing more."""
    with configured(tmp_path, "path_b") as app:
        first = workflow("before", [stage("a")])
        run_through(app, first)
        recorded = app.event_store.count_events()
        assert recorded > 0
        assert se.get_event_recorder() is ours.get_event_recorder()
        ours.reset_event_recorder()
        assert se.get_event_recorder() is None
        second = workflow("after", [stage("a")])
        run_through(app, second)
        assert app.store.retrieve(second.id).status == WorkflowStatus.SUCCEEDED
        assert app.event_store.count_events() == recorded


def test_reset_event_bus_unhooks_stabilize(tmp_path: Path) -> None:
    """After our reset_event_bus, Stabilize publishes on a bus of its own: subscribers of the
    reset bus hear nothing more."""
    with configured(tmp_path, "path_b") as app:
        bus = ours.get_event_bus()
        assert se.get_event_bus() is bus
        seen = app.spy("old-bus")
        run_through(app, workflow("before", [stage("a")]))
        heard = len(seen)
        assert heard > 0
        ours.reset_event_bus()
        assert se.get_event_bus() is not bus
        run_through(app, workflow("after", [stage("a")]))
        assert len(seen) == heard


def test_reset_leaves_a_recorder_stabilize_got_elsewhere(tmp_path: Path) -> None:
    """Our reset only unhooks our own recorder: one configured through Stabilize later stays."""
    ours.configure_event_sourcing(ours.SqliteEventStore(sqlite_url(tmp_path / "ours.db"), create_tables=True))
    se.configure_event_sourcing(se.SqliteEventStore(sqlite_url(tmp_path / "theirs.db"), create_tables=True))
    theirs = se.get_event_recorder()
    assert theirs is not None and theirs is not ours.get_event_recorder()
    ours.reset_event_recorder()
    assert se.get_event_recorder() is theirs


def test_configuring_without_stabilize_leaves_it_alone(tmp_path: Path) -> None:
    """``stabilize=False`` configures ours only; default wiring installs ours into Stabilize."""
    ours.configure_event_sourcing(ours.InMemoryEventStore(), stabilize=False)
    assert se.get_event_recorder() is None
    recorder = ours.configure_event_sourcing(ours.InMemoryEventStore())
    assert se.get_event_recorder() is recorder


def _stabilize_snapshot_of_20_events(store: Any) -> tuple[Any, dict[str, Any]]:
    """20 events of workflow ``wf`` in ``store``, and a snapshot of them saved by Stabilize's
    own `SnapshotStore` over it; the snapshot store and the state it saved."""
    store.append_batch(
        [
            ours.Event(
                event_type=ours.EventType.STAGE_STARTED,
                entity_type=ours.EntityType.STAGE,
                entity_id=f"stage-{i}",
                workflow_id="wf",
                version=1,
                data={"name": f"stage {i}"},
            )
            for i in range(20)
        ]
    )
    theirs = se.SnapshotStore(store)
    state = se.EventReplayer(store).rebuild_workflow_state("wf")
    theirs.create_workflow_snapshot(state, "wf", 20, 20)
    return theirs, state


def test_stabilize_snapshot_store_loads_snapshots_from_our_store(store: Any) -> None:
    """Stabilize's `SnapshotStore` over ours (an app that changed only its store): the snapshot
    it saved, and one our `SnapshotStore` saved, pass its integrity check and load."""
    theirs, state = _stabilize_snapshot_of_20_events(store)
    loaded = theirs.get_latest_snapshot(se.EntityType.WORKFLOW, "wf")
    assert loaded is not None and (loaded.sequence, loaded.version) == (20, 20)
    assert loaded.state == store.get_snapshots(ours.EntityType.WORKFLOW, "wf", None, 1)[0]["state"]
    assert loaded.state["stages"].keys() == state["stages"].keys()

    store.append(ours.Event(event_type=ours.EventType.STAGE_STARTED, entity_id="stage-20", workflow_id="wf"))
    ours_snapshots = ours.SnapshotStore(store, policy=ours.SnapshotPolicy(every_n_events=1, min_events=1))
    ours.EventReplayer(store, snapshot_store=ours_snapshots).rebuild_workflow_state("wf")
    ours_snapshots.flush()
    newest = theirs.get_latest_snapshot(se.EntityType.WORKFLOW, "wf")
    assert newest is not None and newest.sequence == 21
    assert newest.state == ours.EventReplayer(store).rebuild_workflow_state("wf")


def test_stabilize_snapshot_store_refuses_a_damaged_snapshot_in_our_store(tmp_path: Path) -> None:
    """A snapshot whose stored state was edited fails Stabilize's check too: never loaded."""
    store = ours.SqliteEventStore(f"sqlite:///{tmp_path / 'events.db'}")
    theirs, _ = _stabilize_snapshot_of_20_events(store)
    edited = ours._core.encode_payload({"workflow_id": "wf", "status": "SUCCEEDED"})
    with sqlite3.connect(tmp_path / "events.db") as db:
        db.execute("UPDATE event_snapshot SET state = ?", (edited,))
    db.close()
    with pytest.raises(ValueError, match="Snapshot state integrity check failed"):
        theirs.get_latest_snapshot(se.EntityType.WORKFLOW, "wf")
    store.close()
