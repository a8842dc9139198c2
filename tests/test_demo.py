"""The ``stabilize-events demo`` command: what it prints, what it stores, how it fails."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import child_env
from stabilize_events import EventQuery, EventType, InMemoryEventStore, SqliteEventStore
from stabilize_events.cli import main
from stabilize_events.demo import SCENARIOS, run_demo

# Events each demo workflow must leave in the store, by type, keyed by workflow name.
EXPECTED: dict[str, dict[str, int]] = {
    "deploy-payments-api": {
        "workflow.created": 1,
        "workflow.started": 1,
        "stage.started": 4,
        "task.started": 5,
        "task.completed": 5,
        "stage.completed": 4,
        "workflow.completed": 1,
    },
    "nightly-etl": {
        "workflow.created": 1,
        "workflow.started": 1,
        "stage.started": 3,
        "task.started": 3,
        "task.retried": 2,
        "task.completed": 3,
        "stage.completed": 3,
        "workflow.completed": 1,
    },
    "release-ios-hotfix": {
        "workflow.created": 1,
        "workflow.started": 1,
        "stage.started": 2,
        "task.started": 2,
        "task.completed": 2,
        "stage.completed": 2,
        "stage.skipped": 1,
        "workflow.completed": 1,
    },
    "migrate-orders-db": {
        "workflow.created": 1,
        "workflow.started": 1,
        "stage.started": 2,
        "task.started": 2,
        "task.completed": 1,
        "stage.completed": 1,
        "task.failed": 1,
        "stage.failed": 1,
        "workflow.failed": 1,
    },
    "reindex-products": {
        "workflow.created": 1,
        "workflow.started": 1,
        "stage.started": 2,
        "task.started": 2,
        "task.completed": 1,
        "stage.completed": 1,
        "stage.canceled": 1,
        "workflow.canceled": 1,
    },
}
TOTAL = sum(sum(c.values()) for c in EXPECTED.values())


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m stabilize_events ARGS`` in ``cwd``, of the package under test (a relative
    ``PYTHONPATH`` would not reach it from ``cwd``)."""
    return subprocess.run(
        [sys.executable, "-m", "stabilize_events", *args],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def workflows_by_name(store: SqliteEventStore | InMemoryEventStore) -> dict[str, list[str]]:
    """Workflow ids in ``store``, grouped by the name their workflow.created event carries."""
    created = store.get_events(EventQuery(event_types=[EventType.WORKFLOW_CREATED], limit=10_000))
    names: dict[str, list[str]] = {}
    for event in created:
        names.setdefault(event.data["name"], []).append(event.workflow_id)
    return names


def assert_demo_events(store: SqliteEventStore | InMemoryEventStore, runs: int = 1) -> None:
    """``store`` holds ``runs`` demo runs' worth of events, each workflow exactly as expected."""
    by_name = workflows_by_name(store)
    assert sorted(by_name) == sorted(EXPECTED)
    for name, expected in EXPECTED.items():
        assert len(by_name[name]) == runs, name
        for wf_id in by_name[name]:
            events = store.get_events_for_workflow(wf_id)
            counts = Counter(e.event_type.value for e in events)
            assert dict(counts) == expected, name
            assert [e.sequence for e in events] == sorted(e.sequence for e in events)
            assert all(e.metadata.correlation_id == wf_id for e in events), name
            # The count query agrees with what was read.
            for type_value, n in expected.items():
                query = EventQuery(workflow_id=wf_id, event_types=[EventType(type_value)])
                assert store.count_events(query) == n, (name, type_value)
    assert store.count_events() == runs * TOTAL


def assert_demo_output(stdout: str) -> None:
    """The printed report names every scenario and workflow and shows the totals."""
    for scenario in SCENARIOS:
        assert scenario.title in stdout
    for name in EXPECTED:
        assert name in stdout
    for heading in ("== 1.", "== 2.", "== 3."):
        assert heading in stdout
    for column in ("seq", "time (UTC)", "event", "entity", "key data"):
        assert column in stdout
    assert f"Recorded {TOTAL} events for {len(EXPECTED)} workflows" in stdout
    assert f"received {TOTAL} of them" in stdout
    assert "attempt=2" in stdout
    assert "reason=canary disabled for hotfix releases" in stdout
    assert "canceled_by=alice" in stdout
    assert "UniqueViolation" in stdout
    # Replay: each workflow's rebuilt status, a halfway view, and the changes since.
    replay = stdout.split("Workflow state rebuilt", 1)[1].split("== 5.", 1)[0]
    for name, status in [
        ("nightly-etl", "SUCCEEDED"),
        ("migrate-orders-db", "TERMINAL"),
        ("reindex-products", "CANCELED"),
    ]:
        assert re.search(rf"{name}\s+{status}\s", replay), replay
    assert re.search(r"nightly-etl\s+SUCCEEDED\s+3\s+3\s+0\s+3\s+2\s", replay), replay
    assert "Time travel" in stdout and "it was RUNNING" in stdout
    assert "status: 'RUNNING' -> 'CANCELED'" in stdout


def test_demo_subprocess_writes_expected_events(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    result = run_cli("demo", "--store", f"sqlite:///{db}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert_demo_output(result.stdout)
    assert db.exists()
    store = SqliteEventStore(f"sqlite:///{db}", create_tables=False)
    try:
        assert_demo_events(store)
    finally:
        store.close()


def test_demo_default_store_is_a_fresh_file_never_events_db(tmp_path: Path) -> None:
    first = run_cli("demo", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = run_cli("demo", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert not (tmp_path / "events.db").exists()
    files = sorted(p.name for p in tmp_path.glob("demo-*.db"))
    assert len(files) == 2, files  # each run its own file
    for name in files:
        assert f"sqlite:///{name}" in first.stdout + second.stdout
        store = SqliteEventStore(f"sqlite:///{tmp_path / name}", create_tables=False)
        try:
            assert_demo_events(store)  # one run each
        finally:
            store.close()


def test_demo_refuses_a_store_holding_events_without_append(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    assert main(["demo", "--store", url]) == 0
    assert_demo_output(capsys.readouterr().out)
    assert main(["demo", "--store", url]) == 2
    refused = capsys.readouterr()
    assert refused.out == ""
    assert "already holds events" in refused.err and "--append" in refused.err
    store = SqliteEventStore(url, create_tables=False)
    try:
        assert store.count_events() == TOTAL  # nothing added
    finally:
        store.close()


def test_demo_append_adds_a_second_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    assert main(["demo", "--store", url]) == 0
    capsys.readouterr()
    assert main(["demo", "--store", url, "--append"]) == 0
    second = capsys.readouterr().out
    assert_demo_output(second)
    # The second report shows only its own workflows, and says the store holds both runs.
    assert f"now holds {2 * TOTAL} events" in second
    store = SqliteEventStore(url, create_tables=False)
    try:
        assert_demo_events(store, runs=2)
    finally:
        store.close()


def test_demo_report_agrees_with_itself(capsys: pytest.CaptureFixture[str]) -> None:
    """Each workflow's outcome and duration read the same in the events section and the timelines."""
    assert main(["demo", "--store", "memory://"]) == 0
    out = capsys.readouterr().out
    timelines = out.split("== 6.", 1)[1]
    for name, status in [
        ("deploy-payments-api", "SUCCEEDED"),
        ("migrate-orders-db", "TERMINAL"),
        ("reindex-products", "CANCELED"),
    ]:
        # Section 2: "<name> (...)\n  id ...: STATUS after 2m15s, N events"
        found = re.search(rf"{name} \(.*\n  id \w+: (\w+) after (\S+), ", out)
        assert found is not None, name
        assert found.group(1) == status
        assert f"{name}: {status} in {found.group(2)}" in timelines, (name, found.groups())
    assert "workflow.canceled\n" not in timelines.split("reindex-products:", 1)[1].split("\n", 1)[0] + "\n"
    assert " 0ms" not in timelines  # failures are measured on the simulated clock too


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "memory://"])
def test_demo_memory_stores(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--store", url]) == 0
    assert_demo_output(capsys.readouterr().out)


def test_run_demo_api_returns_what_it_recorded() -> None:
    import io

    from stabilize_events import get_event_recorder

    store = InMemoryEventStore()
    out = io.StringIO()
    ctx = run_demo(store, "memory://", out=out)
    assert [r.workflow.name for r in ctx.recorded] == list(EXPECTED)
    assert [r.workflow.status.name for r in ctx.recorded] == [
        "SUCCEEDED",
        "SUCCEEDED",
        "SUCCEEDED",
        "TERMINAL",
        "CANCELED",
    ]
    assert ctx.live_events == TOTAL
    assert_demo_events(store)
    assert_demo_output(out.getvalue())
    assert get_event_recorder() is None  # the demo removes the recorder it installed


def test_demo_payloads_carry_realistic_model_values() -> None:
    import io

    store = InMemoryEventStore()
    ctx = run_demo(store, "memory://", out=io.StringIO())
    by_name = {r.workflow.name: r.workflow for r in ctx.recorded}

    etl = store.get_events_for_workflow(by_name["nightly-etl"].id)
    retries = [e for e in etl if e.event_type is EventType.TASK_RETRIED]
    assert [e.data["attempt"] for e in retries] == [1, 2]
    assert retries[0].data["last_error"].startswith("ConnectionResetError")
    types = [e.event_type.value for e in etl]
    assert types.index("task.retried") > types.index("task.started")

    deploy = store.get_events_for_workflow(by_name["deploy-payments-api"].id)
    done = deploy[-1]
    assert done.event_type is EventType.WORKFLOW_COMPLETED
    assert done.data["status"] == "SUCCEEDED"
    # Times are epoch milliseconds, as in Stabilize's models; durations add up.
    assert isinstance(done.data["end_time"], int) and done.data["end_time"] > 1_600_000_000_000
    assert done.data["duration_ms"] > 60_000
    # The two test stages overlap: both start before either completes.
    seq = [(e.event_type.value, e.data.get("name")) for e in deploy]
    assert seq.index(("stage.started", "Integration tests")) < seq.index(("stage.completed", "Unit tests"))

    canceled = store.get_events_for_workflow(by_name["reindex-products"].id)[-1]
    assert canceled.event_type is EventType.WORKFLOW_CANCELED
    assert canceled.data["canceled_by"] == "alice"
    assert canceled.metadata.actor == "alice"
    assert canceled.metadata.source_handler == "CompleteWorkflowHandler"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user@localhost/db",
        "not-a-url",
        "sqlite:////nonexistent-dir-for-demo-test/sub/x.db",
    ],
)
def test_bad_store_is_one_clean_line_exit_2(url: str, tmp_path: Path) -> None:
    result = run_cli("demo", "--store", url, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("stabilize-events: error:")
    assert url in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_store_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--store", "redis://localhost"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "unsupported store URL 'redis://localhost'" in captured.err


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "usage: stabilize-events" in capsys.readouterr().err
