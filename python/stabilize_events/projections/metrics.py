"""`StageMetricsProjection`: execution counts, outcome rates and durations per stage type.

Stages are grouped by ``data["type"]`` and tasks by ``data["name"]``. Counts
come from the lifecycle events (started, completed, failed, skipped, retried);
durations from ``data["duration_ms"]`` of completed and failed events. Every
figure equals the one ``stabilize.events``' projection reports for the same
events, including its statistics (mean, median, p95 with its small-sample rule).

Deduplication follows the reference: an event is identified by its logical
transition ``(entity_id, event_type, version)`` so that a redundant re-append
of the same transition (a handler retried after a crash) is not counted
twice; events without a version fall back to their stored sequence.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stabilize_events.projections.base import Projection
from stabilize_events.types import EntityType, EventType

if TYPE_CHECKING:
    from stabilize_events._core import Event

#: Below this many samples the p95 is the maximum (too few for a percentile).
P95_MIN_SAMPLES = 20


def _rate(part: int, whole: int) -> float:
    return (part / whole) * 100 if whole else 0.0


class _Durations:
    """Statistics over ``durations`` (milliseconds), shared by stage and task metrics."""

    __slots__ = ()
    durations: list[int]

    @property
    def avg_duration_ms(self) -> float:
        """Mean duration, or 0.0 without samples."""
        return statistics.mean(self.durations) if self.durations else 0.0

    @property
    def median_duration_ms(self) -> float:
        """Median duration, or 0.0 without samples."""
        return statistics.median(self.durations) if self.durations else 0.0

    @property
    def p95_duration_ms(self) -> float:
        """95th percentile (nearest rank below), the maximum under 20 samples, 0.0 without any."""
        durations = self.durations
        if not durations:
            return 0.0
        if len(durations) < P95_MIN_SAMPLES:
            return max(durations)
        ordered = sorted(durations)
        return ordered[min(int(len(ordered) * 0.95), len(ordered) - 1)]

    @property
    def min_duration_ms(self) -> int:
        """Shortest duration, or 0 without samples."""
        return min(self.durations) if self.durations else 0

    @property
    def max_duration_ms(self) -> int:
        """Longest duration, or 0 without samples."""
        return max(self.durations) if self.durations else 0


@dataclass(slots=True)
class StageMetrics(_Durations):
    """Aggregated figures for one stage type.

    ``success_rate`` and ``failure_rate`` are percentages of finished runs
    (completed + failed); skipped stages count in ``skip_count`` only.
    """

    stage_type: str
    execution_count: int = 0
    success_count: int = 0
    failure_count: int = 0
    skip_count: int = 0
    durations: list[int] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        """Completed runs as a percentage of finished ones (0.0 when none finished)."""
        return _rate(self.success_count, self.success_count + self.failure_count)

    @property
    def failure_rate(self) -> float:
        """Failed runs as a percentage of finished ones (0.0 when none finished)."""
        return _rate(self.failure_count, self.success_count + self.failure_count)

    def to_dict(self) -> dict[str, Any]:
        """Every figure, rates and averages rounded to two decimals."""
        return {
            "stage_type": self.stage_type,
            "execution_count": self.execution_count,
            "success_count": self.success_count,
            "failure_count": self.failure_count,
            "skip_count": self.skip_count,
            "success_rate": round(self.success_rate, 2),
            "failure_rate": round(self.failure_rate, 2),
            "avg_duration_ms": round(self.avg_duration_ms, 2),
            "median_duration_ms": round(self.median_duration_ms, 2),
            "p95_duration_ms": round(self.p95_duration_ms, 2),
            "min_duration_ms": self.min_duration_ms,
            "max_duration_ms": self.max_duration_ms,
        }


@dataclass(slots=True)
class TaskMetrics(_Durations):
    """Aggregated figures for one task name."""

    task_name: str
    implementing_class: str | None = None
    execution_count: int = 0
    success_count: int = 0
    failure_count: int = 0
    retry_count: int = 0
    durations: list[int] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        """Completed runs as a percentage of finished ones (0.0 when none finished)."""
        return _rate(self.success_count, self.success_count + self.failure_count)

    def to_dict(self) -> dict[str, Any]:
        """The counts, success rate and average duration (rounded to two decimals)."""
        return {
            "task_name": self.task_name,
            "implementing_class": self.implementing_class,
            "execution_count": self.execution_count,
            "success_count": self.success_count,
            "failure_count": self.failure_count,
            "retry_count": self.retry_count,
            "success_rate": round(self.success_rate, 2),
            "avg_duration_ms": round(self.avg_duration_ms, 2),
        }


# What an event does to the metrics of its stage or task.
_NONE, _STARTED, _SUCCEEDED, _FAILED, _SKIPPED, _RETRIED = range(6)


# How the metrics treat one event type: (a small code standing for the type in
# dedup keys, what it does to a stage, what it does to a task).
_Rule = tuple[int, int, int]

_STAGE_ACTIONS = {
    EventType.STAGE_STARTED: _STARTED,
    EventType.STAGE_COMPLETED: _SUCCEEDED,
    EventType.STAGE_FAILED: _FAILED,
    EventType.STAGE_SKIPPED: _SKIPPED,
}
_TASK_ACTIONS = {
    EventType.TASK_STARTED: _STARTED,
    EventType.TASK_COMPLETED: _SUCCEEDED,
    EventType.TASK_FAILED: _FAILED,
    EventType.TASK_RETRIED: _RETRIED,
}
# Keyed by the type's string value, and the dedup key holds a small int for
# the type: an enum member hashes through a Python-level ``__hash__``.
_RULES: dict[str, _Rule] = {
    t.value: (code, _STAGE_ACTIONS.get(t, _NONE), _TASK_ACTIONS.get(t, _NONE))
    for code, t in enumerate(EventType)
}
# Entity kinds compared by value, so that Stabilize's enum members (equal to ours, not
# identical) are counted too.
_STAGE_ENTITY = EntityType.STAGE.value
_TASK_ENTITY = EntityType.TASK.value
_WORKFLOW_ENTITY = EntityType.WORKFLOW.value


class StageMetricsProjection(Projection):
    """Aggregates `StageMetrics` per stage type and `TaskMetrics` per task name."""

    def __init__(self) -> None:
        """Empty metrics."""
        self._stage_metrics: dict[str, StageMetrics] = {}
        self._task_metrics: dict[str, TaskMetrics] = {}
        self._seen: set[tuple[str, int, int] | int] = set()

    @property
    def name(self) -> str:
        """``stage-metrics``."""
        return "stage-metrics"

    def handles_event_type(self, event: Event) -> bool:
        """Only stage and task events change these metrics."""
        return bool(event.entity_type._value_ != _WORKFLOW_ENTITY)

    def apply(self, event: Event) -> None:
        """Count ``event`` once per logical transition (see the module docstring)."""
        code, stage_action, task_action = _RULES[event.event_type._value_]
        version = event.version
        key: tuple[str, int, int] | int
        if version:
            key = (event.entity_id, code, version)
        else:
            # Without a version the stored sequence identifies a repeat; with
            # neither (0: never stored) nothing does, and the event counts.
            key = event.sequence
        if key:
            # One hash operation instead of a lookup then an insert.
            seen = self._seen
            before = len(seen)
            seen.add(key)
            if len(seen) == before:
                return

        # Find the stage's or task's metrics; the counts both kinds share are
        # then updated by one block below.
        entity_type = event.entity_type._value_
        metrics: StageMetrics | TaskMetrics
        if entity_type == _STAGE_ENTITY:
            data = event.data
            stage_type = data.get("type", "unknown")
            stage = self._stage_metrics.get(stage_type)
            if stage is None:
                stage = self._stage_metrics[stage_type] = StageMetrics(stage_type)
            if stage_action == _SKIPPED:
                stage.skip_count += 1
                return
            metrics, action = stage, stage_action
        elif entity_type == _TASK_ENTITY:
            data = event.data
            task_name = data.get("name", "unknown")
            task = self._task_metrics.get(task_name)
            if task is None:
                task = self._task_metrics[task_name] = TaskMetrics(task_name, data.get("implementing_class"))
            if task_action == _RETRIED:
                task.retry_count += 1
                return
            metrics, action = task, task_action
        else:
            return
        if action == _STARTED:
            metrics.execution_count += 1
        elif action:
            if action == _SUCCEEDED:
                metrics.success_count += 1
            else:
                metrics.failure_count += 1
            duration = data.get("duration_ms")
            if duration is not None:
                metrics.durations.append(int(duration))

    def get_state(self) -> dict[str, StageMetrics]:
        """Metrics per stage type (a new dict; the metrics objects are live)."""
        return self._stage_metrics.copy()

    def get_task_state(self) -> dict[str, TaskMetrics]:
        """Metrics per task name (a new dict; the metrics objects are live)."""
        return self._task_metrics.copy()

    def get_metrics_for_type(self, stage_type: str) -> StageMetrics | None:
        """Metrics of one stage type, or None if no such stage was seen."""
        return self._stage_metrics.get(stage_type)

    def get_task_metrics_for_name(self, task_name: str) -> TaskMetrics | None:
        """Metrics of one task name, or None if no such task was seen."""
        return self._task_metrics.get(task_name)

    def reset(self) -> None:
        """Forget every count and every transition seen."""
        self._stage_metrics.clear()
        self._task_metrics.clear()
        self._seen.clear()

    def get_top_slowest_stages(self, n: int = 10) -> list[tuple[str, float]]:
        """Up to ``n`` stage types with durations, by average duration, slowest first."""
        ranked = [(t, m.avg_duration_ms) for t, m in self._stage_metrics.items() if m.durations]
        return sorted(ranked, key=lambda pair: pair[1], reverse=True)[:n]

    def get_top_failing_stages(self, n: int = 10) -> list[tuple[str, float]]:
        """Up to ``n`` stage types that ran, by failure rate, highest first."""
        ranked = [(t, m.failure_rate) for t, m in self._stage_metrics.items() if m.execution_count > 0]
        return sorted(ranked, key=lambda pair: pair[1], reverse=True)[:n]

    def to_dict(self) -> dict[str, Any]:
        """``{"stages": {type: figures}, "tasks": {name: figures}}``."""
        return {
            "stages": {t: m.to_dict() for t, m in self._stage_metrics.items()},
            "tasks": {n: m.to_dict() for n, m in self._task_metrics.items()},
        }
