"""W2: ``append_batch`` in batches of 1,000 on a file-backed SQLite store.

200,000 events (env ``W2_EVENTS``): 10 standard streams of 20,000 events, cut into
batches of 1,000 taken from each workflow in turn, into a new file each round.
Events are built in the round's setup, outside the timed region.
Target: >= 400,000 ev/s.
"""

from __future__ import annotations

from typing import Any

from conftest import FreshStores, Impl, record_rate, settled
from streams import WORKFLOWS, env_int, store_batches

EVENTS = env_int("W2_EVENTS", 200_000)


def test_w2_append_batch(benchmark: Any, impl: Impl, fresh_stores: FreshStores) -> None:
    def setup() -> tuple[tuple[Any, list[list[Any]]], dict[str, Any]]:
        batches = settled(store_batches(impl.api, EVENTS))
        return (fresh_stores.new(), batches), {}

    def append_batches(store: Any, batches: list[list[Any]]) -> None:
        append_batch = store.append_batch
        for batch in batches:
            append_batch(batch)

    benchmark.pedantic(append_batches, setup=setup, rounds=impl.rounds("W2", 5), iterations=1)
    stored = fresh_stores.last.count_events()
    assert stored == (EVENTS // WORKFLOWS) * WORKFLOWS
    record_rate(benchmark, impl, "W2 append_batch 1000", stored)
