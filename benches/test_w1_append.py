"""W1: ``append(event)`` one at a time, each its own transaction, on a file-backed SQLite store.

10,000 events (env ``W1_EVENTS``) of one standard stream, into a new file each
round, with each store's default settings (ours: WAL, ``synchronous=NORMAL``; the
reference: its global SqliteConfig). Events are built in the round's setup, outside
the timed region. Target: >= 50,000 ev/s.
"""

from __future__ import annotations

from typing import Any

from conftest import FreshStores, Impl, record_rate, settled
from streams import env_int, standard_stream

EVENTS = env_int("W1_EVENTS", 10_000)


def test_w1_append(benchmark: Any, impl: Impl, fresh_stores: FreshStores) -> None:
    def setup() -> tuple[tuple[Any, list[Any]], dict[str, Any]]:
        events = settled(standard_stream(impl.api, 0, EVENTS))
        return (fresh_stores.new(), events), {}

    def append_each(store: Any, events: list[Any]) -> None:
        append = store.append
        for event in events:
            append(event)

    benchmark.pedantic(append_each, setup=setup, rounds=impl.rounds("W1", 5), iterations=1)
    assert fresh_stores.last.count_events() == EVENTS
    record_rate(benchmark, impl, "W1 append x1", EVENTS)
