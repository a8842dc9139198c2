"""Projections: the standard stream applied to both built-in projections, ours beside the reference.

One finished standard stream of ``PROJ_EVENTS`` events (20,000 by default) is
stored once per implementation. Each round builds a fresh
`WorkflowTimelineProjection` for its workflow and a fresh
`StageMetricsProjection`, applies every event to both, one ``apply`` call at a
time, and reads both states. Three measures:

- *as published*: the events ``append_batch`` returned, i.e. what the recorder
  publishes on the bus, payloads already Python objects in both packages;
- *read back*: events read from the store before each round (the read is not
  timed). Our events decode their payload and timestamp on first access, so
  that decoding is inside the timed apply; the reference decoded them during
  the untimed read;
- *read + apply*: the read from the store timed too, i.e. what rebuilding both
  projections from the store costs.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Impl, record_rate, remove_db
from streams import env_int, standard_stream

PER_WORKFLOW = env_int("PROJ_EVENTS", 20_000)
WORKFLOW = "wf-0"


def projection_classes(impl: Impl) -> tuple[Any, Any]:
    """(WorkflowTimelineProjection, StageMetricsProjection) of the implementation."""
    name = "stabilize_events.projections" if impl.key == "ours" else "stabilize.events.projections"
    module = importlib.import_module(name)
    return module.WorkflowTimelineProjection, module.StageMetricsProjection


@pytest.fixture(scope="module")
def proj_store(impl: Impl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, list[Any]]]:
    """A store holding one finished standard stream, and the events as appended."""
    path: Path = tmp_path_factory.mktemp("proj") / f"proj-{impl.key}.db"
    store = impl.open(path)
    stream = standard_stream(impl.api, 0, PER_WORKFLOW, finished=True)
    published = [
        e for start in range(0, len(stream), 1000) for e in store.append_batch(stream[start : start + 1000])
    ]
    assert published[-1].sequence == PER_WORKFLOW
    yield store, published
    impl.close(store, path)
    remove_db(path)


def apply_both(events: list[Any], timeline_cls: Any, metrics_cls: Any) -> int:
    """Apply every event to a fresh timeline and fresh metrics; read both states."""
    timeline = timeline_cls(WORKFLOW)
    metrics = metrics_cls()
    for event in events:
        timeline.apply(event)
        metrics.apply(event)
    entries = timeline.get_state().entries
    stages = metrics.get_state()
    assert stages["python"].success_count == (PER_WORKFLOW - 3) // 4
    return len(entries)


def test_projections_as_published(benchmark: Any, impl: Impl, proj_store: tuple[Any, list[Any]]) -> None:
    _store, published = proj_store
    classes = projection_classes(impl)
    entries = benchmark.pedantic(
        apply_both,
        args=(published, *classes),
        rounds=impl.rounds("PROJ", 20),
        iterations=1,
        warmup_rounds=1,
    )
    assert entries == PER_WORKFLOW
    record_rate(benchmark, impl, "Projections (as published)", len(published))


def test_projections_read_back(benchmark: Any, impl: Impl, proj_store: tuple[Any, list[Any]]) -> None:
    store, _published = proj_store
    classes = projection_classes(impl)

    def fresh_events() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (store.get_events_for_workflow(WORKFLOW), *classes), {}

    entries = benchmark.pedantic(
        apply_both,
        setup=fresh_events,
        rounds=impl.rounds("PROJ", 20),
        iterations=1,
        warmup_rounds=1,
    )
    assert entries == PER_WORKFLOW
    record_rate(benchmark, impl, "Projections (read back)", PER_WORKFLOW)


def catch_up(store: Any, timeline_cls: Any, metrics_cls: Any) -> int:
    """Rebuild both projections from the store: read the workflow's events, then apply them."""
    return apply_both(store.get_events_for_workflow(WORKFLOW), timeline_cls, metrics_cls)


def test_projections_catch_up(benchmark: Any, impl: Impl, proj_store: tuple[Any, list[Any]]) -> None:
    store, _published = proj_store
    entries = benchmark.pedantic(
        catch_up,
        args=(store, *projection_classes(impl)),
        rounds=impl.rounds("PROJ", 20),
        iterations=1,
        warmup_rounds=1,
    )
    assert entries == PER_WORKFLOW
    record_rate(benchmark, impl, "Projections (read + apply)", PER_WORKFLOW)
