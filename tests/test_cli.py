"""The operator's commands: workflows, events, show, state, diff, timeline, metrics, stats, check."""

from __future__ import annotations

import io
import json
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import child_env, postgres_cli_url
from stabilize_events import (
    EntityType,
    Event,
    EventMetadata,
    EventStore,
    EventType,
    SqliteEventStore,
)
from stabilize_events.cli import build_parser, main
from stabilize_events.cli.check import FAILED_BASE, INTEGRITY, PAYLOADS, SNAPSHOTS
from stabilize_events.cli.common import postgres_target, shown_url
from stabilize_events.demo import run_demo


@pytest.fixture
def demo_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A store holding one demo run, also named by $STABILIZE_EVENTS_URL."""
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    store = SqliteEventStore(url)
    try:
        run_demo(store, url, out=io.StringIO())
    finally:
        store.close()
    monkeypatch.setenv("STABILIZE_EVENTS_URL", url)
    return url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def workflows(capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    code, out, _ = run(capsys, "workflows", "--json")
    assert code == 0
    return {w["name"]: w for w in json.loads(out)}


def test_workflows_lists_each_with_status_times_and_counts(
    demo_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    found = workflows(capsys)
    assert {n: w["status"] for n, w in found.items()} == {
        "deploy-payments-api": "SUCCEEDED",
        "nightly-etl": "SUCCEEDED",
        "release-ios-hotfix": "SUCCEEDED",
        "migrate-orders-db": "TERMINAL",
        "reindex-products": "CANCELED",
    }
    assert {n: w["events"] for n, w in found.items()} == {
        "deploy-payments-api": 21,
        "nightly-etl": 17,
        "release-ios-hotfix": 12,
        "migrate-orders-db": 11,
        "reindex-products": 10,
    }
    assert all(w["first_event"] < w["last_event"] for w in found.values())
    code, out, _ = run(capsys, "workflows", "--status", "terminal", "--json")
    assert code == 0 and [w["name"] for w in json.loads(out)] == ["migrate-orders-db"]
    code, out, _ = run(capsys, "workflows")
    assert code == 0 and "5 workflows" in out and "migrate-orders-db" in out and "TERMINAL" in out


def test_workflows_time_filter(demo_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    found = workflows(capsys)
    cut = found["migrate-orders-db"]["first_event"]
    code, out, _ = run(capsys, "workflows", "--since", cut, "--json")
    assert code == 0
    assert [w["name"] for w in json.loads(out)] == ["migrate-orders-db", "reindex-products"]
    code, out, _ = run(capsys, "workflows", "--until", cut, "--json")
    assert code == 0 and "reindex-products" not in {w["name"] for w in json.loads(out)}


def test_an_age_is_taken_as_the_value_of_a_time_option(
    demo_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # As the help shows it: `--since -1d`, not only `--since=-1d`.
    code, out, _ = run(capsys, "workflows", "--since", "-36500d", "--json")
    assert code == 0 and len(json.loads(out)) == 5
    code, out, _ = run(capsys, "workflows", "--until", "-36500d", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run(capsys, "events", "--since", "-36500d", "--until", "-1s", "--json")
    assert code == 0 and len(out.splitlines()) == 71
    wf = workflows(capsys)["nightly-etl"]["workflow_id"]
    code, out, _ = run(capsys, "state", wf, "--as-of-time", "-0s", "--json")
    assert code == 0 and json.loads(out)["status"] == "SUCCEEDED"
    # Only an age is joined: an option after a time option is still an option.
    with pytest.raises(SystemExit):
        run(capsys, "events", "--since", "--json")
    assert "expected one argument" in capsys.readouterr().err


def test_events_filters(demo_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    wf = workflows(capsys)["nightly-etl"]["workflow_id"]
    code, out, _ = run(capsys, "events", "--workflow", wf, "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 17 and {r["workflow_id"] for r in rows} == {wf}
    assert [r["sequence"] for r in rows] == sorted(r["sequence"] for r in rows)
    code, out, _ = run(capsys, "events", "--workflow", wf, "--type", "task.retried", "--json")
    retried = [json.loads(line) for line in out.splitlines()]
    assert [r["data"]["attempt"] for r in retried] == [1, 2]
    first, last = rows[3]["sequence"], rows[6]["sequence"]
    code, out, _ = run(capsys, "events", "--from-seq", str(first), "--to-seq", str(last), "--json")
    assert [json.loads(x)["sequence"] for x in out.splitlines()] == list(range(first + 1, last + 1))
    code, out, _ = run(
        capsys, "events", "--since", rows[5]["timestamp"], "--until", rows[5]["timestamp"], "--json"
    )
    assert rows[5]["event_id"] in out
    code, out, _ = run(capsys, "events", "--entity-type", "workflow", "--limit", "3", "--json")
    assert [json.loads(x)["entity_type"] for x in out.splitlines()] == ["workflow"] * 3
    code, out, _ = run(capsys, "events", "--workflow", wf)
    assert code == 0 and "task.retried" in out and "transform" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["events", "--since", "yesterday"], "malformed time 'yesterday'"),
        (["events", "--type", "task.exploded"], "unknown event type 'task.exploded'"),
        (["events", "--entity-type", "pipeline"], "unknown entity type 'pipeline'"),
        (["state", "WF", "--as-of-time", "12/04/2026"], "malformed time"),
    ],
)
def test_bad_filters_are_usage_errors(
    demo_url: str, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err


def test_missing_store_is_refused_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'nope.db'}"
    for argv in (["workflows"], ["events"], ["stats"], ["check"], ["export"], ["state", "X"]):
        code, _out, err = run(capsys, *argv, "--store", url)
        assert code == 2, argv
        assert "does not exist" in err and err.count("\n") == 1
    assert not (tmp_path / "nope.db").exists()


def test_unreadable_store_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not an SQLite database, just text" * 100)
    code, _, err = run(capsys, "workflows", "--store", f"sqlite:///{path}")
    assert code == 2 and "cannot open store" in err


def test_show_prints_every_field_or_exit_3(demo_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "events", "--type", "stage.skipped", "--json")
    skipped = json.loads(out.splitlines()[0])
    code, out, _ = run(capsys, "show", skipped["event_id"], "--json")
    assert code == 0 and json.loads(out) == skipped
    code, out, _ = run(capsys, "show", skipped["event_id"])
    assert code == 0 and "canary disabled for hotfix releases" in out and "metadata.source_handler" in out
    code, out, err = run(capsys, "show", "01NOSUCHEVENT")
    assert code == 3 and out == "" and "no event with id '01NOSUCHEVENT'" in err


def test_state_now_as_of_sequence_and_time(demo_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    wf = workflows(capsys)["migrate-orders-db"]["workflow_id"]
    code, out, _ = run(capsys, "events", "--workflow", wf, "--json")
    events = [json.loads(line) for line in out.splitlines()]
    code, out, _ = run(capsys, "state", wf, "--json")
    assert code == 0 and json.loads(out)["status"] == "TERMINAL"
    code, out, _ = run(capsys, "state", wf, "--as-of-seq", str(events[4]["sequence"]), "--json")
    halfway = json.loads(out)
    assert halfway["status"] == "RUNNING" and len(halfway["stages"]) == 1
    code, out, _ = run(capsys, "state", wf, "--as-of-time", events[7]["timestamp"], "--json")
    assert json.loads(out)["status"] == "RUNNING" and len(json.loads(out)["stages"]) == 2
    code, out, _ = run(capsys, "state", wf)
    assert code == 0 and "Migrate schema" in out and "UniqueViolation" in out
    code, _, err = run(capsys, "state", "no-such-workflow")
    assert code == 3 and "no workflow 'no-such-workflow'" in err
    # Before the workflow's first event: said so, not an empty table.
    code, out, _ = run(capsys, "state", wf, "--as-of-seq", str(events[0]["sequence"] - 1))
    assert code == 0 and f"had no events yet as of sequence {events[0]['sequence'] - 1}" in out
    assert f"its first event is sequence {events[0]['sequence']}" in out
    code, out, _ = run(capsys, "state", wf, "--as-of-time", "2000-01-01")
    assert code == 0 and "had no events yet as of 2000-01-01T00:00:00+00:00" in out
    with pytest.raises(SystemExit):
        main(["state", wf, "--as-of-seq", "3", "--as-of-time", "-1h"])  # one or the other


def test_diff_lists_changes(demo_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    wf = workflows(capsys)["reindex-products"]["workflow_id"]
    code, out, _ = run(capsys, "events", "--workflow", wf, "--json")
    seqs = [json.loads(line)["sequence"] for line in out.splitlines()]
    code, out, _ = run(capsys, "diff", wf, str(seqs[4]), str(seqs[-1]), "--json")
    assert code == 0 and "status: 'RUNNING' -> 'CANCELED'" in json.loads(out)["changes"]
    code, out, _ = run(capsys, "diff", wf, str(seqs[4]), str(seqs[-1]))
    assert "change(s)" in out and "'RUNNING' -> 'CANCELED'" in out


def test_timeline_table_and_json(demo_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    wf = workflows(capsys)["nightly-etl"]["workflow_id"]
    code, out, _ = run(capsys, "timeline", wf, "--json")
    data = json.loads(out)
    assert code == 0 and data["status"] == "SUCCEEDED" and data["name"] == "nightly-etl"
    transform = next(b for b in data["bars"] if b["name"] == "transform")
    assert transform["status"] == "SUCCEEDED" and len(transform["retries"]) == 2
    code, out, _ = run(capsys, "timeline", wf)
    assert code == 0 and "nightly-etl: SUCCEEDED in 4m01s" in out


def test_metrics_and_stats(demo_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "metrics", "--json")
    metrics = json.loads(out)
    assert code == 0 and metrics["stages"]["shell"]["failure_count"] == 1
    assert metrics["tasks"]["transform"]["retry_count"] == 2
    code, out, _ = run(capsys, "metrics")
    assert "xcode" in out
    code, out, _ = run(capsys, "stats", "--json")
    stats = json.loads(out)
    assert (stats["events"], stats["workflows"], stats["first_sequence"], stats["last_sequence"]) == (
        71,
        5,
        1,
        71,
    )
    assert stats["size_bytes"] > 0 and sum(h["events"] for h in stats["hours"]) == 71
    code, out, _ = run(capsys, "stats")
    assert "size on disk" in out and "events per hour" in out


def test_stats_and_workflows_of_an_in_memory_store(capsys: pytest.CaptureFixture[str]) -> None:
    # A fresh process's memory:// is empty: the commands still run and say so.
    code, out, _ = run(capsys, "stats", "--store", "memory://", "--json")
    assert code == 0 and json.loads(out)["events"] == 0
    code, out, _ = run(capsys, "workflows", "--store", "memory://", "--json")
    assert code == 0 and json.loads(out) == []


def test_every_command_has_an_example_and_every_read_command_json() -> None:
    parser = build_parser()
    commands: Any = parser._subparsers._group_actions[0]  # type: ignore[union-attr]
    read_commands = {"workflows", "events", "show", "state", "diff", "timeline", "metrics", "stats", "check"}
    for name, sub in commands.choices.items():
        text = sub.format_help()
        assert "example:" in text, name
        if name in read_commands:
            assert "--json" in text, name


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("stabilize-events ")


# -- check -------------------------------------------------------------------------------------------------


def test_check_passes_on_an_intact_store(demo_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = SqliteEventStore(demo_url)
    try:
        store.save_snapshot(EntityType.WORKFLOW, "wf-s", "wf-s", 1, 1, {"status": "RUNNING", "n": [1, 2]})
    finally:
        store.close()
    code, out, _ = run(capsys, "check", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and [c["checked"] for c in report["checks"]] == [1, 71, 1]


def _corrupt(url: str, sql: str) -> None:
    path = url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    conn.execute(sql)
    conn.commit()
    conn.close()


def test_check_names_a_payload_that_does_not_decode(
    demo_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _corrupt(demo_url, "UPDATE event_log SET data = x'c1c1c1' WHERE sequence = 7")
    code, out, _ = run(capsys, "check")
    assert code == FAILED_BASE + PAYLOADS
    assert "event at sequence 7" in out


def test_check_names_a_snapshot_whose_hash_does_not_match(
    demo_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SqliteEventStore(demo_url)
    try:
        store.save_snapshot(EntityType.WORKFLOW, "wf-s", "wf-s", 1, 1, {"status": "RUNNING"})
    finally:
        store.close()
    _corrupt(demo_url, "UPDATE event_snapshot SET state_hash = 'deadbeef'")
    _corrupt(demo_url, "UPDATE event_log SET data = x'c1' WHERE sequence = 3")
    code, out, _ = run(capsys, "check", "--json")
    report = json.loads(out)
    assert code == FAILED_BASE + PAYLOADS + SNAPSHOTS == report["exit_code"]
    assert "snapshot of workflow wf-s at sequence 1" in report["checks"][2]["first_problems"][0]


def test_check_reports_a_damaged_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "damaged.db"
    url = f"sqlite:///{path}"
    store = SqliteEventStore(url)
    try:
        for i in range(300):
            store.append(
                Event(
                    event_type=EventType.TASK_STARTED,
                    entity_type=EntityType.TASK,
                    entity_id=f"t{i}",
                    workflow_id="wf",
                    version=1,
                    data={"pad": "x" * 200},
                    metadata=EventMetadata(correlation_id="wf"),
                )
            )
    finally:
        store.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'event_log_entity'").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with path.open("r+b") as f:  # an index page's header made nonsense: the table stays readable
        f.seek((root - 1) * page_size)
        f.write(b"\x0d\x00\x00\xff\xff")
    code, out, _ = run(capsys, "check", "--store", url)
    assert code & INTEGRITY and code >= FAILED_BASE, out
    assert "database integrity" in out and "problem" in out


# -- follow ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_events_follow_prints_events_appended_later(tmp_path: Path, kind: str) -> None:
    # (An in-memory store lives in one process: there is nothing for another one to follow.)
    store: EventStore
    if kind == "postgres":
        from stabilize_events import PostgresEventStore

        url = postgres_cli_url()
        target = postgres_target(url)
        assert target is not None
        store = PostgresEventStore(target[0], create_tables=True, schema=target[1])
    else:
        url = f"sqlite:///{tmp_path / 'live.db'}"
        store = SqliteEventStore(url)

    def event(i: int) -> Event:
        return Event(
            event_type=EventType.STAGE_STARTED,
            entity_type=EntityType.STAGE,
            entity_id=f"stage-{i}",
            workflow_id="wf-live",
            version=1,
            data={"name": f"step {i}"},
            metadata=EventMetadata(correlation_id="wf-live"),
        )

    store.append(event(0))
    env = child_env()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stabilize_events",
            "events",
            "--store",
            url,
            "--follow",
            "--json",
            "--interval",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )

    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for text in proc.stdout:
            lines.put(text)

    threading.Thread(target=pump, daemon=True).start()

    def next_line() -> dict[str, Any]:
        # A broken --follow must fail the test, not hang it: wait at most 60 s for a line.
        try:
            row: dict[str, Any] = json.loads(lines.get(timeout=60))
        except queue.Empty:
            pytest.fail("no line from `events --follow` within 60 s")
        return row

    try:
        assert next_line()["entity_id"] == "stage-0"
        store.append(event(1))
        store.append(event(2))
        assert [next_line()["entity_id"] for _ in range(2)] == ["stage-1", "stage-2"]
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        store.close()
    assert code == 0  # Ctrl-C is how following ends


def test_memory_store_is_empty_in_a_fresh_process(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "events", "--store", "memory://")
    assert code == 0 and "No events match." in err


def test_postgres_urls_take_a_schema_and_print_without_their_password() -> None:
    assert postgres_target("sqlite:///x.db") is None
    assert postgres_target("postgresql://u@h/db?schema=ev&sslmode=disable") == (
        "postgresql://u@h/db?sslmode=disable",
        "ev",
    )
    assert postgres_target("postgres://u@h/db") == ("postgres://u@h/db", None)
    assert shown_url("postgresql://u:secret@h:5432/db?schema=ev") == "postgresql://u:***@h:5432/db?schema=ev"
    assert shown_url("sqlite:///x.db") == "sqlite:///x.db"
