"""Child of `test_one_sqlite`'s stress test: Stabilize and stabilize-events writing one file at once.

Usage: ``python one_sqlite_child.py DB_PATH ACK_PATH SEED``

In this one process, on the one SQLite file ``DB_PATH``, threads write until the process is
killed:

- ``stabilize-N``: Stabilize's `SqliteWorkflowStore.store` (its own thread-local Python
  ``sqlite3`` connection), then a `SqliteQueue.push`; now and then the store and queue close
  the thread's connection, so the next write opens a new one;
- ``events-N``: our `SqliteEventStore` `append` / `append_batch`; now and then the thread
  closes its store and opens a new one;
- ``sqlite3-N``: a plain ``sqlite3.connect`` that inserts a row into a side table, commits,
  reads the event log's size and closes: connections opened and closed all the time.

After each write returned (so it committed) one line is appended to ``ACK_PATH`` with a
single ``write`` on an ``O_APPEND`` file: ``W <workflow id>``, ``Q <workflow id>`` (the queue
push), ``E <event id>`` or ``S <side row id>``. A line without its newline was cut by the
kill and acknowledges nothing. Stabilize is set to WAL journaling
(``STABILIZE_SQLITE_JOURNAL_MODE=WAL``), as a file shared with our store must be: with its
default, ``DELETE``, each new Stabilize connection tries to take the file out of WAL, which
fails ("database is locked") while our store has it open. ``ready`` is printed to stdout
once every table exists. A thread that fails prints its traceback to stderr and ends the
process with exit code 3.
"""

from __future__ import annotations

import os
import random
import sqlite3
import sys
import threading
import traceback
import uuid
from collections.abc import Callable

from stabilize import SqliteQueue, SqliteWorkflowStore, StageExecution, Workflow
from stabilize.queue.messages import StartWorkflow
from stabilize_events import EntityType, Event, EventType, SqliteEventStore

STABILIZE_THREADS = 2
EVENT_THREADS = 2
SQLITE3_THREADS = 1


class Acks:
    """Appends acknowledgement lines, one ``write`` each, so lines never interleave."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def __call__(self, kind: str, ident: str) -> None:
        os.write(self._fd, f"{kind} {ident}\n".encode())


def stabilize_writer(url: str, ack: Acks, rng: random.Random, k: int) -> None:
    store = SqliteWorkflowStore(url)
    queue = SqliteQueue(url)
    i = 0
    while True:
        stage = StageExecution.create(type="build", name=f"stage-{k}-{i}", ref_id="s1")
        workflow = Workflow.create(application="one-sqlite", name=f"wf-{k}-{i}", stages=[stage])
        store.store(workflow)
        ack("W", workflow.id)
        queue.push(StartWorkflow(execution_type="PIPELINE", execution_id=workflow.id))
        ack("Q", workflow.id)
        if rng.random() < 0.2:
            # Both close this thread's connection: the next write opens a fresh one.
            store.close()
            queue.close()
        i += 1


def event_writer(url: str, ack: Acks, rng: random.Random, k: int) -> None:
    store = SqliteEventStore(url)
    i = 0
    while True:
        n = 1 if rng.random() < 0.5 else rng.randint(2, 8)
        events = [
            Event(
                event_type=EventType.TASK_COMPLETED,
                entity_type=EntityType.TASK,
                entity_id=f"task-{k}-{i}",
                workflow_id=f"wf-events-{k}",
                data={"thread": k, "call": i, "index": j, "pad": "x" * rng.randint(0, 600)},
            )
            for j in range(n)
        ]
        stored = [store.append(events[0])] if n == 1 else store.append_batch(events)
        for event in stored:
            ack("E", event.event_id)
        if rng.random() < 0.1:
            store.close()
            store = SqliteEventStore(url)
        i += 1


def sqlite3_writer(path: str, ack: Acks, rng: random.Random, k: int) -> None:
    while True:
        conn = sqlite3.connect(path, timeout=30)
        try:
            row_id = uuid.uuid4().hex
            conn.execute("INSERT INTO one_sqlite_side (id, thread) VALUES (?, ?)", (row_id, k))
            conn.commit()
            ack("S", row_id)
            conn.execute("SELECT count(*) FROM event_log").fetchone()
        finally:
            conn.close()


def main() -> None:
    path, ack_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    url = f"sqlite:///{path}"
    ack = Acks(ack_path)
    os.environ["STABILIZE_SQLITE_JOURNAL_MODE"] = "WAL"

    # Tables first, from this thread, one library after the other.
    SqliteWorkflowStore(url, create_tables=True).close()
    SqliteEventStore(url, create_tables=True).close()
    with sqlite3.connect(path, timeout=30) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS one_sqlite_side (id TEXT PRIMARY KEY, thread INTEGER)")
    conn.close()

    def guarded(target: Callable[..., None], *args: object) -> Callable[[], None]:
        def run() -> None:
            try:
                target(*args)
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
                os._exit(3)

        return run

    master = random.Random(seed)
    threads: list[threading.Thread] = []
    for k in range(STABILIZE_THREADS):
        rng = random.Random(master.random())
        threads.append(threading.Thread(target=guarded(stabilize_writer, url, ack, rng, k), daemon=True))
    for k in range(EVENT_THREADS):
        rng = random.Random(master.random())
        threads.append(threading.Thread(target=guarded(event_writer, url, ack, rng, k), daemon=True))
    for k in range(SQLITE3_THREADS):
        rng = random.Random(master.random())
        threads.append(threading.Thread(target=guarded(sqlite3_writer, path, ack, rng, k), daemon=True))
    for t in threads:
        t.start()
    print("ready", flush=True)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
