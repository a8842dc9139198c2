"""W9: growth. W2 repeated until the store holds 10,000,000 events (env ``W9_EVENTS``).

Each round appends another 10 standard streams of 20,000 events in interleaved
batches of 1,000 (exactly W2) to the same file-backed store; the next round's
events are built in the round's setup, outside the timed region. Reported in
``benchmark.extra_info``:

- the append rate over the first and over the last million events (a tenth of
  the total when ``W9_EVENTS`` is under 10M), and last / first (target >= 0.8);
- W3 at the end: reading one 20,000-event workflow from the middle of the full
  store, with ``e.data.get("status")`` of each event (target >= 1,000,000 ev/s);
- the database's bytes on disk per event.

Only our store runs W9. The reference is not run: at its W2 rate (~29,000 ev/s
on the spec's machine) 10M appends take at least six minutes per run even if
that rate held as the file grows, which is not measured here.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Impl, db_bytes, ours_impl, record_extra, remove_db, settled
from streams import WORKFLOWS, env_int, store_batches

TOTAL = env_int("W9_EVENTS", 10_000_000)
PER_WORKFLOW = min(20_000, TOTAL // WORKFLOWS)
ROUND_EVENTS = PER_WORKFLOW * WORKFLOWS
ROUNDS = TOTAL // ROUND_EVENTS
#: Rounds in the "first million" and "last million" windows.
WINDOW_ROUNDS = max(1, min(1_000_000, TOTAL // 10) // ROUND_EVENTS)
W3_REPEATS = 5


@pytest.fixture
def ours() -> Impl:
    """Our implementation only (W9 does not run the reference)."""
    return ours_impl()


@pytest.fixture
def growth_db(tmp_path: Path) -> Iterator[Path]:
    """A path for the growing database, deleted afterwards."""
    path = tmp_path / "w9.db"
    yield path
    remove_db(path)


def test_w9_growth(benchmark: Any, ours: Impl, growth_db: Path) -> None:
    store = ours.open(growth_db)
    durations: list[float] = []
    next_round = iter(range(ROUNDS))

    def setup() -> tuple[tuple[list[list[Any]]], dict[str, Any]]:
        r = next(next_round)
        return (settled(store_batches(ours.api, ROUND_EVENTS, first_workflow=r * WORKFLOWS)),), {}

    def append_round(batches: list[list[Any]]) -> None:
        append_batch = store.append_batch
        start = time.perf_counter()
        for batch in batches:
            append_batch(batch)
        durations.append(time.perf_counter() - start)

    try:
        benchmark.pedantic(append_round, setup=setup, rounds=ROUNDS, iterations=1)
        stored = store.count_events()
        assert stored == ROUNDS * ROUND_EVENTS

        middle = f"wf-{(ROUNDS * WORKFLOWS) // 2}"
        reads: list[float] = []
        for _ in range(W3_REPEATS):
            start = time.perf_counter()
            n = 0
            for event in store.get_events_for_workflow(middle):
                event.data.get("status")
                n += 1
            reads.append(time.perf_counter() - start)
            assert n == PER_WORKFLOW
    finally:
        ours.close(store, growth_db)
    size = db_bytes(growth_db)

    window = WINDOW_ROUNDS * ROUND_EVENTS
    first = window / sum(durations[:WINDOW_ROUNDS])
    last = window / sum(durations[-WINDOW_ROUNDS:])
    w3 = PER_WORKFLOW / statistics.median(reads)
    benchmark.extra_info.update(
        workload="W9 growth",
        implementation=ours.label,
        events=stored,
        events_per_second=round(stored / sum(durations)),
        window_events=window,
        first_window_events_per_second=round(first),
        last_window_events_per_second=round(last),
        last_over_first=round(last / first, 3),
        w3_at_end_workflow=middle,
        w3_at_end_events_per_second=round(w3),
        w3_at_end_events_per_second_best=round(PER_WORKFLOW / min(reads)),
        db_bytes=size,
        bytes_per_event=round(size / stored, 1),
    )
    label = f"{window // 1000}k" if window < 1_000_000 else f"{window // 1_000_000}M"
    record_extra("W9 growth", f"first {label}", first, benchmark.extra_info)
    record_extra("W9 growth", f"last {label}", last, benchmark.extra_info)
    record_extra("W9 growth", f"W3 @ {stored:,}", w3, benchmark.extra_info)
    print(
        f"\nW9: {stored:,} events, first {window:,} at {first:,.0f} ev/s, last {window:,} at "
        f"{last:,.0f} ev/s (ratio {last / first:.2f}); W3 at end {w3:,.0f} ev/s; "
        f"{size / stored:.1f} bytes/event on disk"
    )
