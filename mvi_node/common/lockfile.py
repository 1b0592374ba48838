"""One process per data folder: an exclusive ``flock`` on ``<data_dir>/node.lock``.

The lock belongs to the open file, so it goes away with the process however that
ends (a SIGKILL included): a stale lock file never blocks a restart. The file records
the holder's pid for the message a second process gets.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DataDirInUse(RuntimeError):
    """Another live process holds the data folder."""


class DataDirLock:
    NAME = "node.lock"

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / self.NAME
        self._fd: int | None = None

    def acquire(self) -> "DataDirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise DataDirInUse(
                f"data folder {self.path.parent} is in use by another mvi-node process (pid {holder}); "
                "one node per data folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
