"""Writer child of the multi-process tests (`test_sqlite_store._spawn`): appends N events.

Usage: ``python concurrency_writer.py URL GO_FILE N NAME``

Prints ``ready`` once the store is open, waits for ``GO_FILE`` to exist, then appends
``N`` events as `concurrency_plan.plan` lays out (single appends and batches of 10),
and finally prints one ``EVENT_ID SEQUENCE`` line per event (the format of
``test_sqlite_store._collect``).
"""

from __future__ import annotations

import os
import sys
import time

from concurrency_plan import append_plan
from stabilize_events import SqliteEventStore


def main() -> None:
    url, go, n, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    store = SqliteEventStore(url)
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            sys.exit("no go signal")
        time.sleep(0.001)
    stored = append_plan(store, name, n)
    print("\n".join(f"{e.event_id} {e.sequence}" for e in stored), flush=True)
    store.close()


if __name__ == "__main__":
    main()
