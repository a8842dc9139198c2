"""Snapshots beside W7: rebuilds through ``SnapshotPolicy(every_n_events=100)`` against
rebuilds without snapshots, on the same store, ours only.

Shapes (workflows x events each):

- ``standard-100k``: the standard stream of 100,000 events (25,000 stages), finished, alone
  in its file. Target: the second rebuild with snapshots >= 3x faster than one without.
- ``long``: W7's long stream of ``W7_SNAP_EVENTS`` (default ``W7_EVENTS``, 1,000,000) events.
  Target: >= 20x.
- ``standard-100k+99``: as ``standard-100k`` (not finished) with 99 events after it: the
  first rebuild stops before them (``as_of_sequence``) and saves a snapshot there, the second
  folds the 99 onto that snapshot.
- ``small-10``, ``small-100``, ``small-1k``: 300, 300 and 100 standard workflows of 10, 100
  and 1,000 events.
- ``many-500``: 200 standard workflows of 500 events in one store.

Target on every shape: no rebuild with snapshots is slower than one without. The policy keeps
its default ``min_events`` (``defaults.SNAPSHOT_MIN_EVENTS``, 10,000): the ``small-*`` and
``many-500`` workflows are below it and get no snapshot (a snapshot would make their first
rebuild 4-10% slower, see docs/usage.md), and those of fewer than
``defaults.SNAPSHOT_LOOK_UP_AT_EVENTS`` (64) events are not looked up either; their ratios
show what the policy costs them (look-ups only). ``standard-*`` and ``long`` get snapshots.

Each round rebuilds every workflow of the shape three ways, timed one after the other:
without snapshots; "first", with the policy and no snapshot stored (the snapshots are deleted
and the policy is new), which replays everything and hands a snapshot over to be saved after
it returns; and "second", which starts from that snapshot. Between "first" and "second" the
pending saves are waited for (``SnapshotStore.flush``), timed apart as ``save after return``.
Every timed run follows an untimed rebuild without snapshots (a commit empties the readers'
page cache, a cost of neither side), and the two sides take turns going first. Printed: the
medians of the rounds' times, and the medians of the rounds' ratios first/without (<= 1 is
the target) and without/second.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from statistics import median
from typing import Any

import pytest
from conftest import ours_impl, record_extra, remove_db
from streams import BATCH, env_int, ours_api, standard_stream
from test_w4_w7_replay import LONG, W7_EVENTS, long_stream

W7_SNAP_EVENTS = env_int("W7_SNAP_EVENTS", W7_EVENTS)
ROUNDS = env_int("BENCH_ROUNDS", 9)
#: Rounds for the long stream, whose rebuild without snapshots takes seconds.
LONG_ROUNDS = env_int("BENCH_LONG_ROUNDS", 3)
LATE = 99


def fill_standard(store: Any, workflows: int, n: int, finished: bool = True) -> list[str]:
    batch: list[Any] = []
    for k in range(workflows):
        batch.extend(standard_stream(ours_api(), k, n, finished=finished))
        while len(batch) >= BATCH:
            store.append_batch(batch[:BATCH])
            del batch[:BATCH]
    if batch:
        store.append_batch(batch)
    return [f"wf-{k}" for k in range(workflows)]


def fill_long(store: Any) -> list[str]:
    for batch in long_stream(ours_api(), W7_SNAP_EVENTS):
        store.append_batch(batch)
    return [LONG]


def fill_late(store: Any) -> list[str]:
    """The unfinished standard workflow, then ``LATE`` events after it."""
    (workflow_id,) = fill_standard(store, 1, 100_000, finished=False)
    api = ours_api()
    store.append_batch(
        [
            api.Event(
                event_type=api.EventType.CUSTOM,
                entity_type=api.EntityType.WORKFLOW,
                entity_id=workflow_id,
                workflow_id=workflow_id,
                version=10_000_000 + k,
                data={"late": k},
                metadata=api.EventMetadata(correlation_id=workflow_id, source_handler="Bench"),
            )
            for k in range(LATE)
        ]
    )
    return [workflow_id]


@dataclass(frozen=True)
class Shape:
    fill: Callable[[Any], list[str]]
    #: Whether the first rebuild stops ``LATE`` events before the end.
    late: bool = False
    target: float = 1.0
    rounds: int = ROUNDS


SHAPES: dict[str, Shape] = {
    "standard-100k": Shape(lambda s: fill_standard(s, 1, 100_000), target=3.0),
    "long": Shape(fill_long, target=20.0, rounds=LONG_ROUNDS),
    "standard-100k+99": Shape(fill_late, late=True),
    "small-10": Shape(lambda s: fill_standard(s, 300, 10)),
    "small-100": Shape(lambda s: fill_standard(s, 300, 100)),
    "small-1k": Shape(lambda s: fill_standard(s, 100, 1_000)),
    "many-500": Shape(lambda s: fill_standard(s, 200, 500)),
}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "snap.db"
    yield path
    remove_db(path)


def seconds(fn: Callable[[], Any]) -> float:
    """How long ``fn`` takes, freeing what it returns included (as for every timed run)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_results(fn: Callable[[], list[Any]]) -> tuple[float, list[tuple[bool, int]]]:
    """`seconds` of a rebuild of every workflow, and (from_snapshot, events_replayed) of each."""
    start = time.perf_counter()
    results = fn()
    how = [(r.from_snapshot, r.events_replayed) for r in results]
    del results
    return time.perf_counter() - start, how


def delete_snapshots(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM event_snapshot")
    conn.close()


@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_snapshot_rebuild_vs_plain(benchmark: Any, shape_name: str, db: Path) -> None:
    from stabilize_events.replay import EventReplayer
    from stabilize_events.snapshots import SnapshotPolicy, SnapshotStore

    shape = SHAPES[shape_name]
    ours = ours_impl()
    store = ours.open(db)
    try:
        workflows = shape.fill(store)
        plain = EventReplayer(store)
        cut = {w: plain.replay(w).last_sequence - LATE for w in workflows} if shape.late else {}
        expected = {w: plain.replay(w).final_state for w in workflows}

        def rebuild_all(replayer: EventReplayer, first: bool = False) -> list[Any]:
            return [replayer.replay(w, as_of_sequence=cut.get(w) if first else None) for w in workflows]

        times: dict[str, list[float]] = {k: [] for k in ("plain", "plain_first", "first", "save", "second")}
        ratios: dict[str, list[float]] = {"first": [], "second": []}
        for round_no in range(shape.rounds):
            snapshots = SnapshotStore(store, SnapshotPolicy(every_n_events=100))
            snapshotting = EventReplayer(store, snapshots)
            delete_snapshots(db)

            def timed_plain() -> None:
                times["plain"].append(seconds(lambda: rebuild_all(plain)))
                times["plain_first"].append(
                    seconds(lambda: rebuild_all(plain, first=True)) if shape.late else times["plain"][-1]
                )

            def timed_first(replayer: EventReplayer, snapshots: SnapshotStore) -> list[tuple[bool, int]]:
                took, how = timed_results(lambda: rebuild_all(replayer, first=True))
                times["first"].append(took)
                times["save"].append(seconds(snapshots.flush))
                return how

            # Every timed run follows an untimed one: a commit (deleting snapshots, saving them)
            # makes the readers drop their page cache, a cost that belongs to neither side.
            # The two sides take turns going first.
            rebuild_all(plain)
            if round_no % 2:
                firsts = timed_first(snapshotting, snapshots)
                rebuild_all(plain)
                timed_plain()
            else:
                timed_plain()
                firsts = timed_first(snapshotting, snapshots)
                rebuild_all(plain)
            took, seconds_how = timed_results(partial(rebuild_all, snapshotting))
            times["second"].append(took)
            ratios["first"].append(times["first"][-1] / times["plain_first"][-1])
            ratios["second"].append(times["plain"][-1] / times["second"][-1])
        benchmark.pedantic(rebuild_all, args=(snapshotting,), rounds=1, iterations=1, warmup_rounds=0)
        seconds_results = rebuild_all(snapshotting)
    finally:
        ours.close(store, db)

    assert not any(from_snapshot for from_snapshot, _ in firsts)
    for result in seconds_results:
        assert result.final_state == expected[result.entity_id]
    med = {k: median(v) for k, v in times.items()}
    # Each ratio pairs runs of the same round (taken minutes apart on a shared machine,
    # medians of separate runs could pair a quiet moment with a busy one).
    first_ratio = median(ratios["first"])
    second_ratio = median(ratios["second"])
    events = sum(n for _, n in firsts)
    benchmark.extra_info.update(
        shape=shape_name,
        workflows=len(workflows),
        events=events,
        rounds=shape.rounds,
        **{f"{k}_seconds": round(v, 6) for k, v in med.items()},
        first_over_plain=round(first_ratio, 3),
        plain_over_second=round(second_ratio, 2),
        second_from_snapshot=all(from_snapshot for from_snapshot, _ in seconds_how),
        target_ratio=shape.target,
        target_met=second_ratio >= shape.target and first_ratio <= 1.0,
    )
    record_extra(f"snapshots {shape_name}", "2nd rebuild, events/s equivalent", events / med["second"], {})
    print(
        f"\nsnapshots {shape_name}: {len(workflows)} workflow(s), {events:,} events, {shape.rounds} rounds; "
        f"without {med['plain'] * 1000:.2f} ms"
        + (f" (to the cut {med['plain_first'] * 1000:.2f} ms)" if shape.late else "")
        + f"; first {med['first'] * 1000:.2f} ms (save after return {med['save'] * 1000:.2f} ms); "
        f"second {med['second'] * 1000:.2f} ms; first/without {first_ratio:.3f} (target <= 1); "
        f"without/second {second_ratio:.2f}x (target >= {shape.target}x: "
        f"{'met' if second_ratio >= shape.target else 'NOT met'})"
    )
