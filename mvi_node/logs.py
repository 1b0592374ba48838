"""Logging set-up: text or one JSON object per line. Records carry UIDs, never patient data.

Values a peer sent (command UIDs, AE titles) can hold newlines and other control
characters. In text logs every record is one line that starts with its timestamp:
control characters in the message are escaped (``\\n``, ``\\x1b``), and the lines of a
traceback that follow a record are indented, so no received value can forge a record.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_control(text: str) -> str:
    """``text`` with every control character written as an escape (one line, always)."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def shown(value: object, limit: int = 80) -> str:
    """A received value as it may appear in a log line: escaped, at most ``limit`` characters."""
    text = escape_control(str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class TextFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_control(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:
        return "\n".join("    " + escape_control(line) for line in super().formatException(ei).splitlines())

    def formatStack(self, stack_info: str) -> str:
        return "\n".join("    " + escape_control(line) for line in stack_info.splitlines())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("job_id", "stage", "seconds", "study_uid"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pydicom's value-validation warnings quote the offending value, which may be a
    # patient's name: values are checked where they matter (UIDs), never echoed.
    from pydicom import config as pydicom_config

    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    # pynetdicom logs every PDU at INFO (and dataset contents at DEBUG): keep it quiet.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
