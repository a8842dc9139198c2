"""Small stand-ins for Stabilize's workflow models, carrying what the recorder reads.

`EventRecorder` is duck-typed: it reads attributes such as ``workflow.trigger.type``,
``stage.execution.id``, ``stage.is_synthetic()`` or ``task.task_exception_details``.
These dataclasses have exactly those attributes, with the same names and kinds of
value as ``stabilize.models`` (statuses are enums read by ``.name``, times are
milliseconds since the epoch as ``int``), so the demo runs without Stabilize
installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class WorkflowStatus(Enum):
    """The subset of Stabilize's ``WorkflowStatus`` the demo moves through."""

    NOT_STARTED = "NOT_STARTED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    SKIPPED = "SKIPPED"
    TERMINAL = "TERMINAL"
    CANCELED = "CANCELED"


class WorkflowType(Enum):
    """Kind of execution, as in Stabilize (the recorder stores ``.value``)."""

    PIPELINE = "PIPELINE"
    ORCHESTRATION = "ORCHESTRATION"


@dataclass
class Trigger:
    """What started a workflow."""

    type: str = "manual"
    user: str = "anonymous"


@dataclass
class PausedDetails:
    """Who paused a workflow and for how long (read by the pause/resume events)."""

    paused_by: str = ""
    pause_time: int | None = None
    resume_time: int | None = None
    paused_ms: int = 0


@dataclass(eq=False)
class Task:
    """One unit of work inside a stage."""

    id: str
    name: str
    implementing_class: str
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    start_time: int | None = None
    end_time: int | None = None
    task_exception_details: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    stage: Stage | None = field(default=None, repr=False)


@dataclass(eq=False)
class Stage:
    """One stage of a workflow: a named step made of tasks, with upstream stages."""

    id: str
    ref_id: str
    type: str
    name: str
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    context: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    tasks: list[Task] = field(default_factory=list)
    requisite_stage_ref_ids: set[str] = field(default_factory=set)
    parent_stage_id: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    version: int = 0
    execution: Workflow | None = field(default=None, repr=False)

    def is_synthetic(self) -> bool:
        """Whether this stage was generated inside another (it has a parent)."""
        return self.parent_stage_id is not None

    def is_initial(self) -> bool:
        """Whether this stage can start as soon as the workflow does."""
        return not self.requisite_stage_ref_ids and not self.is_synthetic()


@dataclass(eq=False)
class Workflow:
    """A workflow execution: its stages, trigger, status and times."""

    id: str
    application: str
    name: str
    type: WorkflowType = WorkflowType.PIPELINE
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    stages: list[Stage] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    trigger: Trigger = field(default_factory=Trigger)
    start_time: int | None = None
    end_time: int | None = None
    is_canceled: bool = False
    canceled_by: str | None = None
    cancellation_reason: str | None = None
    paused: PausedDetails | None = None

    def initial_stages(self) -> list[Stage]:
        """Stages with no upstream stage and no parent: the ones started first."""
        return [stage for stage in self.stages if stage.is_initial()]

    def add_stage(
        self,
        ref_id: str,
        name: str,
        stage_type: str,
        tasks: list[tuple[str, str]],
        requires: set[str] | None = None,
    ) -> Stage:
        """Add a stage with tasks given as ``(name, implementing_class)`` pairs; return it.

        Ids follow the workflow's: ``<workflow id>-<ref_id>`` and ``...-<ref_id>-t<n>``.
        """
        stage = Stage(
            id=f"{self.id}-{ref_id}",
            ref_id=ref_id,
            type=stage_type,
            name=name,
            requisite_stage_ref_ids=set(requires or ()),
            execution=self,
        )
        for n, (task_name, implementing_class) in enumerate(tasks, start=1):
            stage.tasks.append(
                Task(
                    id=f"{stage.id}-t{n}",
                    name=task_name,
                    implementing_class=implementing_class,
                    stage=stage,
                )
            )
        self.stages.append(stage)
        return stage

    def stage(self, ref_id: str) -> Stage:
        """The stage with this ``ref_id``."""
        for stage in self.stages:
            if stage.ref_id == ref_id:
                return stage
        raise KeyError(ref_id)
