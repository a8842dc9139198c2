"""Projections: read models built by folding events.

`WorkflowTimelineProjection` and `StageMetricsProjection` are the built-in
ones; subclass `Projection` for others. `ProjectionRunner` feeds a projection
from the store and then live from the bus, without gaps or repeats.
"""

from stabilize_events.projections.base import Projection
from stabilize_events.projections.metrics import StageMetrics, StageMetricsProjection, TaskMetrics
from stabilize_events.projections.runner import ProjectionRunner
from stabilize_events.projections.timeline import (
    TimelineEntry,
    WorkflowTimeline,
    WorkflowTimelineProjection,
)

__all__ = [
    "Projection",
    "ProjectionRunner",
    "StageMetrics",
    "StageMetricsProjection",
    "TaskMetrics",
    "TimelineEntry",
    "WorkflowTimeline",
    "WorkflowTimelineProjection",
]
