"""W5 and W6: single appends at full durability (SQLite ``synchronous=FULL``).

W5: W1 (``append(event)`` one at a time, each its own transaction, 10,000 events of one
standard stream, env ``W5_EVENTS``, default W1's count) into a new file per round, with both
stores at full durability and otherwise their default settings:

- ours: ``SqliteEventStore(url, synchronous="FULL")`` (WAL; one sync per commit);
- the reference: ``stabilize.events.SqliteEventStore`` with ``PRAGMA synchronous=FULL`` run on
  the connection it writes with (its default journal mode, ``DELETE``, is left alone). The
  reference keeps one connection per thread and store URL (its ``ConnectionManager``), opened
  with the PRAGMAs of its global ``SqliteConfig`` (``synchronous=NORMAL``); the bench sets FULL
  on that connection after opening the store, in the thread that appends, and reads the PRAGMA
  back (it must be 2) before the round is timed.

Target: >= 3x the reference.

W6: 8 threads (env ``W6_THREADS``), each making 2,000 single ``append`` calls (env
``W6_EVENTS_PER_THREAD``) of its own standard stream (``wf-0`` .. ``wf-7``), into one store at
full durability: 16,000 events per round. Threads are started in the round's setup and wait at
a barrier; the timed region runs from releasing them until the last append has returned. Target:
>= 20,000 ev/s. Our store reports its ``commit_stats()`` (write transactions against append
calls; concurrent appends share a commit) in ``extra_info``.

The reference is run too: it is thread-safe by design (each thread gets its own connection from
its ``ConnectionManager``; a writer waits for the file lock up to its 30 s busy timeout). Each
worker thread sets and reads back ``synchronous=FULL`` on its own connection before the barrier
and closes it after the round.

Both workloads wait on the disk's sync latency, which other processes on a shared machine change
from minute to minute; each bench reports the median latency of a 4 KiB write plus ``fsync`` in
its directory just before and after its rounds (``fsync_ms_before``, ``fsync_ms_after``).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import FreshStores, Impl, record_rate, settled
from streams import env_int, standard_stream
from test_w1_append import EVENTS as W1_EVENTS

W5_EVENTS = env_int("W5_EVENTS", W1_EVENTS)
W6_THREADS = env_int("W6_THREADS", 8)
W6_PER_THREAD = env_int("W6_EVENTS_PER_THREAD", 2_000)
W6_EVENTS = W6_THREADS * W6_PER_THREAD

#: ``PRAGMA synchronous`` reads back 2 for FULL.
SYNCHRONOUS_FULL = 2


def fsync_ms(directory: Path, samples: int = 30) -> float:
    """Median milliseconds of a 4 KiB write plus ``fsync`` in ``directory``.

    Both workloads are bound by the disk's sync latency, which other processes on a shared
    machine change from minute to minute: reported beside each rate to read it by.
    """
    path = directory / f"fsync-probe-{os.getpid()}"
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = b"x" * 4096
        for _ in range(samples):
            start = time.perf_counter()
            os.pwrite(fd, block, 0)
            os.fsync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return round(statistics.median(times) * 1000, 3)


def reference_connection(store: Any) -> Any:
    """The reference store's connection for the calling thread (the one its appends use)."""
    return store._get_connection()


def reference_full_durability(store: Any) -> dict[str, Any]:
    """Set ``synchronous=FULL`` on the calling thread's reference connection; return the PRAGMAs read back."""
    conn = reference_connection(store)
    conn.execute("PRAGMA synchronous = FULL")
    synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
    journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert synchronous == SYNCHRONOUS_FULL, f"reference connection has synchronous={synchronous}, not FULL"
    return {"synchronous": synchronous, "journal_mode": journal_mode}


def close_reference_connection(store: Any) -> None:
    """Close the calling thread's reference connection (the conftest closes only the main thread's)."""
    from stabilize.persistence.connection import get_connection_manager

    get_connection_manager().close_sqlite_connection(store._connection_string)


def open_full(impl: Impl, fresh_stores: FreshStores) -> tuple[Any, dict[str, Any]]:
    """A store on a new file at full durability, and what is known of its settings."""
    if impl.key == "ours":
        fresh_stores.options = {"synchronous": "FULL"}
        return fresh_stores.new(), {"synchronous": "FULL (option)", "journal_mode": "wal"}
    store = fresh_stores.new()
    return store, reference_full_durability(store)


# --- W5 ------------------------------------------------------------------------------------


def test_w5_append_full(benchmark: Any, impl: Impl, fresh_stores: FreshStores) -> None:
    settings: dict[str, Any] = {}

    def setup() -> tuple[tuple[Any, list[Any]], dict[str, Any]]:
        events = settled(standard_stream(impl.api, 0, W5_EVENTS))
        store, pragmas = open_full(impl, fresh_stores)
        settings.update(pragmas)
        return (store, events), {}

    def append_each(store: Any, events: list[Any]) -> None:
        append = store.append
        for event in events:
            append(event)

    ours = impl.key == "ours"
    fsync_before = fsync_ms(fresh_stores.directory)
    benchmark.pedantic(append_each, setup=setup, rounds=impl.rounds("W5", 5 if ours else 1), iterations=1)
    fsync_after = fsync_ms(fresh_stores.directory)
    store = fresh_stores.last
    assert store.count_events() == W5_EVENTS
    if not ours:  # still FULL after the round: nothing reopened the connection behind our back
        assert reference_connection(store).execute("PRAGMA synchronous").fetchone()[0] == SYNCHRONOUS_FULL
    else:
        stats = store.commit_stats()
        assert stats == {"commits": W5_EVENTS, "appends": W5_EVENTS}, stats
    benchmark.extra_info.update(settings, fsync_ms_before=fsync_before, fsync_ms_after=fsync_after)
    record_rate(benchmark, impl, "W5 append x1 FULL", W5_EVENTS)


# --- W6 ------------------------------------------------------------------------------------


@dataclass
class ThreadedAppends:
    """One W6 round: worker threads that append their events once released.

    `start` (in the round's setup) starts the threads, which prepare (the reference: open
    and configure their connection) and wait at a barrier; `run` (timed) releases them and
    waits until every append has returned; `finish` lets them clean up and joins them.
    """

    store: Any
    streams: list[list[Any]]
    prepare: Callable[[Any], Any] | None = None
    cleanup: Callable[[Any], None] | None = None
    prepared: list[Any] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        parties = len(self.streams) + 1
        self.ready = threading.Barrier(parties)
        self.done = threading.Barrier(parties)
        self.lock = threading.Lock()

    def _work(self, events: list[Any]) -> None:
        try:
            try:
                if self.prepare is not None:
                    result = self.prepare(self.store)
                    with self.lock:
                        self.prepared.append(result)
            finally:
                self.ready.wait()
            try:
                append = self.store.append
                for event in events:
                    append(event)
            finally:
                self.done.wait()
            if self.cleanup is not None:
                self.cleanup(self.store)
        except threading.BrokenBarrierError:
            pass
        except BaseException as exc:
            with self.lock:
                self.errors.append(exc)
            self.ready.abort()
            self.done.abort()

    def start(self) -> None:
        self.threads = [
            threading.Thread(target=self._work, args=(events,), name=f"w6-{k}", daemon=True)
            for k, events in enumerate(self.streams)
        ]
        for thread in self.threads:
            thread.start()
        self.ready.wait()  # every worker is ready before the round is timed

    def run(self) -> None:
        try:
            self.done.wait()
        except threading.BrokenBarrierError:
            self.finish()  # raises the worker's error
            raise

    def finish(self) -> None:
        for thread in self.threads:
            thread.join()
        self.threads = []
        if self.errors:
            raise self.errors[0]


def test_w6_threads_append_full(benchmark: Any, impl: Impl, fresh_stores: FreshStores) -> None:
    ours = impl.key == "ours"
    rounds: list[ThreadedAppends] = []
    round_stats: list[dict[str, int] | None] = []

    def setup() -> tuple[tuple[ThreadedAppends], dict[str, Any]]:
        if rounds:
            rounds[-1].finish()
        streams = settled([standard_stream(impl.api, k, W6_PER_THREAD) for k in range(W6_THREADS)])
        store, _ = open_full(impl, fresh_stores)
        work = ThreadedAppends(
            store,
            streams,
            prepare=None if ours else reference_full_durability,
            cleanup=None if ours else close_reference_connection,
        )
        rounds.append(work)
        work.start()
        return (work,), {}

    def teardown(work: ThreadedAppends) -> None:
        work.finish()
        round_stats.append(work.store.commit_stats() if ours else None)

    fsync_before = fsync_ms(fresh_stores.directory)
    benchmark.pedantic(
        ThreadedAppends.run,
        setup=setup,
        teardown=teardown,
        rounds=impl.rounds("W6", 5 if ours else 1),
        iterations=1,
    )
    fsync_after = fsync_ms(fresh_stores.directory)
    last = rounds[-1]
    last.finish()  # benchmark disabled: no teardown ran
    store = last.store
    assert store.count_events() == W6_EVENTS
    sequences = [e.sequence for e in store.get_events_since(0, W6_EVENTS + 1)]
    assert len(set(sequences)) == W6_EVENTS
    for k, stream in enumerate(last.streams):  # each thread's appends stored in its call order
        stored = [(e.event_id, e.version) for e in store.get_events_for_workflow(f"wf-{k}")]
        assert stored == [(e.event_id, e.version) for e in stream]
    info = benchmark.extra_info
    info.update(
        threads=W6_THREADS,
        appends_per_thread=W6_PER_THREAD,
        fsync_ms_before=fsync_before,
        fsync_ms_after=fsync_after,
    )
    if ours:
        stats = [s for s in round_stats if s] or [store.commit_stats()]
        for s in stats:
            assert s["appends"] == W6_EVENTS, s
        commits = [s["commits"] for s in stats]
        info.update(
            commit_stats=stats[-1],
            commit_stats_per_round=stats,
            mean_group_size=round(W6_EVENTS / stats[-1]["commits"], 2),
            mean_group_size_per_round=[round(W6_EVENTS / c, 2) for c in commits],
        )
    else:
        info.update(worker_pragmas=last.prepared)
        assert len(last.prepared) == W6_THREADS
    record_rate(benchmark, impl, f"W6 {W6_THREADS} threads append FULL", W6_EVENTS)
