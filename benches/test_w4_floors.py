"""W4's floors: what this machine needs for the two halves of a rebuild, with none of our code.

W4 (`test_w4_w7_replay.py`) rebuilds workflow ``wf-5`` of W4's store: it reads 20,000 rows
and builds the reference's answer, 10,000 stage and task dicts holding 20,000 distinct
timestamp strings. Each half has a floor that no implementation on this Python and this
SQLite goes under, measured here in the same run as W4 itself:

- ``test_w4_floor_answer``: the least work that builds the very dict our rebuild returns,
  every loop in C (``map``/``zip`` over CPython's own ``dict.copy``, ``bytes.decode`` and
  ``dict.__setitem__``): one copy of a template per stage and task with its shared values
  already in place (ids, names, statuses), a new string for each timestamp from ready
  UTF-8 bytes, a copy per ``outputs`` dict, one store per new value, and the two id maps.
  The cycle collector is paused, as in our rebuild. No payload is decoded and no time
  formatted; any builder does at least this.
- ``test_w4_floor_scan``: the standard library's ``sqlite3`` finding the same 20,000 rows
  through the same index and loading each column a fold reads (``event_id, event_type,
  timestamp_us, entity_type, entity_id, data, schema_version``) once, all inside one C-level
  query: SQLite's own per-row work, with no row handed to Python or Rust.

Each is reported as the W4 rate it alone would allow (20,000 events / its median time), and
the summary adds the rate both together allow (``1 / (1/a + 1/b)``): W4's ceiling on this
machine at this moment.
"""

from __future__ import annotations

import gc
import sqlite3
from collections import deque
from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import pytest
from conftest import ours_impl, record_extra, remove_db
from streams import WORKFLOWS, store_batches
from test_w4_w7_replay import W4_PER_WORKFLOW, W4_WORKFLOW, replayer_for, standard_shape

WORKLOAD = "W4 rebuild workflow"

#: Each of the fold's columns of one workflow's rows loaded once, by one scalar call per row
#: (``max`` of them, never NULL: the columns are NOT NULL), counted; nothing returned per row.
SCAN_SQL = (
    "SELECT count(max(event_id, event_type, timestamp_us, entity_type, entity_id, data, schema_version)) "
    "FROM event_log WHERE workflow_key = ? AND workflow_id = ?"
)

_FLOORS: dict[str, float] = {}


@pytest.fixture(scope="module")
def w4_floor_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """W4's store (ours), and the state our rebuild of ``wf-5`` returns, built untimed."""
    ours = ours_impl()
    path: Path = tmp_path_factory.mktemp("w4-floor") / "w4-floor.db"
    store = ours.open(path)
    try:
        for batch in store_batches(ours.api, W4_PER_WORKFLOW * WORKFLOWS):
            store.append_batch(batch)
        state = replayer_for(ours, store).rebuild_workflow_state(W4_WORKFLOW)
    finally:
        ours.close(store, path)
    assert (len(state["stages"]), len(state["tasks"])) == standard_shape(W4_PER_WORKFLOW)
    yield path, state
    remove_db(path)


def record_floor(benchmark: Any, label: str) -> None:
    """Report a floor as the W4 rate it allows; with both measured, also their combined ceiling."""
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return
    eps = W4_PER_WORKFLOW / stats.stats.median
    benchmark.extra_info.update(workload=WORKLOAD, floor=label, w4_rate_allowed=round(eps))
    _FLOORS[label] = eps
    record_extra(WORKLOAD, f"floor: {label}", eps, benchmark.extra_info)
    if len(_FLOORS) == 2:
        both = 1 / sum(1 / rate for rate in _FLOORS.values())
        record_extra(WORKLOAD, "ceiling: both floors", both, {})


def least_builder(state: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """A function that builds a dict equal to ``state`` with the least work (see the module).

    Prepared untimed: per stage and task a template holding its shared values (None where a
    new object goes), the UTF-8 bytes of its timestamps and a template of each dict value.
    """
    sections = ("stages", "tasks")
    templates: list[dict[str, Any]] = []
    owners: list[int] = []  # entity index of each new value, timestamps first, then dicts
    keys: list[str] = []
    texts: list[bytes] = []
    dict_owners: list[int] = []
    dict_keys: list[str] = []
    dict_templates: list[dict[str, Any]] = []
    for section in sections:
        for entity in state[section].values():
            template: dict[str, Any] = {}
            for key, value in entity.items():
                if isinstance(value, dict):
                    template[key] = None
                    dict_owners.append(len(templates))
                    dict_keys.append(key)
                    dict_templates.append(dict(value))
                elif key.endswith("_time") and isinstance(value, str):
                    template[key] = None
                    owners.append(len(templates))
                    keys.append(key)
                    texts.append(value.encode())
                else:
                    template[key] = value
            templates.append(template)
    ids = [list(state[section]) for section in sections]
    top = {k: v for k, v in state.items() if k not in sections}
    all_owners, all_keys = owners + dict_owners, keys + dict_keys
    stages_count = len(ids[0])
    copy, decode, store = dict.copy, bytes.decode, dict.__setitem__

    def build() -> dict[str, Any]:
        # Our rebuild pauses the cycle collector while it builds; so does the floor.
        gc.disable()
        try:
            entities = list(map(copy, templates))
            values = chain(map(decode, texts), map(copy, dict_templates))
            deque(map(store, map(entities.__getitem__, all_owners), all_keys, values), 0)
            answer = top.copy()
            answer["stages"] = dict(zip(ids[0], entities[:stages_count], strict=True))
            answer["tasks"] = dict(zip(ids[1], entities[stages_count:], strict=True))
            return answer
        finally:
            gc.enable()

    return build


def test_w4_floor_answer(benchmark: Any, w4_floor_db: tuple[Path, dict[str, Any]]) -> None:
    _, state = w4_floor_db
    build = least_builder(state)
    built = benchmark.pedantic(build, rounds=20, iterations=1, warmup_rounds=1)
    assert built == state
    record_floor(benchmark, "least build of the answer")


def test_w4_floor_scan(benchmark: Any, w4_floor_db: tuple[Path, dict[str, Any]]) -> None:
    path, _ = w4_floor_db
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        # The store's readers keep a 32 MiB page cache; so does this one.
        conn.execute("PRAGMA cache_size=-32768")
        (key,) = conn.execute(
            "SELECT workflow_key FROM event_log WHERE workflow_id = ? LIMIT 1", (W4_WORKFLOW,)
        ).fetchone()
        scan = conn.execute

        def run() -> tuple[Any, ...]:
            row: tuple[Any, ...] = scan(SCAN_SQL, (key, W4_WORKFLOW)).fetchone()
            return row

        row = benchmark.pedantic(run, rounds=20, iterations=1, warmup_rounds=1)
    finally:
        conn.close()
    assert row[0] == W4_PER_WORKFLOW
    record_floor(benchmark, "sqlite3 scan of its rows")
