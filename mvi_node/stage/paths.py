"""Where a staged instance lives, and the UID check that keeps paths safe."""

from __future__ import annotations

import re
from pathlib import Path

from mvi_node.common.durable import TMP_PREFIX

# PS3.5 §9.1: components of digits separated by dots, no leading zero, at most 64 chars.
# Matched on the whole string (fullmatch): "$" alone would let a trailing newline through.
_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")


class InvalidUID(ValueError):
    """A UID that must not become a path component."""


def check_uid(value: object, what: str) -> str:
    """Return ``value`` as a UID string or raise :class:`InvalidUID` naming ``what``."""
    if value is None:
        raise InvalidUID(f"{what} is missing")
    # UI values are padded to even length with a trailing NUL (PS3.5 §6.2); some
    # writers pad with a space. Nothing else is trimmed: a leading space or a newline
    # makes the value invalid, so what becomes a path is exactly what was checked.
    uid = str(value).rstrip("\x00 ")
    if not uid:
        raise InvalidUID(f"{what} is empty")
    if len(uid) > 64 or not _UID_RE.fullmatch(uid):
        raise InvalidUID(f"{what} is not a valid UID")
    return uid


def instance_path(staging_dir: Path, study_uid: str, series_uid: str, sop_uid: str) -> Path:
    """``<staging>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``."""
    return staging_dir / study_uid / series_uid / f"{sop_uid}.dcm"


__all__ = ["TMP_PREFIX", "InvalidUID", "check_uid", "instance_path"]
