"""The node side of replays: what :class:`mvi_node.replay.runner.NodeHooks` asks of it.

Retrieved instances arrive through the node's own listener (C-MOVE) or its store
handler (C-GET) and are staged as any routed instance. A retrieve that brought new
instances opened a round of the study, whose job the completion watcher queues after
the quiet period: the replay waits for that job. A retrieve that brought nothing new
(``--force``, or a study staged before and never processed) queues a study job of its
own, keyed on the replay, so the pipeline runs once for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mvi_node.jobs.store import JobState, JobStore
from mvi_node.replay.folder import dataset_offset
from mvi_node.replay.runner import ReplayRunner
from mvi_node.replay.store import ReplayStore
from mvi_node.select.rules import load_rules
from mvi_node.stage.completion import STUDY_JOB, study_job_key
from mvi_node.stage.file_meta import encode_file_meta
from mvi_node.stage.index import StagingIndex
from mvi_node.stage.ingest import RejectedInstance

log = logging.getLogger("mvi_node.replay")


class NodeReplayHooks:
    def __init__(self, node) -> None:
        self.node = node
        settings = node.settings
        self.calling_ae = settings.listener.ae_title
        self.index: StagingIndex = node.index
        self.jobs: JobStore = node.jobs
        self._rules = None

    def needs(self):
        engine = self.node.engine
        return engine.recipes.needs() if engine is not None else []

    def rules(self):
        if self._rules is None:
            self._rules = load_rules(self.node.settings.select.rules)
        return self._rules

    def _served(self) -> dict[str, tuple[str, set[str]]]:
        """recipe -> (the model's sha256 as replays name it: its first variant's fp32
        graph, every sha256 its graphs may run under: variants and precision copies)."""
        engine = self.node.engine
        out: dict[str, tuple[str, set[str]]] = {}
        for recipe in engine.registry.models if engine is not None else []:
            model = engine.registry.get(recipe)
            if model is None or not model.variants:
                continue
            variants = model.variants.values()
            shas = {v.sha256 for v in variants} | {p.sha256 for v in variants for p in v.precisions.values()}
            out[recipe] = (model.variants[sorted(model.variants)[0]].sha256, shas)
        return out

    def models(self) -> dict[str, str]:
        return {recipe: canonical for recipe, (canonical, _all) in self._served().items()}

    def processed(self, study_uids: list[str]) -> dict[str, set[str]]:
        wanted = set(study_uids)
        served = self._served()
        out: dict[str, set[str]] = {}
        before = None
        # one pass over the finished jobs per replay plan, not one per study
        while page := self.jobs.list(JobState.DONE, limit=500, before_id=before):
            for job in page:
                study = job.payload.get("study_uid")
                if job.kind != STUDY_JOB or study not in wanted:
                    continue
                for exam in job.result.get("inference", []) or []:
                    for rec in exam:
                        recipe, sha = rec.get("recipe"), rec.get("model_sha256")
                        if recipe in served and sha in served[recipe][1]:  # any graph of the served model
                            out.setdefault(study, set()).add(f"{recipe}@{served[recipe][0]}")
            before = page[-1].id
        return out

    def staged(self, study_uid: str) -> dict[str, set[str]]:
        return {s: set(sops) for s, sops in self.index.series_of(study_uid).items()}

    def staged_bytes(self, study_uid: str, series_uid: str) -> int:
        return self.index.series_bytes(study_uid, series_uid)

    def process(self, study_uid: str, since: float, tag: str, destination: str | None) -> str:
        row = self.index.study_round(study_uid)
        if row is None:
            return ""
        round_no, state, first_received, enqueued = row
        if state == "open":
            return ""  # still receiving: the quiet period decides
        if first_received >= since - 1.0:  # this retrieve opened the round: its job is the watcher's
            return study_job_key(study_uid, round_no) if enqueued else ""
        key = f"study:{study_uid}:replay:{tag}"
        payload: dict[str, Any] = {"study_uid": study_uid, "round": round_no, "replay": tag}
        self.jobs.enqueue(STUDY_JOB, key, payload)
        return key

    def job_outcome(self, key: str):
        job = self.jobs.by_key(key)
        if job is None:
            return None
        return job.state.value, job.result, job.last_error

    def pause_reason(self, needed_bytes: int = 0) -> str:
        listener = self.node.listener
        if listener is None:
            return ""
        disk = listener.handlers.disk
        if disk.low():
            return "the node's free disk is below its floor"
        if disk.min_free_bytes > 0 and disk.free_bytes() - needed_bytes < disk.min_free_bytes:
            return "the node's free disk is near its floor (the study would cross it)"
        return ""

    def accept(self, event):
        """A C-GET sub-operation: pynetdicom spooled the dataset to a file of its own
        (behind its file meta); it is staged from there behind the node's file meta."""
        listener = self.node.listener
        path = getattr(event.request, "_dataset_path", None)
        if listener is None or path is None:
            return listener.handlers.on_store(event) if listener is not None else 0xA700
        request = event.request
        try:
            return self.stage_file(Path(path), dataset_offset(Path(path)), str(event.context.transfer_syntax),
                                   str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID),
                                   str(event.assoc.acceptor.ae_title).strip())
        finally:
            Path(path).unlink(missing_ok=True)

    def stage_file(self, path: Path, offset: int, transfer_syntax: str, sop_class: str, sop_uid: str,
                   source: str) -> int:
        """One instance from a file (C-GET spool, a folder, a WADO-RS download) into
        staging, checked as the listener checks what it receives."""
        listener = self.node.listener
        if listener is None:
            return 0xA700
        if listener.handlers.disk.low():
            return 0xA700
        try:
            meta = encode_file_meta(sop_class, sop_uid, transfer_syntax, source or None)
            outcome = listener.handlers.stager.store_file(meta, Path(path), transfer_syntax, sop_class, sop_uid,
                                                          calling_ae=source or None, offset=offset)
        except RejectedInstance as exc:
            log.warning("replayed instance %s refused: %s", sop_uid, exc.reason)
            return exc.status
        except OSError as exc:
            log.warning("replayed instance %s not staged: %s", sop_uid, type(exc).__name__)
            return 0xA700
        listener.handlers.on_stored(outcome)
        return 0x0000

    def spool_dir(self) -> Path:
        path = self.node.settings.data_dir / "incoming"
        path.mkdir(parents=True, exist_ok=True)
        return path


def research_route(store: ReplayStore, jobs: JobStore, settings):
    """The pipeline's ``route``: a study a replay retrieves for a research destination
    sends its results there only (C-STORE, with the node's retries and dead letters)."""
    from mvi_node.config.destination import Destination
    from mvi_node.dispatch.cstore import CStoreSink

    def route(job):
        dest = store.destination_for(str(job.payload.get("study_uid", "")))
        if dest is None:
            return None
        return [CStoreSink(jobs, [Destination.parse(dest, tls=settings.dispatch.tls)], settings.dispatch.max_attempts)]

    return route


class ReplayService:
    """The replay store, its worker and the schedules, started and stopped with the node."""

    def __init__(self, node) -> None:
        settings = node.settings
        self.store = ReplayStore(settings.data_dir / "replays.sqlite3")
        self.runner = ReplayRunner(self.store, NodeReplayHooks(node), settings.replay)
        self.scheduler = None
        if settings.replay.schedules:
            from mvi_node.replay.schedule import ReplayScheduler

            only = next(iter(settings.replay.pacs)) if len(settings.replay.pacs) == 1 else ""
            self.scheduler = ReplayScheduler(settings.replay.schedules, settings.data_dir / "replay-schedules.sqlite3",
                                             only, self.store.create)

    def start(self) -> None:
        self.runner.start()
        if self.scheduler is not None:
            self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        self.runner.stop()


def build_replay(node) -> ReplayService | None:
    if not node.settings.replay.enabled:
        return None
    return ReplayService(node)
