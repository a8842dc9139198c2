"""One SQLite library per process: the core calls the ``libsqlite3`` that Python's ``sqlite3`` loads.

SQLite's locks on a database file are POSIX advisory locks, which belong to the process: two
copies of the library in one process do not see each other's locks (on the file, and on the
WAL's ``-shm`` index), so both may write the WAL at once, and a ``close`` by one drops the
other's locks. Stabilize's stores use Python's ``sqlite3``; users put them on the same file as
our `SqliteEventStore`, in the same process. So the core must not carry its own copy:

- the library the core calls is the one ``libsqlite3`` mapped in the process, and there is
  only one such mapping once ``sqlite3`` is imported;
- Stabilize's `SqliteWorkflowStore` and `SqliteQueue`, plain ``sqlite3`` connections and our
  stores, writing one file from threads of one process that is killed mid-run, leave an
  intact file holding every write that returned (``tests/helpers/one_sqlite_child.py``).

``STABILIZE_EVENTS_ONE_SQLITE_SEED`` fixes the stress test's random choices.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from stabilize_events import SqliteEventStore, _core

CHILD = Path(__file__).parent / "helpers" / "one_sqlite_child.py"
SEED = int(os.environ.get("STABILIZE_EVENTS_ONE_SQLITE_SEED", str(random.randrange(1 << 30))))
#: Kills of the child: each once every kind of write is running, plus this long (seconds).
ROUNDS = 3
EXTRA_SECONDS = (0.3, 1.5)
#: How long the child may take to create its tables and say "ready", and then to have every
#: kind of write acknowledged (seconds).
READY_TIMEOUT = 30.0
PROGRESS_TIMEOUT = 10.0
#: The child's acknowledgement kinds: workflow stored, queue push, event appended, sqlite3 row.
KINDS = ("W", "Q", "E", "S")


def _mapped_sqlite_libraries() -> set[str]:
    """Real paths of every ``libsqlite3`` file mapped into this process."""
    found = set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and "libsqlite3" in os.path.basename(parts[5]):
            found.add(os.path.realpath(parts[5]))
    return found


def test_core_calls_the_libsqlite3_python_loaded() -> None:
    import _sqlite3  # noqa: F401  (Python's binding: it maps the system libsqlite3)

    mapped = _mapped_sqlite_libraries()
    assert len(mapped) == 1, f"expected one libsqlite3 mapped, found {sorted(mapped)}"
    core_library = _core.sqlite_library()
    # A bundled copy would sit inside the extension module itself, not in libsqlite3.
    assert os.path.realpath(core_library) == next(iter(mapped)), core_library


def test_core_and_sqlite3_report_one_version() -> None:
    assert _core.sqlite_version() == sqlite3.sqlite_version


def _acknowledged(acks: Path) -> dict[str, list[str]]:
    """The child's acknowledgements by kind; a line the kill cut short (no newline) is none."""
    if not acks.exists():
        return {}
    lines = acks.read_text().split("\n")[:-1]
    by_kind: dict[str, list[str]] = defaultdict(list)
    for line in lines:
        kind, ident = line.split(" ", 1)
        by_kind[kind].append(ident)
    return by_kind


def _run_child_until_killed(db: Path, acks: Path, seed: int, err: Path, extra: float) -> None:
    """Start the child; once every kind of write has been acknowledged again since it started
    (each path is running), let it write ``extra`` seconds more, then SIGKILL it."""
    before = {kind: len(ids) for kind, ids in _acknowledged(acks).items()}
    with err.open("wb") as err_file:
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(db), str(acks), str(seed)],
            stdout=subprocess.PIPE,
            stderr=err_file,
        )
        try:
            assert child.stdout is not None
            readable, _, _ = select.select([child.stdout], [], [], READY_TIMEOUT)
            ready = child.stdout.readline() if readable else b""
            assert ready == b"ready\n", f"child not ready ({ready!r}): {err.read_text()}"
            deadline = time.monotonic() + PROGRESS_TIMEOUT
            while child.poll() is None and time.monotonic() < deadline:
                now = _acknowledged(acks)
                if all(len(now.get(kind, [])) > before.get(kind, 0) for kind in KINDS):
                    break
                time.sleep(0.05)
            progressed = {kind: len(ids) - before.get(kind, 0) for kind, ids in _acknowledged(acks).items()}
            time.sleep(extra)
            still_running = child.poll() is None
            child.send_signal(signal.SIGKILL)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
            if child.stdout is not None:
                child.stdout.close()
    assert still_running, f"child ended before the kill (exit {child.returncode}): {err.read_text()}"
    # Every path wrote in this run, or the checks that follow would prove little.
    assert all(progressed.get(kind, 0) > 0 for kind in KINDS), f"writes acknowledged: {progressed}"


def _check_file(db: Path, acks: Path) -> None:
    """Check the file after a kill: intact, and holding every acknowledged write."""
    from stabilize import SqliteWorkflowStore
    from stabilize.persistence.store.criteria import WorkflowNotFoundError

    url = f"sqlite:///{db}"
    acked = _acknowledged(acks)

    conn = sqlite3.connect(db, timeout=30)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        assert integrity == [("ok",)], f"integrity_check: {integrity[:20]}"
        side_rows = {row[0] for row in conn.execute("SELECT id FROM one_sqlite_side")}
        pushed = {
            json.loads(row[0]).get("execution_id")
            for row in conn.execute("SELECT payload FROM queue_messages WHERE message_type = 'StartWorkflow'")
        }
    finally:
        conn.close()

    store = SqliteEventStore(url, create_tables=False)
    try:
        stored_events: set[str] = set()
        sequence = 0
        while batch := store.get_events_since(sequence, limit=20_000):
            stored_events.update(e.event_id for e in batch)
            sequence = batch[-1].sequence
    finally:
        store.close()

    workflows = SqliteWorkflowStore(url)
    try:
        missing_workflows = []
        for workflow_id in acked.get("W", []):
            try:
                workflows.retrieve(workflow_id)
            except WorkflowNotFoundError:
                missing_workflows.append(workflow_id)
    finally:
        workflows.close()

    missing_events = [e for e in acked.get("E", []) if e not in stored_events]
    missing_pushes = [w for w in acked.get("Q", []) if w not in pushed]
    missing_side = [r for r in acked.get("S", []) if r not in side_rows]
    assert not missing_events, f"{len(missing_events)} acknowledged events lost: {missing_events[:5]}"
    assert not missing_workflows, f"{len(missing_workflows)} workflows lost: {missing_workflows[:5]}"
    assert not missing_pushes, f"{len(missing_pushes)} queue pushes lost: {missing_pushes[:5]}"
    assert not missing_side, f"{len(missing_side)} sqlite3 rows lost: {missing_side[:5]}"


def test_stabilize_and_event_store_share_a_file_in_one_killed_process(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    db, acks = tmp_path / "shared.db", tmp_path / "acks.txt"
    for kill in range(ROUNDS):
        err = tmp_path / f"child-{kill}.err"
        _run_child_until_killed(db, acks, rng.randrange(1 << 30), err, rng.uniform(*EXTRA_SECONDS))
        _check_file(db, acks)
