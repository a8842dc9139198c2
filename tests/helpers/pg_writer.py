"""A writer process for tests/test_postgres.py: appends batches to a `PostgresEventStore`.

Usage: ``python pg_writer.py URL SCHEMA NAME BATCHES BATCH_SIZE HOLD_EVERY``. Every
``HOLD_EVERY``-th batch (0: never) is written through a caller connection whose transaction
stays open a few milliseconds after the append, so that later sequences commit first. Prints
one line per committed batch: its sequences, space-separated.
"""

from __future__ import annotations

import sys
import time

import psycopg
from stabilize_events import EntityType, Event, EventMetadata, EventType, PostgresEventStore


def main() -> None:
    url, schema, name = sys.argv[1], sys.argv[2], sys.argv[3]
    batches, size, hold_every = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    store = PostgresEventStore(url, schema=schema)
    caller = psycopg.connect(url)
    try:
        for b in range(batches):
            events = [
                Event(
                    event_type=EventType.TASK_COMPLETED,
                    entity_type=EntityType.TASK,
                    entity_id=f"{name}-{b}-{i}",
                    workflow_id=f"wf-{name}",
                    version=1,
                    data={"writer": name, "batch": b, "i": i},
                    metadata=EventMetadata(correlation_id=name),
                )
                for i in range(size)
            ]
            if hold_every and b % hold_every == 0:
                stored = store.append_batch(events, connection=caller)
                time.sleep(0.005 * (1 + b % 3))  # the transaction stays open: later sequences commit first
                caller.commit()
            else:
                stored = store.append_batch(events)
            print(" ".join(str(e.sequence) for e in stored), flush=True)
    finally:
        caller.close()
        store.close()


if __name__ == "__main__":
    main()
