"""Shared machinery of the benches: the two implementations, fresh stores, rate reporting.

A bench that takes the ``impl`` fixture runs once for `stabilize_events` and
once for the reference (``stabilize.events`` from PyPI); the reference half is
skipped, with the reason, when ``stabilize`` is not installed. Each bench
records ``events_per_second`` in ``benchmark.extra_info``; when both halves of
a workload ran, both get ``ratio_vs_reference`` (ours / reference), and the
terminal summary prints a table of all of them.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from streams import EventApi, env_int, ours_api, reference_api, store_batches

T = TypeVar("T")

HAVE_REFERENCE = importlib.util.find_spec("stabilize") is not None
REFERENCE_MISSING = "reference package `stabilize` is not installed (pip install '.[bench]')"


def remove_db(path: Path) -> None:
    """Delete an SQLite file with its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def db_bytes(path: Path) -> int:
    """Bytes the database occupies on disk: the file plus its WAL, if any."""
    return sum(
        Path(f"{path}{suffix}").stat().st_size for suffix in ("", "-wal") if Path(f"{path}{suffix}").exists()
    )


@dataclass
class Impl:
    """One implementation under test: its event classes and how to open and close its store."""

    key: str
    label: str
    api: EventApi
    open_store: Callable[..., Any]
    close_store: Callable[[Any, str], None]
    default_rounds: dict[str, int] = field(default_factory=dict)

    def url(self, path: Path) -> str:
        """The store URL of an SQLite file."""
        return f"sqlite:///{path}"

    def open(self, path: Path, **options: Any) -> Any:
        """A store on a file, tables created, the store's default settings unless ``options``."""
        return self.open_store(self.url(path), create_tables=True, **options)

    def open_filled(self, path: Path, events: int) -> Any:
        """A store on a new file holding ``events`` events of 10 standard streams, written as
        W2 writes them (batches of 1,000, workflows taking turns)."""
        store = self.open(path)
        for batch in store_batches(self.api, events):
            store.append_batch(batch)
        return store

    def close(self, store: Any, path: Path) -> None:
        """Release the store's database."""
        self.close_store(store, self.url(path))

    def rounds(self, workload: str, default: int) -> int:
        """Rounds for ``workload``: env ``BENCH_ROUNDS`` / ``BENCH_REF_ROUNDS``, else the default."""
        env = "BENCH_REF_ROUNDS" if self.key == "reference" else "BENCH_ROUNDS"
        return env_int(env, self.default_rounds.get(workload, default))


def ours_impl() -> Impl:
    from stabilize_events import SqliteEventStore

    def close(store: Any, _url: str) -> None:
        store.close()

    return Impl("ours", "stabilize_events", ours_api(), SqliteEventStore, close)


def reference_impl() -> Impl:
    from stabilize.events import SqliteEventStore
    from stabilize.persistence.connection import get_connection_manager

    def open_store(url: str, create_tables: bool = True, **options: Any) -> Any:
        if options:  # the reference takes its PRAGMAs from its global SqliteConfig
            raise NotImplementedError(f"reference store options {options} are not wired up")
        return SqliteEventStore(url, create_tables=create_tables)

    def close(_store: Any, url: str) -> None:
        get_connection_manager().close_sqlite_connection(url)

    # The reference is 10-100x slower: one round of W1/W2 already takes seconds.
    rounds = {"W1": 1, "W2": 1, "W3": 3}
    return Impl("reference", "stabilize 0.33.1 (reference)", reference_api(), open_store, close, rounds)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every bench that asks for ``impl`` against both implementations."""
    if "impl" in metafunc.fixturenames:
        params = [
            pytest.param("ours", id="ours"),
            pytest.param(
                "reference",
                id="reference",
                marks=pytest.mark.skipif(not HAVE_REFERENCE, reason=REFERENCE_MISSING),
            ),
        ]
        metafunc.parametrize("impl", params, indirect=True, scope="module")


_IMPLS: dict[str, Impl] = {}


@pytest.fixture(scope="module")
def impl(request: pytest.FixtureRequest) -> Impl:
    """The implementation this bench runs against (parametrized: ours, reference)."""
    key: str = request.param
    if key not in _IMPLS:
        _IMPLS[key] = ours_impl() if key == "ours" else reference_impl()
    return _IMPLS[key]


@dataclass
class FreshStores:
    """Opens a new store on a new file for each round, closing and deleting the previous one."""

    impl: Impl
    directory: Path
    name: str
    opened: list[tuple[Any, Path]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    made: int = 0

    def new(self) -> Any:
        """Close the last store, then open one on a new file."""
        self.close_all()
        self.made += 1
        path = self.directory / f"{self.name}-{self.impl.key}-{os.getpid()}-{self.made}.db"
        remove_db(path)
        store = self.impl.open(path, **self.options)
        self.opened.append((store, path))
        return store

    @property
    def last(self) -> Any:
        """The store opened last."""
        return self.opened[-1][0]

    def close_all(self, delete: bool = True) -> None:
        """Close every open store (and delete its file)."""
        while self.opened:
            store, path = self.opened.pop()
            self.impl.close(store, path)
            if delete:
                remove_db(path)


@pytest.fixture
def fresh_stores(impl: Impl, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FreshStores]:
    """A `FreshStores` for this bench, emptied at its end."""
    stores = FreshStores(impl, tmp_path, request.node.originalname)
    yield stores
    stores.close_all()


@dataclass
class Rate:
    """One measured rate, and the extra_info dict it was written to."""

    label: str
    events_per_second: float
    extra_info: dict[str, Any]


_RESULTS: dict[str, dict[str, Rate]] = {}


def first_round(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """``fn(*args)`` and the seconds it took: a bench's first round, timed apart from the
    rounds pytest-benchmark repeats (it stands for a script's one call in a fresh process)."""
    import time

    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def record_rate(
    benchmark: Any, impl: Impl, workload: str, events: int, first_round_seconds: float | None = None
) -> float | None:
    """Store ``events_per_second`` (per the median round) in ``benchmark.extra_info``.

    Also ``events_per_second_best`` (fastest round), ``events``, and, given the time of
    the first round (see `first_round`), ``events_per_second_first``. When the other
    implementation already ran this workload, both get ``ratio_vs_reference``.
    Returns the rate, or None when benchmarking is disabled.
    """
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return None
    median, best = stats.stats.median, stats.stats.min
    eps = events / median
    info = benchmark.extra_info
    info.update(
        workload=workload,
        implementation=impl.label,
        events=events,
        events_per_second=round(eps),
        events_per_second_best=round(events / best),
    )
    if first_round_seconds is not None:
        info["events_per_second_first"] = round(events / first_round_seconds)
    pair = _RESULTS.setdefault(workload, {})
    pair[impl.key] = Rate(impl.label, eps, info)
    if "ours" in pair and "reference" in pair:
        ratio = round(pair["ours"].events_per_second / pair["reference"].events_per_second, 2)
        for rate in pair.values():
            rate.extra_info["ratio_vs_reference"] = ratio
    return eps


def record_extra(workload: str, label: str, events_per_second: float, info: dict[str, Any]) -> None:
    """Add a rate measured by hand (not a benchmark round) to the summary table."""
    _RESULTS.setdefault(workload, {})[label] = Rate(label, events_per_second, info)


def cpu_probe_seconds() -> float:
    """Seconds a fixed pure-Python loop takes (best of 3): how fast this machine runs just now.

    A shared VM's speed changes from minute to minute, often by 2x; the probe at both ends
    of a session says which absolute rates can be compared with another run's.
    """
    import time

    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i
        best = min(best, time.perf_counter() - start)
    return best


_PROBES: list[float] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    """Probe the machine's speed before the first bench."""
    _PROBES.append(cpu_probe_seconds())


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print events/s per workload, ours beside the reference, and their ratio."""
    if not _RESULTS:
        return
    tr = terminalreporter
    _PROBES.append(cpu_probe_seconds())
    tr.section("events per second (median round)")
    tr.write_line(
        f"machine probe (2,000,000-step Python loop, best of 3): {_PROBES[0]:.3f} s before the benches, "
        f"{_PROBES[-1]:.3f} s after"
    )
    tr.write_line(
        f"{'workload':<28} {'stabilize_events':>18} {'reference':>14} {'ratio':>8}  "
        f"ours: first round / best round"
    )
    for workload in sorted(_RESULTS):
        pair = _RESULTS[workload]
        ours = pair.get("ours")
        ref = pair.get("reference")
        others = {k: v for k, v in pair.items() if k not in ("ours", "reference")}
        ratio = f"{ours.events_per_second / ref.events_per_second:.2f}x" if ours and ref else "-"
        ours_text = f"{ours.events_per_second:,.0f}" if ours else "-"
        ref_text = f"{ref.events_per_second:,.0f}" if ref else "-"
        rounds = ""
        if ours and "events_per_second_first" in ours.extra_info:
            info = ours.extra_info
            rounds = f"  {info['events_per_second_first']:,} / {info['events_per_second_best']:,}"
        if ours or ref:
            tr.write_line(f"{workload:<28} {ours_text:>18} {ref_text:>14} {ratio:>8}{rounds}")
        for key, rate in others.items():
            tr.write_line(f"{workload + ' ' + key:<28} {rate.events_per_second:>18,.0f} {'-':>14} {'-':>8}")


def settled(value: T) -> T:
    """``value`` (a round's freshly built events), with the heap collected and frozen.

    A round's setup builds hundreds of thousands of Python objects; frozen, the
    collector passes that the timed region sets off do not walk them again, so
    the round measures the workload and not the setup's garbage. The
    ``_quiet_heap`` fixture unfreezes everything when the bench ends.
    """
    import gc

    gc.collect()
    gc.freeze()
    return value


@pytest.fixture(autouse=True)
def _quiet_heap() -> Iterator[None]:
    """Each bench starts with no garbage and the earlier benches' survivors out of the collector's way."""
    import gc

    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()
