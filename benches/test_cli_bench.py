"""The operator's commands on a 1,000,000-event store, beside the reference's nearest equivalent.

The store holds 2,000 workflows of 500 events (env ``CLI_EVENTS`` sets the total), written in
batches of 1,000 taken from the workflows in turn, so one workflow's events are spread through
the file. Measured, through ``stabilize_events.cli.main`` in this process (output discarded):

- ``events --workflow WF --limit 0 --json``: every event of one workflow; target < 0.5 s;
- ``state WF --json``: the workflow's state rebuilt from its events; target < 0.5 s;
- ``export FILE``: the whole store as JSON Lines; target >= 300,000 ev/s;
- ``import FILE`` into a new file, sequences kept, in a child process; target >= 200,000 ev/s,
  memory bounded (the child's peak RSS is reported).

The reference has no command line; its nearest equivalents, read in Python on its own SQLite
store holding the same events: ``get_events_for_workflow`` then ``to_dict()`` of each (events),
``EventReplayer.rebuild_workflow_state`` (state), paging ``get_events_since`` and
``json.dumps(e.to_dict())`` of each (export), ``Event.from_dict`` of each line and
``append_batch`` per 5,000 (import). Run: ``python -m pytest benches/test_cli_bench.py
--benchmark-only -s`` (several minutes; the reference's store takes most of it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import remove_db
from streams import EventApi, env_int, ours_api, reference_api

TOTAL = env_int("CLI_EVENTS", 1_000_000)
PER_WORKFLOW = 500
WORKFLOWS = max(1, TOTAL // PER_WORKFLOW)
PROBE = f"wf-{WORKFLOWS // 2}"
HAVE_REFERENCE = importlib.util.find_spec("stabilize") is not None

_FIGURES: dict[str, dict[str, str]] = {}


def _batches(api: EventApi) -> Iterator[list[Any]]:
    """``TOTAL`` events: each workflow's 500 in runs of 100, workflows taking turns."""
    meta = {
        f"wf-{k}": api.EventMetadata(correlation_id=f"wf-{k}", source_handler="Bench")
        for k in range(WORKFLOWS)
    }
    E, T, K = api.Event, api.EventType, api.EntityType
    kinds = [
        (T.STAGE_STARTED, K.STAGE),
        (T.TASK_STARTED, K.TASK),
        (T.TASK_COMPLETED, K.TASK),
        (T.STAGE_COMPLETED, K.STAGE),
    ]
    batch: list[Any] = []
    for start in range(0, PER_WORKFLOW, 100):
        for k in range(WORKFLOWS):
            wf = f"wf-{k}"
            for i in range(start, start + 100):
                if i == 0:
                    batch.append(
                        E(
                            event_type=T.WORKFLOW_CREATED,
                            entity_type=K.WORKFLOW,
                            entity_id=wf,
                            workflow_id=wf,
                            version=1,
                            data={"name": wf, "application": "bench"},
                            metadata=meta[wf],
                        )
                    )
                    continue
                if i == 1:
                    batch.append(
                        E(
                            event_type=T.WORKFLOW_STARTED,
                            entity_type=K.WORKFLOW,
                            entity_id=wf,
                            workflow_id=wf,
                            version=2,
                            data={"initial_stage_ids": [f"{wf}-stage-0"]},
                            metadata=meta[wf],
                        )
                    )
                    continue
                step = (i - 2) // 4
                event_type, entity_type = kinds[(i - 2) % 4]
                kind = "stage" if entity_type == K.STAGE else "task"
                batch.append(
                    E(
                        event_type=event_type,
                        entity_type=entity_type,
                        entity_id=f"{wf}-{kind}-{step}",
                        workflow_id=wf,
                        version=i,
                        data={
                            "name": f"step-{step}",
                            "type": "python",
                            "status": "SUCCEEDED",
                            "stage_id": f"{wf}-stage-{step}",
                            "outputs": {"x": i},
                        },
                        metadata=meta[wf],
                    )
                )
                if len(batch) == 1000:
                    yield batch
                    batch = []
    if batch:
        yield batch


def _record(benchmark: Any, name: str, ours: str, reference: str | None = None) -> None:
    benchmark.extra_info[name] = ours
    row = _FIGURES.setdefault(name, {})
    row["ours"] = ours
    if reference is not None:
        row["reference"] = reference


@pytest.fixture(scope="module")
def ours_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from stabilize_events import SqliteEventStore

    path = tmp_path_factory.mktemp("cli") / "ours.db"
    store = SqliteEventStore(f"sqlite:///{path}")
    for batch in _batches(ours_api()):
        store.append_batch(batch)
    store.close()
    yield f"sqlite:///{path}"
    remove_db(path)


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not HAVE_REFERENCE:
        pytest.skip("reference package `stabilize` is not installed (pip install '.[bench]')")
    from stabilize.events import SqliteEventStore
    from stabilize.persistence.connection import get_connection_manager

    path = tmp_path_factory.mktemp("cli-ref") / "ref.db"
    url = f"sqlite:///{path}"
    store = SqliteEventStore(url, create_tables=True)
    for batch in _batches(reference_api()):
        store.append_batch(batch)
    yield store
    get_connection_manager().close_sqlite_connection(url)
    remove_db(path)


def _cli(*argv: str) -> float:
    from stabilize_events.cli import main

    sink = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(io.StringIO()):
        code = main(list(argv))
    took = time.perf_counter() - t0
    assert code == 0
    return took


def _timed(fn: Any, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def test_events_for_one_workflow(benchmark: Any, ours_store: str, reference_store: Any) -> None:
    def reference() -> None:
        rows = [e.to_dict() for e in reference_store.get_events_for_workflow(PROBE)]
        assert len(rows) == PER_WORKFLOW

    argv = ("events", "--store", ours_store, "--workflow", PROBE, "--limit", "0", "--json")
    ours = min(_cli(*argv) for _ in range(3))
    benchmark.pedantic(lambda: _cli(*argv), rounds=1, iterations=1)
    ref = _timed(reference)
    _record(benchmark, "events --workflow (500 events), s", f"{ours:.3f}", f"{ref:.3f}")


def test_state_of_one_workflow(benchmark: Any, ours_store: str, reference_store: Any) -> None:
    from stabilize.events import EventReplayer

    ours = min(_cli("state", PROBE, "--store", ours_store, "--json") for _ in range(3))
    benchmark.pedantic(lambda: _cli("state", PROBE, "--store", ours_store, "--json"), rounds=1, iterations=1)
    ref = _timed(lambda: EventReplayer(reference_store).rebuild_workflow_state(PROBE))
    _record(benchmark, "state (500 events), s", f"{ours:.3f}", f"{ref:.3f}")


_CHILD = (
    "import sys\n"
    "from stabilize_events.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
    "print('maxrss_kb', hwm, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _import_in_child(dump: Path, target: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of ``stabilize-events import`` in a child process, measured by
    the child itself (VmHWM: ``ru_maxrss`` would carry the parent's peak over the exec)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "python")}
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, "import", str(dump), "--store", f"sqlite:///{target}"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    took = time.perf_counter() - t0
    kb = next(int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("maxrss_kb"))
    return took, kb / 1024


def test_export_then_import(benchmark: Any, ours_store: str, reference_store: Any, tmp_path: Path) -> None:
    dump = tmp_path / "dump.jsonl"
    took = _cli("export", str(dump), "--store", ours_store)
    lines = sum(1 for _ in dump.open("rb"))
    assert lines == WORKFLOWS * PER_WORKFLOW

    def reference_export() -> None:
        with (tmp_path / "ref.jsonl").open("w") as out:
            after = 0
            while True:
                page = reference_store.get_events_since(after, 5000)
                if not page:
                    break
                out.write("".join(json.dumps(e.to_dict(), default=str) + "\n" for e in page))
                after = page[-1].sequence

    ref_export = _timed(reference_export, rounds=1)
    _record(benchmark, "export, events/s", f"{lines / took:,.0f}", f"{lines / ref_export:,.0f}")

    took, peak = benchmark.pedantic(
        lambda: _import_in_child(dump, tmp_path / "imported.db"), rounds=1, iterations=1
    )

    from stabilize.events import Event as RefEvent
    from stabilize.events import SqliteEventStore as RefStore
    from stabilize.persistence.connection import get_connection_manager

    ref_url = f"sqlite:///{tmp_path / 'ref-import.db'}"
    ref_target = RefStore(ref_url, create_tables=True)

    def reference_import() -> None:
        batch: list[Any] = []
        with (tmp_path / "ref.jsonl").open() as source:
            for line in source:
                batch.append(RefEvent.from_dict(json.loads(line)))
                if len(batch) == 5000:
                    ref_target.append_batch(batch)
                    batch = []
        if batch:
            ref_target.append_batch(batch)

    ref_import = _timed(reference_import, rounds=1)
    get_connection_manager().close_sqlite_connection(ref_url)
    _record(benchmark, "import, events/s", f"{lines / took:,.0f}", f"{lines / ref_import:,.0f}")
    _record(benchmark, "import, peak RSS of the process, MB", f"{peak:,.0f}")


def teardown_module() -> None:
    if _FIGURES:
        print(f"\nCLI on {WORKFLOWS * PER_WORKFLOW:,} events ({WORKFLOWS:,} workflows of {PER_WORKFLOW}):")
        print(f"  {'measure':<36} {'ours':>14} {'reference':>14}")
        for name, row in _FIGURES.items():
            print(f"  {name:<36} {row.get('ours', '-'):>14} {row.get('reference', '-'):>14}")
