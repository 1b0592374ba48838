"""What a completed study job does: select -> ROI + infer -> report -> result sinks.

The one path from a staged study to results: the node's study jobs and ``mvi-node
select`` on a staged study both go through :func:`selection_report`. Each stage is
timed (metrics and one log line); the job result records what every stage found, so
``/jobs/{id}`` shows it. Results are written durably before the sinks queue them, and
their UIDs are deterministic, so a resumed or repeated job sends nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from pydicom import dcmread

from mvi_node.dispatch.sink import ResultSet, ResultSink
from mvi_node.jobs.store import Job
from mvi_node.jobs.worker import PermanentJobError
from mvi_node.metrics import EXAMS_SKIPPED, PREDICTED_PROBABILITY, SERIES_SELECTED, observe_stage
from mvi_node.pipeline.lineage import ResultLineage, SentResult
from mvi_node.report.build import content_digest
from mvi_node.report.kos import rejection_note
from mvi_node.pipeline.siblings import related_studies
from mvi_node.select.headers import HeaderCache
from mvi_node.select.job import staged_exams, study_headers
from mvi_node.select.recipes import RecipeNeeds
from mvi_node.select.report import build_report
from mvi_node.select.rules import RuleError
from mvi_node.stage.index import StagingIndex

log = logging.getLogger("mvi_node.jobs")

#: Job results are served by the admin API and end up in tickets: UIDs only.
_IDENTIFIERS = ("patient_id", "accession_number", "patient_name", "patient_birth_date")


def _without_identifiers(report: Any) -> Any:
    if isinstance(report, dict):
        return {k: _without_identifiers(v) for k, v in report.items() if k not in _IDENTIFIERS}
    if isinstance(report, list):
        return [_without_identifiers(v) for v in report]
    return report


def _count_selection(report: dict[str, Any]) -> None:
    for exam in report.get("studies", []):
        for series in exam.get("series", []):
            SERIES_SELECTED.labels(role=series.get("role", "other")).inc()
        if not exam.get("recipes"):
            EXAMS_SKIPPED.labels(reason="no eligible series").inc()


#: builds result datasets (SR first, then SCs) for one exam x recipe result; keywords
#: ``version`` and ``predecessors`` make a superseding version
ReportBuilder = Callable[..., list]
#: writes datasets durably, returns paths
ResultWriter = Callable[[list, Path], list[Path]]


def selection_report(staging_dir: Path, study_uid: str, rules_file: str | Path | None = None,
                     needs: Sequence[RecipeNeeds] = (), index: StagingIndex | None = None,
                     window_seconds: float = 0.0, cache: HeaderCache | None = None) -> tuple[list, dict[str, Any]]:
    """The exam(s) holding a staged study (with the sibling studies ``index`` knows) and
    their report. Without an index (a copied staging folder read offline) every other
    staged study is a candidate, as grouping decides."""
    staging_dir = Path(staging_dir)
    headers = study_headers(staging_dir, study_uid, cache)
    if index is not None:
        related = related_studies(staging_dir, index, study_uid, headers, window_seconds)
    else:
        related = [(p.name, "complete") for p in sorted(staging_dir.iterdir())
                   if p.is_dir() and p.name != study_uid and not p.name.startswith(".")]
    exams, rules = staged_exams(staging_dir, study_uid, rules_file, related, window_seconds, headers, cache)
    report = build_report(exams, f"staged study {study_uid}", needs)
    report["rules"] = rules.sources
    pending = sorted({s for e in exams for s in e.pending_studies})
    if pending:
        report["pending_studies"] = pending
    return exams, report


@dataclass
class StudyPipeline:
    index: StagingIndex
    staging_dir: Path | None = None
    rules_file: Path | None = None
    engine: Any = None  # mvi_node.infer.Engine; None: selection only
    report: ReportBuilder | None = None
    write: ResultWriter | None = None
    results_dir: Path | None = None
    secondary_captures: int = 3
    #: where results go (C-STORE destinations, Orthanc)
    sinks: list[ResultSink] = field(default_factory=list)
    #: the version of each result last sent (None: every result is a first version)
    lineage: ResultLineage | None = None
    #: job -> the sinks for its results instead of ``sinks`` (a replay's research
    #: destination), or None for the configured ones
    route: Callable[[Job], list[ResultSink] | None] | None = None
    #: studies of one patient this close in study date/time are one exam (0: only a
    #: shared accession number or frame of reference joins studies)
    exam_window_seconds: float = 0.0
    #: headers parsed while studies arrived (``mvi_node.pipeline.prefetch``); None: read here
    headers: HeaderCache | None = None

    @property
    def needs(self) -> list[RecipeNeeds]:
        """The served recipes' needs (none without an engine: nothing would run)."""
        return self.engine.recipes.needs() if self.engine is not None else []

    def __call__(self, job: Job) -> dict[str, Any]:
        study_uid = job.payload["study_uid"]
        series = self.index.series_of(study_uid)
        if not series:
            raise PermanentJobError(f"study {study_uid} has no staged instances")
        result: dict[str, Any] = {
            "study_uid": study_uid,
            "round": job.payload.get("round", 1),
            "series": {uid: len(sops) for uid, sops in series.items()},
            "instances": sum(len(s) for s in series.values()),
        }
        if self.staging_dir is None:
            return result
        try:
            return self._run(job, study_uid, result)
        finally:  # one job's datasets are never another's (a later round reads its own)
            if self.headers is not None:
                self.headers.forget(self.staging_dir / study_uid)

    def _run(self, job: Job, study_uid: str, result: dict[str, Any]) -> dict[str, Any]:
        missed = self.headers.missed if self.headers is not None else 0
        try:
            with observe_stage("select", job.id, study_uid):
                exams, report = selection_report(self.staging_dir, study_uid, self.rules_file, self.needs,
                                                 self.index, self.exam_window_seconds, self.headers)
        except RuleError as exc:  # a bad site rules file: retrying cannot help
            raise PermanentJobError(f"selection rules: {exc}") from exc
        if self.headers is not None:
            # headers the job parsed itself (the prefetch had not reached them; with several
            # workers, others' misses in the meantime count too)
            result["headers_parsed"] = self.headers.missed - missed
            # the sibling studies' headers are this job's now too
            for other in {s for e in exams for s in e.study_uids} - {study_uid}:
                self.headers.forget(self.staging_dir / other)
        result["selection"] = _without_identifiers(report)
        _count_selection(report)
        if self.engine is not None:
            result["inference"] = [self._infer_and_report(job, exam) for exam in exams]
        return result

    def _infer_and_report(self, job: Job, exam) -> list[dict[str, Any]]:
        outcomes = self.engine.run_exam(exam)  # times its own roi, preprocess and infer stages
        records = []
        for res in outcomes:
            record = _without_identifiers(res.as_dict())
            if res.probability is not None:
                PREDICTED_PROBABILITY.labels(recipe=res.recipe).observe(res.probability)
            elif res.reported:
                EXAMS_SKIPPED.labels(reason=res.outcome).inc()
            if self.report is not None and self.write is not None and res.reported:
                record["outputs"] = self._report_and_queue(job, exam, res)
            records.append(record)
        return records

    def _report_and_queue(self, job: Job, exam, res) -> dict[str, Any]:
        with observe_stage("report", job.id, job.payload["study_uid"]):
            datasets = self.report(res, exam, self.secondary_captures)
            if not datasets:
                return {"files": [], "dispatch_jobs": []}
            digest = content_digest(datasets)
            study = str(datasets[0].StudyInstanceUID)
            lineage = ResultLineage.key(study, res.recipe, "")
            prev = self.lineage.current(lineage) if self.lineage is not None else None
            version, superseded = 1, ()
            if prev is not None and prev.digest == digest and all(f.exists() for f in prev.files):
                # the same result again (a retry, a resend): what was sent stands
                files, version, superseded, sr_uid = list(prev.files), prev.version, prev.superseded, prev.sr_uid
            else:
                if prev is not None:
                    datasets, version, superseded = self._superseding(res, exam, prev)
                files = self.write(datasets, self.results_dir / study)  # type: ignore[operator]
                sr_uid = str(datasets[0].SOPInstanceUID)
        # dispatch keyed on the content: a changed result is a new delivery even under old UIDs
        result = ResultSet(tuple(files), f"{sr_uid}:{digest[:16]}", study, job.created_at)
        routed = self.route(job) if self.route is not None else None
        queued = [j for sink in (self.sinks if routed is None else routed) for j in sink.queue(result)]
        if self.lineage is not None:
            self.lineage.record(lineage, SentResult(version, digest, sr_uid, tuple(files), tuple(superseded)))
        out = {"sr": sr_uid, "version": version, "files": [str(f) for f in files],
               "dispatch_jobs": [j.id for j in queued]}
        if superseded:
            out["supersedes"] = superseded[-1]
        return out

    def _superseding(self, res, exam, prev: SentResult) -> tuple[list, int, tuple[str, ...]]:
        """The next version: SR naming its predecessor, captures, and a rejection note
        (IHE IOCM) for every instance of the version it replaces."""
        old = [dcmread(f) for f in prev.files if f.exists()]
        old_sr = [d for d in old if str(d.get("Modality", "")) == "SR"][:1]
        version = prev.version + 1
        datasets = self.report(res, exam, self.secondary_captures, version=version, predecessors=old_sr)
        rejected = [d for d in old if str(d.get("Modality", "")) != "KO"]  # never reject an earlier note
        if rejected:
            datasets.append(rejection_note(rejected, str(datasets[0].SOPInstanceUID),
                                           f"Superseded by version {version} of this result"))
        log.info("result %s superseded by version %d", prev.sr_uid, version)
        return datasets, version, (*prev.superseded, prev.sr_uid)
