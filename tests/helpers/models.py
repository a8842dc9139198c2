"""Small stand-ins for Stabilize's workflow, stage and task models, for recorder tests.

They carry the attributes `EventRecorder` reads, with Stabilize's names and
meanings (times in epoch milliseconds, statuses as enum members), so the
tests need no Stabilize install.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# The parts that are the same as the demo's stand-in models are shared with it.
from stabilize_events.demo.models import PausedDetails, Trigger, WorkflowType


class WorkflowStatus(Enum):
    """A few of Stabilize's statuses; the recorder only reads ``.name``."""

    NOT_STARTED = ("NOT_STARTED", False, False)
    RUNNING = ("RUNNING", False, False)
    SUSPENDED = ("SUSPENDED", False, False)
    SUCCEEDED = ("SUCCEEDED", True, False)
    TERMINAL = ("TERMINAL", True, True)
    CANCELED = ("CANCELED", True, True)


@dataclass
class Workflow:
    """A workflow execution."""

    id: str = "wf-1"
    application: str = "billing"
    name: str = "nightly"
    type: WorkflowType = WorkflowType.PIPELINE
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    trigger: Trigger | None = field(default_factory=Trigger)
    stages: list[Stage] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    start_time: int | None = None
    end_time: int | None = None
    canceled_by: str | None = None
    cancellation_reason: str | None = None
    paused: PausedDetails | None = None

    def initial_stages(self) -> list[Stage]:
        """Stages with no upstream stage that are not synthetic (as Stabilize defines them)."""
        return [s for s in self.stages if not s.requisite_stage_ref_ids and not s.is_synthetic()]

    def add_stage(self, stage: Stage) -> Stage:
        """Attach ``stage`` to this workflow and return it."""
        stage.execution = self
        self.stages.append(stage)
        return stage


@dataclass
class Stage:
    """A stage of a workflow."""

    id: str = "st-1"
    ref_id: str = "build"
    type: str = "shell"
    name: str = "Build"
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    outputs: dict[str, Any] = field(default_factory=dict)
    tasks: list[Task] = field(default_factory=list)
    requisite_stage_ref_ids: set[str] = field(default_factory=set)
    parent_stage_id: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    version: int = 0
    # Back-references are left out of repr and == to avoid cycles.
    execution: Workflow | None = field(default=None, repr=False, compare=False)

    def is_synthetic(self) -> bool:
        """A stage is synthetic when it has a parent stage."""
        return self.parent_stage_id is not None

    def add_task(self, task: Task) -> Task:
        """Attach ``task`` to this stage and return it."""
        task.stage = self
        self.tasks.append(task)
        return task


@dataclass
class Task:
    """A task of a stage."""

    id: str = "tk-1"
    name: str = "compile"
    implementing_class: str = "app.tasks.Compile"
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    start_time: int | None = None
    end_time: int | None = None
    task_exception_details: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    stage: Stage | None = field(default=None, repr=False, compare=False)


def sample_workflow() -> Workflow:
    """A workflow with two initial stages, one dependent stage and one synthetic stage."""
    wf = Workflow(
        trigger=Trigger(type="webhook"),
        context={"region": "eu", "retries": 2},
    )
    wf.add_stage(Stage(id="st-1", ref_id="build", version=4))
    wf.add_stage(Stage(id="st-2", ref_id="lint", type="python", name="Lint"))
    wf.add_stage(Stage(id="st-3", ref_id="deploy", requisite_stage_ref_ids={"build", "lint"}))
    wf.add_stage(Stage(id="st-4", ref_id="build-pre", parent_stage_id="st-1"))
    return wf
