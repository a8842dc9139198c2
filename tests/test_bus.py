"""EventBus: filters, subscription management, error isolation, ASYNC ordering, shutdown, globals."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from stabilize_events import EntityType, Event, EventType, errors
from stabilize_events.bus import (
    EventBus,
    EventBusStats,
    Subscription,
    SubscriptionMode,
    configure_event_bus,
    get_event_bus,
    reset_event_bus,
)

ASYNC = SubscriptionMode.ASYNC


def ev(
    event_type: EventType = EventType.TASK_STARTED,
    entity_type: EntityType = EntityType.TASK,
    workflow_id: str = "wf-1",
    n: int = 0,
) -> Event:
    """A small event; ``n`` goes into its data so order can be checked."""
    return Event(
        event_type=event_type,
        entity_type=entity_type,
        entity_id=f"e-{n}",
        workflow_id=workflow_id,
        data={"n": n},
    )


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.001)


@pytest.fixture
def bus() -> Iterator[EventBus]:
    b = EventBus(max_workers=4)
    yield b
    b.shutdown(wait=True)


@pytest.fixture(autouse=True)
def _fresh_global_bus() -> Iterator[None]:
    reset_event_bus()
    yield
    reset_event_bus()


# -- filters ---------------------------------------------------------------------


def test_unfiltered_subscription_receives_every_event(bus: EventBus) -> None:
    got: list[Event] = []
    bus.subscribe("all", got.append)
    events = [ev(n=1), ev(EventType.WORKFLOW_CREATED, EntityType.WORKFLOW, "wf-2", n=2)]
    for e in events:
        bus.publish(e)
    assert got == events


def test_event_type_filter(bus: EventBus) -> None:
    got: list[Event] = []
    bus.subscribe("fail", got.append, event_types={EventType.TASK_FAILED, EventType.WORKFLOW_FAILED})
    bus.publish(ev(EventType.TASK_STARTED))
    bus.publish(ev(EventType.TASK_FAILED, n=1))
    bus.publish(ev(EventType.WORKFLOW_FAILED, EntityType.WORKFLOW, n=2))
    assert [e.data["n"] for e in got] == [1, 2]


def test_entity_type_filter(bus: EventBus) -> None:
    got: list[Event] = []
    bus.subscribe("stages", got.append, entity_types={EntityType.STAGE})
    bus.publish(ev(EventType.STAGE_STARTED, EntityType.STAGE, n=1))
    bus.publish(ev(EventType.TASK_STARTED, EntityType.TASK, n=2))
    assert [e.data["n"] for e in got] == [1]


def test_type_filters_take_values_or_one_type(bus: EventBus) -> None:
    got: dict[str, list[int]] = {"values": [], "one": [], "entity": []}
    bus.subscribe("values", lambda e: got["values"].append(e.data["n"]), event_types={"task.failed"})
    bus.subscribe("one", lambda e: got["one"].append(e.data["n"]), event_types="task.failed")
    bus.subscribe("entity", lambda e: got["entity"].append(e.data["n"]), entity_types="stage")
    bus.publish(ev(EventType.TASK_STARTED, n=1))
    bus.publish(ev(EventType.TASK_FAILED, n=2))
    bus.publish(ev(EventType.STAGE_STARTED, EntityType.STAGE, n=3))
    # A bare string once made every publish raise TypeError ('in <string>'), for every subscriber.
    assert got == {"values": [2], "one": [2], "entity": [3]}
    assert bus.stats.errors == 0


@pytest.mark.parametrize(
    ("filters", "error", "match"),
    [
        (
            {"event_types": {"task.faild"}},
            errors.InvalidArgumentError,
            r"^event_types: 'task\.faild' is not an",
        ),
        ({"entity_types": "pipeline"}, errors.InvalidArgumentError, r"^entity_types: 'pipeline' is not an"),
        ({"event_types": 5}, errors.ArgumentTypeError, "^event_types must be a list of event types"),
        ({"event_types": [5]}, errors.ArgumentTypeError, "^event_types must hold EventType members"),
    ],
)
def test_type_filters_that_could_match_nothing_are_refused(
    bus: EventBus, filters: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        bus.subscribe("bad", print, **filters)  # type: ignore[arg-type]
    assert bus.get_subscriptions() == []


def test_workflow_filter(bus: EventBus) -> None:
    got: list[Event] = []
    bus.subscribe("one-wf", got.append, workflow_filter="wf-2")
    bus.publish(ev(workflow_id="wf-1", n=1))
    bus.publish(ev(workflow_id="wf-2", n=2))
    assert [e.data["n"] for e in got] == [2]


def test_filters_combine_with_and(bus: EventBus) -> None:
    got: list[Event] = []
    bus.subscribe(
        "narrow",
        got.append,
        event_types={EventType.STAGE_FAILED},
        entity_types={EntityType.STAGE},
        workflow_filter="wf-9",
    )
    bus.publish(ev(EventType.STAGE_FAILED, EntityType.STAGE, "wf-1"))
    bus.publish(ev(EventType.STAGE_STARTED, EntityType.STAGE, "wf-9"))
    bus.publish(ev(EventType.STAGE_FAILED, EntityType.STAGE, "wf-9", n=7))
    assert [e.data["n"] for e in got] == [7]


def test_empty_filter_set_matches_nothing(bus: EventBus) -> None:
    # An empty set is a filter (nothing allowed), unlike None (everything allowed).
    got: list[Event] = []
    bus.subscribe("none", got.append, event_types=set())
    bus.publish(ev())
    assert got == []


def test_subscription_matches() -> None:
    sub = Subscription(id="s", handler=lambda e: None, entity_types={EntityType.TASK}, workflow_filter="wf-1")
    assert sub.matches(ev())
    assert not sub.matches(ev(workflow_id="wf-2"))
    assert not sub.matches(ev(entity_type=EntityType.STAGE))
    sub.enabled = False
    assert not sub.matches(ev())
    assert sub.mode is SubscriptionMode.SYNC


# -- subscription management -------------------------------------------------------


def test_disable_and_enable(bus: EventBus) -> None:
    got: list[Event] = []
    bus.subscribe("s", got.append)
    bus.disable_subscription("s")
    bus.publish(ev(n=1))
    assert got == []
    assert bus.get_subscriptions() == ["s"]  # disabled, not removed
    bus.enable_subscription("s")
    bus.publish(ev(n=2))
    assert [e.data["n"] for e in got] == [2]
    bus.enable_subscription("missing")  # unknown ids are ignored
    bus.disable_subscription("missing")


def test_unsubscribe(bus: EventBus) -> None:
    got: list[Event] = []
    bus.subscribe("a", got.append)
    bus.subscribe("b", lambda e: None)
    assert bus.stats.subscriptions_active == 2
    assert bus.unsubscribe("a") is True
    assert bus.unsubscribe("a") is False
    bus.publish(ev())
    assert got == []
    assert bus.get_subscriptions() == ["b"]
    assert bus.stats.subscriptions_active == 1


def test_subscribing_again_replaces_the_subscription(bus: EventBus) -> None:
    first: list[Event] = []
    second: list[Event] = []
    bus.subscribe("s", first.append)
    bus.subscribe("s", second.append)
    bus.publish(ev())
    assert (len(first), len(second)) == (0, 1)
    assert bus.stats.subscriptions_active == 1


def test_subscribe_during_publish_does_not_disturb_it(bus: EventBus) -> None:
    late: list[Event] = []

    def subscriber(e: Event) -> None:
        bus.subscribe("late", late.append)
        bus.unsubscribe("early")

    bus.subscribe("early", subscriber)
    bus.publish(ev(n=1))
    bus.publish(ev(n=2))
    assert [e.data["n"] for e in late] == [2]


def test_sync_handlers_run_in_order_in_publishing_thread(bus: EventBus) -> None:
    calls: list[tuple[str, int]] = []
    bus.subscribe("first", lambda e: calls.append(("first", threading.get_ident())))
    bus.subscribe("second", lambda e: calls.append(("second", threading.get_ident())))
    bus.publish(ev())
    assert calls == [("first", threading.get_ident()), ("second", threading.get_ident())]


# -- errors and stats ------------------------------------------------------------------


def test_failing_handler_is_isolated(bus: EventBus, caplog: pytest.LogCaptureFixture) -> None:
    got: list[Event] = []
    reported: list[tuple[str, Event, Exception]] = []
    boom = RuntimeError("boom")

    def failing(e: Event) -> None:
        raise boom

    bus.on_error(lambda sid, e, err: reported.append((sid, e, err)))
    bus.subscribe("bad", failing)
    bus.subscribe("good", got.append)
    event = ev()
    with caplog.at_level(logging.ERROR, logger="stabilize_events.bus"):
        bus.publish(event)  # does not raise
    assert got == [event]
    assert reported == [("bad", event, boom)]
    assert "bad" in caplog.text
    stats = bus.stats
    assert (stats.events_published, stats.events_delivered, stats.errors) == (1, 1, 1)


def test_error_handler_given_to_constructor_and_its_own_failure_is_contained() -> None:
    seen: list[str] = []

    def handler(sid: str, e: Event, err: Exception) -> None:
        seen.append(sid)
        raise ValueError("error handler broken too")

    b = EventBus(error_handler=handler)
    b.subscribe("bad", lambda e: 1 / 0)
    b.publish(ev())
    assert seen == ["bad"]
    assert b.stats.errors == 1
    b.shutdown()


def test_on_error_works_as_decorator_and_replaces(bus: EventBus) -> None:
    seen: list[str] = []

    @bus.on_error
    def first(sid: str, e: Event, err: Exception) -> None:
        seen.append("first")

    assert callable(first)

    @bus.on_error
    def second(sid: str, e: Event, err: Exception) -> None:
        seen.append("second")

    bus.subscribe("bad", lambda e: 1 / 0)
    bus.publish(ev())
    assert seen == ["second"]


def test_base_exceptions_are_not_swallowed(bus: EventBus) -> None:
    def interrupt(e: Event) -> None:
        raise KeyboardInterrupt

    bus.subscribe("k", interrupt)
    with pytest.raises(KeyboardInterrupt):
        bus.publish(ev())


def test_stats_is_a_snapshot(bus: EventBus) -> None:
    bus.subscribe("s", lambda e: None)
    bus.publish(ev())
    snapshot = bus.stats
    snapshot.events_published = 99
    bus.publish(ev())
    assert bus.stats == EventBusStats(
        events_published=2, events_delivered=2, errors=0, subscriptions_active=1, async_fallbacks=0
    )


def test_publish_without_subscribers_only_counts(bus: EventBus) -> None:
    for i in range(100):
        bus.publish(ev(n=i))
    assert bus.stats == EventBusStats(events_published=100)


def test_publish_batch_keeps_order(bus: EventBus) -> None:
    got: list[int] = []
    bus.subscribe("s", lambda e: got.append(e.data["n"]))
    bus.publish_batch([ev(n=i) for i in range(10)])
    bus.publish_batch([])
    assert got == list(range(10))
    assert bus.stats.events_published == 10


# -- ASYNC delivery ----------------------------------------------------------------------


def test_async_handler_runs_off_the_publishing_thread(bus: EventBus) -> None:
    threads: list[int] = []
    bus.subscribe("a", lambda e: threads.append(threading.get_ident()), mode=ASYNC)
    bus.publish(ev())
    wait_until(lambda: len(threads) == 1)
    assert threads[0] != threading.get_ident()


def test_async_delivery_keeps_per_subscriber_order_under_load() -> None:
    b = EventBus(max_workers=4)
    n_events, n_subs = 3000, 6
    received: dict[str, list[int]] = {f"s{i}": [] for i in range(n_subs)}
    active: dict[str, int] = dict.fromkeys(received, 0)
    overlaps: list[str] = []
    rng = random.Random(7)

    def make(sid: str) -> Callable[[Event], None]:
        def handle(e: Event) -> None:
            active[sid] += 1
            if active[sid] > 1:
                overlaps.append(sid)  # two workers inside one subscriber at once
            if rng.random() < 0.01:
                time.sleep(0.001)  # let the others race ahead
            received[sid].append(e.data["n"])
            active[sid] -= 1

        return handle

    for sid in received:
        b.subscribe(sid, make(sid), mode=ASYNC)
    for i in range(n_events):
        b.publish(ev(n=i))
    b.shutdown(wait=True)  # waits for every queued delivery
    assert overlaps == []
    for sid, got in received.items():
        assert got == list(range(n_events)), sid
    assert b.stats.events_delivered == n_events * n_subs


def test_async_order_per_publisher_with_concurrent_publishers() -> None:
    b = EventBus(max_workers=3)
    got: list[tuple[str, int]] = []
    b.subscribe("s", lambda e: got.append((e.workflow_id, e.data["n"])), mode=ASYNC)

    def publisher(wf: str) -> None:
        for i in range(500):
            b.publish(ev(workflow_id=wf, n=i))

    threads = [threading.Thread(target=publisher, args=(f"wf-{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b.shutdown(wait=True)
    assert len(got) == 2000
    for k in range(4):
        assert [n for wf, n in got if wf == f"wf-{k}"] == list(range(500))


def test_async_errors_are_isolated_and_counted() -> None:
    reported: list[int] = []
    b = EventBus(max_workers=2, error_handler=lambda sid, e, err: reported.append(e.data["n"]))
    got: list[int] = []

    def flaky(e: Event) -> None:
        if e.data["n"] % 2:
            raise ValueError("odd")
        got.append(e.data["n"])

    b.subscribe("flaky", flaky, mode=ASYNC)
    for i in range(20):
        b.publish(ev(n=i))
    b.shutdown(wait=True)
    assert got == list(range(0, 20, 2))
    assert reported == list(range(1, 20, 2))
    assert (b.stats.events_delivered, b.stats.errors) == (10, 10)


def test_mixed_sync_and_async_subscribers(bus: EventBus) -> None:
    sync_got: list[int] = []
    async_got: list[int] = []
    bus.subscribe("sync", lambda e: sync_got.append(e.data["n"]))
    bus.subscribe("async", lambda e: async_got.append(e.data["n"]), mode=ASYNC)
    for i in range(50):
        bus.publish(ev(n=i))
    assert sync_got == list(range(50))  # already delivered when publish returned
    wait_until(lambda: len(async_got) == 50)
    assert async_got == list(range(50))


def test_unsubscribed_async_subscription_still_gets_queued_events() -> None:
    b = EventBus(max_workers=1)
    gate = threading.Event()
    got: list[int] = []

    def slow(e: Event) -> None:
        gate.wait(5)
        got.append(e.data["n"])

    b.subscribe("s", slow, mode=ASYNC)
    for i in range(3):
        b.publish(ev(n=i))
    b.unsubscribe("s")
    b.publish(ev(n=99))  # after unsubscribe: not delivered
    gate.set()
    b.shutdown(wait=True)
    assert got == [0, 1, 2]


# -- shutdown and reset --------------------------------------------------------------------


def test_shutdown_waits_for_pending_async_deliveries() -> None:
    b = EventBus(max_workers=2)
    got: list[int] = []

    def slow(e: Event) -> None:
        time.sleep(0.002)
        got.append(e.data["n"])

    b.subscribe("slow", slow, mode=ASYNC)
    for i in range(50):
        b.publish(ev(n=i))
    b.shutdown(wait=True)
    assert got == list(range(50))


def test_publish_after_shutdown_is_dropped_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    b = EventBus()
    got: list[Event] = []
    b.subscribe("s", got.append)
    b.shutdown()
    with caplog.at_level(logging.WARNING, logger="stabilize_events.bus"):
        b.publish(ev())
    assert got == []
    assert b.stats.events_published == 0
    assert "shut down" in caplog.text


def test_shutdown_without_wait_returns_promptly() -> None:
    b = EventBus(max_workers=1)
    gate = threading.Event()
    b.subscribe("s", lambda e: gate.wait(5), mode=ASYNC)
    b.publish(ev())
    started = time.monotonic()
    b.shutdown(wait=False)
    assert time.monotonic() - started < 1.0
    gate.set()


def test_async_falls_back_to_sync_when_the_pool_is_gone() -> None:
    # The race where the pool shuts down between publish's check and the submit.
    b = EventBus()
    got: list[int] = []
    b.subscribe("s", lambda e: got.append(threading.get_ident()), mode=ASYNC)
    b._executor.shutdown()
    b.publish(ev())
    assert got == [threading.get_ident()]
    assert b.stats.async_fallbacks == 1
    assert b.stats.events_delivered == 1


def test_reset_clears_and_revives_a_shut_down_bus() -> None:
    b = EventBus()
    b.subscribe("s", lambda e: None)
    b.publish(ev())
    b.shutdown()
    b.reset()
    assert b.get_subscriptions() == []
    assert b.stats == EventBusStats()
    got: list[int] = []
    b.subscribe("a", lambda e: got.append(e.data["n"]), mode=ASYNC)
    b.publish(ev(n=5))
    b.shutdown(wait=True)
    assert got == [5]
    assert b.stats.async_fallbacks == 0


# -- global bus ---------------------------------------------------------------------------


def test_get_event_bus_is_a_singleton_even_under_contention() -> None:
    seen: list[EventBus] = []
    barrier = threading.Barrier(8)

    def grab() -> None:
        barrier.wait()
        seen.append(get_event_bus())

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(b) for b in seen}) == 1
    assert get_event_bus() is seen[0]


def test_configure_event_bus_replaces_and_shuts_down_the_old_one() -> None:
    old = get_event_bus()
    old_got: list[Event] = []
    old.subscribe("s", old_got.append)
    reported: list[str] = []
    new = configure_event_bus(max_workers=2, error_handler=lambda sid, e, err: reported.append(sid))
    assert new is not old
    assert get_event_bus() is new
    old.publish(ev())
    assert old_got == []  # the old bus is shut down
    new.subscribe("bad", lambda e: 1 / 0)
    new.publish(ev())
    assert reported == ["bad"]


def test_reset_event_bus_gives_a_fresh_bus() -> None:
    first = get_event_bus()
    first.subscribe("s", lambda e: None)
    reset_event_bus()
    second = get_event_bus()
    assert second is not first
    assert second.get_subscriptions() == []
    reset_event_bus()
    reset_event_bus()  # idempotent
