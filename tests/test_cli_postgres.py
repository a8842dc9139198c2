"""Every command on a PostgreSQL store (``--store postgresql://...?schema=NAME``): the same
answers as on the SQLite store the events came from, and export/import both ways exact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import postgres_cli_url
from stabilize_events.cli import main
from stabilize_events.cli.check import FAILED_BASE, PAYLOADS
from stabilize_events.cli.common import postgres_target


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def stores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, str, Path]:
    """A demo store in SQLite, its export, and a PostgreSQL store it was imported into."""
    pg = postgres_cli_url()
    sqlite = f"sqlite:///{tmp_path / 'demo.db'}"
    assert run(capsys, "demo", "--store", sqlite)[0] == 0
    dump = tmp_path / "demo.jsonl"
    assert run(capsys, "export", str(dump), "--store", sqlite)[0] == 0
    code, _out, err = run(capsys, "import", str(dump), "--store", pg)
    assert code == 0, err
    assert "imported 71 events" in err
    return sqlite, pg, dump


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    if argv[0] == "events":
        return [json.loads(line) for line in out.splitlines()]
    return json.loads(out)


def test_every_read_command_answers_as_on_sqlite(
    stores: tuple[str, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    sqlite, pg, _dump = stores
    flows = _json(capsys, "workflows", "--store", sqlite)
    assert flows == _json(capsys, "workflows", "--store", pg)
    failed = next(w for w in flows if w["status"] == "TERMINAL")["workflow_id"]
    first = _json(capsys, "events", "--store", sqlite, "--workflow", failed)[0]["event_id"]
    for argv in (
        ("workflows", "--status", "TERMINAL"),
        ("events", "--workflow", failed),
        ("events", "--type", "task.retried", "--from-seq", "10"),
        ("show", first),
        ("state", failed),
        ("state", failed, "--as-of-seq", "20"),
        ("diff", failed, "5", "30"),
        ("timeline", failed),
        ("metrics",),
    ):
        assert _json(capsys, *argv, "--store", pg) == _json(capsys, *argv, "--store", sqlite), argv
    ours, theirs = _json(capsys, "stats", "--store", pg), _json(capsys, "stats", "--store", sqlite)
    for key in ("events", "workflows", "first_sequence", "last_sequence", "first_event", "hours"):
        assert ours[key] == theirs[key], key
    assert ours["size_bytes"] > 0 and ours["store"].startswith("postgresql")
    html = stores[2].parent / "t.html"
    assert run(capsys, "timeline", failed, "--store", pg, "--html", str(html))[0] == 0
    assert "<svg" in html.read_text()
    assert run(capsys, "show", "no-such-event", "--store", pg)[0] == 3


def test_export_from_postgres_is_the_sqlite_export_and_imports_back(
    stores: tuple[str, str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _sqlite, pg, dump = stores
    again = tmp_path / "again.jsonl"
    assert run(capsys, "export", str(again), "--store", pg)[0] == 0
    assert again.read_bytes() == dump.read_bytes()  # ids, order, sequences, times, payloads
    # Twice into PostgreSQL adds nothing; back into SQLite it is the same store again.
    code, _out, err = run(capsys, "import", str(dump), "--store", pg)
    assert code == 0 and "imported 0 events" in err and "71 were already there" in err
    back = f"sqlite:///{tmp_path / 'back.db'}"
    assert run(capsys, "import", str(again), "--store", back)[0] == 0
    third = tmp_path / "third.jsonl"
    assert run(capsys, "export", str(third), "--store", back)[0] == 0
    assert third.read_bytes() == dump.read_bytes()


def test_check_on_postgres_finds_a_payload_that_does_not_decode(
    stores: tuple[str, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import psycopg
    from psycopg import sql

    _sqlite, pg, _dump = stores
    code, out, _err = run(capsys, "check", "--store", pg, "--json")
    assert code == 0 and json.loads(out)["ok"]
    target = postgres_target(pg)
    assert target is not None and target[1] is not None
    with psycopg.connect(target[0], autocommit=True) as conn:
        conn.execute(
            sql.SQL("UPDATE {}.event_log SET data = %s WHERE sequence = 7").format(sql.Identifier(target[1])),
            (b"\xc1",),
        )
    code, out, _err = run(capsys, "check", "--store", pg)
    assert code == FAILED_BASE + PAYLOADS, out
    assert "sequence 7" in out


def test_a_missing_postgres_store_is_refused_not_created(capsys: pytest.CaptureFixture[str]) -> None:
    pg = postgres_cli_url()
    code, _out, err = run(capsys, "workflows", "--store", pg)
    assert code == 2 and "cannot open store" in err


def test_demo_into_postgres_refuses_a_store_with_events(capsys: pytest.CaptureFixture[str]) -> None:
    pg = postgres_cli_url()
    assert run(capsys, "demo", "--store", pg)[0] == 0
    code, _out, err = run(capsys, "demo", "--store", pg)
    assert code == 2 and "already holds events" in err
