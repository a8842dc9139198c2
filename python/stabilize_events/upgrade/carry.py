"""Carrying Stabilize's snapshots and subscription positions over, and comparing what was
carried (events, snapshots, subscriptions) with its source. Shared by the SQLite and
PostgreSQL upgrades: rows come in as Stabilize's columns with JSON as text.

Snapshot hashes cannot be carried over: Stabilize hashes ``json.dumps(state,
sort_keys=True)`` (spaces after separators, non-ASCII escaped), our stores hash
the bytes they store (`stabilize_events.snapshots`), so they would reject every
copied snapshot as corrupt. Each snapshot's Stabilize hash is checked against its
state first (one that fails is skipped and reported, as Stabilize would not use
it either), then the store computes its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from stabilize_events._core import Event
from stabilize_events.canonical import snapshot_row_intact
from stabilize_events.errors import PayloadError, SchemaError, StoreError
from stabilize_events.store.interface import EventQuery
from stabilize_events.types import EntityType, EventType, parse_event_type
from stabilize_events.upgrade import convert
from stabilize_events.upgrade.outcome import ProgressSink, Result
from stabilize_events.upgrade.source import (
    EVENT_LOG,
    EVENT_SNAPSHOT,
    EVENT_SUBSCRIPTION,
    EVENTS,
    SUBSCRIPTIONS,
)

#: A Stabilize snapshot row as the functions here take it: its id, then these columns.
SNAPSHOT_COLUMNS = "id, entity_type, entity_id, workflow_id, version, sequence, state, state_hash"


#: Our store for one step of the upgrade (opened for it, or one kept open).
OpenStore = Callable[[], AbstractContextManager[Any]]


def copy_event_chunks(
    result: Result, progress: ProgressSink, pending: int, copy_chunk: Callable[[int], list[convert.SourceRow]]
) -> None:
    """Run ``copy_chunk(after)`` (copy the next chunk of Stabilize events after sequence
    ``after`` that ours lack, in one transaction; return its rows) until it copies nothing."""
    progress.start("copying events", pending)
    after = 0
    while rows := copy_chunk(after):
        after = rows[-1].sequence
        result.copied_events += len(rows)
        progress.advance(len(rows), f"up to sequence {after:,}")
    progress.finish()


def stored_events(
    rows: list[convert.SourceRow], encoder: Any, store: Callable[[list[Event]], object]
) -> None:
    """``store`` the events of ``rows``; a payload that cannot be stored names its row."""
    events = [convert.event_from_row(r) for r in rows]
    try:
        store(events)
    except PayloadError as exc:
        # Name the row: the batch error only names the key path.
        for row, event in zip(rows, events, strict=True):
            try:
                encoder.sqlite_row(event)
            except PayloadError:
                raise convert.bad_row(row, f"its data cannot be stored ({exc})") from None
        raise


def verify_event_batches(
    result: Result,
    progress: ProgressSink,
    total: int,
    last_sequence: int,
    fetch: Callable[[int], list[convert.SourceRow]],
    ours: OpenStore,
) -> None:
    """Compare the Stabilize rows ``fetch(after)`` gives (the next batch after sequence
    ``after``, up to ``last_sequence``; ``total`` in all) with our events, field by field."""
    progress.start("verifying events", total)
    after = 0
    while rows := fetch(after):
        upto = rows[-1].sequence
        with ours() as store:
            query = EventQuery(from_sequence=after, to_sequence=upto, limit=len(rows) + 1)
            compare_events(result, rows, {e.sequence: e for e in store.get_events(query)})
        result.verified_events += len(rows)
        progress.advance(len(rows), f"up to sequence {upto:,}")
        after = upto
    progress.finish()
    with ours() as store:
        ours_in_range = store.count_events(EventQuery(to_sequence=last_sequence))
    if ours_in_range != total:
        result.mismatch(
            f"counts differ: Stabilize's {EVENTS} holds {total:,} events up to sequence "
            f"{last_sequence:,}, {EVENT_LOG} {ours_in_range:,}"
        )


def copy_snapshot_batches(
    result: Result,
    progress: ProgressSink,
    total: int,
    batches: Iterable[list[tuple[tuple[Any, ...], int | None]]],
    ours: OpenStore,
) -> None:
    """Copy each Stabilize snapshot row (with its newest event time) of ``batches``."""
    progress.start("copying snapshots", total)
    for batch in batches:
        with ours() as store:
            for row, newest in batch:
                copy_snapshot(result, store, row, newest)
        progress.advance(len(batch), "")
    progress.finish()


def shared_sequence_error(where: str, clash: tuple[Any, ...], apart: str) -> SchemaError:
    """The refusal of a database whose ``event_log`` holds an event that is not Stabilize's at
    one of its sequences: ``clash`` is (sequence, our event id, Stabilize's or None); ``apart``
    what to keep the histories in (files, schemas)."""
    seq, mine, other = clash
    what = f"Stabilize's event there is {other}" if other is not None else "Stabilize has none there"
    return SchemaError(
        f"{where}: {EVENT_LOG} already holds an event at sequence {seq} (event_id {mine}) that is not "
        f"Stabilize's ({what}): the two histories share sequences and cannot be merged; nothing was "
        f"written. Upgrade a copy of the database made before stabilize-events wrote to it, or keep "
        f"the two histories in separate {apart}"
    )


#: Why ``--drop-old`` kept Stabilize's tables when they changed after the verification.
CHANGED_DURING_UPGRADE = (
    f"Stabilize's {EVENTS} table changed during the upgrade (something still writes to it); stop it "
    f"and run the upgrade again"
)


def compare_events(result: Result, rows: list[convert.SourceRow], ours: dict[int, Event]) -> None:
    """Record in ``result`` every difference between Stabilize's ``rows`` and ``ours`` (by
    sequence, the events our table holds over the same range)."""
    for row in rows:
        event = ours.pop(row.sequence, None)
        if event is None:
            result.mismatch(f"sequence {row.sequence} (event_id {row.event_id}): not in {EVENT_LOG}")
            continue
        diffs = convert.differences(convert.expected_fields(row), convert.event_fields(event))
        if diffs:
            result.mismatch(f"sequence {row.sequence} (event_id {row.event_id}): {'; '.join(diffs)}")
    for seq, event in sorted(ours.items()):
        result.mismatch(
            f"sequence {seq} (event_id {event.event_id}): in {EVENT_LOG} but not in Stabilize's {EVENTS}"
        )


def copy_snapshot(result: Result, store: Any, row: tuple[Any, ...], newest: int | None) -> None:
    """Save one Stabilize snapshot row (`_SNAPSHOT_COLUMNS`, state as JSON text) in ``store``
    unless it fails Stabilize's own check or is there already; record what was done."""
    _, entity_type, entity_id, workflow_id, version, sequence, text, their_hash = row
    state, why = snapshot_state(entity_type, text, their_hash)
    if why is not None:
        result.snapshots_skipped.append(
            f"snapshot of {entity_type} {entity_id} at sequence {sequence} (version {version}): {why}"
        )
    elif our_snapshot(store, entity_type, entity_id, sequence) is not None:
        result.snapshots_present += 1
    else:
        store.save_snapshot(
            EntityType(entity_type),
            entity_id,
            workflow_id,
            version,
            sequence,
            state,
            max_event_time_us=newest,
        )
        result.snapshots_copied += 1


def compare_snapshot(result: Result, store: Any, row: tuple[Any, ...]) -> None:
    """Record in ``result`` how the copy of one Stabilize snapshot row differs, if it does."""
    _, entity_type, entity_id, workflow_id, version, sequence, text, their_hash = row
    if snapshot_state(entity_type, text, their_hash)[1] is not None:
        return  # skipped by the copy, and reported there
    where = f"snapshot of {entity_type} {entity_id} at sequence {sequence}"
    ours = our_snapshot(store, entity_type, entity_id, sequence)
    if ours is None:
        result.mismatch(f"{where}: not in {EVENT_SNAPSHOT}")
        return
    expected = {
        "workflow_id": workflow_id,
        "version": version,
        "state": json.loads(text) if text else {},
        "state_error": None,
    }
    diffs = convert.differences(expected, ours)
    if not snapshot_row_intact(ours):
        diffs.append("its stored state does not match its state_hash")
    if diffs:
        result.mismatch(f"{where}: {'; '.join(diffs)}")
    result.verified_snapshots += 1


def copy_subscriptions(result: Result, store: Any, subs: list[dict[str, Any]]) -> None:
    """Save the Stabilize subscription positions (`subscription_record`) ``store`` lacks."""
    for sub in subs:
        # One of ours under the same id was copied by an earlier run or has moved on
        # since: setting it back would deliver events twice.
        if store.get_subscription(sub["id"]) is not None:
            result.subscriptions_present += 1
            continue
        store.save_subscription(
            sub["id"], sub["event_types"], sub["entity_filter"], sub["last_sequence"], sub["webhook_url"]
        )
        result.subscriptions_copied += 1


def compare_subscriptions(result: Result, store: Any, subs: list[dict[str, Any]]) -> None:
    """Each subscription is in ``store`` with the same filters, at Stabilize's position or further on."""
    for sub in subs:
        ours = store.get_subscription(sub["id"])
        where = f"subscription {sub['id']!r}"
        if ours is None:
            result.mismatch(f"{where}: not in {EVENT_SUBSCRIPTION}")
            continue
        diffs = convert.differences(
            {k: sub[k] for k in ("event_types", "entity_filter", "webhook_url")}, ours
        )
        if ours["last_sequence"] < sub["last_sequence"]:
            diffs.append(
                f"last_sequence: expected {sub['last_sequence']} or more, got {ours['last_sequence']}"
            )
        if diffs:
            result.mismatch(f"{where}: {'; '.join(diffs)}")
        result.verified_subscriptions += 1


def our_snapshot(store: Any, entity_type: str, entity_id: str, sequence: int) -> dict[str, Any] | None:
    found = store.get_snapshots(EntityType(entity_type), entity_id, sequence, 1)
    return found[0] if found and found[0]["sequence"] == sequence else None


def snapshot_state(entity_type: str, text: str | None, their_hash: str | None) -> tuple[Any, str | None]:
    """A Stabilize snapshot's state, or why it is not copied."""
    try:
        EntityType(entity_type)
    except ValueError:
        return None, f"unknown entity type {entity_type!r}"
    try:
        state = json.loads(text) if text else {}
    except (json.JSONDecodeError, TypeError) as exc:
        return None, f"its state is not JSON ({exc})"
    if not isinstance(state, dict):
        return None, f"its state is a JSON {type(state).__name__}, not an object"
    # Stabilize's own hash (see the module doc): it refuses a snapshot that fails it.
    if their_hash is not None:
        digest = hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()
        if digest != their_hash:
            return None, "its state does not match its state_hash (Stabilize would refuse it too)"
    return state, None


def subscription_record(
    sub_id: str,
    types_text: str | None,
    filter_text: str | None,
    last_sequence: int | None,
    webhook: str | None,
) -> dict[str, Any]:
    """A Stabilize subscription row (filters as JSON text) as the values `copy_subscriptions` saves."""
    where = f"Stabilize subscription {sub_id!r}"
    try:
        names = json.loads(types_text) if types_text else None
        entity_filter = json.loads(filter_text) if filter_text else None
    except (json.JSONDecodeError, TypeError) as exc:
        raise StoreError(
            f"{where} cannot be carried over: its filters are not JSON ({exc}); fix the row in "
            f"{SUBSCRIPTIONS}, then run the upgrade again (it resumes)"
        ) from None
    types: list[EventType] | None = None
    if names:
        types = [parse_event_type(str(n)) for n in names]
        if EventType.UNKNOWN in types:
            raise StoreError(
                f"{where} cannot be carried over: it filters on event types this build does not know "
                f"({', '.join(map(str, names))}); fix the row in {SUBSCRIPTIONS}, then run the upgrade again"
            )
    return {
        "id": sub_id,
        "event_types": types,
        "entity_filter": entity_filter,
        "last_sequence": int(last_sequence or 0),
        "webhook_url": webhook,
    }


class UpgradeSteps(Protocol):
    """One upgrade's steps over its source and our store (the SQLite and PostgreSQL runs)."""

    result: Result

    def copy_events(self) -> int:
        """Copy the events ours lacks; return the last sequence copied."""

    def copy_snapshots(self) -> None:
        """Copy the snapshots ours lacks."""

    def copy_subscriptions(self) -> None:
        """Copy the subscription positions ours lacks."""

    def verify_events(self, last_sequence: int) -> int:
        """Compare every event up to ``last_sequence``; return how many the source holds."""

    def verify_snapshots(self) -> None:
        """Compare every copied snapshot."""

    def verify_subscriptions(self) -> None:
        """Compare every subscription."""

    def drop_old(self, last_sequence: int, events: int) -> None:
        """Drop Stabilize's tables unless events arrived since the verification."""


def carry_out(run: UpgradeSteps, *, drop_old: bool) -> None:
    """Copy, verify, and with ``drop_old`` drop Stabilize's tables, only after a verification
    that found no difference (otherwise ``result.not_dropped`` says why)."""
    last = run.copy_events()
    run.copy_snapshots()
    run.copy_subscriptions()
    events = run.verify_events(last)
    run.verify_snapshots()
    run.verify_subscriptions()
    if drop_old:
        if run.result.verified:
            run.drop_old(last, events)
        else:
            run.result.not_dropped = "the verification found differences"


__all__ = [
    "CHANGED_DURING_UPGRADE",
    "SNAPSHOT_COLUMNS",
    "OpenStore",
    "UpgradeSteps",
    "carry_out",
    "compare_events",
    "compare_snapshot",
    "compare_subscriptions",
    "copy_event_chunks",
    "copy_snapshot",
    "copy_snapshot_batches",
    "copy_subscriptions",
    "our_snapshot",
    "shared_sequence_error",
    "snapshot_state",
    "stored_events",
    "subscription_record",
    "verify_event_batches",
]
