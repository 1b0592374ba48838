"""The replay worker inside the node: query, plan, retrieve, hand over, wait, record.

One replay runs at a time, oldest first; inside it up to ``max_concurrent`` studies of
the archive are retrieved at once. Every step is a committed row in the replay store,
so a killed node picks the replay up where it was: studies half retrieved are asked for
again (the node stores each instance once), retrieved ones wait for their job.

A study counts as retrieved only when the node has staged every expected instance of
each needed series (NumberOfSeriesRelatedInstances, else the sub-operation counts):
a PACS that says "done" early, or whose sub-operations fail, gets the series asked for
again, ``retries`` times, before the study fails with the counts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from mvi_node.common.poller import Poller
from mvi_node.config.replay import ArchiveSettings, ReplaySettings
from mvi_node.replay import metrics
from mvi_node.replay.hooks import NodeHooks
from mvi_node.replay.plan import plan_study, public_plan, totals
from mvi_node.replay.query import find_studies
from mvi_node.replay.sources import ArchiveError, DimseArchive, Retrieved, final_error, parse_ae
from mvi_node.replay.store import (CANCELLED, DONE, FAILED, PLANNED, PROCESSING, QUERYING, QUEUED,
                                   RETRIEVED, RETRIEVING, RUNNING, STUDY_DONE, STUDY_FAILED, Replay, ReplayStore,
                                   StudyRow)
from mvi_node.replay.throttle import ByteBudget, Pacer, in_busy_hours, wait_while

log = logging.getLogger("mvi_node.replay")
audit = logging.getLogger("mvi_node.audit")


def models_key(models: dict[str, str], recipes: list[str]) -> str:
    return ",".join(sorted(f"{r}@{models.get(r, '')}" for r in recipes))


class ReplayRunner(Poller):
    thread_name = "replay"
    failure_message = "replay pass failed"
    logger = log

    def __init__(self, store: ReplayStore, hooks: NodeHooks, settings: ReplaySettings) -> None:
        super().__init__(settings.poll_seconds)
        self.store, self.hooks, self.settings = store, hooks, settings
        self._resumed: set[int] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_replay: int | None = None
        self._inflight: dict[str, Future] = {}
        self._cancel = threading.Event()
        self._rates: dict[int, tuple[float, int]] = {}
        self._pacers: dict[str, Pacer] = {}
        self._budgets: dict[str, ByteBudget] = {}
        self._sources: dict[int, tuple[Any, ArchiveSettings]] = {}

    # -- archives ---------------------------------------------------------------------
    def archive_settings(self, request_pacs: str) -> tuple[str, ArchiveSettings]:
        if request_pacs in self.settings.pacs:
            return request_pacs, self.settings.pacs[request_pacs]
        ae, host, port = parse_ae(request_pacs)
        return ae, ArchiveSettings(ae_title=ae, host=host, port=port)

    def archive(self, replay: Replay):
        """The request's source and its settings, made once per replay (a folder: one
        study at a time, no budget)."""
        if replay.id not in self._sources:
            self._sources[replay.id] = self._make_source(replay)
        return self._sources[replay.id]

    def _make_source(self, replay: Replay):
        req = replay.request
        if req.folder:
            from mvi_node.replay.folder import FolderArchive

            return FolderArchive(Path(req.folder), self.hooks.stage_file), ArchiveSettings(
                ae_title="FOLDER", host="localhost", port=1, max_concurrent=1, result_cap=1 << 30)
        if req.dicomweb:
            from mvi_node.replay.dicomweb import DicomWebArchive

            return DicomWebArchive(req.dicomweb, self.hooks.stage_file, self.hooks.spool_dir()), ArchiveSettings(
                ae_title="DICOMWEB", host="localhost", port=1, max_concurrent=2, result_cap=1 << 30)
        name, cfg = self.archive_settings(req.pacs or "")
        return DimseArchive(name, cfg.ae_title, cfg.host, cfg.port, self.hooks.calling_ae, retrieve=cfg.retrieve,
                            move_destination=cfg.move_destination, timeout_s=cfg.timeout_s,
                            accept=self.hooks.accept), cfg

    # -- the loop ---------------------------------------------------------------------
    def poll(self) -> bool:
        replay = self.store.next_active()
        if replay is None:
            return False
        if replay.cancel:
            return self._cancel_replay(replay)
        if replay.state in (QUEUED, QUERYING):
            self._plan(replay)
            return True
        return self._advance(replay)

    def stop(self) -> None:
        self._cancel.set()
        super().stop()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)  # a move in flight ends on its own

    # -- planning ---------------------------------------------------------------------
    def _plan(self, replay: Replay) -> None:
        self.store.set_state(replay.id, QUERYING)
        try:
            archive, cfg = self.archive(replay)
        except ValueError as exc:
            self._finish(replay.id, FAILED, str(exc))
            return
        notes: list[str] = []
        try:
            studies = find_studies(lambda d, m, a, p: archive.find_studies(d, m, a, p), replay.request,
                                   cfg.result_cap, notes)
            needs, rules = self.hooks.needs(), self.hooks.rules()
            models = self.hooks.models()
            full = getattr(archive, "headers", None)  # complete headers where the source has them
            plans = [plan_study(s, archive.find_series(str(s.StudyInstanceUID)), rules, needs,
                                replay.request.series_description,
                                headers=full(str(s.StudyInstanceUID)) if full else None) for s in studies]
        except ArchiveError as exc:
            self._finish(replay.id, FAILED, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a replay that cannot be planned fails, the worker goes on
            log.exception("replay %d could not be planned", replay.id)
            self._finish(replay.id, FAILED, f"planning failed: {type(exc).__name__}")
            return
        processed = self.hooks.processed([p["study_uid"] for p in plans]) if not replay.request.force else {}
        for plan in plans:
            key = models_key(models, plan["recipes"])
            plan["models"] = key
            if plan["skip"] or replay.request.force:
                continue
            done_here = key in self.store.processed_with(plan["study_uid"])
            wanted = set(key.split(","))
            if done_here or (wanted and wanted <= processed.get(plan["study_uid"], set())):
                plan["skip"] = f"already processed with {key} (--force to redo)"
        for note in notes:
            self.store.add_note(replay.id, note)
        self.store.add_studies(replay.id, [public_plan(p) for p in plans])
        pacs = archive.name
        for plan in plans:
            metrics.STUDIES.labels(pacs=pacs, outcome="skipped" if plan["skip"] else "queued").inc()
        t = totals(plans)
        log.info("replay %d planned: %d studies, %d to retrieve (%d series, %d instances), %d skipped",
                 replay.id, t["studies"], t["retrieve_studies"], t["series"], t["instances"], t["skipped"])
        if replay.request.dry_run:
            self._finish(replay.id, DONE)
        else:
            self.store.set_state(replay.id, RUNNING)

    # -- running ----------------------------------------------------------------------
    def _advance(self, replay: Replay) -> bool:
        if replay.id not in self._resumed:
            # retrievals a killed process left half done start again (the node stores each
            # instance once, so what already arrived is not stored twice)
            again = self.store.studies(replay.id, RETRIEVING)
            if again:
                log.info("replay %d resumed: %d studies are retrieved again", replay.id, len(again))
            self._resumed.add(replay.id)
        busy = False
        for row in self.store.studies(replay.id, RETRIEVED):
            busy |= self._hand_over(replay, row)
        for row in self.store.studies(replay.id, PROCESSING):
            busy |= self._check_job(replay, row)
        archive, cfg = self.archive(replay)
        self._reap()
        if self._pool is None or self._pool_replay != replay.id:
            self._pool = ThreadPoolExecutor(cfg.max_concurrent, thread_name_prefix=f"replay-{replay.id}")
            self._pool_replay = replay.id
        pacer = self._pacers.setdefault(archive.name, Pacer(cfg.instances_per_second))
        pacer.per_second = cfg.instances_per_second
        budget = self._budgets.setdefault(archive.name, ByteBudget(cfg.mb_per_second * 1e6))
        budget.per_second = cfg.mb_per_second * 1e6
        planned = [r for r in self.store.studies(replay.id) if r.state in (PLANNED, RETRIEVING)
                   and r.study_uid not in self._inflight]
        for row in planned[: max(0, cfg.max_concurrent - len(self._inflight))]:
            self.store.update_study(replay.id, row.study_uid, state=RETRIEVING, since=row.since or time.time())
            self._inflight[row.study_uid] = self._pool.submit(self._retrieve, replay, row, archive, cfg, pacer,
                                                              budget)
            busy = True
        counts = self.store.counts(replay.id)
        if not self._inflight and not any(counts.get(s) for s in (PLANNED, RETRIEVING, RETRIEVED, PROCESSING)):
            metrics.RATE.labels(pacs=archive.name).set(0)
            self._finish(replay.id, DONE)
            return True
        return busy

    def _reap(self) -> None:
        for uid, fut in list(self._inflight.items()):
            if fut.done():
                del self._inflight[uid]
                exc = fut.exception()
                if exc is not None:
                    log.error("replay retrieve of study %s raised %s", uid, type(exc).__name__)

    def _retrieve(self, replay: Replay, row: StudyRow, archive: DimseArchive, cfg: ArchiveSettings,
                  pacer: Pacer, budget: ByteBudget | None = None) -> None:
        try:
            self._retrieve_study(replay, row, archive, cfg, pacer, budget or ByteBudget())
        except Exception as exc:  # noqa: BLE001 - the study fails with the error's name, the replay goes on
            log.exception("replay %d: retrieve of study %s failed", replay.id, row.study_uid)
            self.store.update_study(replay.id, row.study_uid, state=STUDY_FAILED,
                                    reason=f"retrieve failed: {type(exc).__name__}")

    def _retrieve_study(self, replay: Replay, row: StudyRow, archive: DimseArchive, cfg: ArchiveSettings,
                        pacer: Pacer, budget: ByteBudget) -> None:
        """Retrieve every needed series of one study until the node holds all of it."""
        uid = row.study_uid
        def paused(why: str) -> None:
            log.info("replay %d paused: %s", replay.id, why)
            self.store.set_paused(replay.id, why)

        needed = sum(s["bytes"] for s in row.plan["series"] if s["retrieve"])
        wait_while(lambda: self._pause_reason(cfg, needed), self._cancel, paused, poll=1.0)
        self.store.set_paused(replay.id, "")
        if self._cancel.is_set():
            return
        problems, failed_subops, retrieved = [], row.failed_subops, 0
        try:
            for series in [s for s in row.plan["series"] if s["retrieve"]]:
                suid, expected = series["series_uid"], series["instances"]
                err = ""
                for attempt in range(self.settings.retries + 1):
                    have = self.hooks.staged(uid).get(suid, set())
                    if expected and len(have) >= expected:
                        break
                    sops, paced = None, None
                    if pacer.limited or budget.limited:
                        # a few instances per request (half a second's budget; one under a
                        # MB/s budget), so the budget paces instances, not whole series;
                        # only those the node lacks
                        sops = [s for s in archive.find_instances(uid, suid) if s not in have]
                        paced = self._paced(uid, suid, pacer, budget)
                    chunk = max(1, int(pacer.per_second / 2)) if pacer.limited else 1
                    result = Retrieved()
                    if budget.limited and sops:
                        # one instance first, to learn their size; then a quarter second of bytes a request
                        before = self.hooks.staged_bytes(uid, suid)
                        result.add(archive.retrieve(uid, suid, sops[:1], before_each=paced, cancel=self._cancel))
                        size = max(1, self.hooks.staged_bytes(uid, suid) - before)
                        sops = sops[1:]
                        by_bytes = max(1, int(budget.per_second * 0.25 / size))  # a quarter second a request
                        chunk = min(chunk, by_bytes) if pacer.limited else by_bytes
                    if sops is None or sops:
                        result.add(archive.retrieve(uid, suid, sops, before_each=paced, cancel=self._cancel,
                                                    chunk=chunk))
                    if paced is not None and budget.limited:
                        paced(0)  # the last request's bytes are paid for too, before the next series
                    failed_subops += result.failed
                    if result.failed:
                        metrics.FAILED_SUBOPS.labels(pacs=archive.name).inc(result.failed)
                    if result.cancelled:
                        return
                    expected = expected or (result.completed + result.warning) or None
                    got = len(self.hooks.staged(uid).get(suid, set()))
                    if expected and got >= expected:
                        break
                    err = final_error(result) or err
                    log.warning("replay %d: series %s has %d of %s instances after attempt %d%s", replay.id, suid,
                                got, expected, attempt + 1, f" ({err})" if err else "")
                got = len(self.hooks.staged(uid).get(suid, set()))
                retrieved += got
                if not expected or got < expected:
                    hint = ""
                    if got == 0 and err and archive.name not in ("folder", "dicomweb") and cfg.retrieve == "move":
                        hint = f"; does the archive know the move destination {archive.move_destination!r}?"
                    problems.append(f"series {suid}: {got} of {expected or '?'} instances arrived after "
                                    f"{self.settings.retries + 1} attempt(s)" + (f" (last: {err}{hint})" if err else ""))
        except ArchiveError as exc:
            problems.append(str(exc))
        except OSError as exc:
            problems.append(f"archive {archive.name}: {type(exc).__name__}")
        metrics.INSTANCES.labels(pacs=archive.name).inc(retrieved)
        self._note_rate(replay.id, archive.name, retrieved)
        if problems:
            reason = "; ".join(problems) + (f"; {failed_subops} failed sub-operation(s)" if failed_subops else "")
            self.store.update_study(replay.id, uid, state=STUDY_FAILED, reason=reason, failed_subops=failed_subops,
                                    retrieved=retrieved, attempts=row.attempts + 1)
            metrics.STUDIES.labels(pacs=archive.name, outcome="failed").inc()
        else:
            self.store.update_study(replay.id, uid, state=RETRIEVED, failed_subops=failed_subops,
                                    retrieved=retrieved, attempts=row.attempts + 1)
            metrics.STUDIES.labels(pacs=archive.name, outcome="retrieved").inc()

    def _paced(self, study_uid: str, series_uid: str, pacer: Pacer, budget: ByteBudget):
        """Before each request: pay for the bytes the previous one brought, then wait
        for the next instance slot."""
        seen = [self.hooks.staged_bytes(study_uid, series_uid) if budget.limited else 0]

        def before(n: int) -> None:
            if budget.limited:
                now = self.hooks.staged_bytes(study_uid, series_uid)
                budget.charge(now - seen[0])
                seen[0] = now
                budget.wait(self._cancel)
            pacer.acquire(n, self._cancel)

        return before

    def _note_rate(self, replay_id: int, pacs: str, n: int) -> None:
        start, total = self._rates.get(replay_id, (time.monotonic(), 0))
        total += n
        self._rates[replay_id] = (start, total)
        elapsed = time.monotonic() - start
        if elapsed > 0:
            metrics.RATE.labels(pacs=pacs).set(total / elapsed)

    def _pause_reason(self, cfg: ArchiveSettings, needed_bytes: int = 0) -> str:
        if cfg.busy_hours and in_busy_hours(cfg.busy_hours):
            return "inside the archive's busy hours"
        if cfg.off_peak and not in_busy_hours(cfg.off_peak):
            return "outside the archive's off-peak hours"
        return self.hooks.pause_reason(needed_bytes)

    def _hand_over(self, replay: Replay, row: StudyRow) -> bool:
        key = self.hooks.process(row.study_uid, row.since or 0.0, f"{replay.id}", replay.request.destination)
        if not key:
            return False
        self.store.update_study(replay.id, row.study_uid, state=PROCESSING, job_key=key)
        return True

    def _check_job(self, replay: Replay, row: StudyRow) -> bool:
        outcome = self.hooks.job_outcome(row.job_key or "")
        pacs = self.archive(replay)[0].name
        if outcome is None or outcome[0] in ("queued", "running"):
            if row.since and time.time() - row.since > self.settings.process_timeout_s:
                self.store.update_study(replay.id, row.study_uid, state=STUDY_FAILED,
                                        reason=f"its job {row.job_key} did not finish in {self.settings.process_timeout_s:g} s")
                return True
            return False
        state, _result, error = outcome
        if state == "done":
            self.store.update_study(replay.id, row.study_uid, state=STUDY_DONE, reason="processed")
            if row.plan.get("models"):
                self.store.mark_done(row.study_uid, row.plan["models"], replay.id)
            metrics.STUDIES.labels(pacs=pacs, outcome="done").inc()
        else:
            self.store.update_study(replay.id, row.study_uid, state=STUDY_FAILED,
                                    reason=f"its job ended {state}: {(error or '')[:200]}")
            metrics.STUDIES.labels(pacs=pacs, outcome="failed").inc()
        return True

    # -- cancel, audit ----------------------------------------------------------------
    def _cancel_replay(self, replay: Replay) -> bool:
        self._cancel.set()  # in-flight moves send C-CANCEL at their next pending answer
        for fut in list(self._inflight.values()):
            try:
                fut.result(timeout=60)
            except Exception:  # noqa: BLE001 - reported by the study's own row
                pass
        self._inflight.clear()
        self._cancel.clear()
        for row in self.store.studies(replay.id):
            if row.state in (PLANNED, RETRIEVING):
                self.store.update_study(replay.id, row.study_uid, state=CANCELLED, reason="replay cancelled")
        self._finish(replay.id, CANCELLED)
        return True

    def _finish(self, replay_id: int, state: str, error: str | None = None) -> None:
        self.store.set_state(replay_id, state, error)
        self._sources.pop(replay_id, None)
        self._audit(replay_id)

    def _audit(self, replay_id: int) -> None:
        """One line per finished replay: who asked, the query, the counts; UIDs and
        identifiers are not in it (the query shows how many accessions were given)."""
        replay = self.store.get(replay_id)
        if replay is None:
            return
        rows = self.store.studies(replay_id)
        counts = self.store.counts(replay_id)
        instances = sum(r.retrieved for r in rows)
        seconds = (replay.finished_at or time.time()) - replay.created_at
        audit.info("replay %d %s: requested_by=%s query=%s studies=%s instances=%d seconds=%.1f", replay.id,
                   replay.state, replay.request.requested_by or "(unknown)",
                   json.dumps(replay.request.public(), sort_keys=True), json.dumps(counts, sort_keys=True),
                   instances, seconds)
