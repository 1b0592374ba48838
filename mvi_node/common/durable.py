"""Write a file so that it survives a crash the moment this returns.

The bytes go to a temporary name in the destination folder, are fsynced, renamed
over the final name and the folder is fsynced: a reader sees either nothing or the
whole file, never a torn one (POSIX rename is atomic within a filesystem).
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

#: name prefix of a file not yet renamed into place; start-up reconcile removes leftovers
TMP_PREFIX = ".tmp-"

# Folders already known to exist and be durable: saves a mkdir+fsync per instance.
_known_dirs: set[Path] = set()
_known_lock = threading.Lock()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path, sync: bool = True) -> None:
    """Create ``path`` and make its entry durable in its parent (once per process)."""
    if path in _known_dirs:
        return
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    path.mkdir(parents=True, exist_ok=True)
    if sync:
        for created in reversed(missing):
            fsync_dir(created.parent)
    with _known_lock:
        _known_dirs.add(path)


def forget_dir(path: Path) -> None:
    """Drop cached knowledge of ``path`` and below, after the folder was removed."""
    with _known_lock:
        for known in [d for d in _known_dirs if d == path or path in d.parents]:
            _known_dirs.discard(known)


def write_durably(dest: Path, chunks: list[bytes] | bytes, sync: bool = True) -> int:
    """Atomically place ``chunks`` at ``dest``; return the byte count.

    With ``sync`` false the file is renamed into place without fsync (the weaker
    "batched" durability a site may opt into); the caller syncs later.
    """
    ensure_dir(dest.parent, sync=sync)
    tmp = dest.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    if isinstance(chunks, (bytes, bytearray, memoryview)):
        chunks = [chunks]
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    size = 0
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                written = os.write(fd, view)
                view = view[written:]
                size += written
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, dest)
        if sync:
            fsync_dir(dest.parent)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return size


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
