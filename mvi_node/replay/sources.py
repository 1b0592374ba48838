"""Archives a replay reads from.

:class:`DimseArchive` talks to a PACS with the Study Root Query/Retrieve Information
Model (PS3.4 Annex C): C-FIND at STUDY then SERIES level, C-MOVE to the node's own AE
title (the PACS opens a storage association to the node's listener, so the instances
take the node's normal path) or C-GET (PS3.4 C.4.3: the instances come back as C-STORE
sub-operations on the same association and are handed to ``accept``). Every retrieve
names both the Study and the Series Instance UID (PS3.4 C.4.2.2.1: the unique keys of
every level above the retrieve level), and an IMAGE-level retrieve the SOP Instance UID
too. Answers and statuses are returned as read; nothing here is logged with patient data.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from pydicom.dataset import Dataset

from mvi_node.common.scu import reactor_paused

log = logging.getLogger("mvi_node.replay")

#: attributes asked of every study answer (PS3.4 C.6.2.1.2 Study Root keys)
STUDY_KEYS = ("StudyInstanceUID", "StudyDate", "StudyTime", "StudyDescription", "ModalitiesInStudy",
              "AccessionNumber", "PatientID", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
#: attributes asked of every series answer: what the selection rules read from headers
SERIES_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesDescription", "SeriesNumber",
               "SeriesDate", "SeriesTime", "BodyPartExamined", "ProtocolName", "Manufacturer",
               "NumberOfSeriesRelatedInstances")


class ArchiveError(RuntimeError):
    """The archive could not be reached or refused a request (status in the text)."""


@dataclass
class Retrieved:
    """Outcome of one C-MOVE/C-GET: the final sub-operation counts and status."""

    completed: int = 0
    failed: int = 0
    warning: int = 0
    status: int = 0
    cancelled: bool = False
    failed_sops: list[str] = field(default_factory=list)

    def add(self, other: "Retrieved") -> None:
        self.completed += other.completed
        self.failed += other.failed
        self.warning += other.warning
        self.status = other.status if other.status else self.status
        self.cancelled = self.cancelled or other.cancelled
        self.failed_sops += other.failed_sops


class Answers(list):
    """C-FIND answers; ``truncated`` when the archive ended the matching early (a cap)."""

    truncated = False


def parse_ae(spec: str) -> tuple[str, str, int]:
    """``AE@HOST:PORT`` -> (ae, host, port)."""
    try:
        ae, rest = spec.split("@", 1)
        host, port = rest.rsplit(":", 1)
        if not ae or not host:
            raise ValueError
        return ae, host, int(port)
    except ValueError:
        raise ValueError("an archive is a configured name or AE@HOST:PORT") from None


def _query(level: str, keys: Iterable[str], **match: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for kw in keys:
        setattr(ds, kw, "")
    for kw, value in match.items():
        setattr(ds, kw, value)
    return ds


class DimseArchive:
    """One PACS, as the node's calling AE; one association per request."""

    def __init__(self, name: str, ae_title: str, host: str, port: int, calling_ae: str, *,
                 retrieve: str = "move", move_destination: str = "", timeout_s: float = 60.0,
                 accept: Callable[[object], object] | None = None) -> None:
        self.name, self.ae_title, self.host, self.port = name, ae_title, host, port
        self.calling_ae = calling_ae
        self.retrieve_with = retrieve
        self.move_destination = move_destination or calling_ae
        self.timeout_s = timeout_s
        #: C-GET: stages one received instance (the C-STORE event) -> DIMSE status
        self.accept = accept

    def __str__(self) -> str:
        return self.name

    # -- associations -----------------------------------------------------------------
    def _ae(self, contexts: list[str], get_storage: bool = False):
        from pynetdicom import AE, StoragePresentationContexts

        ae = AE(ae_title=self.calling_ae)
        for t in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
            setattr(ae, t, self.timeout_s)
        for uid in contexts:
            ae.add_requested_context(uid)
        roles = []
        if get_storage:
            from pynetdicom import build_role

            # at most 128 contexts in all (PS3.8 9.3.2.2): the query model plus 127 storage classes
            for cx in StoragePresentationContexts[: 128 - len(contexts)]:
                ae.add_requested_context(cx.abstract_syntax)
                roles.append(build_role(cx.abstract_syntax, scp_role=True))
        return ae, roles

    def _associate(self, model: str, get_storage: bool = False, handlers=None):
        ae, roles = self._ae([model], get_storage)
        assoc = ae.associate(self.host, self.port, ae_title=self.ae_title, ext_neg=roles or None,
                             evt_handlers=handlers or [])
        if not assoc.is_established:
            raise ArchiveError(f"archive {self.name}: association rejected or no answer")
        return assoc

    # -- C-FIND ----------------------------------------------------------------------
    def _find(self, query: Dataset) -> "Answers":
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        assoc = self._associate(FIND)
        out = Answers()
        try:
            with reactor_paused(assoc):  # the loop takes the responses (mvi_node.common.scu)
                for status, identifier in assoc.send_c_find(query, FIND):
                    if not status:
                        raise ArchiveError(f"archive {self.name}: C-FIND got no answer")
                    code = int(status.Status)
                    if code in (0xFF00, 0xFF01) and identifier is not None:
                        out.append(identifier)
                    elif code == 0xFE00:
                        # matching ended by the SCP (PS3.4 C.4.1.1.4): Orthanc's answer at its cap
                        out.truncated = True
                    elif code != 0x0000:
                        raise ArchiveError(f"archive {self.name}: C-FIND status 0x{code:04X}")
        finally:
            assoc.release()
        return out

    def find_studies(self, date_range: str = "", modality: str = "", accession: str = "",
                     patient_id: str = "") -> list[Dataset]:
        match = {"StudyDate": date_range, "ModalitiesInStudy": modality, "AccessionNumber": accession,
                 "PatientID": patient_id}
        return self._find(_query("STUDY", STUDY_KEYS, **{k: v for k, v in match.items() if v}))

    def find_series(self, study_uid: str) -> list[Dataset]:
        return self._find(_query("SERIES", SERIES_KEYS, StudyInstanceUID=study_uid))

    def find_instances(self, study_uid: str, series_uid: str) -> list[str]:
        answers = self._find(_query("IMAGE", ("SOPInstanceUID", "InstanceNumber"), StudyInstanceUID=study_uid,
                                    SeriesInstanceUID=series_uid))
        answers.sort(key=lambda d: (int(d.get("InstanceNumber") or 0), str(d.SOPInstanceUID)))
        return [str(d.SOPInstanceUID) for d in answers]

    # -- C-MOVE / C-GET ---------------------------------------------------------------
    def retrieve(self, study_uid: str, series_uid: str, sop_uids: Iterable[str] | None = None,
                 before_each: Callable[[int], None] | None = None, cancel: threading.Event | None = None,
                 chunk: int = 1) -> Retrieved:
        """The series, or the listed instances of it ``chunk`` per request (a list of UIDs,
        PS3.4 C.2.2.2.2), each request paced by ``before_each(n)``, on one association;
        C-CANCEL when ``cancel`` is set."""
        from pynetdicom import evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

        get = self.retrieve_with == "get"
        handlers = [(evt.EVT_C_STORE, self._on_store)] if get else []
        assoc = self._associate(GET if get else MOVE, get_storage=get, handlers=handlers)
        total = Retrieved()
        try:
            listed = None if sop_uids is None else list(sop_uids)
            requests = [None] if listed is None else [listed[i:i + chunk] for i in range(0, len(listed), chunk)]
            for msg_id, sops in enumerate(requests, 1):
                if cancel is not None and cancel.is_set():
                    total.cancelled = True
                    break
                if before_each is not None:
                    before_each(len(sops) if sops else 0)
                query = _query("SERIES" if sops is None else "IMAGE", (), StudyInstanceUID=study_uid,
                               SeriesInstanceUID=series_uid)
                if sops is not None:
                    query.SOPInstanceUID = sops if len(sops) > 1 else sops[0]
                with reactor_paused(assoc):  # _drain takes the responses (mvi_node.common.scu)
                    responses = (assoc.send_c_get(query, GET, msg_id=msg_id) if get else
                                 assoc.send_c_move(query, self.move_destination, MOVE, msg_id=msg_id))
                    total.add(self._drain(assoc, responses, msg_id, GET if get else MOVE, cancel))
                if total.cancelled:
                    break
        finally:
            assoc.release()
        return total

    def _drain(self, assoc, responses: Iterator, msg_id: int, model: str, cancel) -> Retrieved:
        out = Retrieved()
        sent_cancel = False
        for status, identifier in responses:
            if not status:
                raise ArchiveError(f"archive {self.name}: retrieve got no answer")
            code = int(status.Status)
            out.status = code
            for kw, attr in (("NumberOfCompletedSuboperations", "completed"),
                             ("NumberOfFailedSuboperations", "failed"),
                             ("NumberOfWarningSuboperations", "warning")):
                if kw in status and status.get(kw) is not None and code not in (0xFF00,):
                    setattr(out, attr, int(status.get(kw)))
            if code == 0xFE00:
                out.cancelled = True
            if identifier is not None and "FailedSOPInstanceUIDList" in identifier:
                value = identifier.FailedSOPInstanceUIDList
                out.failed_sops += [str(v) for v in (value if isinstance(value, list) or
                                                     type(value).__name__ == "MultiValue" else [value]) if v]
            if code == 0xFF00 and cancel is not None and cancel.is_set() and not sent_cancel:
                # PS3.7 9.3.2.3 / 9.3.3.3: C-CANCEL names the request's Message ID
                context_id = next(cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == model)
                assoc.send_c_cancel(msg_id, context_id)
                sent_cancel = True
        return out

    def _on_store(self, event):
        if self.accept is None:
            return 0xA702  # out of resources: nothing here can keep it
        return self.accept(event)


def status_text(code: int) -> str:
    """A C-MOVE/C-GET status as PS3.4 C.4.2.1.5 / C.4.3.1.4 names it."""
    if code in (0xA701, 0xA702):
        return f"0x{code:04X} out of resources"
    if code == 0xA801:
        return "0xA801 move destination unknown (is the node's AE title known to the PACS?)"
    if code == 0xA900:
        return "0xA900 identifier does not match SOP class"
    if code == 0xB000:
        return "0xB000 sub-operations complete, one or more failures"
    if 0xC000 <= code <= 0xCFFF:
        return f"0x{code:04X} unable to process"
    if code == 0xFE00:
        return "0xFE00 cancelled"
    return f"0x{code:04X}"


def final_error(result: Retrieved) -> str:
    """'' for a clean retrieve, else what went wrong (statuses and counts only)."""
    if result.cancelled:
        return "cancelled"
    if result.status in (0x0000,) and not result.failed:
        return ""
    if result.failed:
        return f"{result.failed} failed sub-operation(s), status {status_text(result.status)}"
    return f"status {status_text(result.status)}"
