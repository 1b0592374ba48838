"""The study pipeline: a completed study -> select -> ROI + infer -> report -> sinks.

It sits above the stages it composes (select, infer, report, dispatch) and below the
node that wires it; ``jobs/`` only queues and runs it.
"""

from mvi_node.pipeline.study import StudyPipeline, selection_report

__all__ = ["StudyPipeline", "selection_report"]
