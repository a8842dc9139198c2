"""Crash safety of `SqliteEventStore`: a writer process killed with SIGKILL mid-append.

A child (``tests/helpers/crash_writer.py``) appends in a loop and reports each append *after* it
returned; the parent kills it at a random moment, then reopens the file and checks:

- every reported append is stored, in full, with the sequences it returned;
- no append is partly stored (a batch's events are all there, at consecutive sequences,
  in order, or none of them is);
- sequences are unique and strictly increasing, and earlier runs are untouched;
- ``PRAGMA integrity_check`` is ``ok``.

A process kill is not a power loss: in WAL mode even ``synchronous=NORMAL`` loses no
committed transaction when the process dies, so "returned => stored" must hold for both
durability settings. The same file is reused across kills, so it grows and the kills also
land in WAL checkpoints. ``STABILIZE_EVENTS_CRASH_KILLS`` (default 50) sets the number of
kills per test, ``STABILIZE_EVENTS_CRASH_SEED`` fixes the random choices.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import close_store, sqlite_url
from stabilize_events import Event, SqliteEventStore

WRITER = Path(__file__).parent / "helpers" / "crash_writer.py"
KILLS = int(os.environ.get("STABILIZE_EVENTS_CRASH_KILLS", "50"))
#: The kill lands this long after the writer reported its first append (seconds).
MIN_DELAY, MAX_DELAY = 0.005, 0.050


@dataclass
class CrashStats:
    kills: int = 0
    batches_confirmed: int = 0
    batches_stored: int = 0  # confirmed ones plus those committed but killed before reporting
    events: int = 0
    longest_batch: int = 0
    largest_run: int = 0  # events one writer committed before its kill
    #: run -> batch -> sequences, for every stored append (reported or not).
    stored: dict[int, dict[int, list[int]]] = field(default_factory=dict)


def _reported(out: Path) -> dict[int, list[int]]:
    """The appends the writer reported: batch number -> returned sequences.

    A line cut short by the kill (no newline) is not a report.
    """
    text = out.read_text()
    lines = text.split("\n")[:-1]  # the part after the last newline is incomplete or empty
    reported: dict[int, list[int]] = {}
    for expected_batch, line in enumerate(lines):
        batch, *seqs = (int(x) for x in line.split())
        assert batch == expected_batch, f"report lines out of order: {line!r}"
        reported[batch] = seqs
    return reported


def _run_writer_and_kill(
    url: str, mode: str, sync: str, run: int, rng: random.Random, out: Path, err: Path
) -> None:
    """Start a writer, wait for its first report, kill it with SIGKILL after a random delay."""
    with out.open("w") as fout, err.open("w") as ferr:
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), url, mode, str(run), str(rng.randrange(2**32)), sync],
            stdout=fout,
            stderr=ferr,
        )
    try:
        deadline = time.monotonic() + 60
        while out.stat().st_size == 0:
            assert proc.poll() is None, f"writer {run} exited ({proc.returncode}): {err.read_text()}"
            assert time.monotonic() < deadline, f"writer {run} never reported an append"
            time.sleep(0.001)
        time.sleep(rng.uniform(MIN_DELAY, MAX_DELAY))
        assert proc.poll() is None, f"writer {run} stopped before the kill: {err.read_text()}"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _integrity_ok(path: Path) -> None:
    # Python's sqlite3 opens the file only while no store of this process has it open:
    # two SQLite libraries in one process do not share POSIX locks.
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        seqs = conn.execute("SELECT count(*), count(DISTINCT sequence) FROM event_log").fetchone()
        assert seqs[0] == seqs[1], "a sequence is stored twice"
    finally:
        conn.close()


def _group(events: list[Event], where: str) -> dict[int, dict[int, list[int]]]:
    """run -> batch -> sequences of the events, checking each batch is whole and in order."""
    runs: dict[int, dict[int, list[int]]] = {}
    sizes: dict[tuple[int, int], int] = {}
    for e in events:
        d = e.data
        run, batch, i, n = d["run"], d["batch"], d["i"], d["n"]
        seqs = runs.setdefault(run, {}).setdefault(batch, [])
        assert i == len(seqs), f"{where}: run {run} batch {batch}: event {i} stored at position {len(seqs)}"
        assert sizes.setdefault((run, batch), n) == n
        if seqs:
            assert e.sequence == seqs[-1] + 1, (
                f"{where}: run {run} batch {batch} not at consecutive sequences"
            )
        seqs.append(e.sequence)
    for (run, batch), n in sizes.items():
        got = len(runs[run][batch])
        assert got == n, f"{where}: run {run} batch {batch} partly stored: {got} of {n} events"
    return runs


def _check_after_kill(
    path: Path, run: int, reported: dict[int, list[int]], stats: CrashStats, where: str
) -> None:
    _integrity_ok(path)
    store = SqliteEventStore(sqlite_url(path))
    try:
        previous_max = max((s[-1] for r in stats.stored.values() for s in r.values()), default=0)
        new = store.get_events_since(previous_max, limit=10**9)
        seqs = [e.sequence for e in new]
        assert seqs == sorted(set(seqs)), f"{where}: sequences not strictly increasing"
        runs = _group(new, where)
        assert set(runs) <= {run}, f"{where}: events of other runs after sequence {previous_max}"
        stored = runs.get(run, {})
        # Appends are sequential: the stored ones are a prefix of the calls, at most one
        # beyond the reported ones (committed, then killed before the report was written).
        assert sorted(stored) == list(range(len(stored))), f"{where}: a batch is missing in between"
        assert len(reported) <= len(stored) <= len(reported) + 1, (
            f"{where}: {len(reported)} appends reported, {len(stored)} stored"
        )
        for batch, returned in reported.items():
            assert stored[batch] == returned, (
                f"{where}: batch {batch} returned {returned}, stored {stored[batch]}"
            )
        # Earlier runs are untouched (fully re-read at the end of the test).
        total = stats.events + len(new)
        assert store.count_events() == total, f"{where}: expected {total} events"
        assert store.get_current_sequence() == (seqs[-1] if seqs else previous_max)
    finally:
        close_store(store)
    stats.kills += 1
    stats.batches_confirmed += len(reported)
    stats.batches_stored += len(stored)
    stats.events = total
    stats.largest_run = max(stats.largest_run, len(new))
    stats.longest_batch = max([stats.longest_batch, *(len(s) for s in reported.values())])
    stats.stored[run] = stored


def _final_check(path: Path, stats: CrashStats) -> None:
    _integrity_ok(path)
    store = SqliteEventStore(sqlite_url(path))
    try:
        events = store.get_events_since(0, limit=10**9)
        assert len(events) == stats.events
        seqs = [e.sequence for e in events]
        assert seqs == sorted(set(seqs))
        assert _group(events, "final scan") == {r: b for r, b in stats.stored.items() if b}
    finally:
        close_store(store)


def _crash_loop(tmp_path: Path, mode: str, sync: str) -> CrashStats:
    seed = int(os.environ.get("STABILIZE_EVENTS_CRASH_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    path = tmp_path / "crash.db"
    url = sqlite_url(path)
    out, err = tmp_path / "writer.out", tmp_path / "writer.err"
    stats = CrashStats()
    started = time.monotonic()
    for run in range(KILLS):
        where = f"{mode}/{sync} kill {run + 1} of {KILLS} (STABILIZE_EVENTS_CRASH_SEED={seed})"
        _run_writer_and_kill(url, mode, sync, run, rng, out, err)
        _check_after_kill(path, run, _reported(out), stats, where)
    _final_check(path, stats)
    print(
        f"\n{mode}/{sync}: {stats.kills} kills, {stats.batches_confirmed} appends confirmed "
        f"({stats.batches_stored} stored), {stats.events} events, longest batch {stats.longest_batch}, "
        f"most events in one run {stats.largest_run}, file {path.stat().st_size} bytes, "
        f"{time.monotonic() - started:.1f} s, seed {seed}"
    )
    return stats


def test_killed_batch_writer_loses_no_returned_batch_and_stores_no_partial_batch(tmp_path: Path) -> None:
    stats = _crash_loop(tmp_path, "batch", "NORMAL")
    assert stats.kills == KILLS
    assert stats.batches_confirmed >= KILLS  # every kill came after at least one report
    assert stats.longest_batch > 1


def test_killed_single_writer_full_sync_loses_no_returned_append(tmp_path: Path) -> None:
    stats = _crash_loop(tmp_path, "single", "FULL")
    assert stats.kills == KILLS
    assert stats.batches_confirmed >= KILLS
    assert stats.longest_batch == 1


def test_writer_killed_while_creating_the_file(tmp_path: Path) -> None:
    """A kill at any moment of a writer's start (interpreter, opening and creating the
    file, first appends) leaves a file that opens and works, holding whole batches."""
    rng = random.Random()
    for k in range(10):
        path = tmp_path / f"fresh-{k}.db"
        with (tmp_path / "fresh.out").open("w") as fout:
            proc = subprocess.Popen(
                [sys.executable, str(WRITER), sqlite_url(path), "batch", "0", str(k), "NORMAL"],
                stdout=fout,
                stderr=subprocess.DEVNULL,
            )
        time.sleep(rng.uniform(0.1, 0.3))
        proc.kill()
        proc.wait()
        reported = _reported(tmp_path / "fresh.out")
        if not path.exists():
            continue
        store = SqliteEventStore(sqlite_url(path))
        try:
            runs = _group(store.get_events_since(0, limit=10**9), f"fresh file {k}")
            stored = runs.get(0, {})
            for batch, returned in reported.items():
                assert stored[batch] == returned
            store.append(Event(workflow_id="after"))
        finally:
            close_store(store)
        _integrity_ok(path)
