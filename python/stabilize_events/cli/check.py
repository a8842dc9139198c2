"""``check``: is the store intact? The database's own check, every payload, every snapshot hash.

Exit code: 0 when every check passed; otherwise 16 plus one bit per failed check
(1: the database's integrity check, 2: payloads that do not decode, 4: snapshots whose
state does not match their hash), so 17 to 23 say which failed.
"""

from __future__ import annotations

import argparse
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stabilize_events._core import decode_payload, snapshot_bytes_intact
from stabilize_events.canonical import snapshot_row_intact
from stabilize_events.cli.common import (
    EXIT_OK,
    add_json_option,
    add_store_option,
    close,
    console,
    database_file,
    open_store,
    postgres_target,
    print_json,
    shown_url,
    store_url,
)

FAILED_BASE = 16
INTEGRITY, PAYLOADS, SNAPSHOTS = 1, 2, 4
#: Problems listed per check, at most.
SHOWN = 20


@dataclass
class CheckResult:
    """What one check found."""

    name: str
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    def add(self, text: str) -> None:
        """Count one more problem; keep its text while fewer than ``SHOWN`` are kept."""
        self.problem_count += 1
        if len(self.problems) < SHOWN:
            self.problems.append(text)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "check": self.name,
            "ok": self.problem_count == 0,
            "checked": self.checked,
            "problems": self.problem_count,
            "first_problems": self.problems,
        }


def _integrity(conn: sqlite3.Connection) -> CheckResult:
    result = CheckResult("database integrity (PRAGMA integrity_check)", checked=1)
    for (line,) in conn.execute("PRAGMA integrity_check"):
        if line != "ok":
            result.add(str(line))
    return result


def _payloads(conn: Any) -> CheckResult:
    result = CheckResult("every payload decodes")
    for sequence, data in conn.execute("SELECT sequence, data FROM event_log ORDER BY sequence"):
        result.checked += 1
        try:
            if not isinstance(data, bytes):
                raise TypeError(f"the payload is {type(data).__name__}, not bytes")
            if not isinstance(decode_payload(data), dict):
                raise TypeError("the payload is not a mapping")
        except Exception as exc:
            result.add(f"event at sequence {sequence}: {' '.join(str(exc).split())}")
    return result


def _snapshots(conn: Any) -> CheckResult:
    result = CheckResult("snapshot hashes")
    rows = conn.execute("SELECT entity_type, entity_id, sequence, state, state_hash FROM event_snapshot")
    for entity_type, entity_id, sequence, blob, digest in rows:
        result.checked += 1
        where = f"snapshot of {entity_type} {entity_id} at sequence {sequence}"
        intact = (
            snapshot_bytes_intact(blob, digest)
            if isinstance(blob, bytes) and isinstance(digest, str)
            else False
        )
        if intact is None:  # a legacy hash, over the canonical JSON of the decoded state
            try:
                state = decode_payload(blob)
            except Exception as exc:
                result.add(f"{where}: its state does not decode ({' '.join(str(exc).split())})")
                continue
            intact = snapshot_row_intact({"state": state, "state_hash": digest})
        if not intact:
            result.add(f"{where}: its state does not match its hash {digest}")
    return result


def _postgres_integrity(conn: Any) -> CheckResult:
    """PostgreSQL has no whole-database check built in (``amcheck`` is an extension that needs
    its owner's rights): every row of the event tables is read, which makes the server verify
    each page it reads (and its checksum, when the cluster has data checksums)."""
    (checksums,) = conn.execute("SHOW data_checksums").fetchone()
    result = CheckResult(
        f"database integrity (every page of the event tables read; data_checksums={checksums})"
    )
    for table in ("event_log", "event_snapshot", "event_subscription"):
        conn.execute(f"SELECT count(*), sum(length(t::text)) FROM {table} t").fetchone()
        result.checked += 1
    return result


def _guarded(check: Any, conn: Any, name: str, errors: tuple[type[Exception], ...]) -> CheckResult:
    """Run ``check``; a database too damaged to read through is a problem of that check."""
    try:
        result: CheckResult = check(conn)
    except errors as exc:
        result = CheckResult(name)
        result.add(f"the database could not be read through: {' '.join(str(exc).split())}")
    return result


def run_checks(path: Path) -> list[CheckResult]:
    """Run every check on the SQLite file at ``path`` (read-only)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    errors = (sqlite3.DatabaseError,)
    try:
        return [
            _guarded(_integrity, conn, "database integrity (PRAGMA integrity_check)", errors),
            _guarded(_payloads, conn, "every payload decodes", errors),
            _guarded(_snapshots, conn, "snapshot hashes", errors),
        ]
    finally:
        conn.close()


def run_postgres_checks(connection_string: str, schema: str | None) -> list[CheckResult]:
    """Run every check on the PostgreSQL store's tables (in ``schema``, else on the search path),
    in one read-only transaction."""
    import psycopg
    from psycopg import sql

    errors = (psycopg.Error,)
    with psycopg.connect(connection_string) as conn:
        conn.read_only = True
        if schema:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        return [
            _guarded(_postgres_integrity, conn, "database integrity", errors),
            _guarded(_payloads, conn, "every payload decodes", errors),
            _guarded(_snapshots, conn, "snapshot hashes", errors),
        ]


def cmd_check(args: argparse.Namespace) -> int:
    """Check the store; see the module doc for the exit codes."""
    url = store_url(args)
    path = database_file(url)
    store = open_store(url, must_exist=True)  # refuses a missing or unreadable file
    close(store)
    postgres = postgres_target(url)
    if postgres is not None:
        results = run_postgres_checks(*postgres)
    elif path is None:
        results = [CheckResult(f"{url}: an in-memory store, nothing on disk to check")]
    else:
        results = run_checks(path)
    code = 0
    for bit, result in zip((INTEGRITY, PAYLOADS, SNAPSHOTS), results, strict=False):
        if result.problem_count:
            code |= bit
    exit_code = FAILED_BASE + code if code else EXIT_OK
    if args.json:
        print_json(
            {
                "store": shown_url(url),
                "ok": code == 0,
                "exit_code": exit_code,
                "checks": [r.to_dict() for r in results],
            }
        )
        return exit_code
    out = console()
    for result in results:
        mark = (
            "[green]ok[/green]"
            if result.problem_count == 0
            else f"[red]{result.problem_count:,} problem(s)[/red]"
        )
        out.print(f"{result.name}: {mark} ({result.checked:,} checked)")
        for text in result.problems:
            out.print(f"  [red]-[/red] {text}", markup=True)
        if result.problem_count > len(result.problems):
            out.print(f"  ... and {result.problem_count - len(result.problems):,} more")
    return exit_code


def register(commands: Any) -> None:
    """Add ``check`` to ``commands`` (argparse subparsers)."""
    p = commands.add_parser(
        "check",
        help="integrity: the database's own check, every payload decodes, snapshot hashes",
        description="Check the store without changing it: the database's own check (SQLite's "
        "integrity_check; on PostgreSQL every page of the event tables is read, which verifies "
        "their checksums when the cluster has them), that every event's payload decodes, and that "
        "every snapshot's state matches its hash.",
        epilog="exit codes:\n  0      every check passed\n  2      no such store, or it cannot be opened\n"
        "  16+N   N adds 1 if the database integrity check failed, 2 if payloads do not decode,\n"
        "         4 if snapshots do not match their hash (e.g. 18: payloads only)\n\n"
        'example:\n  stabilize-events check --store sqlite:////var/lib/app/events.db || echo "damaged: $?"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store_option(p)
    add_json_option(p)
    p.set_defaults(func=cmd_check)
