"""Study completion: a study is complete once it has been quiet for a while.

DICOM has no "study complete" signal, so, like every peer (MONAI IG, mercure, Orthanc's
StableAge), completion is a quiet period with no new instance. A new instance after
completion opens the next round of that study, which completes and becomes a job in
its turn: late images are processed, never dropped.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from mvi_node.common.poller import Poller
from mvi_node.jobs.store import JobStore
from mvi_node.metrics import record_stage
from mvi_node.stage.index import StagingIndex

log = logging.getLogger("mvi_node.stage")

STUDY_JOB = "study"


def study_job_key(study_uid: str, round_no: int) -> str:
    return f"study:{study_uid}:round:{round_no}"


class CompletionWatcher(Poller):
    thread_name = "completion"
    join_timeout = 10.0
    # keep watching: a transient DB error must not stop completion
    failure_message = "completion pass failed"
    logger = log

    def __init__(self, index: StagingIndex, jobs: JobStore, quiet_seconds: float, poll_seconds: float = 1.0,
                 exam_wait_seconds: float = 0.0) -> None:
        super().__init__(min(poll_seconds, max(quiet_seconds / 4, 0.05)))
        self.index = index
        self.jobs = jobs
        self.quiet_seconds = quiet_seconds
        #: a completed study's job is held this long, so the other parts of an exam sent
        #: as other studies (a phase, the tumour outline) are staged when it runs
        self.exam_wait_seconds = exam_wait_seconds
        #: study UID -> True while someone is still fetching it (a replay's retrieve,
        #: across a restart too): its round stays open however quiet it is
        self.hold: Callable[[str], bool] | None = None

    def run_once(self) -> int:
        """Close every quiet round and enqueue its job; return the number closed."""
        closed = 0
        for due in self.index.due_studies(self.quiet_seconds):
            if self.hold is not None and self.hold(due.study_uid):
                continue
            if self.index.mark_complete(due):
                closed += 1
                record_stage("receive_to_complete", time.time() - due.first_received, study_uid=due.study_uid)
                log.info("study %s round %d complete: %d instances", due.study_uid, due.round, due.instances)
        for study_uid, round_no, instances in self.index.awaiting_job():
            job = self.jobs.enqueue(
                STUDY_JOB,
                study_job_key(study_uid, round_no),
                {"study_uid": study_uid, "round": round_no, "instances": instances},
                not_before=time.time() + self.exam_wait_seconds if self.exam_wait_seconds else 0.0,
            )
            self.index.mark_job_enqueued(study_uid, round_no)
            log.info("study %s round %d queued as job %d", study_uid, round_no, job.id)
        return closed

    def poll(self) -> bool:
        self.run_once()
        return False

    def first_pass(self) -> bool:
        self.run_once()  # at start, in the caller: a failure here stops the node starting
        return True
