"""Durable subscription catch-up: a `SubscriptionManager` delivers 200,000 stored events.

The store holds ``SUB_EVENTS`` events (200,000 by default: 10 standard streams,
interleaved in batches of 1,000), written once, untimed. Each round creates a
new subscription starting at the beginning, with a no-op handler and the
manager's default batch size (100, as in the reference), and delivers until it
is up to date: ours with ``catch_up()``, the reference (whose manager has no
catch-up call) with ``process_once()`` until its position reaches the end.
Ours persists the position after every batch; the reference's
``process_once`` does not persist at all. Target: >= 200,000 ev/s.

``test_subscription_catch_up_in_memory`` does the same over our `InMemoryEventStore`
(ours only), printed as "Subscription catch-up in-memory" beside the SQLite figure.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Impl, record_extra, record_rate, remove_db
from streams import env_int, ours_api, store_batches

TOTAL = env_int("SUB_EVENTS", 200_000)


@pytest.fixture(scope="module")
def sub_store(impl: Impl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    path: Path = tmp_path_factory.mktemp("sub") / f"sub-{impl.key}.db"
    store = impl.open_filled(path, TOTAL)
    yield store
    impl.close(store, path)
    remove_db(path)


def manager_class(impl: Impl) -> Any:
    """The implementation's SubscriptionManager."""
    name = "stabilize_events.subscriptions" if impl.key == "ours" else "stabilize.events.subscriptions"
    return importlib.import_module(name).SubscriptionManager


def noop(_event: Any) -> None:
    """The handler: receives the event, does nothing."""


def test_subscription_catch_up(benchmark: Any, impl: Impl, sub_store: Any) -> None:
    manager = manager_class(impl)(sub_store)
    ids = itertools.count()
    current = sub_store.get_current_sequence()

    def new_subscription() -> tuple[tuple[str], dict[str, Any]]:
        subscription_id = f"bench-{next(ids)}"
        manager.create_subscription(subscription_id, noop, start_from="beginning")
        return (subscription_id,), {}

    def deliver_all(subscription_id: str) -> int:
        if impl.key == "ours":
            delivered: int = manager.catch_up(subscription_id)
            return delivered
        # The reference delivers one batch per subscription per call; the
        # subscriptions of earlier rounds are up to date and read nothing.
        total = 0
        subscription = manager._subscriptions[subscription_id]
        while subscription.last_sequence < current:
            total += manager.process_once()
        return total

    delivered = benchmark.pedantic(
        deliver_all,
        setup=new_subscription,
        rounds=impl.rounds("SUB", 5 if impl.key == "ours" else 1),
        iterations=1,
        warmup_rounds=0,
    )
    assert delivered == TOTAL
    record_rate(benchmark, impl, "Subscription catch-up", TOTAL)


def test_subscription_catch_up_in_memory(benchmark: Any) -> None:
    from stabilize_events import InMemoryEventStore, SubscriptionManager

    store = InMemoryEventStore()
    for batch in store_batches(ours_api(), TOTAL):
        store.append_batch(batch)
    manager = SubscriptionManager(store)
    ids = itertools.count()

    def new_subscription() -> tuple[tuple[str], dict[str, Any]]:
        subscription_id = f"bench-{next(ids)}"
        manager.create_subscription(subscription_id, noop, start_from="beginning")
        return (subscription_id,), {}

    delivered = benchmark.pedantic(
        manager.catch_up, setup=new_subscription, rounds=5, iterations=1, warmup_rounds=0
    )
    assert delivered == TOTAL
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        eps = TOTAL / stats.stats.median
        benchmark.extra_info.update(events=TOTAL, events_per_second=round(eps))
        record_extra("Subscription catch-up", "in-memory", eps, benchmark.extra_info)
    store.close()
