"""Durable subscriptions: persisted positions, in-order at-least-once delivery, failures, webhooks."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from stabilize_events import (
    EntityType,
    Event,
    EventStore,
    EventType,
    SqliteEventStore,
)
from stabilize_events.errors import ArgumentTypeError, InvalidArgumentError
from stabilize_events.subscriptions import (
    DurableSubscription,
    SubscriptionManager,
    SubscriptionNotFoundError,
)

REPO = Path(__file__).resolve().parents[1]


def make_events(n: int, workflow: str = "wf-1", start: int = 0) -> list[Event]:
    """``n`` events alternating stage.started (stage) and task.completed (task)."""
    out = []
    for i in range(start, start + n):
        is_stage = i % 2 == 0
        out.append(
            Event(
                event_type=EventType.STAGE_STARTED if is_stage else EventType.TASK_COMPLETED,
                entity_type=EntityType.STAGE if is_stage else EntityType.TASK,
                entity_id=f"{workflow}-e{i}",
                workflow_id=workflow,
                version=1,
                data={"i": i},
            )
        )
    return out


class Collector:
    """A handler that records sequences; can fail on chosen ones or block on one."""

    def __init__(self, fail_on: set[int] | None = None) -> None:
        self.sequences: list[int] = []
        self.fail_on = fail_on if fail_on is not None else set()
        self.calls = 0

    def __call__(self, event: Event) -> None:
        self.calls += 1
        if event.sequence in self.fail_on:
            raise ValueError(f"handler refuses {event.sequence}")
        self.sequences.append(event.sequence)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/restart.db"


def stored_position(store: EventStore, subscription_id: str) -> int:
    row = store.get_subscription(subscription_id)  # type: ignore[attr-defined]
    assert row is not None
    return int(row["last_sequence"])


# -- creating and starting points ------------------------------------------------


@pytest.mark.parametrize(
    ("start_from", "first"),
    [("beginning", 1), ("latest", 11), ("4", 5), (7, 8), ("0", 1)],
)
def test_start_from(store: EventStore, start_from: str | int, first: int) -> None:
    store.append_batch(make_events(10))
    manager = SubscriptionManager(store)
    collect = Collector()
    manager.create_subscription("s", collect, start_from=start_from)
    store.append_batch(make_events(5, start=10))
    manager.catch_up()
    assert collect.sequences == list(range(first, 16))
    assert stored_position(store, "s") == 15


@pytest.mark.parametrize("start_from", ["yesterday", "-3", -1, "1.5", ""])
def test_bad_start_from(store: EventStore, start_from: Any) -> None:
    manager = SubscriptionManager(store)
    with pytest.raises(InvalidArgumentError, match="start_from"):
        manager.create_subscription("s", Collector(), start_from=start_from)
    assert store.get_subscription("s") is None  # type: ignore[attr-defined]


def test_bad_arguments(store: EventStore) -> None:
    manager = SubscriptionManager(store)
    with pytest.raises(InvalidArgumentError, match="handler, a webhook_url"):
        manager.create_subscription("s", None)
    with pytest.raises(InvalidArgumentError, match="webhook_url"):
        manager.create_subscription("s", None, webhook_url="file:///etc/passwd")
    with pytest.raises(InvalidArgumentError, match="entity_filter"):
        manager.create_subscription("s", Collector(), entity_filter={"stage_type": "x"})
    with pytest.raises(InvalidArgumentError, match="entity type"):
        manager.create_subscription("s", Collector(), entity_filter={"entity_type": "job"})
    # Event types as in EventQuery: a name that is no event type is refused, never a filter
    # that matches nothing; something that is no type at all is a type error.
    with pytest.raises(InvalidArgumentError, match=r"'stage\.startd' is not an event type"):
        manager.create_subscription("s", Collector(), event_types=["stage.startd"])  # type: ignore[list-item]
    with pytest.raises(ArgumentTypeError, match="must hold EventType members, not int 5"):
        manager.create_subscription("s", Collector(), event_types=[5])  # type: ignore[list-item]
    with pytest.raises(ArgumentTypeError, match="must be a list of event types"):
        manager.create_subscription("s", Collector(), event_types=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        manager.create_subscription("", Collector())
    with pytest.raises(InvalidArgumentError):
        manager.create_subscription("s", Collector(), max_errors=0)
    with pytest.raises(InvalidArgumentError):
        manager.create_subscription("s", Collector(), handler_timeout=0)
    with pytest.raises(InvalidArgumentError):
        SubscriptionManager(store, batch_size=0)


def test_store_without_subscription_support_is_refused() -> None:
    class Bare:
        def get_events_since(self, sequence: int, limit: int = 1000) -> list[Event]:
            return []

    with pytest.raises(ArgumentTypeError, match="cannot persist subscriptions"):
        SubscriptionManager(Bare())  # type: ignore[arg-type]


# -- delivery ----------------------------------------------------------------------


def test_process_once_delivers_in_order_and_persists(store: EventStore) -> None:
    store.append_batch(make_events(250))
    manager = SubscriptionManager(store, batch_size=100)
    collect = Collector()
    manager.create_subscription("s", collect, start_from="beginning")
    assert manager.process_once() == 100
    # The reference's process_once forgets this: the position is in the store.
    assert stored_position(store, "s") == 100
    assert manager.process_once() == 100
    assert manager.process_once() == 50
    assert manager.process_once() == 0
    assert collect.sequences == list(range(1, 251))
    assert stored_position(store, "s") == 250


def test_filters(store: EventStore) -> None:
    store.append_batch(make_events(10, "wf-1") + make_events(10, "wf-2"))
    manager = SubscriptionManager(store)
    by_type, by_entity, by_workflow, both = Collector(), Collector(), Collector(), Collector()
    manager.create_subscription("t", by_type, event_types=[EventType.TASK_COMPLETED], start_from="beginning")
    manager.create_subscription(
        "e", by_entity, entity_filter={"entity_type": "stage"}, start_from="beginning"
    )
    manager.create_subscription(
        "w", by_workflow, entity_filter={"workflow_id": "wf-2"}, start_from="beginning"
    )
    manager.create_subscription(
        "b",
        both,
        event_types=[EventType.STAGE_STARTED],
        entity_filter={"entity_type": EntityType.STAGE, "workflow_id": "wf-1"},
        start_from="beginning",
    )
    manager.catch_up()
    assert by_type.sequences == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    assert by_entity.sequences == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]
    assert by_workflow.sequences == list(range(11, 21))
    assert both.sequences == [1, 3, 5, 7, 9]
    # Filtered-out events still move the position.
    assert all(stored_position(store, s) == 20 for s in "tewb")
    subscription = manager.get_subscription("b")
    assert subscription is not None
    first, second = store.get_events_since(0, 2)
    assert subscription.matches(first) and not subscription.matches(second)


def test_event_types_take_one_type_or_values(store: EventStore) -> None:
    store.append_batch(make_events(10, "wf-1"))
    manager = SubscriptionManager(store)
    one, value, values = Collector(), Collector(), Collector()
    manager.create_subscription("one", one, event_types=EventType.TASK_COMPLETED, start_from="beginning")
    manager.create_subscription("value", value, event_types="task.completed", start_from="beginning")
    manager.create_subscription(
        "values", values, event_types=["task.completed", EventType.STAGE_STARTED], start_from="beginning"
    )
    manager.catch_up()
    assert one.sequences == value.sequences == [2, 4, 6, 8, 10]
    assert values.sequences == list(range(1, 11))
    # Kept as members, so they persist and load back as any filter does.
    again = SubscriptionManager(store)
    assert again.load_subscription("value", Collector())
    loaded = again.get_subscription("value")
    assert loaded is not None and loaded.event_types == [EventType.TASK_COMPLETED]


def test_polling_thread_delivers_new_events(store: EventStore) -> None:
    manager = SubscriptionManager(store, poll_interval=0.01, batch_size=7)
    collect = Collector()
    manager.create_subscription("s", collect)
    manager.start()
    manager.start()  # already running: no second thread
    try:
        store.append_batch(make_events(50))
        deadline = time.monotonic() + 10
        while len(collect.sequences) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        manager.stop()
    assert not manager.running
    assert collect.sequences == list(range(1, 51))
    assert stored_position(store, "s") == 50


def test_status(store: EventStore) -> None:
    store.append_batch(make_events(30))
    manager = SubscriptionManager(store)
    manager.create_subscription(
        "s", Collector(), event_types=[EventType.STAGE_STARTED], start_from="10", max_errors=4
    )
    manager.create_subscription("other", Collector(), start_from="latest")
    status = manager.get_subscription_status("s")
    assert status is not None
    assert {k: status[k] for k in ("id", "enabled", "last_sequence", "current_sequence", "lag")} == {
        "id": "s",
        "enabled": True,
        "last_sequence": 10,
        "current_sequence": 30,
        "lag": 20,
    }
    assert status["event_types"] == ["stage.started"] and status["max_errors"] == 4
    assert status["error_count"] == 0 and status["last_error"] is None and status["disabled_reason"] is None
    manager.catch_up()
    after = manager.get_subscription_status("s")
    assert after is not None and after["lag"] == 0 and after["events_delivered"] == 10
    assert [s["id"] for s in manager.get_all_subscription_status()] == ["s", "other"]


# -- restarts and crashes --------------------------------------------------------------


def test_restart_resumes_where_it_stopped(db_url: str) -> None:
    store = SqliteEventStore(db_url)
    store.append_batch(make_events(120))
    first = Collector()
    manager = SubscriptionManager(store, batch_size=50)
    manager.create_subscription(
        "s", first, event_types=[EventType.TASK_COMPLETED], start_from="beginning", max_errors=3
    )
    manager.process_once()
    manager.process_once()  # positions 1..100 handled
    store.close()

    reopened = SqliteEventStore(db_url)
    reopened.append_batch(make_events(10, start=120))
    second = Collector()
    restarted = SubscriptionManager(reopened, batch_size=50)
    assert restarted.load_subscription("s", second)
    loaded = restarted.get_subscription("s")
    assert loaded is not None
    assert (loaded.last_sequence, loaded.event_types, loaded.max_errors) == (
        100,
        [EventType.TASK_COMPLETED],
        3,
    )
    restarted.catch_up()
    assert first.sequences == list(range(2, 101, 2))
    assert second.sequences == list(range(102, 131, 2))  # nothing lost, nothing twice
    reopened.close()


CRASHING_CONSUMER = """
import os, sys
from stabilize_events import SqliteEventStore
from stabilize_events.subscriptions import SubscriptionManager

store = SqliteEventStore(sys.argv[1])
manager = SubscriptionManager(store, batch_size=10)
log = open(sys.argv[2], "a")

def handler(event):
    log.write(f"{event.sequence}\\n")
    log.flush()
    if event.sequence == 25:
        os._exit(3)  # the process dies mid-batch: no cleanup, no finally

manager.create_subscription("crashy", handler, start_from="beginning")
manager.catch_up()
"""


def test_crash_mid_batch_redelivers_from_the_persisted_position(db_url: str, tmp_path: Path) -> None:
    store = SqliteEventStore(db_url)
    store.append_batch(make_events(40))
    log = tmp_path / "delivered.txt"
    script = tmp_path / "consumer.py"
    script.write_text(textwrap.dedent(CRASHING_CONSUMER))
    result = subprocess.run([sys.executable, str(script), db_url, str(log)], cwd=REPO, timeout=60)
    assert result.returncode == 3
    before_crash = [int(line) for line in log.read_text().split()]
    assert before_crash == list(range(1, 26))
    # Two whole batches were persisted; the third died at 25.
    assert stored_position(store, "crashy") == 20

    collect = Collector()
    manager = SubscriptionManager(store, batch_size=10)
    assert manager.load_subscription("crashy", collect)
    manager.catch_up()
    assert collect.sequences == list(range(21, 41))  # at least once: 21..25 again, none skipped
    store.close()


def test_keyboard_interrupt_in_handler_keeps_delivered_part(store: EventStore) -> None:
    store.append_batch(make_events(10))
    manager = SubscriptionManager(store)

    def handler(event: Event) -> None:
        if event.sequence == 6:
            raise KeyboardInterrupt

    manager.create_subscription("s", handler, start_from="beginning")
    with pytest.raises(KeyboardInterrupt):
        manager.process_once()
    assert stored_position(store, "s") == 5


# -- failing and hanging handlers --------------------------------------------------------


def test_failing_handler_is_retried_then_disabled(store: EventStore) -> None:
    store.append_batch(make_events(10))
    manager = SubscriptionManager(store)
    collect = Collector(fail_on={4})
    manager.create_subscription("s", collect, start_from="beginning", max_errors=3)
    status: dict[str, Any] = {}
    for attempt in range(1, 4):
        manager.process_once()
        status = manager.get_subscription_status("s") or {}
        assert status["error_count"] == attempt
        assert status["last_sequence"] == 3  # never past the undelivered event
        assert "handler refuses 4" in status["last_error"] and "sequence 4" in status["last_error"]
    assert status["enabled"] is False
    assert "disabled after 3 consecutive failed deliveries" in status["disabled_reason"]
    assert collect.sequences == [1, 2, 3] and collect.calls == 6
    assert manager.process_once() == 0  # disabled: nothing is delivered
    row = store.get_subscription("s")  # type: ignore[attr-defined]
    assert row is not None
    assert row["enabled"] is False and row["disabled_reason"] == status["disabled_reason"]
    assert row["last_sequence"] == 3

    collect.fail_on.clear()
    manager.enable_subscription("s")
    manager.catch_up()
    assert collect.sequences == list(range(1, 11))
    final = manager.get_subscription_status("s")
    assert final is not None and final["enabled"] and final["error_count"] == 0


def test_error_count_resets_after_a_success(store: EventStore) -> None:
    store.append_batch(make_events(5))
    manager = SubscriptionManager(store)
    collect = Collector(fail_on={2})
    manager.create_subscription("s", collect, start_from="beginning", max_errors=2)
    manager.process_once()
    collect.fail_on.clear()
    manager.process_once()
    status = manager.get_subscription_status("s")
    assert status is not None and status["error_count"] == 0 and status["enabled"]
    assert collect.sequences == [1, 2, 3, 4, 5]


def test_disabled_state_survives_a_restart(db_url: str) -> None:
    store = SqliteEventStore(db_url)
    store.append_batch(make_events(3))
    manager = SubscriptionManager(store)
    manager.create_subscription("s", Collector(fail_on={2}), start_from="beginning", max_errors=1)
    manager.process_once()
    store.close()
    reopened = SqliteEventStore(db_url)
    restarted = SubscriptionManager(reopened)
    restarted.load_subscription("s", Collector())
    status = restarted.get_subscription_status("s")
    assert status is not None and status["enabled"] is False and status["last_sequence"] == 1
    assert "handler refuses 2" in status["disabled_reason"]
    reopened.close()


def test_hanging_handler_times_out_and_is_retried(store: EventStore) -> None:
    store.append_batch(make_events(6))
    manager = SubscriptionManager(store)
    release = threading.Event()
    delivered: list[int] = []

    def handler(event: Event) -> None:
        if event.sequence == 3 and not release.is_set():
            release.wait(5)  # hangs until the test lets it go
        delivered.append(event.sequence)

    manager.create_subscription("s", handler, start_from="beginning", handler_timeout=0.2)
    started = time.monotonic()
    manager.process_once()
    assert time.monotonic() - started < 3
    status = manager.get_subscription_status("s")
    assert status is not None
    assert status["last_sequence"] == 2 and status["error_count"] == 1
    assert "HandlerTimeoutError" in status["last_error"] and "0.2s" in status["last_error"]
    release.set()  # the abandoned call returns now; its result is ignored
    time.sleep(0.05)
    manager.catch_up()
    assert stored_position(store, "s") == 6
    assert delivered[:2] == [1, 2] and delivered[-4:] == [3, 4, 5, 6]


# -- unknown ids and deletion ---------------------------------------------------------


def test_unknown_subscription_ids(store: EventStore) -> None:
    manager = SubscriptionManager(store)
    assert manager.get_subscription_status("nope") is None
    assert manager.load_subscription("nope", Collector()) is False
    assert manager.delete_subscription("nope") is False
    assert manager.get_subscription("nope") is None
    with pytest.raises(SubscriptionNotFoundError, match="no subscription 'nope'"):
        manager.enable_subscription("nope")
    with pytest.raises(SubscriptionNotFoundError):
        manager.disable_subscription("nope")
    with pytest.raises(KeyError):
        manager.catch_up("nope")


def test_delete(store: EventStore) -> None:
    store.append_batch(make_events(3))
    manager = SubscriptionManager(store)
    manager.create_subscription("s", Collector(), start_from="beginning")
    assert manager.delete_subscription("s") is True
    assert store.get_subscription("s") is None  # type: ignore[attr-defined]
    assert manager.get_subscription_status("s") is None
    assert manager.process_once() == 0


def test_delete_during_delivery_does_not_resurrect_the_row(store: EventStore) -> None:
    store.append_batch(make_events(3))
    manager = SubscriptionManager(store)

    def handler(event: Event) -> None:
        if event.sequence == 1:
            manager.delete_subscription("s")

    manager.create_subscription("s", handler, start_from="beginning")
    manager.process_once()
    assert store.get_subscription("s") is None  # type: ignore[attr-defined]


def test_disable_by_request(store: EventStore) -> None:
    store.append_batch(make_events(3))
    manager = SubscriptionManager(store)
    collect = Collector()
    subscription = manager.create_subscription("s", collect, start_from="beginning")
    assert isinstance(subscription, DurableSubscription)
    manager.disable_subscription("s", "maintenance")
    assert manager.process_once() == 0
    status = manager.get_subscription_status("s")
    assert status is not None and status["disabled_reason"] == "maintenance"


# -- webhooks ---------------------------------------------------------------------------


class Hook:
    """An HTTP server on 127.0.0.1 answering POSTs with the given status codes, then 200."""

    def __init__(self, codes: list[int] | None = None) -> None:
        self.codes = list(codes or [])
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.requests.append((dict(self.headers), json.loads(body)))
                code = hook.codes.pop(0) if hook.codes else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def sequences(self) -> list[int]:
        return [body["sequence"] for _, body in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook_factory() -> Iterator[Callable[..., Hook]]:
    hooks: list[Hook] = []

    def make(codes: list[int] | None = None) -> Hook:
        hooks.append(Hook(codes))
        return hooks[-1]

    yield make
    for h in hooks:
        h.close()


def test_webhook_receives_each_event_as_json(store: EventStore, hook_factory: Callable[..., Hook]) -> None:
    hook = hook_factory()
    stored = store.append_batch(make_events(4))
    manager = SubscriptionManager(store)
    collect = Collector()
    manager.create_subscription("hook", collect, webhook_url=hook.url, start_from="beginning")
    manager.catch_up()
    assert hook.sequences() == [1, 2, 3, 4] and collect.sequences == [1, 2, 3, 4]
    headers, body = hook.requests[0]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Subscription-Id"] == "hook" and headers["X-Event-Sequence"] == "1"
    assert body == json.loads(json.dumps(stored[0].to_dict()))
    assert body["event_type"] == "stage.started" and body["data"] == {"i": 0}


def test_webhook_only_subscription_survives_restart(db_url: str, hook_factory: Callable[..., Hook]) -> None:
    hook = hook_factory()
    store = SqliteEventStore(db_url)
    store.append_batch(make_events(2))
    SubscriptionManager(store).create_subscription("hook", None, webhook_url=hook.url, start_from="beginning")
    store.append_batch(make_events(1, start=2))
    store.close()
    reopened = SqliteEventStore(db_url)
    manager = SubscriptionManager(reopened)
    assert manager.load_subscription("hook", None)
    manager.catch_up()
    assert hook.sequences() == [1, 2, 3]
    reopened.close()


def test_webhook_500_is_retried_with_backoff(store: EventStore, hook_factory: Callable[..., Hook]) -> None:
    hook = hook_factory([500, 503])
    store.append_batch(make_events(3))
    manager = SubscriptionManager(store, webhook_attempts=3, webhook_backoff=0.05)
    manager.create_subscription("hook", None, webhook_url=hook.url, start_from="beginning")
    started = time.monotonic()
    manager.catch_up()
    assert time.monotonic() - started >= 0.05 + 0.1  # waited 0.05 s, then 0.1 s
    assert hook.sequences() == [1, 1, 1, 2, 3]
    status = manager.get_subscription_status("hook")
    assert status is not None and status["error_count"] == 0 and status["last_sequence"] == 3


def test_webhook_failing_every_attempt_stops_delivery(
    store: EventStore, hook_factory: Callable[..., Hook]
) -> None:
    hook = hook_factory([500] * 4)
    store.append_batch(make_events(3))
    manager = SubscriptionManager(store, webhook_attempts=2, webhook_backoff=0.01)
    manager.create_subscription("hook", None, webhook_url=hook.url, start_from="beginning", max_errors=2)
    manager.process_once()
    manager.process_once()
    status = manager.get_subscription_status("hook")
    assert status is not None
    assert status["last_sequence"] == 0 and not status["enabled"]
    assert "WebhookDeliveryError" in status["last_error"] and "HTTP 500" in status["last_error"]
    assert hook.sequences() == [1, 1, 1, 1]
    manager.enable_subscription("hook")
    manager.catch_up()
    assert hook.sequences() == [1, 1, 1, 1, 1, 2, 3]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                accepted.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    stop.set()
    thread.join(1)
    for conn in accepted:
        conn.close()
    listener.close()


def test_webhook_that_never_answers_times_out(store: EventStore, silent_server: str) -> None:
    store.append_batch(make_events(2))
    manager = SubscriptionManager(store, webhook_timeout=0.2, webhook_attempts=2, webhook_backoff=0.01)
    manager.create_subscription("hook", None, webhook_url=silent_server, start_from="beginning")
    started = time.monotonic()
    manager.process_once()
    assert 0.4 <= time.monotonic() - started < 5
    status = manager.get_subscription_status("hook")
    assert status is not None and status["last_sequence"] == 0 and status["error_count"] == 1
    assert "timed out" in status["last_error"] and "2 attempt(s)" in status["last_error"]


def test_stop_interrupts_webhook_backoff(store: EventStore, hook_factory: Callable[..., Hook]) -> None:
    hook = hook_factory([500] * 10)
    store.append_batch(make_events(1))
    manager = SubscriptionManager(store, poll_interval=0.01, webhook_attempts=5, webhook_backoff=10)
    manager.create_subscription("hook", None, webhook_url=hook.url, start_from="beginning")
    manager.start()
    deadline = time.monotonic() + 5
    while not hook.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    manager.stop()
    assert time.monotonic() - started < 3
    assert stored_position(store, "hook") == 0
