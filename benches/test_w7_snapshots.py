"""Snapshots beside W7: a rebuild through ``SnapshotPolicy(every_n_events=100)`` against one
without snapshots, on the same store, ours only.

Shapes:

- ``standard-100k``: the standard stream of 100,000 events (25,000 stages), finished, alone
  in its file. Target: the second rebuild with snapshots >= 3x faster than one without.
- ``long``: W7's long stream of ``W7_SNAP_EVENTS`` (default ``W7_EVENTS``, 1,000,000) events.
  Target: >= 20x.
- ``standard-100k+99``: as ``standard-100k`` (not finished), then 99 events appended after
  the snapshot: the second rebuild folds them onto the snapshot.
- ``standard-1k``: a small workflow of 1,000 events, where a snapshot saves little.

Target on every shape: the rebuild with snapshots is never slower than the one without.
For each shape the run reports the plain rebuild (median of its rounds), the first rebuild
with the policy (it replays everything and saves a snapshot) and the second (median of its
rounds; it starts from that snapshot), and their ratio.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ours_impl, record_extra, remove_db
from streams import BATCH, env_int, ours_api, standard_stream
from test_w4_w7_replay import LONG, W7_EVENTS, long_stream

W7_SNAP_EVENTS = env_int("W7_SNAP_EVENTS", W7_EVENTS)
ROUNDS = env_int("BENCH_ROUNDS", 7)


def fill_standard(store: Any, n: int, finished: bool) -> str:
    events = standard_stream(ours_api(), 0, n, finished=finished)
    for i in range(0, len(events), BATCH):
        store.append_batch(events[i : i + BATCH])
    return "wf-0"


def fill_long(store: Any, n: int) -> str:
    for batch in long_stream(ours_api(), n):
        store.append_batch(batch)
    return LONG


def add_99(store: Any, workflow_id: str) -> None:
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
            for k in range(99)
        ]
    )


SHAPES: dict[str, tuple[Callable[[Any], str], bool]] = {
    "standard-100k": (lambda s: fill_standard(s, 100_000, True), False),
    "long": (lambda s: fill_long(s, W7_SNAP_EVENTS), False),
    "standard-100k+99": (lambda s: fill_standard(s, 100_000, False), True),
    "standard-1k": (lambda s: fill_standard(s, 1_000, True), False),
}
TARGETS = {"standard-100k": 3.0, "long": 20.0}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "snap.db"
    yield path
    remove_db(path)


def median_seconds(fn: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_snapshot_rebuild_vs_plain(benchmark: Any, shape: str, db: Path) -> None:
    from stabilize_events.replay import EventReplayer
    from stabilize_events.snapshots import SnapshotPolicy, SnapshotStore

    fill, late_events = SHAPES[shape]
    ours = ours_impl()
    store = ours.open(db)
    try:
        workflow_id = fill(store)
        plain = EventReplayer(store)
        expected = plain.replay(workflow_id).final_state
        snapshotting = EventReplayer(store, SnapshotStore(store, SnapshotPolicy(every_n_events=100)))
        start = time.perf_counter()
        first = snapshotting.replay(workflow_id)
        first_seconds = time.perf_counter() - start
        if late_events:
            add_99(store, workflow_id)
            expected = plain.replay(workflow_id).final_state
        plain_seconds = median_seconds(lambda: plain.replay(workflow_id), ROUNDS)
        second = benchmark.pedantic(
            snapshotting.replay, args=(workflow_id,), rounds=ROUNDS, iterations=1, warmup_rounds=0
        )
        stats = getattr(benchmark, "stats", None)
        second_seconds = (
            stats.stats.median
            if stats is not None
            else median_seconds(lambda: snapshotting.replay(workflow_id), ROUNDS)
        )
    finally:
        ours.close(store, db)

    assert not first.from_snapshot
    assert second.final_state == expected
    assert second.events_replayed == (99 if late_events else 0) or not second.from_snapshot
    ratio = plain_seconds / second_seconds
    target = TARGETS.get(shape, 1.0)
    benchmark.extra_info.update(
        shape=shape,
        events=first.events_replayed,
        plain_rebuild_seconds=round(plain_seconds, 6),
        first_rebuild_with_policy_seconds=round(first_seconds, 6),
        second_rebuild_seconds=round(second_seconds, 6),
        second_from_snapshot=second.from_snapshot,
        second_events_replayed=second.events_replayed,
        ratio_plain_over_second=round(ratio, 2),
        target_ratio=target,
        target_met=ratio >= target,
    )
    record_extra(
        f"snapshots {shape}", "2nd rebuild, events/s equivalent", first.events_replayed / second_seconds, {}
    )
    print(
        f"\nsnapshots {shape}: {first.events_replayed:,} events; "
        f"without snapshots {plain_seconds * 1000:.1f} ms; "
        f"first with policy {first_seconds * 1000:.1f} ms; second {second_seconds * 1000:.2f} ms "
        f"(from snapshot: {second.from_snapshot}, {second.events_replayed} events replayed); "
        f"ratio {ratio:.2f}x (target >= {target}x: {'met' if ratio >= target else 'NOT met'})"
    )
