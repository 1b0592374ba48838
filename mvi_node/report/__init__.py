"""Report stage: TID 1500 Structured Report and Grad-CAM secondary captures, in the
source study, with UIDs derived from the exam and the model so nothing is duplicated.

Input is plain data (:mod:`mvi_node.report.inputs`); :mod:`mvi_node.report.outputs`
fills it from the inference engine's result.
"""

from mvi_node.report.build import build_outputs, result_uids, save_outputs
from mvi_node.report.inputs import LesionResult, ModelIdentity, PlanarRegion, ReportInput, SliceResult
from mvi_node.report.sc import sc_preview_png

__all__ = ["build_outputs", "save_outputs", "sc_preview_png", "result_uids", "ReportInput", "LesionResult",
           "SliceResult", "ModelIdentity", "PlanarRegion"]
