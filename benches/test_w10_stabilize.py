"""W10: a real Stabilize app with event sourcing on, Stabilize's event store beside ours.

``W10_WORKFLOWS`` (50) workflows of 5 stages in a chain, each stage one ``PythonTask`` running
a one-line script, are stored, started through Stabilize's ``Orchestrator`` and run to the end
by its ``QueueProcessor.process_all``. The workflow store, the queue and the event store are
on ONE SQLite file (a new one per round), so events recorded inside a handler's store
transaction join it. Variants, in this order, in one session:

- ``reference``: ``stabilize.events.configure_event_sourcing(stabilize.events.SqliteEventStore(url))``,
  Stabilize's defaults (its connections use ``journal_mode=DELETE``, ``synchronous=NORMAL``).
- ``reference-wal``: the same with Stabilize's own opt-in ``STABILIZE_SQLITE_JOURNAL_MODE=WAL``.
  Our store puts the file in WAL mode, which also speeds up all of Stabilize's own commits; this
  variant shows how much of the difference is the journal mode alone.
- ``ours-A``: ``stabilize.events.configure_event_sourcing(stabilize_events.SqliteEventStore(url))``
  (Stabilize's recorder writing through our store).
- ``ours-B``: ``stabilize_events.configure_event_sourcing(stabilize_events.SqliteEventStore(url))``
  (our recorder and bus installed into Stabilize's handlers).

Measured per variant: the time spent recording, summed around the configured recorder's
``_record`` and ``_record_batch`` (the instance's methods are wrapped with a timer), divided by
the events recorded; the wall time of starting all workflows and draining the queue. Then,
over the stores of the last round: rebuilding all workflows through Stabilize's
``EventReplayer`` over Stabilize's store and over ours (``ours-A``'s), and through our
``EventReplayer`` over ours. Targets: recording with ours <= 1/4 of Stabilize's time per event;
Stabilize's replayer over ours >= 1.5x faster than over Stabilize's store; ours >= 10x.

Stabilize's message deduplicator is sized for the run (``expected_items`` =
max(5,000, 100 x workflows)) in every variant alike: its default bloom filter of 100,000 items
costs ~50 ms of pure Python per message in its fill-ratio check, which would make the run
several minutes long without touching anything measured here.

Run with ``-s`` to see the summary block; every figure is also in ``extra_info``.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any

import pytest
from conftest import HAVE_REFERENCE, REFERENCE_MISSING, record_extra, remove_db
from streams import env_int

pytestmark = pytest.mark.skipif(not HAVE_REFERENCE, reason=REFERENCE_MISSING)

WORKFLOWS = env_int("W10_WORKFLOWS", 50)
STAGES = 5
RUN_ROUNDS = env_int("W10_ROUNDS", 1)
REBUILD_ROUNDS = env_int("W10_REBUILD_ROUNDS", 15)

#: Variant key -> what it is, for the report.
VARIANTS: dict[str, str] = {
    "reference": "Stabilize's SqliteEventStore, Stabilize's defaults (journal_mode=DELETE)",
    "reference-wal": "Stabilize's SqliteEventStore, STABILIZE_SQLITE_JOURNAL_MODE=WAL",
    "ours-A": "ours via stabilize.events.configure_event_sourcing (Stabilize's recorder)",
    "ours-B": "ours via stabilize_events.configure_event_sourcing (our recorder)",
}

#: Rebuild case -> (replayer package, variant whose store it reads).
REBUILDS: dict[str, tuple[str, str]] = {
    "stabilize-replayer-over-reference": ("stabilize", "reference"),
    "stabilize-replayer-over-ours": ("stabilize", "ours-A"),
    "our-replayer-over-ours": ("stabilize_events", "ours-A"),
    # The floor of any rebuild of our store: Python's sqlite3 reading each workflow's rows.
    "floor-sqlite3-read-of-ours": ("sqlite3", "ours-A"),
}


# --- one run -------------------------------------------------------------------------------


class RecordTimer:
    """Sums the time spent in a recorder's ``_record`` / ``_record_batch`` and counts their events.

    Wraps the methods on the recorder instance (so Stabilize's handlers, which call
    ``recorder.record_*`` and through it ``self._record``, go through the timer). A call
    nested in another timed call on the same thread is not counted twice.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.events = 0
        self._lock = threading.Lock()
        self._depth = threading.local()

    def wrap(self, recorder: Any) -> None:
        """Time ``recorder._record`` and ``recorder._record_batch`` from now on."""
        for name in ("_record", "_record_batch"):
            setattr(recorder, name, self._timed(getattr(recorder, name)))

    def _timed(self, method: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._depth, "n", 0)
            self._depth.n = depth + 1
            start = time.perf_counter()
            try:
                result = method(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self._depth.n = depth
            if depth == 0:
                with self._lock:
                    self.seconds += elapsed
                    self.events += len(result) if isinstance(result, list) else 1
            return result

        return timed

    @property
    def us_per_event(self) -> float:
        """Mean microseconds of recording per event recorded."""
        return self.seconds / self.events * 1e6 if self.events else float("nan")


@dataclass
class W10Run:
    """One run of the app: its stores, what was recorded, and how long it took."""

    variant: str
    path: Path
    url: str
    event_store: Any
    workflow_store: Any
    workflow_ids: list[str]
    timer: RecordTimer
    start: Callable[[], None]
    wall_seconds: float = 0.0
    journal_mode: str = ""
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        """Close the stores and delete the file."""
        for close in self.closers:
            close()
        remove_db(self.path)


def _reset_event_sourcing() -> None:
    """Switch off both packages' recorders and buses, and give Stabilize a fresh deduplicator."""
    import stabilize.events as theirs
    import stabilize_events as ours
    from stabilize.queue.dedup import get_deduplicator, reset_deduplicator

    ours.reset_event_recorder()
    ours.reset_event_bus()
    theirs.reset_event_recorder()
    theirs.reset_event_bus()
    reset_deduplicator()
    get_deduplicator(expected_items=max(5_000, 100 * WORKFLOWS))


def _workflow(index: int) -> Any:
    """A workflow of ``STAGES`` chained stages, each one ``PythonTask`` running a one-line script."""
    from stabilize import StageExecution, TaskExecution, Workflow

    stages = [
        StageExecution(
            ref_id=f"s{n}",
            type="python",
            name=f"Step {n}",
            requisite_stage_ref_ids={f"s{n - 1}"} if n else set(),
            context={"script": f"RESULT = {{'step': {n}}}"},
            tasks=[
                TaskExecution.create(
                    name=f"Run step {n}", implementing_class="python", stage_start=True, stage_end=True
                )
            ],
        )
        for n in range(STAGES)
    ]
    return Workflow.create(application="w10", name=f"w10-{index}", stages=stages)


def prepare_run(variant: str, directory: Path, round_no: int) -> W10Run:
    """Stores, queue, event sourcing and the stored workflows of one run on a new file (untimed)."""
    import stabilize.events as theirs
    import stabilize_events as ours
    from stabilize import (
        Orchestrator,
        PythonTask,
        QueueProcessor,
        SqliteQueue,
        SqliteWorkflowStore,
        TaskRegistry,
    )
    from stabilize.persistence.connection import get_connection_manager
    from stabilize.persistence.sqlite_config import reset_sqlite_config

    path = directory / f"w10-{variant}-{os.getpid()}-{round_no}.db"
    remove_db(path)
    url = f"sqlite:///{path}"
    _reset_event_sourcing()
    if variant == "reference-wal":
        os.environ["STABILIZE_SQLITE_JOURNAL_MODE"] = "WAL"
    reset_sqlite_config()
    try:
        workflow_store = SqliteWorkflowStore(url, create_tables=True)
        queue = SqliteQueue(url, table_name="queue_messages")
        queue._create_table()  # as Stabilize's own examples do
        event_store: Any
        recorder: Any
        if variant.startswith("reference"):
            event_store = theirs.SqliteEventStore(url, create_tables=True)
            theirs.configure_event_sourcing(event_store)
            recorder = theirs.get_event_recorder()
        elif variant == "ours-A":
            event_store = ours.SqliteEventStore(url)
            theirs.configure_event_sourcing(event_store)
            recorder = theirs.get_event_recorder()
        else:
            event_store = ours.SqliteEventStore(url)
            ours.configure_event_sourcing(event_store)
            recorder = ours.get_event_recorder()
        timer = RecordTimer()
        timer.wrap(recorder)
        registry = TaskRegistry()
        registry.register("python", PythonTask)
        processor = QueueProcessor(queue, store=workflow_store, task_registry=registry)
        orchestrator = Orchestrator(queue)
        workflows = [_workflow(i) for i in range(WORKFLOWS)]
        for workflow in workflows:
            workflow_store.store(workflow)
    finally:
        os.environ.pop("STABILIZE_SQLITE_JOURNAL_MODE", None)
        reset_sqlite_config()

    def start() -> None:
        for workflow in workflows:
            orchestrator.start(workflow)
        processor.process_all(timeout=600.0)

    run = W10Run(variant, path, url, event_store, workflow_store, [w.id for w in workflows], timer, start)
    if not variant.startswith("reference"):
        run.closers.append(event_store.close)
    run.closers.append(lambda: get_connection_manager().close_sqlite_connection(url))
    return run


def execute(run: W10Run) -> None:
    """Run every workflow to its end (the timed part)."""
    began = time.perf_counter()
    run.start()
    run.wall_seconds = time.perf_counter() - began


def check_run(run: W10Run) -> None:
    """Every workflow succeeded, and the event store holds exactly the events recorded."""
    statuses = {run.workflow_store.retrieve(i).status.name for i in run.workflow_ids}
    assert statuses == {"SUCCEEDED"}, f"{run.variant}: workflow statuses {statuses}"
    stored = sum(len(run.event_store.get_events_for_workflow(i)) for i in run.workflow_ids)
    assert stored == run.timer.events > 0, f"{run.variant}: {stored} stored, {run.timer.events} recorded"
    with sqlite3.connect(run.path) as connection:
        run.journal_mode = str(connection.execute("PRAGMA journal_mode").fetchone()[0])
    connection.close()


# --- state kept between the benches of this module ------------------------------------------


@dataclass
class RunFigures:
    """The figures of one variant: per-round recording cost and wall time, and events per run."""

    us_per_event: list[float]
    wall_seconds: list[float]
    events: int
    journal_mode: str

    @property
    def us(self) -> float:
        return statistics.median(self.us_per_event)

    @property
    def wall(self) -> float:
        return statistics.median(self.wall_seconds)


_LAST_RUN: dict[str, W10Run] = {}
_RUN_FIGURES: dict[str, RunFigures] = {}
#: Rebuild case -> (median seconds of one rebuild of every workflow, events in its store).
_REBUILD_SECONDS: dict[str, tuple[float, int]] = {}
_REPORTED: list[bool] = []


@pytest.fixture(scope="module")
def w10_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The directory of this module's databases; every store still open is closed at its end."""
    directory: Path = tmp_path_factory.mktemp("w10")
    yield directory
    while _LAST_RUN:
        _LAST_RUN.popitem()[1].close()
    _reset_event_sourcing()


def keep(run: W10Run) -> None:
    """Keep ``run``'s stores for the rebuild benches, closing the variant's previous run."""
    previous = _LAST_RUN.pop(run.variant, None)
    if previous is not None:
        previous.close()
    _LAST_RUN[run.variant] = run


def stores_of(variant: str, directory: Path) -> W10Run:
    """The last run of ``variant``; made now, untimed, when its bench did not run."""
    if variant not in _LAST_RUN:
        run = prepare_run(variant, directory, 0)
        execute(run)
        check_run(run)
        keep(run)
    return _LAST_RUN[variant]


# --- the benches ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_w10_run(benchmark: Any, variant: str, w10_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs: list[W10Run] = []

    def setup() -> tuple[tuple[W10Run], dict[str, Any]]:
        run = prepare_run(variant, w10_dir, len(runs) + 1)
        runs.append(run)
        return (run,), {}

    benchmark.pedantic(execute, setup=setup, rounds=RUN_ROUNDS, iterations=1, warmup_rounds=0)
    for run in runs:
        check_run(run)
    for run in runs[:-1]:
        run.close()
    last = runs[-1]
    keep(last)
    _reset_event_sourcing()

    figures = RunFigures(
        [r.timer.us_per_event for r in runs],
        [r.wall_seconds for r in runs],
        last.timer.events,
        last.journal_mode,
    )
    _RUN_FIGURES[variant] = figures
    benchmark.extra_info.update(
        workload="W10 run",
        variant=variant,
        setup=VARIANTS[variant],
        workflows=WORKFLOWS,
        events=figures.events,
        record_us_per_event=round(figures.us, 1),
        record_us_per_event_rounds=[round(u, 1) for u in figures.us_per_event],
        record_seconds=round(last.timer.seconds, 4),
        wall_seconds=round(figures.wall, 3),
        journal_mode_after=figures.journal_mode,
    )
    report_when_complete(capsys)


@pytest.mark.parametrize("case", list(REBUILDS))
def test_w10_rebuild(benchmark: Any, case: str, w10_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package, variant = REBUILDS[case]
    run = stores_of(variant, w10_dir)
    ids = run.workflow_ids
    if package == "sqlite3":
        floor_read = _sqlite3_reader(run.path)
        rows = benchmark.pedantic(
            lambda: [floor_read(i) for i in ids], rounds=REBUILD_ROUNDS, iterations=1, warmup_rounds=1
        )
        assert sum(len(r) for r in rows) == run.timer.events
    else:
        if package == "stabilize":
            from stabilize.events import EventReplayer as TheirReplayer

            replayer: Any = TheirReplayer(run.event_store)
        else:
            from stabilize_events import EventReplayer

            replayer = EventReplayer(run.event_store)

        def rebuild_all() -> list[dict[str, Any]]:
            return [replayer.rebuild_workflow_state(i) for i in ids]

        states = benchmark.pedantic(rebuild_all, rounds=REBUILD_ROUNDS, iterations=1, warmup_rounds=1)
        for state in states:
            assert state["status"] == "SUCCEEDED"
            assert len(state["stages"]) == STAGES and len(state["tasks"]) == STAGES
    seconds = benchmark.stats.stats.median if getattr(benchmark, "stats", None) else float("nan")
    events = run.timer.events
    _REBUILD_SECONDS[case] = (seconds, events)
    benchmark.extra_info.update(
        workload="W10 rebuild",
        case=case,
        workflows=len(ids),
        events=events,
        events_per_second=round(events / seconds),
        milliseconds=round(seconds * 1000, 2),
    )
    report_when_complete(capsys)


def _sqlite3_reader(path: Path) -> Callable[[str], list[Any]]:
    """Reads one workflow's rows (the columns a fold reads) as the store's own index serves
    them, through Python's sqlite3: the least any rebuild from this file must do."""
    conn = sqlite3.connect(path, check_same_thread=False)
    keys = dict(conn.execute("SELECT workflow_id, workflow_key FROM event_log GROUP BY workflow_id"))
    sql = (
        "SELECT sequence, event_id, event_type, timestamp_us, entity_type, entity_id, data, schema_version "
        "FROM event_log WHERE workflow_key = ? AND workflow_id = ? AND sequence > 0 ORDER BY sequence"
    )

    def read(workflow_id: str) -> list[Any]:
        return conn.execute(sql, (keys[workflow_id], workflow_id)).fetchall()

    return read


# --- the report -----------------------------------------------------------------------------


def report_when_complete(capsys: pytest.CaptureFixture[str]) -> None:
    """Once every figure is in, add W10's rows to the summary table and print its block."""
    if _REPORTED or set(_RUN_FIGURES) != set(VARIANTS) or set(_REBUILD_SECONDS) != set(REBUILDS):
        return
    _REPORTED.append(True)
    ref, ref_wal = _RUN_FIGURES["reference"], _RUN_FIGURES["reference-wal"]
    for path in ("A", "B"):
        mine = _RUN_FIGURES[f"ours-{path}"]
        for label, figures in (("ours", mine), ("reference", ref), ("reference WAL", ref_wal)):
            info = {"us_per_event": round(figures.us, 1)}
            record_extra(f"W10 recording, {path}", label, 1e6 / figures.us, info)
            record_extra(f"W10 run wall, {path}", label, figures.events / figures.wall, {})
    rebuild = {case: events / seconds for case, (seconds, events) in _REBUILD_SECONDS.items()}
    their_over_theirs = rebuild["stabilize-replayer-over-reference"]
    record_extra("W10 rebuild, their replayer", "ours", rebuild["stabilize-replayer-over-ours"], {})
    record_extra("W10 rebuild, their replayer", "reference", their_over_theirs, {})
    record_extra("W10 rebuild, our replayer", "ours", rebuild["our-replayer-over-ours"], {})
    record_extra("W10 rebuild, our replayer", "reference", their_over_theirs, {})

    lines = [
        f"W10: {WORKFLOWS} workflows x {STAGES} stages through Stabilize's QueueProcessor, one SQLite file"
    ]
    for variant, figures in _RUN_FIGURES.items():
        lines.append(
            f"  {variant:<14} recording {figures.us:8.1f} us/event ({figures.events} events), "
            f"wall {figures.wall:6.2f} s, journal_mode {figures.journal_mode}  [{VARIANTS[variant]}]"
        )
    for path in ("A", "B"):
        us = _RUN_FIGURES[f"ours-{path}"].us
        lines.append(
            f"  recording ours-{path}/reference: {us / ref.us:.3f} (target <= 0.25); "
            f"ours-{path}/reference-wal: {us / ref_wal.us:.3f}"
        )
    for case, (seconds, _events) in _REBUILD_SECONDS.items():
        lines.append(f"  rebuild {case:<34} {seconds * 1000:8.2f} ms ({rebuild[case]:,.0f} ev/s)")
    lines.append(
        f"  Stabilize's replayer, over ours vs over its store: "
        f"{rebuild['stabilize-replayer-over-ours'] / their_over_theirs:.2f}x (target >= 1.5x); "
        f"our replayer over ours vs Stabilize's over its store: "
        f"{rebuild['our-replayer-over-ours'] / their_over_theirs:.2f}x (target >= 10x); "
        f"ceiling (sqlite3 reading the rows alone) "
        f"{rebuild['floor-sqlite3-read-of-ours'] / their_over_theirs:.2f}x"
    )
    with capsys.disabled():
        print("\n" + "\n".join(lines))
