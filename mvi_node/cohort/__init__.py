"""Cohorts: a site trains and evaluates every recipe on its own DICOM exams.

A cohort is a table with one row per exam (:mod:`.table`), read from a source
(:mod:`.sources`: a CSV, or a folder written by ``mvi-node synth``). Its rows go through
the serving path (:mod:`.prepare`: header selection, ``qualifies``, ROI from the
exam's annotations, the recipe's own ``prepare``) and become
:class:`~mvi_node.infer.recipe.TrainingExample` values, split by patient
(:mod:`.split`); :mod:`.check` shows, per row, what was found and what is wrong.

Floor 5 (beside ``pipeline``): it imports infer, select, clinical, roi, config and
evaluation; recipes never import it (their trainers get the examples).
"""

from mvi_node.cohort.check import CheckReport, check_cohort, format_check
from mvi_node.cohort.prepare import (CohortExamples, RowClinicalSource, RowOutcome, build_examples, describe,
                                     exam_inputs, iter_exams, prepare_row, prepare_rows)
from mvi_node.cohort.sources import SOURCES, CohortSource, CsvSource, SynthSource, open_cohort, register_source
from mvi_node.cohort.split import assign_splits, split_counts
from mvi_node.cohort.table import LABELS, Cohort, CohortError, CohortRow, parse_label, pseudonym

__all__ = ["LABELS", "SOURCES", "CheckReport", "Cohort", "CohortError", "CohortExamples", "CohortRow",
           "CohortSource", "CsvSource", "RowClinicalSource", "RowOutcome", "SynthSource", "assign_splits",
           "build_examples", "check_cohort", "describe", "exam_inputs", "format_check", "iter_exams", "open_cohort",
           "parse_label", "prepare_row", "prepare_rows", "pseudonym", "register_source", "split_counts"]
