"""W3: ``get_events_for_workflow`` of one 20,000-event workflow in a 200,000-event store.

The store holds 10 standard streams of 20,000 events (env ``W3_EVENTS`` sets the
per-workflow size), written as in W2, once per implementation before timing. Each
round reads workflow ``wf-5`` and reads ``e.data.get("status")`` of every event.
Target: >= 1,000,000 ev/s. The first round (untimed by pytest-benchmark, a warm-up before)
is timed apart and reported as ``events_per_second_first``.

Right after it, the floors of its two halves on this machine (see `floors.py`): stdlib
``sqlite3`` loading the 14 columns of the same rows, and the least build of their payloads.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Impl, first_round, ours_impl, record_rate, remove_db
from floors import W3_COLUMNS, bench_scan, least_builder, record_floor
from streams import WORKFLOWS, env_int

PER_WORKFLOW = env_int("W3_EVENTS", 20_000)
WORKFLOW = "wf-5"


@pytest.fixture(scope="module")
def w3_store(impl: Impl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A file-backed store of 10 workflows x ``PER_WORKFLOW`` events, built untimed."""
    path: Path = tmp_path_factory.mktemp("w3") / f"w3-{impl.key}.db"
    store = impl.open_filled(path, PER_WORKFLOW * WORKFLOWS)
    yield store
    impl.close(store, path)
    remove_db(path)


def read_workflow(store: Any, workflow_id: str = WORKFLOW) -> int:
    """Read every event of a workflow and its ``status``; return how many there were."""
    n = 0
    for event in store.get_events_for_workflow(workflow_id):
        event.data.get("status")
        n += 1
    return n


def test_w3_read_workflow(benchmark: Any, impl: Impl, w3_store: Any) -> None:
    # The store was only written so far: the first round is the process's first read (as a
    # script's one read is), timed apart and reported beside the best.
    first_n, first_seconds = first_round(read_workflow, w3_store)
    n = benchmark.pedantic(
        read_workflow, args=(w3_store,), rounds=impl.rounds("W3", 20), iterations=1, warmup_rounds=0
    )
    assert n == first_n == PER_WORKFLOW
    record_rate(benchmark, impl, "W3 read workflow", n, first_round_seconds=first_seconds)


# --- W3's floors (see floors.py) -----------------------------------------------------------


@pytest.fixture(scope="module")
def w3_floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """A store like W3's (ours) and the payloads of ``wf-5``, built untimed."""
    path: Path = tmp_path_factory.mktemp("w3-floor") / "w3-floor.db"
    store = ours_impl().open_filled(path, PER_WORKFLOW * WORKFLOWS)
    try:
        payloads = [dict(e.data) for e in store.get_events_for_workflow(WORKFLOW)]
    finally:
        store.close()
    assert len(payloads) == PER_WORKFLOW
    yield path, payloads
    remove_db(path)


def test_w3_floor_scan(benchmark: Any, w3_floor: tuple[Path, list[dict[str, Any]]]) -> None:
    assert bench_scan(benchmark, w3_floor[0], WORKFLOW, W3_COLUMNS) == PER_WORKFLOW
    record_floor(benchmark, "W3 read workflow", "sqlite3 scan of its rows", PER_WORKFLOW)


def test_w3_floor_build(benchmark: Any, w3_floor: tuple[Path, list[dict[str, Any]]]) -> None:
    payloads = w3_floor[1]
    # Payload strings may all be shared: only the dicts are new.
    build = least_builder(payloads, lambda _key, _value: False)
    assert build() == payloads

    def read() -> int:
        # The workload's own loop; the payloads are freed before the round ends, as W3's are.
        n = 0
        for data in build():
            data.get("status")
            n += 1
        return n

    assert benchmark.pedantic(read, rounds=20, warmup_rounds=1) == PER_WORKFLOW
    record_floor(benchmark, "W3 read workflow", "least build of its payloads", PER_WORKFLOW)
