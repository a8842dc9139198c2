"""``export`` and ``import`` (JSON Lines) beside their floors and targets, in one run.

The store: ``TRANSFER_EVENTS`` events (default 1,000,000) as the standard streams of
`streams.store_batches`. Each measure is the best of ``TRANSFER_ROUNDS`` rounds (default 3),
the rounds of ours and of the floors alternating, so that the machine's changing speed falls
on all of them alike; the ratios are what to read, not the rates.

Export (target >= 300,000 ev/s):

- ours: ``stabilize-events export FILE`` through `stabilize_events.cli.main`;
- floor: Python's ``sqlite3`` reading every row of the same file by sequence and writing its
  payload bytes and event id to a file (no JSON at all: the least an export can do);
- Python per row: the same rows, each payload decoded (`_core.decode_payload`) and the row
  written with ``json.dumps`` (what an export written in Python costs at least).

Import (target >= 200,000 ev/s):

- ours: ``stabilize-events import FILE`` into a new SQLite file, sequences kept;
- floor: Python's ``sqlite3`` inserting the same rows, read beforehand, into a new store's
  file with ``executemany``, 5,000 per transaction (no parsing at all);
- the store's own write: `SqliteEventStore.append_batch` of the same events, read beforehand,
  5,000 per call (nothing parsed; new sequences, here the same ones);
- Python per line: ``json.loads`` of every line of the export (parsing only, nothing stored).

Run: ``python -m pytest benches/test_cli_transfer_bench.py --benchmark-only -s``.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import remove_db
from streams import env_int, ours_api, store_batches

TOTAL = env_int("TRANSFER_EVENTS", 1_000_000)
ROUNDS = env_int("TRANSFER_ROUNDS", 3)
EXPORT_TARGET = 300_000
IMPORT_TARGET = 200_000

_ROWS: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from stabilize_events import SqliteEventStore

    path = tmp_path_factory.mktemp("transfer") / "source.db"
    store = SqliteEventStore(f"sqlite:///{path}")
    for batch in store_batches(ours_api(), TOTAL):
        store.append_batch(batch)
    store.close()
    yield path
    remove_db(path)


def _cli(*argv: str) -> None:
    from stabilize_events.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(list(argv)) == 0


def _rows(path: Path) -> Iterator[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        yield from conn.execute("SELECT * FROM event_log ORDER BY sequence")
    finally:
        conn.close()


def _best_of(contenders: dict[str, Callable[[], None]], before: Callable[[], None]) -> dict[str, float]:
    """Each contender's best time over `ROUNDS` rounds, contenders alternating within a round."""
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(ROUNDS):
        for name, run in contenders.items():
            before()
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _report(benchmark: Any, title: str, best: dict[str, float], target: int) -> None:
    rates = {name: TOTAL / seconds for name, seconds in best.items()}
    ours = rates["ours"]
    row = {"ours": ours, "target": float(target)}
    for name, rate in rates.items():
        benchmark.extra_info[f"{title} {name}, ev/s"] = round(rate)
        if name != "ours":
            row[name] = rate
            benchmark.extra_info[f"{title} ours / {name}"] = round(ours / rate, 2)
    benchmark.extra_info[f"{title} ours / target"] = round(ours / target, 2)
    _ROWS[title] = row


def test_export_beside_its_floors(benchmark: Any, source: Path, tmp_path: Path) -> None:
    from stabilize_events._core import decode_payload

    out = tmp_path / "out.jsonl"

    def floor() -> None:
        with out.open("wb") as f:
            for row in _rows(source):
                f.write(row[8])
                f.write(row[1].encode())

    def python_per_row() -> None:
        dumps = json.dumps
        with out.open("w") as f:
            for r in _rows(source):
                f.write(
                    dumps(
                        {
                            "sequence": r[0],
                            "event_id": r[1],
                            "event_type": r[2],
                            "timestamp": r[3],
                            "entity_type": r[4],
                            "entity_id": r[5],
                            "workflow_id": r[6],
                            "version": r[7],
                            "data": decode_payload(r[8]),
                            "metadata": [r[9], r[10], r[11], r[12]],
                            "schema_version": r[13],
                        }
                    )
                    + "\n"
                )

    best = _best_of(
        {
            "ours": lambda: _cli("export", str(out), "--store", f"sqlite:///{source}"),
            "floor (sqlite3 rows to bytes)": floor,
            "Python (json.dumps per row)": python_per_row,
        },
        before=lambda: out.unlink(missing_ok=True),
    )
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    _report(benchmark, "export", best, EXPORT_TARGET)


def test_import_beside_its_floors(benchmark: Any, source: Path, tmp_path: Path) -> None:
    from stabilize_events import SqliteEventStore

    dump = tmp_path / "dump.jsonl"
    _cli("export", str(dump), "--store", f"sqlite:///{source}")
    target = tmp_path / "target.db"
    rows = list(_rows(source))
    columns = len(rows[0])
    reader = SqliteEventStore(f"sqlite:///{source}")
    pages = [reader.get_events_since(at, 5000) for at in range(0, TOTAL, 5000)]
    reader.close()

    def fresh_store() -> None:
        remove_db(target)
        SqliteEventStore(f"sqlite:///{target}").close()

    def floor() -> None:
        conn = sqlite3.connect(target, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            insert = f"INSERT INTO event_log VALUES ({', '.join('?' * columns)})"
            for at in range(0, len(rows), 5000):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(insert, rows[at : at + 5000])
                conn.execute("COMMIT")
        finally:
            conn.close()

    def store_write() -> None:
        store = SqliteEventStore(f"sqlite:///{target}")
        try:
            for page in pages:
                store.append_batch(page)
        finally:
            store.close()

    def python_per_line() -> None:
        loads = json.loads
        with dump.open("rb") as f:
            for line in f:
                loads(line)

    best = _best_of(
        {
            "ours": lambda: _cli("import", str(dump), "--store", f"sqlite:///{target}"),
            "floor (sqlite3 executemany of the rows)": floor,
            "the store's append_batch of the events": store_write,
            "Python (json.loads per line)": python_per_line,
        },
        before=fresh_store,
    )
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    _report(benchmark, "import", best, IMPORT_TARGET)
    remove_db(target)


def teardown_module() -> None:
    if _ROWS:
        print(f"\nexport / import of {TOTAL:,} events, best of {ROUNDS} alternating rounds (events/s):")
        for title, row in _ROWS.items():
            ours = row["ours"]
            for name, rate in row.items():
                ratio = "" if name == "ours" else f"  ours is {ours / rate:.2f}x this"
                print(f"  {title:<7} {name:<42} {rate:>12,.0f}{ratio}")
