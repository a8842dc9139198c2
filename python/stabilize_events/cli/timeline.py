"""``timeline``: one workflow's steps over time, as a table or a self-contained HTML Gantt chart.

The HTML page (`render_html`) needs no network: inline SVG and CSS only. Each stage and task
is a bar from its start event to its end event, coloured by its final status; a skipped stage
is a short hatched bar, a failure carries a cross at its end, each retry a diamond at its time.
Hovering a bar shows its details (SVG ``<title>``). The workflow's events are listed below.
"""

from __future__ import annotations

import argparse
import html
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from stabilize_events import WorkflowTimelineProjection
from stabilize_events._core import Event
from stabilize_events.cli.common import (
    EXIT_OK,
    UsageError,
    add_json_option,
    add_store_option,
    close,
    console,
    duration_text,
    iso,
    open_store,
    print_json,
    short_time,
    store_url,
    styled_status,
)
from stabilize_events.cli.read import require_workflow
from stabilize_events.demo.report import entity_label, key_data
from stabilize_events.types import EntityType

#: Bar colours by final status (also what the rendering test counts).
STATUS_COLOURS = {
    "SUCCEEDED": "#2e9e44",
    "TERMINAL": "#d64541",
    "FAILED_CONTINUE": "#d64541",
    "RUNNING": "#3b7dd8",
    "CANCELED": "#e8a33d",
    "STOPPED": "#e8a33d",
    "SKIPPED": "#9aa0a6",
    "PAUSED": "#9b59b6",
}
OTHER_COLOUR = "#7f8c8d"

_END_STATUS = {
    "completed": "SUCCEEDED",
    "failed": "TERMINAL",
    "canceled": "CANCELED",
    "skipped": "SKIPPED",
}


@dataclass
class Bar:
    """One stage, task or the workflow itself, from its first to its last event."""

    entity_type: str
    entity_id: str
    name: str
    start: datetime
    end: datetime | None = None
    status: str = "RUNNING"
    stage_id: str | None = None
    error: str | None = None
    retries: list[tuple[datetime, str]] = field(default_factory=list)
    events: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "name": self.name,
            "start": iso(self.start),
            "end": iso(self.end),
            "status": self.status,
            "stage_id": self.stage_id,
            "error": self.error,
            "retries": [{"time": iso(t), "detail": d} for t, d in self.retries],
        }


def build_bars(events: list[Event]) -> list[Bar]:
    """The bars of a workflow's events: the workflow first, then each stage followed by its tasks."""
    bars: dict[str, Bar] = {}
    order: list[str] = []
    for event in events:
        kind = event.entity_type.value
        key = f"{kind}:{event.entity_id}"
        data = event.data
        bar = bars.get(key)
        if bar is None:
            bar = bars[key] = Bar(
                kind, event.entity_id, str(data.get("name") or event.entity_id), event.timestamp
            )
            order.append(key)
        bar.events += 1
        if data.get("name") and bar.name == bar.entity_id:
            bar.name = str(data["name"])
        if data.get("stage_id"):
            bar.stage_id = str(data["stage_id"])
        action = event.event_type.value.split(".", 1)[1]
        if action == "started":
            bar.start = event.timestamp
            bar.status = "RUNNING"
        elif action in _END_STATUS:
            bar.end = event.timestamp
            status = data.get("status")
            bar.status = status if isinstance(status, str) and action != "canceled" else _END_STATUS[action]
            if data.get("error"):
                bar.error = str(data["error"])
        elif action == "retried":
            detail = f"attempt {data.get('attempt', '?')}"
            if data.get("last_error"):
                detail += f": {data['last_error']}"
            bar.retries.append((event.timestamp, detail))
    workflow = [bars[k] for k in order if bars[k].entity_type == EntityType.WORKFLOW.value]
    stages = [bars[k] for k in order if bars[k].entity_type == EntityType.STAGE.value]
    tasks = [bars[k] for k in order if bars[k].entity_type == EntityType.TASK.value]
    result = list(workflow)
    placed: set[str] = set()
    for stage in sorted(stages, key=lambda b: b.start):
        result.append(stage)
        for task in tasks:
            if task.stage_id == stage.entity_id:
                result.append(task)
                placed.add(task.entity_id)
    result.extend(t for t in tasks if t.entity_id not in placed)
    return result


# -- HTML ---------------------------------------------------------------------------------------------

_CSS = """
body { font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; }
h1 { font-size: 18px; margin: 0 0 4px; }
.sub { color: #666; margin-bottom: 16px; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -2px; }
svg text { font: 12px system-ui, sans-serif; fill: #222; }
svg .axis text { fill: #666; font-size: 11px; }
svg .grid { stroke: #e5e5e5; }
svg .bar:hover { stroke: #000; stroke-width: 1.5; }
table { border-collapse: collapse; margin-top: 20px; width: 100%; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #eee; vertical-align: top; }
th { background: #f6f6f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.st { font-weight: 600; }
"""


def _x(moment: datetime, t0: datetime, span_s: float, left: float, width: float) -> float:
    return left + (moment - t0).total_seconds() / span_s * width


def render_html(workflow_id: str, events: list[Event], name: str | None = None) -> str:
    """The timeline page of one workflow: a Gantt chart of its bars and its event list."""
    bars = build_bars(events)
    esc = html.escape
    t0 = min(e.timestamp for e in events)
    t1 = max(e.timestamp for e in events)
    span_s = max((t1 - t0).total_seconds(), 0.001)
    label_w, chart_w, row_h, top = 260.0, 840.0, 26.0, 30.0
    height = top + row_h * len(bars) + 10
    parts: list[str] = [
        f'<svg width="{label_w + chart_w + 60:.0f}" height="{height:.0f}" role="img" '
        f'aria-label="timeline of workflow {esc(workflow_id)}">',
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="6" height="6" fill="{STATUS_COLOURS["SKIPPED"]}"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#ffffff" stroke-width="2"/></pattern></defs>',
        '<g class="axis">',
    ]
    for i in range(11):
        x = label_w + chart_w * i / 10
        offset = span_s * i / 10
        parts.append(f'<line class="grid" x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 6:.0f}"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{top - 12}" text-anchor="middle">'
            f"+{duration_text(offset * 1000) or '0ms'}</text>"
        )
    parts.append("</g>")
    for row, bar in enumerate(bars):
        y = top + row * row_h
        indent = {"workflow": 0, "stage": 12, "task": 28}.get(bar.entity_type, 0)
        weight = ' font-weight="bold"' if bar.entity_type != "task" else ""
        label = bar.name if len(bar.name) <= 34 else bar.name[:33] + "…"
        parts.append(
            f'<text x="{indent + 4}" y="{y + 17}"{weight}>{esc(bar.entity_type)} {esc(label)}</text>'
        )
        x0 = _x(bar.start, t0, span_s, label_w, chart_w)
        end = bar.end or t1
        x1 = max(_x(end, t0, span_s, label_w, chart_w), x0 + (6 if bar.status == "SKIPPED" else 3))
        colour = STATUS_COLOURS.get(bar.status, OTHER_COLOUR)
        fill = "url(#hatch)" if bar.status == "SKIPPED" else colour
        took = (end - bar.start).total_seconds() * 1000
        tip = [
            f"{bar.entity_type} {bar.name} ({bar.entity_id})",
            f"status: {bar.status}{'' if bar.end else ' (no end event yet)'}",
            f"start: {short_time(bar.start)} UTC",
            f"end: {short_time(bar.end) + ' UTC' if bar.end else '-'}",
            f"took: {duration_text(took)}",
        ]
        if bar.retries:
            tip.append(f"retries: {len(bar.retries)}")
        if bar.error:
            tip.append(f"error: {bar.error}")
        parts.append(
            f'<rect class="bar" data-status="{esc(bar.status)}" x="{x0:.1f}" y="{y + 4}" '
            f'width="{x1 - x0:.1f}" height="{row_h - 8}" rx="3" fill="{fill}">'
            f"<title>{esc(chr(10).join(tip))}</title></rect>"
        )
        if bar.status in ("TERMINAL", "FAILED_CONTINUE", "CANCELED"):
            cx, cy = x1 + 8, y + row_h / 2
            parts.append(
                f'<g stroke="{colour}" stroke-width="2.5">'
                f"<title>{esc(bar.status)}: {esc(bar.error or '')}</title>"
                f'<line x1="{cx - 5}" y1="{cy - 5}" x2="{cx + 5}" y2="{cy + 5}"/>'
                f'<line x1="{cx - 5}" y1="{cy + 5}" x2="{cx + 5}" y2="{cy - 5}"/></g>'
            )
        for moment, detail in bar.retries:
            rx, ry = _x(moment, t0, span_s, label_w, chart_w), y + row_h / 2
            parts.append(
                f'<path d="M{rx:.1f} {ry - 7} L{rx + 6:.1f} {ry} L{rx:.1f} {ry + 7} L{rx - 6:.1f} {ry} Z" '
                f'fill="#222" stroke="#fff">'
                f"<title>retry at {short_time(moment)} UTC, {esc(detail)}</title></path>"
            )
        if bar.status == "SKIPPED":
            parts.append(f'<text x="{x1 + 6:.1f}" y="{y + 17}" fill="#666">skipped</text>')
    parts.append("</svg>")

    legend = "".join(
        f'<span><i style="background:{c}"></i>{s.lower()}</span>'
        for s, c in STATUS_COLOURS.items()
        if s in {"SUCCEEDED", "TERMINAL", "RUNNING", "CANCELED", "SKIPPED"}
    )
    rows = []
    for event in events:
        status = event.data.get("status")
        rows.append(
            f'<tr><td class="num">{event.sequence}</td><td>{short_time(event.timestamp)}</td>'
            f"<td>{esc(event.event_type.value)}</td><td>{esc(entity_label(event))}</td>"
            f'<td class="st">{esc(status) if isinstance(status, str) else ""}</td>'
            f"<td>{esc(key_data(event))}</td></tr>"
        )
    title = f"{name} ({workflow_id})" if name else workflow_id
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>timeline of {esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Workflow {esc(title)}</h1>"
        f'<div class="sub">{len(events)} events, {short_time(t0)} to {short_time(t1)} UTC '
        f"({duration_text(span_s * 1000)}). Hover a bar for details; ◆ a retry, ✕ a failure or "
        f"cancellation.</div>"
        f'<div class="legend">{legend}<span>◆ retry</span><span>✕ failed / canceled</span></div>'
        + "".join(parts)
        + "<table><thead><tr><th>seq</th><th>time (UTC)</th><th>event</th><th>entity</th>"
        "<th>status</th><th>details</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></body></html>\n"
    )


# -- the command --------------------------------------------------------------------------------------


def cmd_timeline(args: argparse.Namespace) -> int:
    """Print a workflow's timeline, or write it as an HTML page with ``--html``."""
    url = store_url(args)
    store = open_store(url, must_exist=True)
    try:
        require_workflow(store, args.workflow, url)
        events = store.get_events_for_workflow(args.workflow)
    finally:
        close(store)
    created = next((e for e in events if e.event_type.value == "workflow.created"), None)
    name = str(created.data.get("name")) if created is not None and created.data.get("name") else None
    if args.html:
        target = Path(args.html)
        try:
            target.write_text(render_html(args.workflow, events, name), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {args.html!r}: {exc.strerror}; give a writable path") from None
        print(f"wrote {target} ({len(events)} events); open it in a browser")
        return EXIT_OK
    projection = WorkflowTimelineProjection(args.workflow)
    projection.apply_all(events)
    timeline = projection.get_state()
    if args.json:
        print_json({**timeline.to_dict(), "name": name, "bars": [b.to_dict() for b in build_bars(events)]})
        return EXIT_OK
    from rich.table import Table

    status = timeline.status or ("CANCELED" if events[-1].event_type.value == "workflow.canceled" else None)
    table = Table(
        title=f"{name or args.workflow}: {status or 'RUNNING'}"
        + (
            f" in {duration_text(timeline.total_duration_ms)}"
            if timeline.total_duration_ms is not None
            else ""
        )
    )
    for column in ["time (UTC)", "event", "entity", "status", "took", "details"]:
        table.add_column(column, justify="right" if column == "took" else "left")
    for entry in timeline.entries:
        entity = (
            "workflow"
            if entry.entity_type == "workflow"
            else f"{entry.entity_type} {entry.entity_name or entry.entity_id}"
        )
        table.add_row(
            short_time(entry.timestamp),
            entry.event_type,
            entity,
            styled_status(entry.status),
            duration_text(entry.duration_ms),
            "  ".join(f"{k}={v}" for k, v in entry.details.items() if v is not None),
        )
    console().print(table)
    return EXIT_OK


def register(commands: Any) -> None:
    """Add ``timeline`` to ``commands`` (argparse subparsers)."""
    p = commands.add_parser(
        "timeline",
        help="a workflow's steps over time: a table, or an HTML Gantt chart with --html",
        description="Show one workflow's timeline. With --html FILE, write a self-contained HTML page "
        "(inline SVG and CSS, no network): a Gantt chart of the workflow, its stages and tasks "
        "coloured by status, retries and failures marked, details on hover, and the event list.",
        epilog="example:\n  stabilize-events timeline 01J9ZQ... --html timeline.html\n"
        "  stabilize-events timeline 01J9ZQ... --json | jq '.bars'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store_option(p)
    add_json_option(p)
    p.add_argument("workflow", metavar="WORKFLOW")
    p.add_argument("--html", metavar="FILE", help="write the timeline as an HTML page to FILE")
    p.set_defaults(func=cmd_timeline)
