"""Study completion: a study is complete once it has been quiet for a while.

DICOM has no "study complete" signal, so, like every peer (MONAI IG, mercure, Orthanc's
StableAge), completion is a quiet period with no new instance. A new instance after
completion opens the next round of that study, which completes and becomes a job in
its turn: late images are processed, never dropped.
"""

from __future__ import annotations

import logging
import threading
import time

from mvi_node.jobs.store import JobStore
from mvi_node.metrics import record_stage
from mvi_node.stage.index import StagingIndex

log = logging.getLogger("mvi_node.stage")

STUDY_JOB = "study"


def study_job_key(study_uid: str, round_no: int) -> str:
    return f"study:{study_uid}:round:{round_no}"


class CompletionWatcher:
    def __init__(self, index: StagingIndex, jobs: JobStore, quiet_seconds: float, poll_seconds: float = 1.0) -> None:
        self.index = index
        self.jobs = jobs
        self.quiet_seconds = quiet_seconds
        self.poll_seconds = min(poll_seconds, max(quiet_seconds / 4, 0.05))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Close every quiet round and enqueue its job; return the number closed."""
        closed = 0
        for due in self.index.due_studies(self.quiet_seconds):
            if self.index.mark_complete(due):
                closed += 1
                record_stage("receive_to_complete", time.time() - due.first_received, study_uid=due.study_uid)
                log.info("study %s round %d complete: %d instances", due.study_uid, due.round, due.instances)
        for study_uid, round_no, instances in self.index.awaiting_job():
            job = self.jobs.enqueue(
                STUDY_JOB,
                study_job_key(study_uid, round_no),
                {"study_uid": study_uid, "round": round_no, "instances": instances},
            )
            self.index.mark_job_enqueued(study_uid, round_no)
            log.info("study %s round %d queued as job %d", study_uid, round_no, job.id)
        return closed

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.run_once()
            except Exception:  # keep watching: a transient DB error must not stop completion
                log.exception("completion pass failed")

    def start(self) -> None:
        self.run_once()
        self._thread = threading.Thread(target=self._loop, name="completion", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
