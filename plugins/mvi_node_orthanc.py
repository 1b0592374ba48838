"""Orthanc Python plugin: hand stable studies to mvi-node (topology b: Orthanc is the front door).

Stays thin on purpose: Orthanc's Python callbacks share one GIL, so no inference, no
DICOM parsing and no blocking network call runs inside Orthanc. On STABLE_STUDY the
study's Orthanc ID is queued; a daemon thread POSTs it to the node's admin API
(``/orthanc/stable-study``). If the node is down the ID stays queued and is retried;
the node also catches up from Orthanc's ``/changes`` at start, so nothing is lost when
Orthanc restarts with IDs still queued.

Orthanc configuration (JSON):
    "Plugins": ["/usr/share/orthanc/plugins/libOrthancPython.so"],
    "PythonScript": "/opt/mvi-node/plugins/mvi_node_orthanc.py",
    "MviNode": {"Url": "http://127.0.0.1:8642", "Token": ""}
"""

import json
import queue
import threading
import time
import urllib.error
import urllib.request

import orthanc  # provided by the orthanc-python plugin

_pending: "queue.Queue[str]" = queue.Queue()
#: refusals retrying cannot fix (a wrong token, a malformed hand-off): logged once, dropped;
#: the node's /changes catch-up still finds the study
_DROP = {401, 403, 422}
_said: set[int] = set()


def _settings():
    config = json.loads(orthanc.GetConfiguration()).get("MviNode", {})
    return config.get("Url", "http://127.0.0.1:8642").rstrip("/"), config.get("Token", "")


def _post(url: str, token: str, study_id: str) -> bool:
    body = json.dumps({"orthanc_study_id": study_id}).encode()
    request = urllib.request.Request(f"{url}/orthanc/stable-study", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return 200 <= response.status < 300
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # Orthanc no longer holds the study: nothing left to hand over
            return True
        if exc.code in _DROP:
            if exc.code not in _said:
                _said.add(exc.code)
                orthanc.LogError(f"mvi-node: hand-offs refused with HTTP {exc.code} (check MviNode.Token); "
                                 "dropped, the node's change-log catch-up imports the studies")
            return True
        orthanc.LogWarning(f"mvi-node: hand-off of study {study_id} answered HTTP {exc.code}")
        return False  # 5xx (node or Orthanc busy): retried
    except (urllib.error.URLError, OSError):
        return False  # node down or restarting: retried


def _forward() -> None:
    url, token = _settings()
    while True:
        study_id = _pending.get()
        delay = 1.0
        while not _post(url, token, study_id):
            orthanc.LogWarning(f"mvi-node: hand-off of study {study_id} failed, retrying in {delay:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 60.0)
        orthanc.LogInfo(f"mvi-node: study {study_id} handed to the node")


def on_change(change_type, level, resource_id):
    if change_type == orthanc.ChangeType.STABLE_STUDY:
        _pending.put(resource_id)


threading.Thread(target=_forward, name="mvi-node-handoff", daemon=True).start()
orthanc.RegisterOnChangeCallback(on_change)
