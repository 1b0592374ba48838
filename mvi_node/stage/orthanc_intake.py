"""Studies Orthanc hands over: import jobs, and a catch-up on Orthanc's change log.

The plugin's hand-off is the fast path; ``/changes`` (StableStudy events, the last
sequence number kept on disk) is the safety net for hand-offs lost while the node or
Orthanc restarted. Both queue the same idempotent import job.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from mvi_node.admin.orthanc import ORTHANC_IMPORT_JOB, import_job_key
from mvi_node.jobs.store import Job, JobStore
from mvi_node.stage.ingest import Stager
from mvi_node.stage.orthanc import OrthancClient, OrthancError, import_study

log = logging.getLogger("mvi_node.orthanc")


def make_import_handler(client: OrthancClient, stager: Stager):
    def handle(job: Job) -> dict[str, Any]:
        study_id = job.payload["orthanc_study_id"]
        try:
            counts = import_study(client, study_id, stager)
        except OrthancError as exc:
            if exc.status == 404:  # deleted since (retention after results went out)
                return {"orthanc_study_id": study_id, "skipped": "study no longer in Orthanc"}
            raise
        log.info("Orthanc study %s imported: %s", study_id, counts)
        return {"orthanc_study_id": study_id, **counts}

    return handle


class ChangesCatchUp:
    def __init__(self, client: OrthancClient, jobs: JobStore, seq_file: Path, poll_seconds: float,
                 also_each_poll=None) -> None:
        self.client, self.jobs, self.seq_file, self.poll_seconds = client, jobs, Path(seq_file), poll_seconds
        #: housekeeping on the same clock (the retention sweep), so one thread talks to Orthanc
        self.also_each_poll = also_each_poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _since(self) -> int:
        try:
            return int(self.seq_file.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def run_once(self) -> int:
        since, queued = self._since(), 0
        while True:
            page = self.client.changes(since)
            for change in page.get("Changes", []):
                if change.get("ChangeType") == "StableStudy":
                    try:
                        key = import_job_key(self.client, change["ID"])
                    except OrthancError as exc:
                        if exc.status == 404:
                            continue  # deleted since: nothing to import
                        raise  # Orthanc went away: keep the sequence number, read this page again
                    self.jobs.enqueue(ORTHANC_IMPORT_JOB, key, {"orthanc_study_id": change["ID"]})
                    queued += 1
            since = int(page.get("Last", since))
            self.seq_file.write_text(str(since))
            if page.get("Done", True):
                return queued

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.run_once()
                if self.also_each_poll is not None:
                    self.also_each_poll()
            except OrthancError as exc:
                log.warning("Orthanc change log not readable: %s", exc)

    def start(self) -> None:
        try:
            self.run_once()
        except OrthancError as exc:
            log.warning("Orthanc change log not readable at start: %s", exc)
        self._thread = threading.Thread(target=self._loop, name="orthanc-changes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
