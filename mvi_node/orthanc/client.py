"""Orthanc's REST API as the node uses it (Orthanc Book "REST API of the Orthanc core").

One small client for intake (read a stable study), results (upload, modality store
jobs) and housekeeping (change log, deletes); errors carry IDs and HTTP status only.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx


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
