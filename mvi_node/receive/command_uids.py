"""Command UIDs of the listener's associations reach the node's handler, whatever their length.

pynetdicom checks every UID it decodes with ``_config.VALIDATORS["UI"]`` (1-64
characters). A C-STORE whose Affected SOP Instance or Class UID is longer fails that
check while the command is turned into a primitive, and pynetdicom then aborts the whole
association (``Evt19``): the sender sees an abort, not a status, and every instance
after it on that association is lost to the node.

``VALIDATORS`` is pynetdicom's documented hook for this. :func:`install` replaces the UI
validator with one that lets any value through on the threads of the node listener's
own associations (the DUL thread that decodes, the association thread that builds the
response) and keeps pynetdicom's check everywhere else (the node's SCU side: replay,
dispatch). The handler then judges the UID with :func:`mvi_node.stage.paths.check_uid`
and answers a failure status, leaving the invalid UID out of the response so a strict
sender can still decode it.
"""

from __future__ import annotations

import threading

from pynetdicom import _config as pynetdicom_config

_lock = threading.Lock()
_strict = None


def _listener_thread() -> bool:
    """True on a thread of an association accepted by the node's listener (its server
    carries the node's receive spool, see :mod:`mvi_node.receive.incoming`)."""
    thread = threading.current_thread()
    assoc = getattr(thread, "assoc", thread)  # a DUL thread knows its association; an association is its thread
    return getattr(getattr(assoc, "_server", None), "mvi_spool", None) is not None


def _validate_ui(value) -> tuple[bool, str]:
    if _listener_thread():
        return True, ""  # judged by the handler, which answers a status
    return _strict(value)


def install() -> None:
    """Replace pynetdicom's UI validator (process-wide, idempotent)."""
    global _strict
    with _lock:
        if _strict is None:
            _strict = pynetdicom_config.VALIDATORS["UI"]
            pynetdicom_config.VALIDATORS["UI"] = _validate_ui
