"""`stabilize-events upgrade` on a PostgreSQL database written by Stabilize's own
`PostgresEventStore` (stabilize 0.33): the store refuses it until it is upgraded, the
upgrade carries every event, snapshot and subscription position over in place, resumes
after being killed, and drops Stabilize's tables only after a clean verification.

Runs against the server named by STABILIZE_EVENTS_POSTGRES_URL (skipped, naming it, when unset).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
import stabilize.events as se
from conftest import kill_upgrade_midway, postgres_schema_url
from stabilize.events.store.postgres import PostgresEventStore as StabilizePostgresStore
from stabilize_events import PostgresEventStore
from stabilize_events.cli import main
from stabilize_events.errors import SchemaError
from stabilize_events.types import EntityType, EventType
from stabilize_events.upgrade.convert import event_fields


@contextmanager
def stabilize_store(url: str, create: bool = False) -> Iterator[Any]:
    """Stabilize's own PostgreSQL event store at ``url``, its pool released afterwards."""
    store = StabilizePostgresStore(url, create_tables=create)
    try:
        yield store
    finally:
        store.close()


def _event(workflow: str, version: int, data: dict[str, Any], kind: Any = None) -> Any:
    return se.Event(
        event_type=kind or se.EventType.STAGE_STARTED,
        entity_type=se.EntityType.STAGE,
        entity_id=f"{workflow}-stage",
        workflow_id=workflow,
        version=version,
        data=data,
        metadata=se.EventMetadata(correlation_id=workflow, causation_id=None, actor="tester"),
    )


def _write_stabilize_history(url: str, workflows: int = 4, per_workflow: int = 6) -> list[str]:
    """A history written by Stabilize's store: several workflows, payloads with floats, unicode,
    nesting and nulls, a snapshot (and one whose hash does not match), a subscription."""
    ids = [f"wf-{i}" for i in range(workflows)]
    with stabilize_store(url, create=True) as theirs:
        for w in ids:
            theirs.append(
                _event(
                    w,
                    1,
                    {"name": f"run {w}", "ratio": 1.5, "whole": 2.0, "text": "é ✓ \u2028"},
                    se.EventType.WORKFLOW_STARTED,
                )
            )
            theirs.append_batch(
                [
                    _event(w, v, {"v": v, "nested": {"list": [v, None, {"k": "x" * v}]}})
                    for v in range(2, per_workflow + 1)
                ]
            )
        theirs.save_snapshot(
            se.EntityType.STAGE, "wf-0-stage", "wf-0", 3, 3, {"status": "RUNNING", "n": [1, 2.5]}
        )
        theirs.save_snapshot(se.EntityType.STAGE, "wf-1-stage", "wf-1", 2, 8, {"status": "broken"})
        theirs.save_subscription("audit", [se.EventType.STAGE_STARTED], {"workflow_id": "wf-0"}, 5, None)
    with psycopg.connect(url, autocommit=True) as conn:  # a hash Stabilize itself would refuse
        conn.execute("UPDATE snapshots SET state_hash = repeat('0', 64) WHERE entity_id = 'wf-1-stage'")
    return ids


def _upgrade(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["upgrade", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _tables(url: str, schema: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall()
    return {r[0] for r in rows}


def _count(url: str, table: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def database() -> tuple[str, str]:
    """(schema, URL) of a fresh Stabilize PostgreSQL history."""
    schema, url = postgres_schema_url()
    _write_stabilize_history(url)
    return schema, url


def test_store_refuses_a_database_not_upgraded_and_names_the_command(database: tuple[str, str]) -> None:
    schema, url = database
    before = _tables(url, schema)
    for create in (False, True):
        with pytest.raises(
            SchemaError, match=r"not been upgraded.*24 events.*stabilize-events upgrade"
        ) as info:
            PostgresEventStore(url, create_tables=create)
        assert "--apply" in str(info.value) and "USER:PASSWORD" in str(info.value)
    with pytest.raises(SchemaError, match="not been upgraded"):
        PostgresEventStore(url.split("?")[0], create_tables=True, schema=schema)
    assert _tables(url, schema) == before  # nothing created


def test_upgrade_carries_the_history_over_as_stabilize_reads_it(
    database: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    schema, url = database
    code, out, err = _upgrade(capsys, url)
    assert code == 0, err
    assert "24 events (sequences 1 to 24), 2 snapshots, 1 subscription" in out and "Dry run" in out
    assert "event_log" not in _tables(url, schema)

    code, out, err = _upgrade(capsys, url, "--apply", "--chunk-size", "5")
    assert code == 0, err
    assert "Copied 24 events." in out and "Copied 1 snapshot" in out and "1 subscription position" in out
    assert "Skipped snapshot of stage wf-1-stage at sequence 8" in out
    assert "Verified 24 events, 1 snapshot and 1 subscription: all match." in out
    assert "copying events: 24/24" in err  # progress, one line per chunk when not on a terminal

    with stabilize_store(url) as theirs:
        expected = [event_fields(e) for e in theirs.get_events_since(0, limit=1000)]
    with PostgresEventStore(url) as ours:
        assert ours.resolved_schema() == schema
        got = [event_fields(e) for e in ours.get_events_since(0, limit=1000)]
        assert got == expected and len(got) == 24
        assert [e.sequence for e in ours.get_events_for_workflow("wf-2")] == [13, 14, 15, 16, 17, 18]
        snapshot = ours.get_latest_snapshot(EntityType.STAGE, "wf-0-stage")
        assert snapshot is not None and snapshot["state"] == {"status": "RUNNING", "n": [1, 2.5]}
        assert snapshot["sequence"] == 3 and snapshot["state_error"] is None
        sub = ours.get_subscription("audit")
        assert sub is not None and sub["last_sequence"] == 5
        assert sub["event_types"] == [EventType.STAGE_STARTED] and sub["entity_filter"] == {
            "workflow_id": "wf-0"
        }
        # New events follow Stabilize's last sequence.
        assert ours.append(_event("wf-new", 1, {})).sequence == 25

    code, out, err = _upgrade(capsys, url, "--apply")
    assert code == 0, err
    assert "Copied 0 events (24 were copied before)." in out and "all match" in out


def test_an_upgrade_killed_midway_resumes_to_a_correct_result(
    database: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    schema, url = database
    with stabilize_store(url) as theirs:
        for b in range(6):
            theirs.append_batch([_event(f"wf-bulk-{b}", v, {"v": v, "b": b}) for v in range(1, 1001)])
    total = _count(url, f'"{schema}".events')
    chunk = 2
    # One progress line (45 bytes or more) per chunk far exceeds a pipe's buffer (64 KiB), which
    # this test stops reading: the child is blocked mid-copy when it is killed.
    assert total // chunk * 45 > 2 * 65536
    kill_upgrade_midway(url, chunk)

    copied = _count(url, f'"{schema}".event_log')
    assert 3 * chunk <= copied < total
    assert copied % chunk == 0  # whole chunks only: the killed chunk's transaction rolled back
    with pytest.raises(SchemaError, match="stabilize-events upgrade"):
        PostgresEventStore(url)  # half an upgrade is refused too

    code, out, err = _upgrade(capsys, url, "--apply")
    assert code == 0, err
    assert f"Copied {total - copied:,} events ({copied:,} were copied before)." in out
    assert "all match" in out
    with PostgresEventStore(url) as ours:
        assert ours.count_events() == total == ours.get_current_sequence()


def test_drop_old_only_after_a_verification_without_differences(
    database: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    schema, url = database
    code, out, err = _upgrade(capsys, url, "--apply")
    assert code == 0, err
    # A difference: our copy of one event changed behind the upgrade's back.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE event_log SET actor = 'someone else' WHERE sequence = 4")
    code, out, err = _upgrade(capsys, url, "--apply", "--drop-old")
    assert code == 3
    assert "sequence 4" in err and "actor: expected 'tester', got 'someone else'" in err
    assert {"events", "snapshots", "event_subscriptions"} <= _tables(url, schema)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE event_log SET actor = 'tester' WHERE sequence = 4")
    code, out, err = _upgrade(capsys, url, "--apply", "--drop-old")
    assert code == 0, err
    assert "Dropped Stabilize's tables" in out
    assert _tables(url, schema) & {"events", "snapshots", "event_subscriptions"} == set()
    with PostgresEventStore(url) as ours:
        assert ours.count_events() == 24


def test_a_row_that_cannot_be_carried_over_stops_the_upgrade_and_names_it(
    database: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    schema, url = database
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE events SET data = '[1, 2]' WHERE sequence = 9")
    code, _out, err = _upgrade(capsys, url, "--apply", "--chunk-size", "4")
    assert code == 1
    assert "sequence 9" in err and "JSON list, not an object" in err and "run the upgrade again" in err
    assert _count(url, f'"{schema}".event_log') == 8  # the chunks before it, nothing of its own


def test_an_unrelated_events_table_or_none_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    schema, url = postgres_schema_url()
    code, _out, err = _upgrade(capsys, url)
    assert code == 2 and "holds no Stabilize events table" in err
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id int, payload text)")
        conn.execute("INSERT INTO events VALUES (1, 'x')")
    code, _out, err = _upgrade(capsys, url)
    assert code == 2 and "holds no Stabilize events table" in err
    # Not Stabilize's: our store opens beside it.
    PostgresEventStore(url, create_tables=True).close()
    assert {"events", "event_log"} <= _tables(url, schema)


def test_an_unreachable_server_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = _upgrade(capsys, f"postgresql://nobody:secret@127.0.0.1:{port}/app", "--apply")
    assert code == 2 and out == ""
    assert err.startswith("stabilize-events: error: cannot connect to PostgreSQL") and err.count("\n") == 1
    assert "secret" not in err and "start the server" in err
