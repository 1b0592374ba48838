"""Orthanc as the staging store (REST API, Orthanc Book "REST API of the Orthanc core").

The node reads a study's instances from Orthanc into its own durable staging through
the same checks as the DICOM listener (so completion, selection and jobs are unchanged),
and writes its results into Orthanc, whose modality C-STORE job sends them on to PACS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from mvi_node.stage.ingest import RejectedInstance, Stager

log = logging.getLogger("mvi_node.orthanc")


class OrthancError(RuntimeError):
    """Orthanc answered with an error or could not be reached (message carries IDs only).

    ``status`` is the HTTP status, or None when Orthanc did not answer at all, so callers
    can treat 404 (deleted since) apart from an outage.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class OrthancClient:
    url: str
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0

    def _client(self) -> httpx.Client:
        auth = (self.username, self.password) if self.username else None
        return httpx.Client(base_url=self.url.rstrip("/"), auth=auth, timeout=self.timeout)

    def _call(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            with self._client() as c:
                r = c.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise OrthancError(f"Orthanc {method} {path}: {type(exc).__name__}") from None
        if r.status_code >= 400:
            raise OrthancError(f"Orthanc {method} {path}: HTTP {r.status_code}", status=r.status_code)
        return r

    def study(self, study_id: str) -> dict:
        return self._call("GET", f"/studies/{study_id}").json()

    def study_instances(self, study_id: str) -> list[str]:
        return [i["ID"] for i in self._call("GET", f"/studies/{study_id}/instances").json()]

    def instance_file(self, instance_id: str) -> bytes:
        return self._call("GET", f"/instances/{instance_id}/file").content

    def upload(self, part10: bytes) -> dict:
        return self._call("POST", "/instances", content=part10, headers={"Content-Type": "application/dicom"}).json()

    def store_to_modality(self, modality: str, resources: list[str]) -> str:
        """Start Orthanc's C-STORE job to a modality; returns the Orthanc job ID.

        Asynchronous so a slow PACS never holds an HTTP request (and Orthanc's thread)
        open; the caller watches ``/jobs/{id}`` because Orthanc does not retry failures.
        """
        body = {"Resources": resources, "Asynchronous": True}
        answer = self._call("POST", f"/modalities/{modality}/store", json=body).json()
        if "ID" not in answer:
            raise OrthancError(f"Orthanc POST /modalities/{modality}/store: no job ID in the answer")
        return answer["ID"]

    def job(self, job_id: str) -> dict:
        """State of an Orthanc job: Pending, Running, Success, Failure, Paused or Retry."""
        return self._call("GET", f"/jobs/{job_id}").json()

    def resubmit_job(self, job_id: str) -> None:
        self._call("POST", f"/jobs/{job_id}/resubmit", json={})

    def delete_study(self, study_id: str) -> None:
        self._call("DELETE", f"/studies/{study_id}")

    def changes(self, since: int, limit: int = 100) -> dict:
        return self._call("GET", "/changes", params={"since": since, "limit": limit}).json()

    def alive(self) -> bool:
        try:
            self._call("GET", "/system")
            return True
        except OrthancError:
            return False


def split_part10(data: bytes) -> tuple[bytes, bytes, str, str, str]:
    """(file-meta chunk, dataset, transfer syntax, SOP class, SOP instance) of a Part 10 file."""
    import io

    from pydicom import dcmread

    meta = dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).file_meta
    # preamble + "DICM" (132) + the group length element (12) + the group it announces
    start = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    return (
        data[:start],
        data[start:],
        str(meta.TransferSyntaxUID),
        str(meta.MediaStorageSOPClassUID),
        str(meta.MediaStorageSOPInstanceUID),
    )


#: Manufacturer the report stage writes into every SR/SC (mvi_node.report.inputs)
OWN_MANUFACTURER = "mvi-node project"


def is_own_result(data: bytes) -> bool:
    """True for the node's own SR/SC: with retention > 0 they sit in the staging Orthanc's
    copy of the study, and importing them would open a second round of the study."""
    import io

    from pydicom import dcmread

    ds = dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["Manufacturer"])
    return str(ds.get("Manufacturer", "")) == OWN_MANUFACTURER


def import_study(client: OrthancClient, study_id: str, stager: Stager) -> dict[str, int]:
    """Copy every instance of an Orthanc study into the node's staging (idempotent)."""
    counts = {"staged": 0, "duplicates": 0, "refused": 0, "own_results": 0}
    for instance_id in client.study_instances(study_id):
        data = client.instance_file(instance_id)
        if is_own_result(data):
            counts["own_results"] += 1
            continue
        meta, dataset, ts, sop_class, sop_uid = split_part10(data)
        try:
            outcome = stager.store([meta, dataset], dataset, ts, sop_class, sop_uid, calling_ae="ORTHANC")
        except RejectedInstance as exc:
            counts["refused"] += 1
            log.warning("Orthanc instance %s refused: %s", instance_id, exc.reason)
            continue
        counts["duplicates" if outcome.duplicate else "staged"] += 1
    return counts
