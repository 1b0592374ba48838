"""Header prefetch: parse each staged instance's header while its study is still arriving.

A study job starts when the study has been quiet for the quiet period; until then the
node mostly waits. This loop follows the staging index (instances in the order they
were indexed, by any listener process) and parses each new file's header into the
:class:`~mvi_node.select.headers.HeaderCache` the study pipeline reads, so selection
finds the exam's headers parsed and their values converted. It only moves work: each
header is still parsed once, and a file it missed (full cache, restart) is parsed by
the job as before.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mvi_node.common.poller import Poller
from mvi_node.select.headers import HeaderCache
from mvi_node.stage.index import StagingIndex
from mvi_node.stage.paths import instance_path

log = logging.getLogger("mvi_node.stage")

#: instances taken per index query
BATCH = 200


class HeaderPrefetch(Poller):
    thread_name = "header-prefetch"
    failure_message = "header prefetch pass failed"
    logger = log

    def __init__(self, index: StagingIndex, staging_dir: Path, cache: HeaderCache, poll_seconds: float = 0.1) -> None:
        super().__init__(poll_seconds)
        self.index, self.staging_dir, self.cache = index, Path(staging_dir), cache
        self._after = 0  # row id of the last instance seen; set from the index at start
        self._niced = False

    def first_pass(self) -> bool:
        # what is staged already belongs to studies whose jobs read it themselves
        self._after = self.index.newest_rowid()
        return False

    def poll(self) -> bool:
        if not self._niced:
            _lower_priority()
            self._niced = True
        rows = self.index.instances_after(self._after, BATCH)
        for rowid, study, series, sop in rows:
            self._after = rowid
            self.cache.prefetch(instance_path(self.staging_dir, study, series, sop))
        return len(rows) == BATCH


def _lower_priority() -> None:
    """Nice this thread only (Linux gives each thread its own nice value), so the
    listener processes get the CPU first while a study arrives."""
    try:
        os.setpriority(os.PRIO_PROCESS, os.gettid(), 5)
    except (OSError, AttributeError):  # not Linux: the same work at normal priority
        pass
