"""Writer child of `test_wal_writes`: appends batches until the file size limit stops it.

Usage: ``python limited_writer.py URL LIMIT_BYTES BATCH``

Lowers this process's file size limit (``RLIMIT_FSIZE``, soft) to ``LIMIT_BYTES``, with
``SIGXFSZ`` ignored so that a write past it fails with ``EFBIG`` instead of killing the
process, then appends batches of ``BATCH`` events until one fails. Prints one line per
batch that returned (``ok FIRST_SEQUENCE LAST_SEQUENCE``), then ``failed ERROR_CLASS:
MESSAGE`` for the batch that did not. It then raises the limit back and appends one more
batch, printing ``after FIRST LAST``: the store must go on working once space is back.
"""

from __future__ import annotations

import resource
import signal
import sys

from stabilize_events import EntityType, Event, EventType, SqliteEventStore


def batch(k: int, size: int) -> list[Event]:
    return [
        Event(
            event_type=EventType.TASK_COMPLETED,
            entity_type=EntityType.TASK,
            entity_id=f"task-{k}-{i}",
            workflow_id=f"wf-{k}",
            version=i,
            data={"k": k, "i": i, "blob": "x" * 400},
        )
        for i in range(size)
    ]


def main() -> None:
    url, limit, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = SqliteEventStore(url)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    k = 0
    while True:
        try:
            stored = store.append_batch(batch(k, size))
        except Exception as e:
            print(f"failed {type(e).__name__}: {e}", flush=True)
            break
        print(f"ok {stored[0].sequence} {stored[-1].sequence}", flush=True)
        k += 1
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    stored = store.append_batch(batch(k + 1, size))
    print(f"after {stored[0].sequence} {stored[-1].sequence}", flush=True)
    store.close()


if __name__ == "__main__":
    main()
