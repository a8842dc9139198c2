"""Shared fixtures: one `store` fixture run against every store, and event factories.

``store`` is parametrized over ``sqlite-file`` (a fresh file in ``tmp_path``),
``sqlite-memory`` (``sqlite:///:memory:``), ``in-memory`` (`InMemoryEventStore`)
and ``postgres`` (`PostgresEventStore` in a fresh schema of the server named by
``STABILIZE_EVENTS_POSTGRES_URL``; skipped, naming the variable, when it is unset),
so every test that takes it states the contract once and checks it on each backend.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stabilize_events
from stabilize_events import (
    EntityType,
    Event,
    EventMetadata,
    EventStore,
    EventType,
    InMemoryEventStore,
    SqliteEventStore,
)

STORE_KINDS = ("sqlite-file", "sqlite-memory", "in-memory", "postgres")

#: The environment variable naming the PostgreSQL server the ``postgres`` store kind uses.
POSTGRES_URL_VAR = "STABILIZE_EVENTS_POSTGRES_URL"


def postgres_url() -> str:
    """The test server's URL; skips the test (naming the variable) when it is not set."""
    url = os.environ.get(POSTGRES_URL_VAR)
    if not url:
        pytest.skip(
            f"{POSTGRES_URL_VAR} not set: no PostgreSQL server to test against "
            f"(`source .ci/postgres && pg_setup` starts a throwaway one)"
        )
    return url


def open_postgres(tmp_path: Path, name: str = "events.db", **options: Any) -> Any:
    """A `PostgresEventStore` in a new, empty schema of its own (named after the test, ``name``
    and a random suffix: hypothesis runs a test many times in one ``tmp_path``)."""
    from stabilize_events import PostgresEventStore

    tag = hashlib.sha1(str(tmp_path / name).encode()).hexdigest()[:12]
    schema = f"t_{tag}_{uuid.uuid4().hex[:12]}"
    _postgres_schemas.append(schema)
    return PostgresEventStore(postgres_url(), create_tables=True, schema=schema, **options)


def postgres_cli_url() -> str:
    """The command line's URL (``postgresql://...?schema=NAME``) of a new schema on the test
    server, dropped when the session ends; its tables are made by the first command that
    writes. Skips the test when there is no server."""
    url = postgres_url()
    schema = f"t_cli_{uuid.uuid4().hex[:16]}"
    _postgres_schemas.append(schema)
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def postgres_schema_url() -> tuple[str, str]:
    """A new, empty schema of the test server and a URL whose search_path is that schema
    (as a deployment of Stabilize's `PostgresEventStore` names its schema); dropped at the end."""
    import psycopg

    schema = f"s_{uuid.uuid4().hex[:16]}"
    _postgres_schemas.append(schema)
    url = postgres_url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema, f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


def kill_upgrade_midway(url: str, chunk: int, chunks: int = 3) -> None:
    """Run ``stabilize-events upgrade URL --apply --chunk-size CHUNK`` in a child and kill it
    (SIGKILL) once it has reported ``chunks`` chunks copied. The child reports each chunk on
    its stderr, which is then no longer read: with enough chunks left to fill the pipe's
    buffer (64 KiB, the caller makes sure), it is blocked mid-copy when killed."""
    import signal
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-m", "stabilize_events", "upgrade", url, "--apply", "--chunk-size", str(chunk)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert child.stderr is not None
    seen = 0
    for line in child.stderr:
        if line.startswith("copying events:"):
            seen += 1
            if seen == chunks:
                break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    child.stderr.close()
    assert seen == chunks and child.returncode == -signal.SIGKILL


#: Schemas `open_postgres` created in this session, dropped when it ends.
_postgres_schemas: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def _drop_postgres_schemas() -> Iterator[None]:
    yield
    url = os.environ.get(POSTGRES_URL_VAR)
    if not url or not _postgres_schemas:
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for schema in _postgres_schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


#: How a file store reads a large result (see split_read.rs), chosen by its ``decode_ahead``
#: option: its payloads left for `data` to decode ("lazy"), or decoded as the rows come in
#: from a second thread ("ahead").
READ_MODES = ("lazy", "ahead")


def read_options(mode: str) -> dict[str, Any]:
    """The `SqliteEventStore` options that make its large reads take ``mode`` (`READ_MODES`)."""
    assert mode in READ_MODES, mode
    return {"decode_ahead": mode == "ahead"}


#: A fixed instant for tests that need known timestamps (microseconds set on purpose).
BASE_TIME = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)

_counter = itertools.count(1)


def child_env(*extra_paths: Path) -> dict[str, str]:
    """The environment of a child process that imports this very ``stabilize_events`` (an
    editable checkout or an installed wheel alike), with ``extra_paths`` importable too."""
    package_root = Path(stabilize_events.__file__).resolve().parents[1]
    env = dict(os.environ)
    paths = [str(package_root), *map(str, extra_paths), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def sqlite_url(path: Path) -> str:
    """The ``sqlite:///`` URL of an absolute path (``sqlite:////abs/path.db``)."""
    assert path.is_absolute()
    return f"sqlite:///{path}"


def open_store(
    kind: str, tmp_path: Path, name: str = "events.db", read_mode: str | None = None
) -> EventStore:
    """A fresh, empty store of ``kind`` (one of `STORE_KINDS`); an SQLite one reads large
    results in ``read_mode`` (one of `READ_MODES`; None: the store's default)."""
    options = read_options(read_mode) if read_mode is not None else {}
    if kind == "sqlite-file":
        return SqliteEventStore(sqlite_url(tmp_path / name), **options)
    if kind == "sqlite-memory":
        return SqliteEventStore("sqlite:///:memory:", **options)
    if kind == "in-memory":
        return InMemoryEventStore()
    if kind == "postgres":
        store: EventStore = open_postgres(tmp_path, name)
        return store
    raise AssertionError(f"unknown store kind {kind!r}")


#: `STORE_KINDS` and ``"list-store"``: the plain Python `ListStore` of tests/helpers/replay_oracle.py,
#: a store with no capability beyond the `EventStore` contract.
KINDS_WITH_LIST_STORE = (*STORE_KINDS, "list-store")


def open_unique(kind: str, tmp_path: Path) -> EventStore:
    """A fresh, empty store of ``kind`` (one of `KINDS_WITH_LIST_STORE`); a ``sqlite-file``
    store gets a new file on every call (hypothesis runs a test many times in one ``tmp_path``)."""
    if kind == "list-store":
        from helpers.replay_oracle import ListStore

        return ListStore()
    if kind == "sqlite-file":
        return SqliteEventStore(sqlite_url(tmp_path / f"{uuid.uuid4().hex}.db"))
    return open_store(kind, tmp_path)


@pytest.fixture
def opened() -> Iterator[list[EventStore]]:
    """A list for the stores a test opens; every one is closed at its end."""
    stores: list[EventStore] = []
    yield stores
    for s in stores:
        close_store(s)


def new_store(kind: str, tmp_path: Path, opened: list[EventStore]) -> EventStore:
    """`open_unique`, the store added to the test's ``opened`` list (closed at its end)."""
    store = open_unique(kind, tmp_path)
    opened.append(store)
    return store


def close_store(store: Any) -> None:
    close = getattr(store, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # closing twice or a store without close: not what is tested here
            pass


def new_event(**overrides: Any) -> Event:
    """An event with distinct, non-default values in every field; ``overrides`` replace them.

    The event_id is left to its default (a fresh ULID) unless given.
    """
    n = next(_counter)
    fields: dict[str, Any] = {
        "event_type": EventType.TASK_COMPLETED,
        "timestamp": BASE_TIME + timedelta(seconds=n),
        "entity_type": EntityType.TASK,
        "entity_id": f"task-{n}",
        "workflow_id": "wf-1",
        "version": 1,
        "data": {"n": n, "status": "SUCCEEDED", "outputs": {"rows": [1, 2, 3]}},
        "metadata": EventMetadata(
            correlation_id="wf-1", causation_id=None, actor="system", source_handler="TestHandler"
        ),
    }
    fields.update(overrides)
    return Event(**fields)


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EventStore]:
    """A fresh, empty store of each kind (in the test's `read_mode`, if it takes one)."""
    mode = request.getfixturevalue("read_mode") if "read_mode" in request.fixturenames else None
    s = open_store(store_kind, tmp_path, read_mode=mode)
    yield s
    close_store(s)


@pytest.fixture
def make_event() -> Callable[..., Event]:
    """`new_event` as a fixture: ``make_event(workflow_id="wf-2", version=3)``."""
    return new_event


@pytest.fixture(params=READ_MODES)
def read_mode(request: pytest.FixtureRequest) -> str:
    """Each of `READ_MODES`: the `store` fixture opens its store in it (see `read_options`)."""
    return str(request.param)
