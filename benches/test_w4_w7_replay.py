"""W4 and W7: ``EventReplayer.rebuild_workflow_state``, ours beside the reference.

W4: rebuild workflow ``wf-5`` (20,000 events, env ``W4_EVENTS``) in a file-backed store of
10 standard streams written as in W2 (200,000 events), built once per implementation,
untimed. Target: >= 2,000,000 ev/s. Right after it, the floors of its two halves on this
machine (see `floors.py`): stdlib ``sqlite3`` loading the fold's columns of the same rows, and
the least build of the answer.

W7: rebuild the spec's long stream (one workflow ``long``: 100 stages whose tasks emit a
bulk of progress, context and retry events). Target, at 1,000,000 events: >= 3,000,000 ev/s,
peak RSS growth < 50 MB, and with ``SnapshotPolicy(every_n_events=100)`` a second rebuild
replays at most 100 events.

- ``test_w7_rebuild_long[ours|reference]``: both implementations on the same long stream of
  ``W7_REF_EVENTS`` (50,000) events, for a ratio measured in one run. The reference needs
  about 25 s per million events, so it is not run at full size.
- ``test_w7_rebuild_long_full``: ours only, ``W7_EVENTS`` (1,000,000) events. Also reports the
  peak RSS growth of one rebuild in a fresh subprocess (peak RSS before and after), and
  the snapshot run: events replayed and time of a first and a second rebuild through a
  `SnapshotStore` with ``every_n_events=100``, and of a third after 99 more events.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Impl, ours_impl, record_extra, record_rate, remove_db
from floors import W4_COLUMNS, bench_scan, least_builder, record_floor
from streams import BATCH, WORKFLOWS, EventApi, env_int

W4_PER_WORKFLOW = env_int("W4_EVENTS", 20_000)
W4_WORKFLOW = "wf-5"
W7_EVENTS = env_int("W7_EVENTS", 1_000_000)
W7_REF_EVENTS = env_int("W7_REF_EVENTS", 50_000)
LONG = "long"
STAGES = 100
#: Events of the long stream outside the bulk: 2 at the start, 4 per stage, 1 at the end.
LONG_FRAME = 2 + 4 * STAGES + 1


def replayer_for(impl: Impl, store: Any, snapshot_every: int | None = None) -> Any:
    """An `EventReplayer` of ``impl`` over ``store`` (with a snapshot policy if asked; ours only)."""
    if impl.key == "reference":
        from stabilize.events import EventReplayer as ReferenceReplayer

        return ReferenceReplayer(store)
    from stabilize_events.replay import EventReplayer
    from stabilize_events.snapshots import SnapshotPolicy, SnapshotStore

    if snapshot_every is None:
        return EventReplayer(store)
    return EventReplayer(store, SnapshotStore(store, SnapshotPolicy(every_n_events=snapshot_every)))


def standard_shape(n: int) -> tuple[int, int]:
    """(stages, tasks) in the rebuilt state of a standard stream of ``n`` events."""
    body = range(n - 2)
    return len({i // 4 for i in body if i % 4 in (0, 3)}), len({i // 4 for i in body if i % 4 in (1, 2)})


# --- the long stream -----------------------------------------------------------------------


def long_stream(api: EventApi, n: int, batch: int = BATCH) -> Iterator[list[Any]]:
    """The spec's long stream of exactly ``n`` events (n >= 403), in batches of ``batch``.

    ``workflow.created``, ``workflow.started``; then for each of 100 stages ``stage.started``,
    ``task.started``, the stage's share of the bulk, ``task.completed``, ``stage.completed``;
    then ``workflow.completed``. The bulk repeats a cycle of ten (``i`` counts bulk events):
    eight ``custom.progress`` on the task (``{"chunk": "token text", "n": i}``), one
    ``context.updated`` on the workflow (``{"context": {"progress": i}}``) and one
    ``task.retried`` (``{"name": ..., "retry_count": k}``, k the task's retries so far).
    """
    bulk = n - LONG_FRAME
    if bulk < 0:
        raise ValueError(f"the long stream needs at least {LONG_FRAME} events, got n={n}")
    Event, EventType, EntityType = api.Event, api.EventType, api.EntityType
    meta = api.EventMetadata(correlation_id=LONG, source_handler="Bench")
    out: list[Any] = []
    version = 0

    def emit(event_type: Any, entity_type: Any, entity_id: str, data: dict[str, Any]) -> Iterator[list[Any]]:
        nonlocal out, version
        version += 1
        out.append(
            Event(
                event_type=event_type,
                entity_type=entity_type,
                entity_id=entity_id,
                workflow_id=LONG,
                version=version,
                data=data,
                metadata=meta,
            )
        )
        if len(out) >= batch:
            yield out
            out = []

    workflow, stage_kind, task_kind = EntityType.WORKFLOW, EntityType.STAGE, EntityType.TASK
    yield from emit(EventType.WORKFLOW_CREATED, workflow, LONG, {"application": "bench", "name": LONG})
    yield from emit(EventType.WORKFLOW_STARTED, workflow, LONG, {"context": {}})
    i = 0
    for s in range(STAGES):
        stage, task = f"{LONG}-stage-{s}", f"{LONG}-task-{s}"
        name = f"step-{s}"
        share = bulk // STAGES + (1 if s < bulk % STAGES else 0)
        yield from emit(EventType.STAGE_STARTED, stage_kind, stage, {"name": name, "type": "python"})
        yield from emit(EventType.TASK_STARTED, task_kind, task, {"name": name, "stage_id": stage})
        retries = 0
        for _ in range(share):
            phase = i % 10
            if phase < 8:
                yield from emit(EventType.CUSTOM, task_kind, task, {"chunk": "token text", "n": i})
            elif phase == 8:
                yield from emit(EventType.CONTEXT_UPDATED, workflow, LONG, {"context": {"progress": i}})
            else:
                retries += 1
                yield from emit(
                    EventType.TASK_RETRIED, task_kind, task, {"name": name, "retry_count": retries}
                )
            i += 1
        yield from emit(
            EventType.TASK_COMPLETED, task_kind, task, {"status": "SUCCEEDED", "outputs": {"tokens": share}}
        )
        yield from emit(EventType.STAGE_COMPLETED, stage_kind, stage, {"status": "SUCCEEDED"})
    yield from emit(EventType.WORKFLOW_COMPLETED, workflow, LONG, {"status": "SUCCEEDED"})
    if out:
        yield out


def check_long_state(state: dict[str, Any], n: int) -> None:
    """What a rebuild of the long stream of ``n`` events must hold."""
    assert state["status"] == "SUCCEEDED"
    assert len(state["stages"]) == STAGES and len(state["tasks"]) == STAGES
    assert state["context"] == {"progress": max(i for i in range(n - LONG_FRAME) if i % 10 == 8)}
    assert all(t["status"] == "SUCCEEDED" for t in state["tasks"].values())


def build_long_store(impl: Impl, path: Path, n: int) -> Any:
    store = impl.open(path)
    written = 0
    for batch in long_stream(impl.api, n):
        store.append_batch(batch)
        written += len(batch)
    assert written == n
    return store


# --- W4 ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def w4_store(impl: Impl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """10 standard streams of ``W4_PER_WORKFLOW`` events in one file, built untimed."""
    path: Path = tmp_path_factory.mktemp("w4") / f"w4-{impl.key}.db"
    store = impl.open_filled(path, W4_PER_WORKFLOW * WORKFLOWS)
    yield store
    impl.close(store, path)
    remove_db(path)


def test_w4_rebuild_workflow(benchmark: Any, impl: Impl, w4_store: Any) -> None:
    replayer = replayer_for(impl, w4_store)
    ours = impl.key == "ours"
    state = benchmark.pedantic(
        replayer.rebuild_workflow_state,
        args=(W4_WORKFLOW,),
        rounds=impl.rounds("W4", 20 if ours else 3),
        iterations=1,
        warmup_rounds=1 if ours else 0,
    )
    stages, tasks = standard_shape(W4_PER_WORKFLOW)
    assert (len(state["stages"]), len(state["tasks"])) == (stages, tasks)
    assert state["application"] == "bench" and state["status"] == "RUNNING"
    record_rate(benchmark, impl, "W4 rebuild workflow", W4_PER_WORKFLOW)


@pytest.fixture(scope="module")
def w4_floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A store like W4's (ours) and our rebuilt state of ``wf-5``, built untimed."""
    path: Path = tmp_path_factory.mktemp("w4-floor") / "w4-floor.db"
    store = ours_impl().open_filled(path, W4_PER_WORKFLOW * WORKFLOWS)
    try:
        state = replayer_for(ours_impl(), store).rebuild_workflow_state(W4_WORKFLOW)
    finally:
        store.close()
    assert (len(state["stages"]), len(state["tasks"])) == standard_shape(W4_PER_WORKFLOW)
    yield path, state
    remove_db(path)


def test_w4_floor_scan(benchmark: Any, w4_floor: tuple[Path, dict[str, Any]]) -> None:
    assert bench_scan(benchmark, w4_floor[0], W4_WORKFLOW, W4_COLUMNS) == W4_PER_WORKFLOW
    record_floor(benchmark, "W4 rebuild workflow", "sqlite3 scan of its rows", W4_PER_WORKFLOW)


def test_w4_floor_build(benchmark: Any, w4_floor: tuple[Path, dict[str, Any]]) -> None:
    state = w4_floor[1]
    # Each timestamp is its own string; ids, names and statuses may be shared.
    build = least_builder([state], lambda key, _value: key.endswith("_time"))
    (built,) = benchmark.pedantic(build, rounds=20, warmup_rounds=1)
    assert built == state
    record_floor(benchmark, "W4 rebuild workflow", "least build of its answer", W4_PER_WORKFLOW)


# --- W7 ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def w7_store(impl: Impl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The long stream of ``W7_REF_EVENTS`` events, for both implementations."""
    path: Path = tmp_path_factory.mktemp("w7") / f"w7-{impl.key}.db"
    store = build_long_store(impl, path, W7_REF_EVENTS)
    yield store
    impl.close(store, path)
    remove_db(path)


def test_w7_rebuild_long(benchmark: Any, impl: Impl, w7_store: Any) -> None:
    replayer = replayer_for(impl, w7_store)
    ours = impl.key == "ours"
    state = benchmark.pedantic(
        replayer.rebuild_workflow_state,
        args=(LONG,),
        rounds=impl.rounds("W7", 10 if ours else 3),
        iterations=1,
        warmup_rounds=1 if ours else 0,
    )
    check_long_state(state, W7_REF_EVENTS)
    record_rate(benchmark, impl, f"W7 rebuild long ({W7_REF_EVENTS:,})", W7_REF_EVENTS)


#: Run in a fresh interpreter. Peak RSS is read from ``VmHWM`` in /proc/self/status where there
#: is one: Linux carries ``ru_maxrss`` over from the parent across fork and exec, so in a child of
#: a big pytest process it starts at the parent's peak and would hide the growth.
_RSS_PROBE = """
import json, resource, sys, time
from stabilize_events import SqliteEventStore
from stabilize_events.replay import EventReplayer

def peak_kb():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]), "VmHWM"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"

store = SqliteEventStore(sys.argv[1], create_tables=False)
replayer = EventReplayer(store)
replayer.rebuild_workflow_state("no-such-workflow")  # everything loaded, nothing read
before, source = peak_kb()
start = time.perf_counter()
state = replayer.rebuild_workflow_state(sys.argv[2])
seconds = time.perf_counter() - start
after, _ = peak_kb()
report = {"before_kb": before, "after_kb": after, "source": source, "seconds": seconds}
print(json.dumps({**report, "stages": len(state["stages"])}))
"""


def rss_growth(url: str) -> dict[str, Any]:
    """Peak RSS (KiB) before and after one rebuild of the long stream, in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, url, LONG], capture_output=True, text=True, check=True, timeout=600
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["stages"] == STAGES
    return result


@pytest.fixture
def w7_full_db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "w7-full.db"
    yield path
    remove_db(path)


def test_w7_rebuild_long_full(benchmark: Any, w7_full_db: Path) -> None:
    ours = ours_impl()
    store = build_long_store(ours, w7_full_db, W7_EVENTS)
    try:
        replayer = replayer_for(ours, store)
        state = benchmark.pedantic(
            replayer.rebuild_workflow_state,
            args=(LONG,),
            rounds=ours.rounds("W7 full", 5),
            iterations=1,
            warmup_rounds=1,
        )
        check_long_state(state, W7_EVENTS)
        eps = record_rate(benchmark, ours, f"W7 rebuild long ({W7_EVENTS:,})", W7_EVENTS)

        rss = rss_growth(ours.url(w7_full_db))
        growth_mb = (rss["after_kb"] - rss["before_kb"]) / 1024

        # Snapshots: a first rebuild replays everything and takes one; a second replays what
        # came after it (nothing); after 99 more events a third replays those 99.
        snapshotting = replayer_for(ours, store, snapshot_every=100)
        start = time.perf_counter()
        first = snapshotting.replay(LONG)
        first_seconds = time.perf_counter() - start
        start = time.perf_counter()
        second = snapshotting.replay(LONG)
        second_seconds = time.perf_counter() - start
        api = ours.api
        more = [
            api.Event(
                event_type=api.EventType.CUSTOM,
                entity_type=api.EntityType.TASK,
                entity_id=f"{LONG}-task-{STAGES - 1}",
                workflow_id=LONG,
                version=W7_EVENTS + k,
                data={"chunk": "late", "n": k},
                metadata=api.EventMetadata(correlation_id=LONG, source_handler="Bench"),
            )
            for k in range(99)
        ]
        store.append_batch(more)
        start = time.perf_counter()
        third = snapshotting.replay(LONG)
        third_seconds = time.perf_counter() - start
    finally:
        ours.close(store, w7_full_db)

    assert first.events_replayed == W7_EVENTS and not first.from_snapshot
    assert second.from_snapshot and second.events_replayed <= 100
    assert third.from_snapshot and third.events_replayed == 99
    assert second.final_state == first.final_state
    full_seconds = W7_EVENTS / eps if eps else first_seconds
    benchmark.extra_info.update(
        peak_rss_before_mb=round(rss["before_kb"] / 1024, 1),
        peak_rss_source=rss["source"],
        peak_rss_growth_mb=round(growth_mb, 1),
        rss_probe_rebuild_seconds=round(rss["seconds"], 3),
        first_rebuild_with_policy_seconds=round(first_seconds, 3),
        second_rebuild_events_replayed=second.events_replayed,
        second_rebuild_seconds=round(second_seconds, 6),
        second_rebuild_speedup=round(full_seconds / second_seconds, 1),
        third_rebuild_after_99_events_replayed=third.events_replayed,
        third_rebuild_seconds=round(third_seconds, 6),
    )
    # The second rebuild's state stands for all W7_EVENTS events: its equivalent rate.
    record_extra(f"W7 rebuild long ({W7_EVENTS:,})", "2nd, from snapshot", W7_EVENTS / second_seconds, {})
    print(
        f"\nW7: {W7_EVENTS:,} events rebuilt at {eps or 0:,.0f} ev/s; peak RSS growth {growth_mb:.1f} MB; "
        f"with every_n_events=100: first rebuild {first.events_replayed:,} events in {first_seconds:.3f} s, "
        f"second {second.events_replayed} events in {second_seconds * 1000:.2f} ms "
        f"({full_seconds / second_seconds:,.0f}x faster than a full rebuild), "
        f"third after 99 more events replayed {third.events_replayed} in {third_seconds * 1000:.2f} ms"
    )
