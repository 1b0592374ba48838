"""Write a file so that it survives a crash the moment this returns.

The bytes go to a temporary name in the destination folder, are fsynced, renamed
over the final name and the folder is fsynced: a reader sees either nothing or the
whole file, never a torn one (POSIX rename is atomic within a filesystem).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from mvi_node.common.poller import count_failure

log = logging.getLogger("mvi_node")

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


@dataclass(frozen=True)
class FileRange:
    """``length`` bytes of the file at ``path`` from ``offset``: copied in the kernel
    (``copy_file_range``), never through Python memory."""

    path: Path
    offset: int
    length: int


def _write_all(fd: int, chunk) -> int:
    view = memoryview(chunk)
    size = 0
    while view:
        written = os.write(fd, view)
        view = view[written:]
        size += written
    return size


def _copy_range(fd: int, part: FileRange) -> int:
    with open(part.path, "rb") as src:
        left, offset = part.length, part.offset
        try:
            while left:
                n = os.copy_file_range(src.fileno(), fd, min(left, 1 << 30), offset)
                if n == 0:
                    raise OSError(5, "source file shorter than announced")
                left -= n
                offset += n
        except OSError as exc:
            if exc.errno not in (18, 22, 38, 95):  # EXDEV, EINVAL, ENOSYS, EOPNOTSUPP: copy by hand
                raise
            src.seek(offset)
            while left:
                block = src.read(min(left, 1 << 20))
                if not block:
                    raise OSError(5, "source file shorter than announced") from None
                _write_all(fd, block)
                left -= len(block)
    return part.length


def write_durably(dest: Path, chunks: list | bytes, sync: bool = True) -> int:
    """Atomically place ``chunks`` (bytes, or :class:`FileRange`) at ``dest``; return the byte count.

    With ``sync`` false the file is renamed into place without fsync (the "batched"
    durability a site may opt into); a :class:`BatchSyncer` syncs it soon after.
    """
    ensure_dir(dest.parent, sync=sync)
    tmp = dest.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    if isinstance(chunks, (bytes, bytearray, memoryview, FileRange)):
        chunks = [chunks]
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    size = 0
    try:
        for chunk in chunks:
            size += _copy_range(fd, chunk) if isinstance(chunk, FileRange) else _write_all(fd, chunk)
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


def move_durably(src: Path, dest: Path, sync: bool = True) -> None:
    """Make the complete file ``src`` durable at ``dest`` by rename (same filesystem):
    fsync it, rename it over ``dest``, fsync ``dest``'s folder. OSError (EXDEV among
    them) leaves ``src`` where it was."""
    ensure_dir(dest.parent, sync=sync)
    if sync:
        fd = os.open(src, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(src, dest)
    if sync:
        fsync_dir(dest.parent)


class BatchSyncer:
    """fsyncs files written without sync, and their folders (three levels up: series,
    study, staging), at most ``interval`` seconds
    after they were written: the bound on what an operating-system crash or power loss
    can take of what was acknowledged in ``batched`` mode (a killed process loses
    nothing: its writes are in the kernel's page cache)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self._pending: list[Path] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.synced = 0

    def add(self, path: Path) -> None:
        with self._lock:
            self._pending.append(path)

    def start(self) -> "BatchSyncer":
        self._thread = threading.Thread(target=self._loop, name="batch-sync", daemon=True)
        self._thread.start()
        return self

    def flush(self) -> int:
        """fsync everything pending now; return the number of files synced."""
        with self._lock:
            batch, self._pending = self._pending, []
        folders = set()
        for path in batch:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            # the file's folder, and the folders a new study or series created above it
            folders.update(list(path.parents)[:3])
        for folder in folders:
            try:
                fsync_dir(folder)
            except FileNotFoundError:
                pass
        self.synced += len(batch)
        return len(batch)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.flush()
            except Exception:  # the loop must outlive any error: what it misses, the next pass syncs
                count_failure("batch-sync")
                log.exception("batched fsync failed")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
