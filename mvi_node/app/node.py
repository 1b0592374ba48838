"""The running node: listener(s), completion watcher and job workers in one service."""

from __future__ import annotations

from functools import partial

import logging
import multiprocessing as mp
import os
import signal
import threading
from typing import Callable

from mvi_node.admin.clinical import ClinicalFactorStore
from mvi_node.admin.collector import NodeCollector
from mvi_node.common.durable import BatchSyncer
from mvi_node.common.lockfile import DataDirInUse, DataDirLock
from mvi_node.config import Settings
from mvi_node.config.destination import Destination
from mvi_node.dispatch.cstore import CStoreSink
from mvi_node.dispatch.jobs import DISPATCH_JOB, make_dispatch_handler
from mvi_node.dispatch.sender import echo
from mvi_node.app.engine import build_engine, model_readiness, warm_up
from mvi_node.app.listener_process import batch_syncer, child_listener, listener_count, make_listener, wait_for_signal
from mvi_node.app.replay import build_replay, research_route
from mvi_node.app.retention import Retention
from mvi_node.jobs import open_job_store
from mvi_node.pipeline import StudyPipeline
from mvi_node.pipeline.lineage import ResultLineage
from mvi_node.pipeline.prefetch import HeaderPrefetch
from mvi_node.jobs.worker import JobWorker
from mvi_node.logs import setup_logging
from mvi_node.receive.balance import ConnectionBalance
from mvi_node.receive.server import Listener
from mvi_node.report.outputs import build_results, save_outputs
from mvi_node.select.headers import HeaderCache
from mvi_node.stage.completion import STUDY_JOB, CompletionWatcher
from mvi_node.stage.index import StagingIndex
from mvi_node.stage.reconcile import reconcile

log = logging.getLogger("mvi_node")


def _dispatch_tls_context(settings: Settings):
    if not settings.dispatch.tls:
        return None
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if settings.dispatch.tls_ca is not None:
        ctx.load_verify_locations(str(settings.dispatch.tls_ca))
    return ctx


class IngestFirstPrefetch(HeaderPrefetch):
    """The header prefetch, paused while any listener process has connections open.

    It runs in the listener's process and holds the GIL while pydicom parses: measured
    with four DCMTK senders on two cores (bench/RESULTS.md, #15), 211-225 instances/s with
    it running beside the listener, 264-294/s without it. Paused, it catches up once the
    senders are done, within the study's quiet period, still ahead of the job."""

    def __init__(self, *args, receiving=lambda: False, **kw) -> None:
        super().__init__(*args, **kw)
        self.receiving = receiving

    def poll(self) -> bool:
        if self.receiving():
            return False  # the next look in poll_seconds
        return super().poll()


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        #: one node per data folder; taken first thing in start()
        self.lock = DataDirLock(settings.data_dir)
        self.syncer: BatchSyncer | None = None
        self.index = StagingIndex(settings.index_db)
        self.jobs = open_job_store(settings.jobs.backend, settings.jobs_db, settings.jobs.max_attempts)
        self.listener: Listener | None = None
        self.children: list[mp.Process] = []
        self.retention = Retention(settings, self.index, self.jobs)
        self.watcher = CompletionWatcher(
            self.index, self.jobs, settings.completion.quiet_seconds, settings.completion.poll_seconds,
            settings.completion.exam_wait_seconds,
        )
        self.engine = build_engine(settings)
        self.destinations = [
            Destination.parse(spec, tls=settings.dispatch.tls) for spec in settings.dispatch.destinations
        ]
        #: headers parsed while a study arrives, for its job (issue 17: selection's cost)
        self.headers = HeaderCache(settings.select.prefetch_headers) if settings.select.prefetch_headers else None
        self.prefetch = (IngestFirstPrefetch(self.index, settings.staging_dir, self.headers, receiving=self._receiving)
                         if self.headers is not None else None)
        handler = StudyPipeline(
            self.index,
            settings.staging_dir,
            settings.select.rules,
            engine=self.engine,
            report=partial(build_results, other_lesions=settings.models.other_lesions)
            if self.engine is not None else None,
            write=save_outputs,
            results_dir=settings.results_dir,
            secondary_captures=settings.models.secondary_captures,
            lineage=ResultLineage(settings.data_dir / "results.sqlite3"),
            exam_window_seconds=settings.completion.exam_window_minutes * 60,
            headers=self.headers,
        )
        if self.destinations:
            handler.sinks.append(CStoreSink(self.jobs, self.destinations, settings.dispatch.max_attempts))
        self.workers = [
            JobWorker(self.jobs, {STUDY_JOB: handler}, name=f"worker-{i}")
            for i in range(settings.jobs.workers)
        ]
        dispatch_tls = _dispatch_tls_context(settings)
        calling_ae = settings.dispatch.calling_ae or settings.listener.ae_title
        self.workers += [
            JobWorker(
                self.jobs,
                {DISPATCH_JOB: make_dispatch_handler(calling_ae, dispatch_tls, settings.dispatch.timeout_s)},
                backoff_seconds=settings.dispatch.backoff_initial_s,
                backoff_max_seconds=settings.dispatch.backoff_max_s,
                name=f"dispatch-{i}",
            )
            for i in range(settings.dispatch.workers)
        ]
        self.clinical = ClinicalFactorStore(settings.data_dir / "clinical")
        #: readiness probes by name; later stages add theirs (model loaded, destinations)
        self.readiness: dict[str, Callable[[], tuple[bool, str]]] = {
            "storage": self._storage_writable,
            "job_store": self._job_store_reachable,
            "listeners": self._listeners_accepting,
            "model": model_readiness(self.engine),
        }
        for dest in self.destinations:
            self.readiness[f"destination:{dest}"] = (
                lambda d=dest: (echo(d, calling_ae, dispatch_tls, min(5.0, settings.dispatch.timeout_s)), "C-ECHO")
            )
        self.orthanc_routers: list = []
        self.catch_up = None
        if settings.orthanc.enabled:
            from mvi_node.orthanc.wiring import wire_orthanc  # fastapi, httpx: only when enabled

            orthanc = wire_orthanc(settings, self.jobs, self.index)
            self.workers.extend(orthanc.workers)
            if orthanc.sink is not None:
                handler.sinks.append(orthanc.sink)
            self.orthanc_routers.append(orthanc.router)
            self.catch_up = orthanc.catch_up
            self.readiness["orthanc"] = orthanc.readiness
        self.replay = build_replay(self)  # replays of archived studies (issue 14)
        if self.replay is not None:
            from mvi_node.admin.replays import replay_router

            self.orthanc_routers.append(replay_router(self.replay.store, lambda: set(settings.replay.pacs),
                                                      lambda: list(settings.replay.folder_roots)))
            handler.route = research_route(self.replay.store, self.jobs, settings)
            self.watcher.hold = self.replay.store.is_retrieving  # no job before the retrieve is complete
        self.admin = None
        self._stopped = False
        self._warm_thread: threading.Thread | None = None
        self._warm_stop = threading.Event()
        self._collector: NodeCollector | None = None

    def _storage_writable(self) -> tuple[bool, str]:
        probe = self.settings.staging_dir / ".ready-probe"
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
        if self.listener is not None and self.listener.handlers.disk.low():
            return False, "free disk below the floor"
        return True, "writable"

    def _listeners_accepting(self) -> tuple[bool, str]:
        """Every listener process accepts (a child takes a second or two to start)."""
        count = listener_count(self.settings)
        balance = self.listener.server.balance if self.listener is not None else None
        up = 0 if self.listener is None else (balance.accepting() if balance is not None else 1)
        return up == count, f"{up} of {count} listener processes accepting"

    def _watch_listeners(self, balance: ConnectionBalance) -> None:
        """A listener process that dies (killed, out of memory) is logged and taken out of
        the balance at once, so no new connection waits out its turn; the others go on."""
        from multiprocessing.connection import wait

        alive = {proc.sentinel: (slot, proc) for slot, proc in enumerate(self.children, start=1)}
        while alive and not self._stopped:
            for sentinel in wait(list(alive), timeout=1.0):
                slot, proc = alive.pop(sentinel)
                balance.for_slot(slot).leave()
                if not self._stopped:
                    log.error("listener process %d exited (code %s); the other %d take its connections",
                              slot, proc.exitcode, balance.accepting())

    def _job_store_reachable(self) -> tuple[bool, str]:
        counts = self.jobs.counts()
        return True, f"{counts.get('queued', 0)} queued"

    def _start_admin(self) -> None:
        from prometheus_client import CollectorRegistry

        from mvi_node.admin.app import create_app
        from mvi_node.admin.server import AdminServer

        handlers = self.listener.handlers if self.listener else None
        self._collector = NodeCollector(
            self.index, self.jobs, self.settings.data_dir, lambda: handlers.active if handlers else 0
        )
        registry = CollectorRegistry()
        registry.register(self._collector)
        token = self.settings.admin.token.get_secret_value() if self.settings.admin.token else None
        app = create_app(self.jobs, self.readiness, self.clinical, token, registry, self.orthanc_routers)
        tls = self.settings.admin.tls
        self.admin = AdminServer(app, self.settings.admin.host, self.settings.admin.port,
                                 (tls.certificate, tls.private_key, tls.client_ca) if tls.enabled else None)
        self.admin.start()

    def _receiving(self) -> bool:
        """Connections open on any listener process (their shared counts), else associations
        open on this process's listener."""
        if self.listener is None:
            return False
        balance = self.listener.server.balance
        return balance.open() > 0 if balance is not None else self.listener.handlers.active > 0

    def start(self) -> None:
        # Before anything that touches another process's work (temporary files, running
        # jobs): a second node on this folder stops here with DataDirInUse.
        self.lock.acquire()
        data_dir = self.settings.data_dir
        report = reconcile(self.settings.staging_dir, self.index, data_dir / "quarantine", data_dir / "incoming")
        resumed = self.jobs.recover()
        if resumed:
            log.info("resumed %d jobs left running by the previous process", resumed)
        count = listener_count(self.settings)
        self.syncer = batch_syncer(self.settings)
        ctx = mp.get_context("spawn")
        # several processes: one socket, bound here and inherited, each connection to the least busy
        balance = ConnectionBalance.shared(count, ctx) if count > 1 else None
        self.listener = make_listener(self.settings, self.index, self.syncer, balance)
        self.listener.start()
        if balance is not None:
            payload = self.settings.model_dump_json()
            for i in range(1, count):
                proc = ctx.Process(target=child_listener, name=f"listener-{i}", daemon=True,
                                   args=(payload, os.getpid(), self.listener.server.socket, balance.for_slot(i)))
                proc.start()
                self.children.append(proc)
            threading.Thread(target=self._watch_listeners, args=(balance,), name="listener-watch", daemon=True).start()
        if self.engine is not None and self.settings.inference.warm_up:
            # a job that starts before it ends waits on the session being made, no longer
            self._warm_thread = threading.Thread(target=self._warm_up, name="warm-up", daemon=True)
            self._warm_thread.start()
        if self.prefetch is not None:
            self.prefetch.start()
        self.watcher.start()
        self.retention.start()
        for worker in self.workers:
            worker.start()
        if self.settings.admin.enabled:
            self._start_admin()
        if self.catch_up is not None:
            self.catch_up.start()
        if self.replay is not None:
            self.replay.start()
        log.info(
            "node up: %d listener process(es), quiet period %.1f s, %d temporary files cleared, %d re-indexed",
            count,
            self.settings.completion.quiet_seconds,
            report.temporary_removed,
            report.reindexed,
        )

    def _warm_up(self) -> None:
        try:
            warm_up(self.engine, self._warm_stop)
        except Exception:  # noqa: BLE001 - the first exam then loads what failed, and reports it
            log.exception("warm-up failed")

    @property
    def port(self) -> int:
        assert self.listener is not None
        return self.listener.port

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        log.info("shutting down")
        if self.admin is not None:
            self.admin.stop()
        if self.catch_up is not None:
            self.catch_up.stop()
        if self.replay is not None:
            self.replay.stop()
        for proc in self.children:
            proc.terminate()
        if self.listener is not None:
            self.listener.stop()
        log.debug("listener stopped")
        for proc in self.children:
            proc.join(timeout=15)
        self.watcher.stop()
        if self.prefetch is not None:
            self.prefetch.stop()
        self.retention.stop()
        log.debug("completion watcher stopped")
        for worker in self.workers:
            worker.stop()
        if self.syncer is not None:
            self.syncer.stop()
        self._warm_stop.set()
        if self._warm_thread is not None:
            # the interpreter must not exit while ONNX Runtime builds a session: it aborts
            self._warm_thread.join(timeout=120)
        self.lock.release()
        log.info("stopped")


def serve(settings: Settings) -> None:
    """Run in the foreground until SIGTERM or SIGINT."""
    setup_logging(settings.log_level, settings.log_format)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    node = Node(settings)
    try:
        node.start()
    except DataDirInUse as exc:
        log.error("%s", exc)
        raise SystemExit(3) from None
    wait_for_signal(stop)
    node.stop()
