"""One listener process: what the node's own process and each child listener run.

Kept apart from :mod:`mvi_node.app.node` so that a child (spawned, one per extra core)
imports the receive and stage layers only: through ``node`` it would load every stage's
libraries (highdicom, SimpleITK, ...), about 197 MB against 73 MB of resident memory.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import threading

from mvi_node.common.durable import BatchSyncer
from mvi_node.config import Settings
from mvi_node.logs import setup_logging
from mvi_node.receive.balance import ConnectionBalance
from mvi_node.receive.handlers import ListenerHandlers
from mvi_node.receive.policy import CallerPolicy, DiskGuard
from mvi_node.receive.server import Listener
from mvi_node.stage.index import StagingIndex
from mvi_node.stage.ingest import Stager


#: listener processes that ``[listener] workers = 0`` starts on a machine with many cores
AUTO_LISTENERS_MAX = 4


def listener_count(settings: Settings) -> int:
    return settings.listener.workers or min(os.cpu_count() or 1, AUTO_LISTENERS_MAX)


def make_listener(settings: Settings, index: StagingIndex, syncer: BatchSyncer | None = None,
                  balance: ConnectionBalance | None = None, listening: socket.socket | None = None) -> Listener:
    cfg = settings.listener
    stager = Stager(settings.staging_dir, index, sync=settings.staging.durability == "fsync",
                    max_inflated=cfg.max_inflated_mb << 20, syncer=syncer)
    handlers = ListenerHandlers(
        stager,
        CallerPolicy(cfg.allowed_callers),
        DiskGuard(settings.data_dir, cfg.min_free_disk_mb * 1024 * 1024),
        unused=cfg.unused_sop_classes,
        max_instance_bytes=cfg.max_instance_mb << 20,
        # the node's limit, counted over every listener process (the balance shares the counts)
        max_associations=cfg.max_associations,
        peers=balance,
    )
    return Listener(settings, handlers, cfg.max_associations, balance, listening)


def _die_with_parent(parent_pid: int) -> None:
    # A listener child must not outlive a killed parent and keep the port. SIGKILL, not
    # SIGTERM: a store in flight was never acknowledged, so the sender resends it and the
    # start-up reconcile clears its temporary file.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def child_listener(settings_json: str, parent_pid: int, listening: socket.socket, balance: ConnectionBalance) -> None:
    _die_with_parent(parent_pid)
    settings = Settings.model_validate_json(settings_json)
    setup_logging(settings.log_level, settings.log_format)
    syncer = batch_syncer(settings)
    listener = make_listener(settings, StagingIndex(settings.index_db), syncer, balance, listening)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides
    listener.start()
    wait_for_signal(stop)
    listener.stop()
    if syncer is not None:
        syncer.stop()


def batch_syncer(settings: Settings) -> BatchSyncer | None:
    if settings.staging.durability != "batched":
        return None
    return BatchSyncer(settings.staging.batch_interval_s).start()


def wait_for_signal(stop: threading.Event) -> None:
    # Not a bare stop.wait(): a signal the kernel hands to another thread (a listener
    # thread blocked in recv, say) never interrupts the main thread's wait, and the
    # Python handler runs only when the main thread next executes bytecode.
    while not stop.wait(0.2):
        pass
