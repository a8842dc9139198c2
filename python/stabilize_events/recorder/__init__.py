"""Recording of workflow, stage and task transitions as events.

`EventRecorder` builds, stores and publishes the events; `set_event_context`
sets the correlation, causation and actor they carry; the global recorder is
managed by `configure_event_recorder`, `get_event_recorder` and
`reset_event_recorder`.
"""

from stabilize_events.recorder.context import get_event_metadata, set_event_context
from stabilize_events.recorder.instance import (
    configure_event_recorder,
    get_event_recorder,
    reset_event_recorder,
)
from stabilize_events.recorder.recorder import (
    EventRecorder,
    PausedLike,
    StageLike,
    StatusLike,
    TaskLike,
    TriggerLike,
    WorkflowLike,
)

__all__ = [
    "EventRecorder",
    "PausedLike",
    "StageLike",
    "StatusLike",
    "TaskLike",
    "TriggerLike",
    "WorkflowLike",
    "configure_event_recorder",
    "get_event_metadata",
    "get_event_recorder",
    "reset_event_recorder",
    "set_event_context",
]
