"""Result sinks: each kind queues durable jobs, once per result key, and is registered by name."""

from __future__ import annotations

import pytest

from mvi_node.config.destination import Destination
from mvi_node.dispatch.cstore import CStoreSink
from mvi_node.dispatch.jobs import DISPATCH_JOB
from mvi_node.dispatch.sink import SINK_KINDS, ResultSet, ResultSink
from mvi_node.jobs import JobState, open_job_store
from mvi_node.orthanc.results import ORTHANC_STORE_JOB
from mvi_node.orthanc.sink import OrthancSink


@pytest.fixture
def jobs(tmp_path):
    store = open_job_store("sqlite", tmp_path / "jobs.sqlite3")
    yield store
    store.close()


def _result(tmp_path, key: str = "1.2.826.0.1.3680043.8.498.1") -> ResultSet:
    folder = tmp_path / "results" / key
    folder.mkdir(parents=True)
    files = []
    for name in ("sr.dcm", "sc-1.dcm"):
        path = folder / name
        path.write_bytes(b"DICM" + name.encode())
        files.append(path)
    return ResultSet(files=tuple(files), key=key, study_uid="1.2.3.4", completed_at=1700000000.5)


def test_registry_knows_both_kinds():
    assert SINK_KINDS["cstore"] is CStoreSink
    assert SINK_KINDS["orthanc"] is OrthancSink
    assert all(issubclass(cls, ResultSink) for cls in SINK_KINDS.values())


def test_cstore_sink_queues_one_job_per_destination_once_per_key(jobs, tmp_path):
    destinations = [Destination.parse("PACS@10.0.0.5:104"), Destination.parse("ARCHIVE@archive:11112", tls=True)]
    sink = CStoreSink(jobs, destinations, max_attempts=7)
    result = _result(tmp_path)

    first = sink.queue(result)
    assert [j.kind for j in first] == [DISPATCH_JOB, DISPATCH_JOB]
    assert [j.payload["destination"] for j in first] == ["PACS@10.0.0.5:104", "ARCHIVE@archive:11112"]
    assert [j.payload["tls"] for j in first] == [False, True]
    for job in first:
        assert job.state is JobState.QUEUED and job.max_attempts == 7
        assert job.payload["files"] == [str(f) for f in result.files]
        assert job.payload["study_uid"] == "1.2.3.4" and job.payload["completed_at"] == 1700000000.5
        assert result.key in job.key

    again = sink.queue(result)  # a replayed or resumed study job
    assert [j.id for j in again] == [j.id for j in first]
    assert jobs.counts()["queued"] == 2

    other = sink.queue(_result(tmp_path, key="1.2.826.0.1.3680043.8.498.2"))
    assert {j.id for j in other}.isdisjoint(j.id for j in first)
    assert jobs.counts()["queued"] == 4


def test_cstore_sink_without_destinations_queues_nothing(jobs, tmp_path):
    assert CStoreSink(jobs, [], max_attempts=3).queue(_result(tmp_path)) == []
    assert jobs.counts()["queued"] == 0


def test_orthanc_sink_queues_one_store_job_once_per_key(jobs, tmp_path):
    sink = OrthancSink(jobs, "PACS", max_attempts=5)
    result = _result(tmp_path)

    (job,) = sink.queue(result)
    assert job.kind == ORTHANC_STORE_JOB and job.state is JobState.QUEUED and job.max_attempts == 5
    assert job.payload == {
        "files": [str(f) for f in result.files],
        "modality": "PACS",
        "study_uid": "1.2.3.4",
        "completed_at": 1700000000.5,
    }
    assert result.key in job.key

    (again,) = sink.queue(result)
    assert again.id == job.id
    assert jobs.counts()["queued"] == 1

    (other,) = OrthancSink(jobs, "ARCHIVE", max_attempts=5).queue(result)  # same result, another modality
    assert other.id != job.id
    assert jobs.counts()["queued"] == 2


def test_both_sinks_on_one_result_do_not_collide(jobs, tmp_path):
    result = _result(tmp_path)
    sinks: list[ResultSink] = [
        CStoreSink(jobs, [Destination.parse("PACS@10.0.0.5:104")], max_attempts=3),
        OrthancSink(jobs, "PACS", max_attempts=3),
    ]
    queued = [job for sink in sinks for job in sink.queue(result)]
    assert sorted(j.kind for j in queued) == sorted([DISPATCH_JOB, ORTHANC_STORE_JOB])
    assert len({j.id for j in queued}) == 2
