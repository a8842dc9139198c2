"""Floors: what this machine needs for each half of W3 and W4, with none of our code in them.

W3 reads the 20,000 events of workflow ``wf-5`` and each one's ``data.get("status")``; W4
folds the same rows into the reference's answer, 10,000 stage and task dicts holding 20,000
distinct timestamp strings. Each has two halves with a floor that no implementation on this
Python and this SQLite goes under, measured in the same module as the workload, right after
it (the VM's speed changes from minute to minute):

- the scan: the standard library's ``sqlite3`` finding the 20,000 rows through the index the
  store uses and loading each column the workload reads once (all 14 for W3, the fold's 7 for
  W4), inside one C-level query: SQLite's own per-row work, no row handed to Python or Rust.
- the build: the least work that builds the Python objects the workload hands back, every
  loop in C (``map`` over CPython's own ``dict.copy``, ``bytes.decode`` and
  ``dict.__setitem__``): a copy of a template per dict with its values already in place where
  they may be shared (ids, names, statuses, numbers), a new string per timestamp from ready
  UTF-8 bytes, one store per new object. Nothing is decoded and no time is formatted, and the
  cycle collector is paused, as in our code. W3's build also runs the workload's own loop,
  ``.get("status")`` of each payload, and frees the payloads within the round, as W3 does;
  it builds no event objects, which only makes it lower.

Each floor is reported as the rate it alone would allow (events / its median time), and the
summary adds the rate both together allow, ``1 / (1/scan + 1/build)``: the workload's ceiling
on this machine at that moment for an implementation that does both halves on one thread.
(By default our store reads a large result's rows on a second thread and decodes their
payloads there while later rows are read (the store options ``split_reads`` and
``decode_ahead``), so W3 may come out above it; the build stays on the thread that holds the
GIL.)
"""

from __future__ import annotations

import gc
import sqlite3
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import record_extra

W3_COLUMNS = (
    "sequence, event_id, event_type, timestamp_us, entity_type, entity_id, data, schema_version, "
    "workflow_id, version, correlation_id, causation_id, actor, source_handler"
)
W4_COLUMNS = "event_id, event_type, timestamp_us, entity_type, entity_id, data, schema_version"


def scan_sql(columns: str) -> str:
    """One query loading each of ``columns`` of one workflow's rows once, by one scalar
    ``max`` per row (NULL only where a nullable column is), and counting the rows."""
    return f"SELECT count(*), count(max({columns})) FROM event_log WHERE workflow_key = ? AND workflow_id = ?"


def least_builder(roots: list[dict[str, Any]], fresh: Callable[[str, Any], bool]) -> Callable[[], list[Any]]:
    """A function building dicts equal to ``roots`` with the least work (see the module).

    Every dict in ``roots`` (at any depth) gets a template holding its values, with None
    where a new object goes: a nested dict, or a string ``fresh(key, value)`` says must be
    new. Prepared untimed; the returned function makes only the copies and new strings.
    """
    templates: list[dict[str, Any]] = []
    text_owner: list[int] = []
    text_keys: list[str] = []
    texts: list[bytes] = []
    child_owner: list[int] = []
    child_keys: list[str] = []
    children: list[int] = []

    def visit(d: dict[str, Any]) -> int:
        at = len(templates)
        template: dict[str, Any] = {}
        templates.append(template)
        for key, value in d.items():
            if isinstance(value, dict):
                template[key] = None
                child = visit(value)
                child_owner.append(at)
                child_keys.append(key)
                children.append(child)
            elif isinstance(value, str) and fresh(key, value):
                template[key] = None
                text_owner.append(at)
                text_keys.append(key)
                texts.append(value.encode())
            else:
                template[key] = value
        return at

    root_nodes = [visit(root) for root in roots]
    copy, decode, store = dict.copy, bytes.decode, dict.__setitem__

    def build() -> list[Any]:
        gc.disable()
        try:
            nodes = list(map(copy, templates))
            at = nodes.__getitem__
            deque(map(store, map(at, text_owner), text_keys, map(decode, texts)), 0)
            deque(map(store, map(at, child_owner), child_keys, map(at, children)), 0)
            return list(map(at, root_nodes))
        finally:
            gc.enable()

    return build


_FLOORS: dict[str, dict[str, float]] = {}


def record_floor(benchmark: Any, workload: str, label: str, events: int) -> None:
    """Report a floor as the rate it allows; with both of a workload's, also their ceiling."""
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return
    eps = events / stats.stats.median
    benchmark.extra_info.update(workload=workload, floor=label, rate_allowed=round(eps))
    floors = _FLOORS.setdefault(workload, {})
    floors[label] = eps
    record_extra(workload, f"floor: {label}", eps, benchmark.extra_info)
    if len(floors) == 2:
        record_extra(workload, "ceiling: both floors", 1 / sum(1 / r for r in floors.values()), {})


def bench_scan(benchmark: Any, path: Path, workflow: str, columns: str) -> int:
    """Time `scan_sql` over ``workflow``'s rows in the file at ``path``; the rows it counted."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        # The store's readers keep a 32 MiB page cache; so does this one.
        conn.execute("PRAGMA cache_size=-32768")
        (key,) = conn.execute(
            "SELECT workflow_key FROM event_log WHERE workflow_id = ? LIMIT 1", (workflow,)
        ).fetchone()
        sql, args = scan_sql(columns), (key, workflow)
        row = benchmark.pedantic(lambda: conn.execute(sql, args).fetchone(), rounds=20, warmup_rounds=1)
    finally:
        conn.close()
    rows: int = row[0]
    return rows
