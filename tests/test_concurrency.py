"""Concurrency of `SqliteEventStore`: many writers on one file, readers following the log.

Writers (processes or threads) append singles and batches (see `concurrency_plan`) while
reader threads page through the log with ``get_events_since`` and ``get_events``; each
reader checks with `StreamChecker` that it never sees part of a committed batch, nor a gap
in the sequences. At the end the file must hold exactly the appended events, each at the
sequence its append returned, each writer's in its own order.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import close_store, sqlite_url
from helpers.concurrency_plan import StreamChecker, append_plan
from stabilize_events import EntityType, Event, EventQuery, EventType, SqliteEventStore, errors
from test_sqlite_store import _check_file, _collect, _spawn, _wait_ready


def _follow(
    store: SqliteEventStore,
    checker: StreamChecker,
    writers_done: threading.Event,
    stop: threading.Event,
    seed: int,
    failures: list[BaseException],
) -> None:
    """Page through the log until the writers are done and a page reaches the head."""
    rng = random.Random(seed)
    try:
        while not stop.is_set():
            done = writers_done.is_set()  # read before the page: then the page shows the final log
            limit = rng.randint(1, 700)
            if rng.random() < 0.5:
                page = store.get_events_since(checker.last, limit=limit)
            else:
                page = list(store.get_events(EventQuery(from_sequence=checker.last, limit=limit)))
            checker.feed(page, limit, done)
            if done and len(page) < limit:
                return
    except BaseException as exc:
        failures.append(exc)
        stop.set()


def _start_readers(
    stores: list[SqliteEventStore], writers_done: threading.Event, stop: threading.Event
) -> tuple[list[threading.Thread], list[StreamChecker], list[BaseException]]:
    checkers = [StreamChecker() for _ in stores]
    failures: list[BaseException] = []
    threads = [
        threading.Thread(target=_follow, args=(s, c, writers_done, stop, i, failures), daemon=True)
        for i, (s, c) in enumerate(zip(stores, checkers, strict=True))
    ]
    for t in threads:
        t.start()
    return threads, checkers, failures


def _check_readers(
    threads: list[threading.Thread],
    checkers: list[StreamChecker],
    failures: list[BaseException],
    writers: dict[str, int],
) -> None:
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "a reader did not finish"
    if failures:
        raise failures[0]
    total = sum(writers.values())
    for c in checkers:
        assert c.last == total
        assert {w: c.seen(w) for w in writers} == writers
        assert c.largest_batch > 1
        # Readers ran while the writers wrote (not a timing: they start before and end after).
        assert c.head_reads_mid_run > 0
        print(f"reader: {c.reads} pages, {c.head_reads_mid_run} reached the head mid-run")


def _check_writer_order(store: SqliteEventStore, writers: dict[str, int]) -> None:
    for w, n in writers.items():
        events = store.get_events_for_workflow(w)
        assert [e.data["i"] for e in events] == list(range(n)), f"{w}'s events out of order"


def test_processes_append_while_readers_see_only_whole_batches(tmp_path: Path) -> None:
    n_procs, per_proc = 4, 5000
    url = sqlite_url(tmp_path / "procs.db")
    go = tmp_path / "go"
    close_store(SqliteEventStore(url))  # the readers open it before the writers start
    writers = {f"proc-{p}": per_proc for p in range(n_procs)}
    procs = [_spawn(url, go, per_proc, name) for name in writers]
    readers = [SqliteEventStore(url) for _ in range(2)]
    writers_done, stop = threading.Event(), threading.Event()
    try:
        _wait_ready(procs)
        threads, checkers, failures = _start_readers(readers, writers_done, stop)
        go.touch()
        results = _collect(procs)
        writers_done.set()
        _check_readers(threads, checkers, failures, writers)
    finally:
        stop.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    _check_file(url, results, n_procs * per_proc)
    _check_writer_order(readers[0], writers)
    for r in readers:
        close_store(r)


def _run_threads(work: Callable[[int], None], n: int) -> None:
    failures: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait(30)
            work(i)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "a writer thread did not finish"
    if failures:
        raise failures[0]


def test_threads_share_a_store_while_readers_see_only_whole_batches(tmp_path: Path) -> None:
    n_threads, per_thread = 8, 2000
    url = sqlite_url(tmp_path / "threads.db")
    store = SqliteEventStore(url)
    writers = {f"thread-{i}": per_thread for i in range(n_threads)}
    names = list(writers)
    out: list[list[Event]] = [[] for _ in names]
    writers_done, stop = threading.Event(), threading.Event()
    # The readers share the writers' store.
    threads, checkers, failures = _start_readers([store, store], writers_done, stop)
    try:
        _run_threads(lambda i: out[i].extend(append_plan(store, names[i], per_thread)), n_threads)
        writers_done.set()
        _check_readers(threads, checkers, failures, writers)
    finally:
        stop.set()
    for evs in out:
        seqs = [e.sequence for e in evs]
        assert seqs == sorted(seqs), "a thread's own appends got decreasing sequences"
    _check_file(url, [(e.event_id, e.sequence) for evs in out for e in evs], n_threads * per_thread)
    _check_writer_order(store, writers)
    stats = store.commit_stats()
    print(f"8 threads, NORMAL, singles and batches: {stats}")
    assert stats is not None
    calls = sum(evs[-1].data["call"] + 1 for evs in out)
    assert stats["appends"] == calls
    assert 0 < stats["commits"] <= stats["appends"]
    close_store(store)


def test_group_commit_coalesces_concurrent_full_sync_appends(tmp_path: Path) -> None:
    n_threads, per_thread = 8, 300
    store = SqliteEventStore(sqlite_url(tmp_path / "full.db"), synchronous="FULL")
    out: list[list[Event]] = [[] for _ in range(n_threads)]

    def work(i: int) -> None:
        for k in range(per_thread):
            out[i].append(store.append(Event(workflow_id=f"t{i}", data={"k": k})))

    _run_threads(work, n_threads)
    stats = store.commit_stats()
    print(f"8 threads, FULL, single appends: {stats}")
    assert stats is not None
    assert stats["appends"] == n_threads * per_thread
    # Appends that arrive while a commit syncs share the next one.
    assert stats["commits"] < stats["appends"]
    seqs = [e.sequence for evs in out for e in evs]
    assert len(set(seqs)) == n_threads * per_thread
    assert store.count_events() == n_threads * per_thread
    for i in range(n_threads):
        assert [e.data["k"] for e in store.get_events_for_workflow(f"t{i}")] == list(range(per_thread))
    close_store(store)


def test_a_failing_append_in_a_shared_commit_fails_alone(tmp_path: Path) -> None:
    """Duplicates raced against good appends: group commit isolates each call, so the
    good ones are all stored, and of a failing batch nothing is."""
    n_good, n_bad, per_thread = 6, 2, 200
    store = SqliteEventStore(sqlite_url(tmp_path / "dup.db"), synchronous="FULL")
    dup = store.append(Event(workflow_id="bad", data={"first": True}))
    raised = [0] * n_bad

    def work(i: int) -> None:
        if i < n_good:
            for k in range(per_thread):
                store.append(Event(workflow_id=f"good-{i}", data={"k": k}))
            return
        for k in range(per_thread):
            try:
                if k % 2:
                    store.append(dup)
                else:
                    store.append_batch([Event(workflow_id="bad", data={"k": k}), dup])
            except errors.DuplicateEventError:
                raised[i - n_good] += 1

    _run_threads(work, n_good + n_bad)
    assert raised == [per_thread] * n_bad
    assert store.get_events_for_workflow("bad") == [dup]
    for i in range(n_good):
        assert [e.data["k"] for e in store.get_events_for_workflow(f"good-{i}")] == list(range(per_thread))
    assert store.count_events() == 1 + n_good * per_thread
    stats = store.commit_stats()
    assert stats is not None
    # Only stored appends count, however their transactions were shared.
    assert stats["appends"] == 1 + n_good * per_thread
    assert 0 < stats["commits"] <= stats["appends"]
    close_store(store)


def test_commit_stats_count_only_what_was_stored(tmp_path: Path) -> None:
    store = SqliteEventStore(sqlite_url(tmp_path / "stats.db"))
    first = store.append(Event(workflow_id="w", data={}))
    store.append_batch([Event(workflow_id="w", data={}) for _ in range(3)])
    with pytest.raises(errors.DuplicateEventError):
        store.append(first)
    with pytest.raises(errors.DuplicateEventError):
        store.append_batch([Event(workflow_id="w", data={}), first])
    assert store.commit_stats() == {"commits": 2, "appends": 2}
    close_store(store)


def test_expected_version_lets_one_writer_win_each_version(tmp_path: Path) -> None:
    """Threads race to extend one entity with ``expected_version``: every version is
    stored exactly once, in order, and each loser gets `ConcurrencyError`."""
    n_threads, wins_each = 8, 25
    store = SqliteEventStore(sqlite_url(tmp_path / "occ.db"))
    conflicts = [0] * n_threads
    latest = EventQuery(entity_id="counter", order_by="sequence", ascending=False, limit=1)

    def work(i: int) -> None:
        won = 0
        while won < wins_each:
            head = list(store.get_events(latest))
            version = head[0].version if head else 0
            event = Event(
                event_type=EventType.STAGE_STARTED,
                entity_type=EntityType.STAGE,
                entity_id="counter",
                workflow_id="occ",
                version=version + 1,
                data={"writer": i},
            )
            try:
                store.append(event, expected_version=version)
                won += 1
            except errors.ConcurrencyError:
                conflicts[i] += 1

    _run_threads(work, n_threads)
    stored = store.get_events_for_entity(EntityType.STAGE, "counter")
    assert [e.version for e in stored] == list(range(1, n_threads * wins_each + 1))
    assert sorted(e.data["writer"] for e in stored) == sorted(list(range(n_threads)) * wins_each)
    print(f"expected_version race: {sum(conflicts)} conflicts for {len(stored)} versions")
    close_store(store)
