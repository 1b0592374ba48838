"""Orthanc as the hospital PACS and as the staging front door, with the mvi-node plugin."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from mvi_node.synth import make_exam
from orthanc_fixtures import DICOMWEB_PLUGIN, PYTHON_PLUGIN, REPO, OrthancProcess

pytestmark = pytest.mark.orthanc


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def topology_b(tmp_path, node):
    """PACS Orthanc -> (Lua auto-route) -> staging Orthanc + plugin -> node -> results back."""
    staging = OrthancProcess(tmp_path / "staging", "STAGING")
    pacs = OrthancProcess(tmp_path / "pacs", "PACS", extra={
        "LuaScripts": [str(REPO / "deploy/orthanc/pacs-autoroute.lua")],
        "Plugins": [DICOMWEB_PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    })
    pacs.config["DicomModalities"] = {"STAGING": ["STAGING", "127.0.0.1", staging.dicom_port]}
    staging.config["DicomModalities"] = {"PACS": ["PACS", "127.0.0.1", pacs.dicom_port]}
    n = node(quiet=1.0, env={
        "MVI_ORTHANC__ENABLED": "true",
        "MVI_ORTHANC__URL": staging.url,
        "MVI_ORTHANC__MODALITY": "PACS",
        "MVI_ORTHANC__RETENTION_HOURS": "0",
    })
    # the shipped staging config, with this test's ports, folders, script path and node URL
    shipped = json.loads((REPO / "deploy/orthanc/staging-orthanc.json").read_text())
    local = ("Name", "StorageDirectory", "IndexDirectory", "DicomPort", "HttpPort", "StableAge", "DicomModalities")
    staging.config.update({k: v for k, v in shipped.items() if k not in local})
    assert staging.config["Plugins"] == [PYTHON_PLUGIN, DICOMWEB_PLUGIN]
    staging.config.update({
        "PythonScript": str(REPO / "plugins/mvi_node_orthanc.py"),
        "MviNode": {"Url": f"http://127.0.0.1:{n.admin_port}", "Token": ""},
    })
    staging.start()
    pacs.start()
    yield pacs, staging, n
    pacs.stop()
    staging.stop()


def test_exam_uploaded_to_pacs_comes_back_with_sr_and_scs(topology_b, tmp_path):
    pacs, staging, n = topology_b
    make_exam(tmp_path / "exam", "ct", seed=99, index=0, mvi=True, hard_cases="none", matrix=96, annotations="seg")
    sent = pacs.upload_folder(tmp_path / "exam")
    (study_id,) = pacs.get("/studies")

    def results():
        series = [pacs.get(f"/series/{s}") for s in pacs.get(f"/studies/{study_id}")["Series"]]
        mods = {s["MainDicomTags"].get("Modality"): len(s["Instances"]) for s in series
                if s["MainDicomTags"].get("SeriesNumber") in ("9901", "9902")}
        return mods if mods.get("SR") == 1 and mods.get("OT") == 3 else None

    mods = _wait(results, 150, "SR and SCs in the PACS Orthanc")
    assert mods == {"SR": 1, "OT": 3}
    # the results are in the same study as the source
    study = pacs.get(f"/studies/{study_id}")
    assert len(study["Series"]) > 2
    # the staging copy is gone (retention 0) and the plugin's hand-off is visible in the node
    _wait(lambda: staging.get("/studies") == [], 30, "staging Orthanc cleanup")
    jobs = n.status_jobs()
    assert any(j["kind"] == "orthanc-import" and j["state"] == "done" for j in jobs)
    assert any(j["kind"] == "orthanc-store" and j["state"] == "done" for j in jobs)
    assert n.status()["instances"] >= sent - 5  # the dose screen save is refused by class
    log = n.log_text()
    assert "SYNTH^" not in log
    # what a DICOMweb viewer (OHIF) asks for: the study's series over QIDO-RS list the SR
    uid = study["MainDicomTags"]["StudyInstanceUID"]
    qido = httpx.get(f"{pacs.url}/dicom-web/studies/{uid}/series", timeout=30).json()
    assert {"SR", "OT", "CT"} <= {s["00080060"]["Value"][0] for s in qido}


def _results_in_pacs(pacs, study_id):
    series = [pacs.get(f"/series/{s}") for s in pacs.get(f"/studies/{study_id}")["Series"]]
    return {s["MainDicomTags"].get("Modality"): len(s["Instances"]) for s in series
            if s["MainDicomTags"].get("SeriesNumber") in ("9901", "9902")}


def test_node_killed_mid_study_loses_and_duplicates_nothing(topology_b, tmp_path):
    pacs, staging, n = topology_b
    make_exam(tmp_path / "exam", "ct", seed=99, index=1, mvi=False, hard_cases="none", matrix=96, annotations="seg")
    n.kill9()  # the node is down while PACS routes and the plugin hands the study over
    pacs.upload_folder(tmp_path / "exam")
    (study_id,) = pacs.get("/studies")
    _wait(lambda: staging.get("/studies"), 60, "the study in the staging Orthanc")
    time.sleep(4)  # stable in Orthanc; the plugin's hand-off now fails and is retried
    n.start()
    mods = _wait(lambda: (m := _results_in_pacs(pacs, study_id)).get("SR") == 1 and m.get("OT") == 3 and m, 180,
                 "results after the node restarted")
    time.sleep(5)  # nothing more may arrive
    assert _results_in_pacs(pacs, study_id) == mods == {"SR": 1, "OT": 3}
    studies = [j for j in n.status_jobs() if j["kind"] == "study"]
    assert len(studies) == 1 and studies[0]["state"] == "done"
    # every routed source instance staged in the node exactly once, none twice
    routed = sum(len(s["Instances"]) for s in (pacs.get(f"/series/{x}") for x in pacs.get(f"/studies/{study_id}")["Series"])
                 if s["MainDicomTags"].get("Modality") in ("CT", "MR", "SEG", "SR", "PR")
                 and s["MainDicomTags"].get("SeriesNumber") not in ("9901", "9902"))
    status = n.status()
    assert status["studies"] == 1 and status["instances"] == routed


def test_staging_orthanc_restarted_before_results_are_stored(tmp_path, node):
    staging = OrthancProcess(tmp_path / "staging", "STAGING")
    pacs = OrthancProcess(tmp_path / "pacs", "PACS").start()
    staging.config["DicomModalities"] = {"PACS": ["PACS", "127.0.0.1", pacs.dicom_port]}
    n = node(quiet=1.0, env={
        "MVI_ORTHANC__ENABLED": "true", "MVI_ORTHANC__URL": staging.url, "MVI_ORTHANC__MODALITY": "PACS",
        "MVI_DISPATCH__BACKOFF_INITIAL_S": "1", "MVI_DISPATCH__BACKOFF_MAX_S": "2",
    })
    staging.config.update({"Plugins": [PYTHON_PLUGIN], "PythonScript": str(REPO / "plugins/mvi_node_orthanc.py"),
                           "MviNode": {"Url": f"http://127.0.0.1:{n.admin_port}"}})
    staging.start()
    try:
        make_exam(tmp_path / "exam", "ct", seed=99, index=2, mvi=True, hard_cases="none", matrix=96, annotations="seg")
        staging.upload_folder(tmp_path / "exam")
        # Orthanc goes down once the node has imported the study: the study job runs on the
        # node's own staging, and storing its results through Orthanc fails until Orthanc is back.
        _wait(lambda: any(j["kind"] == "orthanc-import" and j["state"] == "done" for j in n.status_jobs()), 90, "import")
        staging.stop()
        _wait(lambda: any(j["kind"] == "orthanc-store" and j["attempts"] >= 1 for j in n.status_jobs()), 60,
              "a failed store attempt")
        # the failure shows in `mvi-node status` and on the admin API, with the reason
        failing = _wait(lambda: n.status().get("orthanc_store_failing"), 30, "the failure in mvi-node status")
        assert failing[0]["modality"] == "PACS" and "Orthanc" in failing[0]["error"]
        assert _wait(lambda: httpx.get(f"http://127.0.0.1:{n.admin_port}/orthanc/store-jobs").json(), 30,
                     "the failure on the admin API")
        time.sleep(2)
        staging.start()
        (study_id,) = _wait(lambda: pacs.get("/studies"), 60, "results in PACS")
        mods = _wait(lambda: (m := _results_in_pacs(pacs, study_id)).get("SR") == 1 and m.get("OT") == 3 and m, 60,
                     "SR and SCs in PACS")
        assert mods == {"SR": 1, "OT": 3}
        # the node job ends after Orthanc reports its store job done, a moment after PACS has it
        store = _wait(lambda: (s := [j for j in n.status_jobs() if j["kind"] == "orthanc-store"])
                      and s[0]["state"] == "done" and s, 30, "the store job done")
        assert len(store) == 1 and store[0]["attempts"] >= 2
    finally:
        staging.stop()
        pacs.stop()


def test_topology_a_pacs_routes_to_the_listener_results_go_through_orthanc(tmp_path, node):
    staging = OrthancProcess(tmp_path / "staging", "STAGING")
    pacs = OrthancProcess(tmp_path / "pacs", "PACS",
                          extra={"LuaScripts": [str(REPO / "deploy/orthanc/pacs-autoroute-to-node.lua")]})
    staging.config["DicomModalities"] = {"PACS": ["PACS", "127.0.0.1", pacs.dicom_port]}
    staging.start()
    n = node(quiet=1.5, env={"MVI_ORTHANC__ENABLED": "true", "MVI_ORTHANC__URL": staging.url,
                             "MVI_ORTHANC__MODALITY": "PACS"})
    pacs.config["DicomModalities"] = {"MVI_NODE": ["MVI_NODE", "127.0.0.1", n.port]}
    pacs.start()
    try:
        make_exam(tmp_path / "exam", "ct", seed=99, index=3, mvi=True, hard_cases="none", matrix=96, annotations="seg")
        pacs.upload_folder(tmp_path / "exam")
        (study_id,) = pacs.get("/studies")
        mods = _wait(lambda: (m := _results_in_pacs(pacs, study_id)).get("SR") == 1 and m.get("OT") == 3 and m, 150,
                     "results in PACS")
        assert mods == {"SR": 1, "OT": 3}
        _wait(lambda: staging.get("/studies") == [], 30, "staging cleanup")
        assert any(j["kind"] == "orthanc-store" and j["state"] == "done" for j in n.status_jobs())
    finally:
        pacs.stop()
        staging.stop()


def test_failed_orthanc_store_job_is_resubmitted_and_counted(tmp_path):
    """Orthanc never retries a failed store job: the node resubmits it, and counts it."""
    from prometheus_client import REGISTRY

    from mvi_node.orthanc.client import OrthancClient, OrthancError
    from mvi_node.orthanc.results import store_with_resubmit

    pacs = OrthancProcess(tmp_path / "pacs", "PACS")
    staging = OrthancProcess(tmp_path / "staging", "STAGING")
    staging.config["DicomModalities"] = {"PACS": ["PACS", "127.0.0.1", pacs.dicom_port]}
    staging.start()
    try:
        make_exam(tmp_path / "exam", "ct", seed=7, index=0, mvi=False, hard_cases="none", matrix=64)
        first = sorted((tmp_path / "exam").rglob("*.dcm"))[0]
        client = OrthancClient(staging.url)
        instance = client.upload(first.read_bytes())["ID"]

        def failed():
            return REGISTRY.get_sample_value("mvi_orthanc_jobs_failed_total", {"modality": "PACS"}) or 0

        before = failed()
        # the PACS is down: the job fails every time, the node gives up with the job's ID
        with pytest.raises(OrthancError, match="Orthanc store job .* to PACS failed"):
            store_with_resubmit(client, "PACS", [instance], delays=(0.2,))
        assert failed() == before + 2

        class StartPacsOnResubmit(OrthancClient):
            def resubmit_job(self, job_id):
                if pacs.proc is None:
                    pacs.start()
                super().resubmit_job(job_id)

        job_id = store_with_resubmit(StartPacsOnResubmit(staging.url), "PACS", [instance], delays=(0.2, 1.0))
        assert client.job(job_id)["State"] == "Success"
        assert failed() == before + 3
        assert len(pacs.get("/instances")) == 1
    finally:
        pacs.stop()
        staging.stop()


def test_retention_sweep_deletes_only_delivered_studies_after_the_retention(tmp_path):
    from mvi_node.jobs import open_job_store
    from mvi_node.orthanc.client import OrthancError
    from mvi_node.orthanc.results import ORTHANC_STORE_JOB, RetentionSweeper

    class FakeOrthanc:
        def __init__(self):
            self.deleted = []

        def delete_study(self, study_id):
            if study_id == "gone":
                raise OrthancError("Orthanc DELETE /studies/gone: HTTP 404", status=404)
            self.deleted.append(study_id)

    jobs = open_job_store("sqlite", tmp_path / "jobs.db")
    done = jobs.enqueue(ORTHANC_STORE_JOB, "k1", {"modality": "PACS"})
    jobs.claim([ORTHANC_STORE_JOB])
    jobs.complete(done.id, {"orthanc_studies": ["s1", "gone"], "staging_cleaned": False})
    jobs.enqueue(ORTHANC_STORE_JOB, "k2", {"modality": "PACS"})  # not delivered yet: never swept
    fake = FakeOrthanc()
    sweeper = RetentionSweeper(fake, jobs, retention_hours=1)
    assert sweeper.sweep() == 0 and fake.deleted == []  # younger than the retention
    assert sweeper.sweep(now=time.time() + 3700) == 1 and fake.deleted == ["s1"]
    assert sweeper.sweep(now=time.time() + 3800) == 0  # once
    jobs.close()


def test_import_skips_the_nodes_own_results(tmp_path):
    """With retention > 0 the results sit in the staging Orthanc's study: re-importing them
    would open a second round of the study (a duplicate study job)."""
    import io

    import pydicom

    from mvi_node.report.inputs import MANUFACTURER
    from mvi_node.stage.index import StagingIndex
    from mvi_node.stage.ingest import Stager
    from mvi_node.orthanc.intake import OWN_MANUFACTURER, import_study

    assert OWN_MANUFACTURER == MANUFACTURER
    make_exam(tmp_path / "exam", "ct", seed=7, index=0, mvi=False, hard_cases="none", matrix=64)
    first, second = sorted((tmp_path / "exam").rglob("*.dcm"))[:2]
    ours = pydicom.dcmread(second)
    ours.Manufacturer = MANUFACTURER
    buf = io.BytesIO()
    ours.save_as(buf)
    files = {"a": first.read_bytes(), "b": buf.getvalue()}

    class FakeOrthanc:
        def study_instances(self, study_id):
            return list(files)

        def instance_file(self, instance_id):
            return files[instance_id]

    stager = Stager(tmp_path / "staging", StagingIndex(tmp_path / "index.db"), sync=False)
    assert import_study(FakeOrthanc(), "s", stager) == {"staged": 1, "duplicates": 0, "refused": 0, "own_results": 1}
    assert import_study(FakeOrthanc(), "s", stager)["duplicates"] == 1


def test_handoff_lost_in_an_orthanc_restart_is_caught_up_from_changes(topology_b, tmp_path):
    """The plugin's queue dies with Orthanc; Orthanc never re-announces a stable study after
    a restart, so only the node's /changes catch-up can find it."""
    pacs, staging, n = topology_b
    make_exam(tmp_path / "exam", "ct", seed=99, index=4, mvi=False, hard_cases="none", matrix=96, annotations="seg")
    n.kill9()
    pacs.upload_folder(tmp_path / "exam")
    (study_id,) = pacs.get("/studies")
    _wait(lambda: staging.get("/studies"), 60, "the study in the staging Orthanc")
    time.sleep(4)  # stable: the hand-off fails (node down) and sits in the plugin's queue
    staging.stop()
    staging.start()  # the queue is gone
    n.start()
    mods = _wait(lambda: (m := _results_in_pacs(pacs, study_id)).get("SR") == 1 and m.get("OT") == 3 and m, 180,
                 "results after the catch-up")
    assert mods == {"SR": 1, "OT": 3}
    studies = [j for j in n.status_jobs() if j["kind"] == "study"]
    assert len(studies) == 1 and studies[0]["state"] == "done"
