"""W8: W1-W4 on PostgreSQL, ours beside the reference's ``PostgresEventStore``, one local server.

Needs ``STABILIZE_EVENTS_POSTGRES_URL`` (``source .ci/postgres && pg_setup`` starts a local
server); skipped without it. Each implementation writes into a schema of its own (the
reference through ``search_path`` in its URL), dropped afterwards.

- W1: ``append`` one at a time (``W8_W1_EVENTS``, default 2,000), each its own transaction.
- W2: ``append_batch`` in batches of 1,000 (``W8_W2_EVENTS``, default 50,000).
- W3: ``get_events_for_workflow`` of one 20,000-event workflow (``W8_W3_EVENTS``) in a store
  of 10 such workflows, reading ``e.data.get("status")`` of each.
- W4: ``EventReplayer(store).rebuild_workflow_state`` of that workflow.
- Ours only: 4 processes appending batches of 1,000 at once (total rate); the delay from
  an ``append`` call in another process to a `NotificationWaiter` here waking and reading the
  event; and the delay from an append's commit in another process to a `ProjectionRunner`
  here (polling every 5 s, so woken by LISTEN/NOTIFY) applying it, and to a
  `SubscriptionManager` handler (median and p99 over ``W8_NOTIFY_EVENTS``, default 200).

Each of W1-W4 also runs against a floor (`Floor`): psycopg alone doing the least work the
workload needs on our tables; the ratios printed are ours against the reference and against it.

Run: ``python -m pytest benches/test_w8_postgres.py --benchmark-only -s``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streams import env_int, ours_api, reference_api, standard_stream, store_batches

URL_VAR = "STABILIZE_EVENTS_POSTGRES_URL"
W1_EVENTS = env_int("W8_W1_EVENTS", 2_000)
W2_EVENTS = env_int("W8_W2_EVENTS", 50_000)
W3_PER_WORKFLOW = env_int("W8_W3_EVENTS", 20_000)
NOTIFY_EVENTS = env_int("W8_NOTIFY_EVENTS", 200)
RESULTS: dict[str, dict[str, float]] = {}


def _url() -> str:
    url = os.environ.get(URL_VAR)
    if not url:
        pytest.skip(f"{URL_VAR} not set: no PostgreSQL server to bench against")
    return url


def _with_search_path(url: str, schema: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    params["options"] = f"-csearch_path={schema}"
    return make_conninfo(**params)


class PgImpl:
    """Opens fresh stores of one implementation, each in a new schema."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.api = reference_api() if key == "reference" else ours_api()
        self.schemas: list[str] = []
        self.stores: list[Any] = []

    def new(self) -> Any:
        import psycopg

        url = _url()
        schema = f"w8_{self.key}_{uuid.uuid4().hex[:10]}"
        self.schemas.append(schema)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        if self.key != "reference":  # the floor works on our tables, made by our store
            from stabilize_events import PostgresEventStore

            store: Any = PostgresEventStore(url, create_tables=True, schema=schema)
        else:
            from stabilize.events import PostgresEventStore as ReferenceStore

            store = ReferenceStore(_with_search_path(url, schema), create_tables=True)
        self.stores.append(store)
        return store

    def replayer(self, store: Any) -> Any:
        if self.key == "ours":
            from stabilize_events import EventReplayer

            return EventReplayer(store)
        from stabilize.events import EventReplayer as ReferenceReplayer

        return ReferenceReplayer(store)

    def cleanup(self) -> None:
        import psycopg

        for store in self.stores:
            try:
                store.close()
            except Exception:
                pass
        with psycopg.connect(_url(), autocommit=True) as conn:
            for schema in self.schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(scope="module", params=["ours", "reference", "floor"])
def pg(request: pytest.FixtureRequest) -> Iterator[PgImpl]:
    _url()
    if request.param == "reference":
        pytest.importorskip("stabilize.events")
    impl = PgImpl(str(request.param))
    yield impl
    impl.cleanup()


def _record(benchmark: Any, impl: PgImpl, workload: str, events: int) -> None:
    median = benchmark.stats.stats.median
    rate = events / median
    benchmark.extra_info["events_per_second"] = rate
    RESULTS.setdefault(workload, {})[impl.key] = rate
    got = RESULTS[workload]
    ratio = ""
    if "ours" in got and "reference" in got:
        ratio = f" (ours: {got['ours'] / got['reference']:.1f}x the reference"
        if "floor" in got:
            ratio += f", {got['ours'] / got['floor']:.2f} of the floor"
        ratio += ")"
    print(f"\nW8 {workload} [{impl.key}]: {rate:,.0f} ev/s{ratio}")


class Floor:
    """The least work each workload needs, through psycopg alone on our tables: rows encoded
    beforehand, written by one INSERT per event (W1) or one binary COPY per batch (W2), read
    back as plain tuples without building events (W3, W4: reading the rows is the floor of a
    rebuild too)."""

    def __init__(self, schema: str) -> None:
        import psycopg
        from stabilize_events._core import NativeStore
        from stabilize_events.store.postgres import Statements, encode_rows

        self.conn = psycopg.connect(_url(), autocommit=True)
        self.st = Statements(f"{schema}.", 0)
        self.codec = NativeStore.memory()
        self.encode = encode_rows
        self.schema = schema
        self.sequence = 0

    def rows(self, events: list[Any]) -> list[tuple[Any, ...]]:
        encoded = [values for _, values in self.encode(self.codec, events)]
        first, self.sequence = self.sequence + 1, self.sequence + len(encoded)
        return [(first + i, *values) for i, values in enumerate(encoded)]

    def insert_each(self, rows: list[tuple[Any, ...]]) -> None:
        text = (
            f"INSERT INTO {self.schema}.event_log (sequence, {', '.join(self.st.names)}) "
            f"VALUES ({', '.join(['%b'] * 14)})"
        )
        for row in rows:
            self.conn.execute(text, row, prepare=True)

    def copy_batches(self, batches: list[list[tuple[Any, ...]]]) -> None:
        for rows in batches:
            with self.conn.transaction(), self.conn.cursor().copy(self.st.copy) as copy:
                copy.set_types(self.st.copy_types)
                for row in rows:
                    copy.write_row(row)

    def count(self) -> int:
        """The rows the floor wrote (our store's reads stop at its own sequence, not moved here)."""
        row = self.conn.execute(f"SELECT count(*) FROM {self.schema}.event_log").fetchone()
        return int(row[0]) if row else 0

    def read_workflow(self, workflow_id: str) -> int:
        from stabilize_events.store.postgres import _COLUMNS

        with self.conn.cursor(binary=True) as cur:
            cur.execute(
                f"SELECT {_COLUMNS} FROM {self.schema}.event_log WHERE workflow_id = %s ORDER BY sequence",
                (workflow_id,),
            )
            return len(cur.fetchall())


def test_w8_w1_append(benchmark: Any, pg: PgImpl) -> None:
    if pg.key == "floor":
        floors: list[Floor] = []

        def floor_setup() -> tuple[tuple[Any, Any], dict[str, Any]]:
            pg.new()
            floors.append(Floor(pg.schemas[-1]))
            return (floors[-1], floors[-1].rows(standard_stream(pg.api, 0, W1_EVENTS))), {}

        benchmark.pedantic(lambda floor, rows: floor.insert_each(rows), setup=floor_setup, rounds=3)
        assert floors[-1].count() == W1_EVENTS
        _record(benchmark, pg, "W1 append x1", W1_EVENTS)
        return

    def setup() -> tuple[tuple[Any, list[Any]], dict[str, Any]]:
        return (pg.new(), standard_stream(pg.api, 0, W1_EVENTS)), {}

    def append_each(store: Any, events: list[Any]) -> None:
        for event in events:
            store.append(event)

    benchmark.pedantic(append_each, setup=setup, rounds=3, iterations=1)
    assert pg.stores[-1].count_events() == W1_EVENTS
    _record(benchmark, pg, "W1 append x1", W1_EVENTS)


def test_w8_w2_batches(benchmark: Any, pg: PgImpl) -> None:
    if pg.key == "floor":
        copies: list[Floor] = []

        def floor_setup() -> tuple[tuple[Any, Any], dict[str, Any]]:
            pg.new()
            copies.append(Floor(pg.schemas[-1]))
            return (copies[-1], [copies[-1].rows(b) for b in store_batches(pg.api, W2_EVENTS)]), {}

        benchmark.pedantic(lambda floor, rows: floor.copy_batches(rows), setup=floor_setup, rounds=3)
        assert copies[-1].count() == W2_EVENTS
        _record(benchmark, pg, "W2 append_batch x1000", W2_EVENTS)
        return

    def setup() -> tuple[tuple[Any, list[list[Any]]], dict[str, Any]]:
        return (pg.new(), store_batches(pg.api, W2_EVENTS)), {}

    def append_batches(store: Any, batches: list[list[Any]]) -> None:
        for batch in batches:
            store.append_batch(batch)

    benchmark.pedantic(append_batches, setup=setup, rounds=3, iterations=1)
    assert pg.stores[-1].count_events() == W2_EVENTS
    _record(benchmark, pg, "W2 append_batch x1000", W2_EVENTS)


@pytest.fixture(scope="module")
def w3_store(pg: PgImpl) -> Any:
    store = pg.new()
    for batch in store_batches(pg.api, W3_PER_WORKFLOW * 10):
        store.append_batch(batch)
    return store


def test_w8_w3_read(benchmark: Any, pg: PgImpl, w3_store: Any) -> None:
    if pg.key == "floor":
        floor = Floor(pg.schemas[-1])
        n = benchmark.pedantic(floor.read_workflow, args=("wf-5",), rounds=5, iterations=1, warmup_rounds=1)
        assert n == W3_PER_WORKFLOW
        _record(benchmark, pg, "W3 read workflow", n)
        return

    def read() -> int:
        n = 0
        for event in w3_store.get_events_for_workflow("wf-5"):
            event.data.get("status")
            n += 1
        return n

    n = benchmark.pedantic(read, rounds=5, iterations=1, warmup_rounds=1)
    assert n == W3_PER_WORKFLOW
    _record(benchmark, pg, "W3 read workflow", n)


def test_w8_w4_rebuild(benchmark: Any, pg: PgImpl, w3_store: Any) -> None:
    if pg.key == "floor":
        floor = Floor(pg.schemas[-1])
        n = benchmark.pedantic(floor.read_workflow, args=("wf-5",), rounds=5, iterations=1, warmup_rounds=1)
        assert n == W3_PER_WORKFLOW
        _record(benchmark, pg, "W4 rebuild", W3_PER_WORKFLOW)
        return
    replayer = pg.replayer(w3_store)
    state = benchmark.pedantic(
        replayer.rebuild_workflow_state, args=("wf-5",), rounds=5, iterations=1, warmup_rounds=1
    )
    assert state is not None
    _record(benchmark, pg, "W4 rebuild", W3_PER_WORKFLOW)


_WRITER = """
import sys, time
from stabilize_events import PostgresEventStore
sys.path.insert(0, sys.argv[3])
from streams import ours_api, standard_stream
store = PostgresEventStore(sys.argv[1], schema=sys.argv[2])
mode = sys.argv[4]
if mode == "batches":
    events = standard_stream(ours_api(), int(sys.argv[5]), int(sys.argv[6]))
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    for i in range(0, len(events), 1000):
        store.append_batch(events[i : i + 1000])
    print(time.perf_counter() - t0, flush=True)
elif mode == "single":
    events = standard_stream(ours_api(), 99, int(sys.argv[5]))
    for event in events:
        time.sleep(0.02)
        print(time.time(), flush=True)
        store.append(event)
else:  # "committed": the time each append returned, i.e. its commit
    events = standard_stream(ours_api(), 98, int(sys.argv[5]))
    for event in events:
        time.sleep(0.02)
        store.append(event)
        print(time.time(), flush=True)
store.close()
"""


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )


def test_w8_four_processes_appending(benchmark: Any) -> None:
    impl = PgImpl("ours")
    try:
        store = impl.new()
        schema = impl.schemas[-1]
        per_process = W2_EVENTS // 4
        benches = str(Path(__file__).parent)

        def run() -> float:
            procs = [_spawn([_url(), schema, benches, "batches", str(k), str(per_process)]) for k in range(4)]
            for p in procs:
                assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            t0 = time.perf_counter()
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            for p in procs:
                p.communicate(timeout=600)
                assert p.returncode == 0
            return time.perf_counter() - t0

        wall = benchmark.pedantic(run, rounds=1, iterations=1)
        assert store.count_events() == 4 * per_process
        rate = 4 * per_process / wall
        benchmark.extra_info["events_per_second"] = rate
        print(f"\nW8 4 processes x append_batch x1000 [ours]: {rate:,.0f} ev/s total")
    finally:
        impl.cleanup()


def test_w8_notify_delay(benchmark: Any) -> None:
    impl = PgImpl("ours")
    try:
        store = impl.new()
        schema = impl.schemas[-1]
        waiter = store.open_notification_waiter()
        delays: list[float] = []

        def run() -> None:
            writer = _spawn([_url(), schema, str(Path(__file__).parent), "single", str(NOTIFY_EVENTS)])
            assert writer.stdout is not None
            position = 0
            starts: list[float] = []
            reader = threading.Thread(target=lambda: starts.extend(float(x) for x in writer.stdout or []))
            reader.start()
            while position < NOTIFY_EVENTS:
                if not waiter.wait(5.0):
                    continue
                now = time.time()
                events = store.get_events_since(position)
                for _ in events:
                    delays.append(now)
                position += len(events)
            writer.wait(timeout=60)
            reader.join(timeout=60)
            for i, start in enumerate(starts[: len(delays)]):
                delays[i] -= start

        benchmark.pedantic(run, rounds=1, iterations=1)
        waiter.close()
        ms = sorted(d * 1000 for d in delays)
        median, p99 = statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        benchmark.extra_info.update({"median_ms": median, "p99_ms": p99})
        print(
            f"\nW8 append call -> delivery through LISTEN/NOTIFY [ours]: "
            f"median {median:.1f} ms, p99 {p99:.1f} ms"
        )
    finally:
        impl.cleanup()


def _delivery_delays(store: Any, schema: str, start_follower: Any) -> list[float]:
    """Seconds from each append's commit in a writer process to its delivery here, through
    the follower ``start_follower(record)`` starts (``record(event)`` on each delivery; returns
    a function that stops it)."""
    delivered: dict[int, float] = {}
    done = threading.Event()

    def record(event: Any) -> None:
        delivered[event.sequence] = time.time()
        if len(delivered) >= NOTIFY_EVENTS:
            done.set()

    stop = start_follower(record)
    try:
        writer = _spawn([_url(), schema, str(Path(__file__).parent), "committed", str(NOTIFY_EVENTS)])
        out, _ = writer.communicate(timeout=300)
        assert writer.returncode == 0
        assert done.wait(60)
    finally:
        stop()
    commits = [float(x) for x in out.split()]
    sequences = sorted(delivered)
    return [delivered[s] - c for s, c in zip(sequences, commits, strict=True)]


def _report_delays(benchmark: Any, label: str, delays: list[float]) -> None:
    ms = sorted(d * 1000 for d in delays)
    median, p99 = statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    benchmark.extra_info.update({"median_ms": median, "p99_ms": p99})
    print(f"\nW8 commit in another process -> {label} [ours]: median {median:.1f} ms, p99 {p99:.1f} ms")


def _follow_with_runner(store: Any, record: Any) -> Any:
    """A `ProjectionRunner` (polling every 5 s) whose projection calls ``record``; its stop."""
    from stabilize_events import EventBus, ProjectionRunner
    from stabilize_events.projections import Projection

    class Timing(Projection):
        @property
        def name(self) -> str:
            return "timing"

        def apply(self, event: Any) -> None:
            record(event)

        def get_state(self) -> Any:
            return None

    runner = ProjectionRunner(store, Timing(), bus=EventBus(), poll_interval=5.0)
    runner.start()
    return runner.stop


def _follow_with_subscription(store: Any, record: Any) -> Any:
    """A `SubscriptionManager` (polling every 5 s) whose handler is ``record``; its stop."""
    from stabilize_events import SubscriptionManager

    manager = SubscriptionManager(store, poll_interval=5.0)
    manager.create_subscription("timing", record, start_from="beginning")
    manager.start()
    return manager.stop


@pytest.mark.parametrize(
    ("label", "follower"),
    [
        ("ProjectionRunner.apply", _follow_with_runner),
        ("SubscriptionManager handler", _follow_with_subscription),
    ],
    ids=["runner", "subscription"],
)
def test_w8_delivery_delay(benchmark: Any, label: str, follower: Any) -> None:
    impl = PgImpl("ours")
    try:
        store = impl.new()
        delays = benchmark.pedantic(
            _delivery_delays,
            args=(store, impl.schemas[-1], lambda record: follower(store, record)),
            rounds=1,
            iterations=1,
        )
        _report_delays(benchmark, label, delays)
    finally:
        impl.cleanup()
