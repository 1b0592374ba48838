"""Assemble Orthanc as front door (plugin hand-off, /changes catch-up) and results path.

The composition root calls :func:`wire_orthanc` when ``[orthanc] enabled`` and attaches
the parts it returns (worker, sink, admin routes, catch-up thread, readiness probe) to
the node, so ``mvi_node.app.node`` knows no Orthanc module but this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from fastapi import APIRouter

from mvi_node.config import Settings
from mvi_node.jobs.store import JobStore
from mvi_node.jobs.worker import JobWorker
from mvi_node.orthanc.client import OrthancClient
from mvi_node.orthanc.intake import ORTHANC_IMPORT_JOB, ChangesCatchUp, make_import_handler
from mvi_node.orthanc.results import ORTHANC_STORE_JOB, RetentionSweeper, make_orthanc_store_handler
from mvi_node.orthanc.routes import orthanc_router
from mvi_node.orthanc.sink import OrthancSink
from mvi_node.stage.index import StagingIndex
from mvi_node.receive.policy import DiskGuard
from mvi_node.stage.ingest import Stager


@dataclass
class OrthancWiring:
    """What the node runs for Orthanc; nothing here is started yet."""

    client: OrthancClient
    #: one worker for imports ("orthanc-import"), one for stores ("orthanc-store"): a slow
    #: PACS must not stall intake
    workers: list[JobWorker]
    #: the "orthanc" result sink, None when no ``[orthanc] modality`` is configured
    sink: OrthancSink | None
    #: builds the admin routes given the admin API's auth dependencies
    router: Callable[[list], APIRouter]
    #: change-log catch-up thread; also runs the retention sweep on its clock
    catch_up: ChangesCatchUp
    #: readiness probe: is Orthanc answering
    readiness: Callable[[], tuple[bool, str]]


def _answering(client: OrthancClient) -> tuple[bool, str]:
    return client.alive(), client.url


def wire_orthanc(settings: Settings, jobs: JobStore, index: StagingIndex) -> OrthancWiring:
    cfg = settings.orthanc
    client = OrthancClient(cfg.url, cfg.username, cfg.password.get_secret_value() if cfg.password else None)
    stager = Stager(settings.staging_dir, index, sync=settings.staging.durability == "fsync")
    disk = DiskGuard(settings.data_dir, settings.listener.min_free_disk_mb * 1024 * 1024)
    backoff = dict(backoff_seconds=settings.dispatch.backoff_initial_s,
                   backoff_max_seconds=settings.dispatch.backoff_max_s)
    workers = [
        JobWorker(jobs, {ORTHANC_IMPORT_JOB: make_import_handler(client, stager, disk)}, name="orthanc-import",
                  **backoff),
        JobWorker(jobs, {ORTHANC_STORE_JOB: make_orthanc_store_handler(client, cfg.retention_hours)},
                  name="orthanc-store", **backoff),
    ]
    sink = OrthancSink(jobs, cfg.modality, settings.dispatch.max_attempts) if cfg.modality else None
    sweeper = RetentionSweeper(client, jobs, cfg.retention_hours)
    catch_up = ChangesCatchUp(client, jobs, settings.data_dir / "orthanc-changes.seq",
                              cfg.changes_poll_seconds, also_each_poll=sweeper.sweep)
    return OrthancWiring(
        client=client,
        workers=workers,
        sink=sink,
        router=partial(orthanc_router, jobs, client),
        catch_up=catch_up,
        readiness=partial(_answering, client),
    )
