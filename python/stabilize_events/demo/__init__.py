"""The ``stabilize-events demo``: realistic workflows recorded, then read back.

`run_demo` configures event sourcing on a store, plays the `SCENARIOS`
(parallel stages, a retried task, a skipped stage, a failed and a canceled
workflow) through the recorder, and prints each `Section` of the report.
"""

from stabilize_events.demo.context import DemoContext, Section
from stabilize_events.demo.runner import SECTIONS, run_demo
from stabilize_events.demo.scenarios import SCENARIOS, RecordedWorkflow, Scenario, run_scenarios

__all__ = [
    "SCENARIOS",
    "SECTIONS",
    "DemoContext",
    "RecordedWorkflow",
    "Scenario",
    "Section",
    "run_demo",
    "run_scenarios",
]
