"""Writer child of `test_crash_safety`: appends until it is killed, reporting every append that returned.

Usage: ``python crash_writer.py URL MODE RUN SEED SYNCHRONOUS``

``MODE`` is ``batch`` (`append_batch` of 1..50 events) or ``single`` (`append`). Every
event's data records ``run``, ``batch`` (the append call's number in this run), ``i`` (its
index in the call) and ``n`` (the call's size), and its workflow_id is ``run-RUN``. After
each append returns, one line ``BATCH SEQ...`` (the sequences it returned) is written to
stdout and flushed, so a line that reached the parent names a committed append.
"""

from __future__ import annotations

import random
import sys

from stabilize_events import Event, EventType, SqliteEventStore


def main() -> None:
    url, mode, run, seed, sync = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    rng = random.Random(seed)
    store = SqliteEventStore(url, synchronous=sync)
    out = sys.stdout
    batch = 0
    while True:
        n = rng.randint(1, 50) if mode == "batch" else 1
        events = [
            Event(
                event_type=EventType.TASK_COMPLETED,
                entity_id=f"run-{run}-{batch}",
                workflow_id=f"run-{run}",
                data={"run": run, "batch": batch, "i": i, "n": n},
            )
            for i in range(n)
        ]
        stored = store.append_batch(events) if mode == "batch" else [store.append(events[0])]
        out.write(f"{batch} {' '.join(str(e.sequence) for e in stored)}\n")
        out.flush()
        batch += 1


if __name__ == "__main__":
    main()
