"""The read commands: ``workflows``, ``events``, ``show``, ``state``, ``diff``, ``metrics``, ``stats``."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stabilize_events import EventQuery, EventReplayer, EventStore, StageMetricsProjection
from stabilize_events._core import Event
from stabilize_events.cli.common import (
    EXIT_OK,
    NotFoundError,
    UsageError,
    add_json_option,
    add_store_option,
    all_events,
    close,
    console,
    database_file,
    duration_text,
    event_row,
    iso,
    open_store,
    postgres_target,
    print_json,
    sequence_arg,
    short_time,
    shown_url,
    store_url,
    styled_status,
    time_arg,
)
from stabilize_events.demo.report import entity_label, key_data
from stabilize_events.types import EntityType, EventType, parse_event_type

# -- workflows -------------------------------------------------------------------------------

#: The status a workflow-level event leaves the workflow in, when its payload names none.
_IMPLIED_STATUS = {
    "workflow.created": "NOT_STARTED",
    "workflow.started": "RUNNING",
    "workflow.completed": "SUCCEEDED",
    "workflow.failed": "TERMINAL",
    "workflow.canceled": "CANCELED",
    "workflow.paused": "PAUSED",
    "workflow.resumed": "RUNNING",
}


@dataclass
class WorkflowSummary:
    """One line of ``workflows``."""

    workflow_id: str
    name: str | None = None
    status: str | None = None
    first_event: datetime | None = None
    last_event: datetime | None = None
    events: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "workflow_id": self.workflow_id,
            "name": self.name,
            "status": self.status,
            "first_event": iso(self.first_event),
            "last_event": iso(self.last_event),
            "events": self.events,
        }


def workflow_summaries(store: EventStore) -> list[WorkflowSummary]:
    """Every workflow in ``store``, in order of its first event."""
    found: dict[str, WorkflowSummary] = {}
    for page in all_events(store):
        for event in page:
            summary = found.get(event.workflow_id)
            if summary is None:
                summary = found[event.workflow_id] = WorkflowSummary(event.workflow_id)
                summary.first_event = event.timestamp
            summary.events += 1
            summary.last_event = event.timestamp
            if event.entity_type is EntityType.WORKFLOW:
                kind = event.event_type.value
                if kind in _IMPLIED_STATUS:
                    data = event.data
                    status = data.get("status")
                    summary.status = status if isinstance(status, str) else _IMPLIED_STATUS[kind]
                    if kind == "workflow.canceled":
                        summary.status = "CANCELED"
                    if kind == "workflow.created" and data.get("name"):
                        summary.name = str(data["name"])
    return list(found.values())


def cmd_workflows(args: argparse.Namespace) -> int:
    """List workflows, filtered by status and time."""
    store = open_store(store_url(args), must_exist=True)
    try:
        rows = workflow_summaries(store)
    finally:
        close(store)
    if args.status:
        wanted = {s.upper() for s in args.status}
        rows = [r for r in rows if (r.status or "") in wanted]
    if args.since is not None:
        rows = [r for r in rows if r.last_event is not None and r.last_event >= args.since]
    if args.until is not None:
        rows = [r for r in rows if r.first_event is not None and r.first_event <= args.until]
    if args.json:
        print_json([r.to_dict() for r in rows])
        return EXIT_OK
    from rich.table import Table

    table = Table(title=f"{len(rows):,} workflows")
    for name, justify in [
        ("workflow id", "left"),
        ("name", "left"),
        ("status", "left"),
        ("first event (UTC)", "left"),
        ("last event (UTC)", "left"),
        ("events", "right"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(
            r.workflow_id,
            r.name or "",
            styled_status(r.status),
            short_time(r.first_event) if r.first_event else "",
            short_time(r.last_event) if r.last_event else "",
            f"{r.events:,}",
        )
    console().print(table)
    return EXIT_OK


# -- events -----------------------------------------------------------------------------------


def _query(args: argparse.Namespace, after: int | None, limit: int) -> EventQuery:
    return EventQuery(
        entity_type=EntityType(args.entity_type) if args.entity_type else None,
        entity_id=args.entity,
        workflow_id=args.workflow,
        event_types=[parse_event_type(t) for t in args.type] if args.type else None,
        from_sequence=after,
        to_sequence=args.to_seq,
        from_timestamp=args.since,
        to_timestamp=args.until,
        limit=limit,
    )


def _event_line(event: Event) -> str:
    status = event.data.get("status")
    return (
        f"{event.sequence:>8}  {short_time(event.timestamp)}  {event.event_type.value:<18}  "
        f"{entity_label(event):<28}  {status if isinstance(status, str) else '':<10}  {key_data(event)}"
    )


def _print_events(events: list[Event], as_json: bool, as_lines: bool) -> None:
    if as_json:
        for event in events:
            print(json.dumps(event_row(event), ensure_ascii=False, default=str))
        return
    if as_lines:
        for event in events:
            print(_event_line(event))
        return
    from rich.table import Table

    table = Table()
    table.add_column("seq", justify="right")
    table.add_column("time (UTC)")
    table.add_column("event")
    table.add_column("entity")
    table.add_column("status")
    table.add_column("details")
    for event in events:
        status = event.data.get("status")
        table.add_row(
            str(event.sequence),
            short_time(event.timestamp),
            event.event_type.value,
            entity_label(event),
            styled_status(status if isinstance(status, str) else None),
            key_data(event),
        )
    console().print(table)


def _check_filters(args: argparse.Namespace) -> None:
    if args.entity_type:
        try:
            EntityType(args.entity_type)
        except ValueError:
            kinds = ", ".join(e.value for e in EntityType)
            raise UsageError(f"unknown entity type {args.entity_type!r}: use one of {kinds}") from None
    known = {t.value for t in EventType}
    for name in args.type or ():
        if name not in known:
            raise UsageError(
                f"unknown event type {name!r}: use a value like workflow.started or stage.failed "
                f"(known: {', '.join(sorted(known))})"
            )


def cmd_events(args: argparse.Namespace) -> int:
    """List events matching the filters; with ``--follow``, then print new ones as they arrive."""
    _check_filters(args)
    store = open_store(store_url(args), must_exist=True)
    try:
        # --follow then prints what is stored after this point, also when --limit cut the listing.
        start = store.get_current_sequence()
        after = args.from_seq
        remaining = args.limit if args.limit > 0 else None
        shown = 0
        buffered: list[Event] = []
        while remaining is None or remaining > 0:
            page = min(10_000, remaining) if remaining is not None else 10_000
            events = list(store.get_events(_query(args, after, page)))
            if not events:
                break
            buffered.extend(events)
            after = events[-1].sequence
            if remaining is not None:
                remaining -= len(events)
            if len(events) < page:
                break
        shown = len(buffered)
        _print_events(buffered, args.json, as_lines=args.follow)
        if not args.follow:
            if not args.json and shown == 0:
                print("No events match.", file=sys.stderr)
            return EXIT_OK
        sys.stdout.flush()
        after = max(after or 0, start)
        try:
            while True:
                time.sleep(args.interval)
                events = list(store.get_events(_query(args, after, 10_000)))
                if events:
                    _print_events(events, args.json, as_lines=True)
                    sys.stdout.flush()
                    after = events[-1].sequence
        except KeyboardInterrupt:
            return EXIT_OK  # the way to stop following
    finally:
        close(store)


# -- show ---------------------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace) -> int:
    """Print one event, every field and its whole payload."""
    store = open_store(store_url(args), must_exist=True)
    try:
        event = store.get_event_by_id(args.event_id)
    finally:
        close(store)
    if event is None:
        raise NotFoundError(
            f"no event with id {args.event_id!r} in {store_url(args)} (list ids with "
            f"`stabilize-events events --json`)"
        )
    row = event_row(event)
    if args.json:
        print_json(row)
        return EXIT_OK
    from rich.table import Table

    table = Table(show_header=False, title=f"event {event.event_id}")
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in row.items():
        if key in ("data", "metadata"):
            continue
        table.add_row(key, str(value))
    for key, value in row["metadata"].items():
        table.add_row(f"metadata.{key}", "" if value is None else str(value))
    out = console()
    out.print(table)
    from rich.json import JSON

    out.print("data:")
    out.print(JSON(json.dumps(row["data"], default=str, ensure_ascii=False)))
    return EXIT_OK


# -- state and diff -------------------------------------------------------------------------------


def require_workflow(store: EventStore, workflow_id: str, url: str) -> None:
    """Raise `NotFoundError` unless ``store`` holds events of ``workflow_id``."""
    if store.count_events(EventQuery(workflow_id=workflow_id)) == 0:
        raise NotFoundError(
            f"no workflow {workflow_id!r} in {url}: it has no events (list workflows with "
            f"`stabilize-events workflows`)"
        )


def _state_tables(state: dict[str, Any], title: str) -> None:
    from rich.table import Table

    out = console()
    out.print(
        f"[bold]{title}[/bold]: {state.get('name') or ''} {styled_status(state.get('status'))}  "
        f"started {_when(state.get('start_time')) or '-'}  ended {_when(state.get('end_time')) or '-'}"
    )
    tasks_by_stage: dict[str, list[dict[str, Any]]] = {}
    for task in (state.get("tasks") or {}).values():
        tasks_by_stage.setdefault(str(task.get("stage_id")), []).append(task)
    table = Table()
    table.add_column("stage / task")
    table.add_column("status")
    table.add_column("start (UTC)")
    table.add_column("end (UTC)")
    table.add_column("error / outputs")
    for stage in (state.get("stages") or {}).values():
        table.add_row(
            f"[bold]{stage.get('name') or stage.get('ref_id') or stage.get('id')}[/bold]",
            styled_status(stage.get("status")),
            _when(stage.get("start_time")),
            _when(stage.get("end_time")),
            str(stage.get("error") or stage.get("outputs") or ""),
        )
        for task in tasks_by_stage.get(str(stage.get("id")), []):
            table.add_row(
                f"  task {task.get('name') or task.get('id')}",
                styled_status(task.get("status")),
                _when(task.get("start_time")),
                _when(task.get("end_time")),
                str(task.get("error") or task.get("outputs") or ""),
            )
    out.print(table)


def _when(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    return short_time(value) if isinstance(value, datetime) else ("" if value is None else str(value))


def cmd_state(args: argparse.Namespace) -> int:
    """Rebuild a workflow's state from its events, now or as of a sequence or an instant."""
    url = store_url(args)
    store = open_store(url, must_exist=True)
    try:
        require_workflow(store, args.workflow, url)
        replayer = EventReplayer(store)
        if args.as_of_time is not None:
            state = replayer.time_travel_query(args.workflow, args.as_of_time)
            when = f"as of {args.as_of_time.isoformat()}"
        else:
            state = replayer.rebuild_workflow_state(args.workflow, as_of_sequence=args.as_of_seq)
            when = f"as of sequence {args.as_of_seq}" if args.as_of_seq is not None else "now"
        replayed = replayer.last_result
        first = None
        if replayed is not None and replayed.last_sequence == 0:
            first = next(iter(store.get_events(EventQuery(workflow_id=args.workflow, limit=1))), None)
    finally:
        close(store)
    if args.json:
        print_json(state)
        return EXIT_OK
    if first is not None:
        console().print(
            f"workflow {args.workflow} had no events yet {when}: its first event is sequence "
            f"{first.sequence}, at {_when(first.timestamp)} UTC"
        )
        return EXIT_OK
    _state_tables(state, f"workflow {args.workflow} {when}")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    """What changed in a workflow's state between two sequences."""
    url = store_url(args)
    store = open_store(url, must_exist=True)
    try:
        require_workflow(store, args.workflow, url)
        result = EventReplayer(store).compare_states(args.workflow, args.seq1, args.seq2)
    finally:
        close(store)
    if args.json:
        print_json(result)
        return EXIT_OK
    out = console()
    changes: list[str] = result["changes"]
    out.print(
        f"[bold]workflow {args.workflow}[/bold]: {len(changes)} change(s) from sequence {args.seq1} "
        f"to {args.seq2}"
    )
    from rich.markup import escape

    for change in changes:
        out.print(f"  [yellow]~[/yellow] {escape(change)}")
    return EXIT_OK


# -- metrics ---------------------------------------------------------------------------------------


def cmd_metrics(args: argparse.Namespace) -> int:
    """Per stage type and task name: runs, outcomes and durations, over the whole store."""
    store = open_store(store_url(args), must_exist=True)
    projection = StageMetricsProjection()
    try:
        for page in all_events(store):
            projection.apply_all(page)
    finally:
        close(store)
    if args.json:
        print_json(projection.to_dict())
        return EXIT_OK
    from rich.table import Table

    table = Table(title="stage metrics (durations from the events)")
    for name in ["stage type", "runs", "ok", "failed", "skipped", "success", "avg", "median", "p95", "max"]:
        table.add_column(name, justify="left" if name == "stage type" else "right")
    for stage_type, m in sorted(projection.get_state().items()):
        timed = bool(m.durations)
        table.add_row(
            stage_type,
            str(m.execution_count),
            str(m.success_count),
            str(m.failure_count),
            str(m.skip_count),
            f"{m.success_rate:.0f}%",
            duration_text(m.avg_duration_ms) if timed else "-",
            duration_text(m.median_duration_ms) if timed else "-",
            duration_text(m.p95_duration_ms) if timed else "-",
            duration_text(m.max_duration_ms) if timed else "-",
        )
    out = console()
    out.print(table)
    tasks = Table(title="task metrics")
    for name in ["task", "runs", "ok", "failed", "retries", "success", "avg", "max"]:
        tasks.add_column(name, justify="left" if name == "task" else "right")
    for task_name, t in sorted(projection.get_task_state().items()):
        timed = bool(t.durations)
        tasks.add_row(
            task_name,
            str(t.execution_count),
            str(t.success_count),
            str(t.failure_count),
            str(t.retry_count),
            f"{t.success_rate:.0f}%",
            duration_text(t.avg_duration_ms) if timed else "-",
            duration_text(t.max_duration_ms) if timed else "-",
        )
    out.print(tasks)
    return EXIT_OK


# -- stats -----------------------------------------------------------------------------------------


def _file_sizes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        part = Path(str(path) + suffix)
        if part.exists():
            total += part.stat().st_size
    return total


def _sqlite_stats(path: Path) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        count, workflows, first, last, t0, t1 = conn.execute(
            "SELECT count(*), count(DISTINCT workflow_id), min(sequence), max(sequence), "
            "min(timestamp_us), max(timestamp_us) FROM event_log"
        ).fetchone()
        hours = conn.execute(
            "SELECT timestamp_us / 3600000000, count(*) FROM event_log "
            "WHERE timestamp_us >= (SELECT max(timestamp_us) FROM event_log) - 86400000000 GROUP BY 1"
        ).fetchall()
    finally:
        conn.close()

    def moment(us: int | None) -> datetime | None:
        return datetime.fromtimestamp(us / 1e6, UTC) if us is not None else None

    return {
        "events": count,
        "workflows": workflows,
        "first_sequence": first,
        "last_sequence": last,
        "first_event": moment(t0),
        "last_event": moment(t1),
        "hours": [(datetime.fromtimestamp(h * 3600, UTC), n) for h, n in hours],
    }


def _generic_stats(store: EventStore) -> dict[str, Any]:
    count = 0
    workflows: set[str] = set()
    first = last = None
    t0: datetime | None = None
    t1: datetime | None = None
    per_hour: Counter[datetime] = Counter()
    for page in all_events(store):
        for event in page:
            count += 1
            workflows.add(event.workflow_id)
            first = event.sequence if first is None else first
            last = event.sequence
            ts = event.timestamp
            t0 = ts if t0 is None or ts < t0 else t0
            t1 = ts if t1 is None or ts > t1 else t1
            per_hour[ts.replace(minute=0, second=0, microsecond=0)] += 1
    hours = sorted(
        (h, n) for h, n in per_hour.items() if t1 is not None and (t1 - h).total_seconds() <= 90000
    )
    return {
        "events": count,
        "workflows": len(workflows),
        "first_sequence": first,
        "last_sequence": last,
        "first_event": t0,
        "last_event": t1,
        "hours": hours,
    }


def _postgres_size(connection_string: str, schema: str | None) -> int:
    """Bytes the PostgreSQL store's tables take, with their indexes and TOAST."""
    import psycopg

    names = [f"{schema}.{t}" if schema else t for t in ("event_log", "event_snapshot", "event_subscription")]
    with psycopg.connect(connection_string) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(to_regclass(n))), 0) FROM unnest(%s::text[]) n",
            (names,),
        ).fetchone()
    return int(row[0]) if row else 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Events, workflows, sequence range, size on disk, events per hour."""
    url = store_url(args)
    path = database_file(url)
    store = open_store(url, must_exist=True)
    try:
        if path is not None:
            stats = _sqlite_stats(path)
            stats["size_bytes"] = _file_sizes(path)
        else:
            stats = _generic_stats(store)
            postgres = postgres_target(url)
            stats["size_bytes"] = _postgres_size(*postgres) if postgres is not None else None
    finally:
        close(store)
    span_h = (
        (stats["last_event"] - stats["first_event"]).total_seconds() / 3600 if stats["first_event"] else 0.0
    )
    stats["events_per_hour"] = round(stats["events"] / span_h, 1) if span_h > 0 else None
    stats["store"] = shown_url(url)
    if args.json:
        stats["hours"] = [{"hour": h.isoformat(), "events": n} for h, n in stats["hours"]]
        print_json(stats)
        return EXIT_OK
    from rich.table import Table

    table = Table(show_header=False, title=f"store {stats['store']}")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("events", f"{stats['events']:,}")
    table.add_row("workflows", f"{stats['workflows']:,}")
    seq = f"{stats['first_sequence']:,} .. {stats['last_sequence']:,}" if stats["events"] else "-"
    table.add_row("sequences", seq)
    table.add_row("first event (UTC)", short_time(stats["first_event"]) if stats["first_event"] else "-")
    table.add_row("last event (UTC)", short_time(stats["last_event"]) if stats["last_event"] else "-")
    size = stats["size_bytes"]
    table.add_row("size on disk", f"{size / 1e6:,.2f} MB" if size is not None else "in memory")
    eph = stats["events_per_hour"]
    table.add_row("events per hour (first to last)", f"{eph:,.1f}" if eph is not None else "-")
    out = console()
    out.print(table)
    if stats["hours"]:
        hours = Table(title="events per hour, last 24 hours with events")
        hours.add_column("hour (UTC)")
        hours.add_column("events", justify="right")
        hours.add_column("")
        peak = max(n for _, n in stats["hours"])
        for hour, n in stats["hours"]:
            hours.add_row(hour.strftime("%Y-%m-%d %H:00"), f"{n:,}", "█" * max(1, round(30 * n / peak)))
        out.print(hours)
    return EXIT_OK


# -- parsers ---------------------------------------------------------------------------------------


def _parser(commands: Any, name: str, help_text: str, description: str, example: str) -> Any:
    parser = commands.add_parser(
        name,
        help=help_text,
        description=description,
        epilog=f"example:\n{example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store_option(parser)
    add_json_option(parser)
    return parser


def register(commands: Any) -> None:
    """Add the read commands to ``commands`` (argparse subparsers)."""
    p = _parser(
        commands,
        "workflows",
        "list workflows: id, name, status, first/last event time, event count",
        "List the workflows in the store, in order of their first event.",
        "  stabilize-events workflows --status TERMINAL --since -1d\n"
        "  stabilize-events workflows --store sqlite:////var/lib/app/events.db --json",
    )
    p.add_argument("--status", action="append", metavar="STATUS", help="only this status (repeatable)")
    p.add_argument("--since", type=time_arg, metavar="TIME", help="only workflows with events at or after")
    p.add_argument("--until", type=time_arg, metavar="TIME", help="only workflows with events at or before")
    p.set_defaults(func=cmd_workflows)

    p = _parser(
        commands,
        "events",
        "list events, filtered; --follow tails new events live",
        "List events in sequence order. TIME is ISO 8601 (no offset means UTC) or an age like -30m. "
        "--json prints one JSON object per line (JSON Lines). --follow keeps printing new events "
        "as they are stored, until Ctrl-C.",
        "  stabilize-events events --workflow 01J9ZQ... --type task.failed --type stage.failed\n"
        "  stabilize-events events --since -15m --follow",
    )
    p.add_argument("--workflow", metavar="ID", help="only events of this workflow")
    p.add_argument("--entity", metavar="ID", help="only events of this entity (workflow, stage or task id)")
    p.add_argument("--entity-type", metavar="KIND", help="only this kind of entity: workflow, stage, task")
    p.add_argument("--type", action="append", metavar="TYPE", help="only this event type (repeatable)")
    p.add_argument("--from-seq", type=sequence_arg, metavar="N", help="only sequences after N")
    p.add_argument("--to-seq", type=sequence_arg, metavar="N", help="only sequences up to N")
    p.add_argument("--since", type=time_arg, metavar="TIME", help="only events at or after TIME")
    p.add_argument("--until", type=time_arg, metavar="TIME", help="only events at or before TIME")
    p.add_argument(
        "--limit", type=int, default=1000, metavar="N", help="at most N events (0: all; default 1000)"
    )
    p.add_argument("--follow", "-f", action="store_true", help="then print new events as they arrive")
    p.add_argument("--interval", type=float, default=0.5, metavar="S", help="--follow polling period (s)")
    p.set_defaults(func=cmd_events)

    p = _parser(
        commands,
        "show",
        "print one event: every field and its whole payload",
        "Print one event by its id. Exit code 3 if there is none.",
        "  stabilize-events show 01J9ZQ4M2Q8X7V3N5K6T1R0ABC",
    )
    p.add_argument("event_id", metavar="EVENT_ID")
    p.set_defaults(func=cmd_show)

    p = _parser(
        commands,
        "state",
        "a workflow's state rebuilt from its events, now or as of a sequence or time",
        "Replay the workflow's events into its state (stages, tasks, statuses). Exit code 3 if the "
        "workflow has no events.",
        "  stabilize-events state 01J9ZQ... --as-of-time 2026-12-04T03:00:00\n"
        "  stabilize-events state 01J9ZQ... --as-of-seq 1200 --json",
    )
    p.add_argument("workflow", metavar="WORKFLOW")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--as-of-seq", type=sequence_arg, metavar="N", help="state after event N")
    when.add_argument("--as-of-time", type=time_arg, metavar="T", help="state as of instant T")
    p.set_defaults(func=cmd_state)

    p = _parser(
        commands,
        "diff",
        "what changed in a workflow's state between two sequences",
        "Rebuild the workflow's state after SEQ1 and after SEQ2 and list every path that differs.",
        "  stabilize-events diff 01J9ZQ... 1200 1260",
    )
    p.add_argument("workflow", metavar="WORKFLOW")
    p.add_argument("seq1", type=sequence_arg, metavar="SEQ1")
    p.add_argument("seq2", type=sequence_arg, metavar="SEQ2")
    p.set_defaults(func=cmd_diff)

    p = _parser(
        commands,
        "metrics",
        "per stage type and task: runs, outcomes, durations",
        "Fold every event into stage and task metrics (StageMetricsProjection).",
        "  stabilize-events metrics --json | jq '.stages'",
    )
    p.set_defaults(func=cmd_metrics)

    p = _parser(
        commands,
        "stats",
        "events, workflows, sequence range, size on disk, events per hour",
        "Summarize the store.",
        "  stabilize-events stats --store sqlite:////var/lib/app/events.db",
    )
    p.set_defaults(func=cmd_stats)
