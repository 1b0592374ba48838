"""Parsed headers of staged files, kept between reception and the study job.

Selection reads every header of an exam, and the ROI and report stages use those same
datasets. Parsing them is most of a CT exam's selection time (about 0.5 ms a file with
pydicom), and it can happen while the study is still arriving: the node's prefetch
(``mvi_node.pipeline.prefetch``) parses each instance as it is staged, and the job finds
it here. An entry is used only while the file's size and mtime are the ones it was
parsed from; a job forgets its study's entries when it ends, so a dataset is never
shared by two jobs. A cache that is full takes no more (the job then parses itself).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pydicom.dataset import Dataset

from mvi_node.select.series import read_header

#: about 45 kB of Python objects per CT header, values converted (measured): 5,000 is
#: about 220 MB, six 770-instance exams in flight at once
DEFAULT_MAX_FILES = 5_000


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


class HeaderCache:
    def __init__(self, max_files: int = DEFAULT_MAX_FILES) -> None:
        self.max_files = max_files
        self._entries: dict[str, tuple[tuple[int, int], Dataset | None]] = {}
        self._lock = threading.Lock()
        #: files parsed through this cache (hits are not counted)
        self.parsed = 0
        #: of those, parsed by a reader (``read``) because the prefetch had not reached them
        self.missed = 0

    def read(self, path: Path) -> Dataset | None:
        """The header of ``path`` (``read_header``'s answer), parsed at most once."""
        key = str(path)
        stamp = _stamp(path)
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        with self._lock:
            self.missed += 1
        return self._parse(key, path, stamp)

    def prefetch(self, path: Path) -> bool:
        """Parse ``path`` ahead of its job, values converted; False when the cache is full
        or the file is gone or unreadable (its job will say so)."""
        if len(self._entries) >= self.max_files:
            return False
        try:
            ds = self._parse(str(path), path, _stamp(path))
        except Exception:  # noqa: BLE001 - the job reads it again and reports what is wrong
            return False
        if ds is not None:
            _convert(ds)
        return True

    def _parse(self, key: str, path: Path, stamp: tuple[int, int]) -> Dataset | None:
        ds = read_header(path)
        with self._lock:
            self.parsed += 1
            if len(self._entries) < self.max_files or key in self._entries:
                self._entries[key] = (stamp, ds)
        return ds

    def forget(self, folder: Path) -> int:
        """Drop the entries under ``folder`` (a study's staging folder); returns how many."""
        prefix = str(folder).rstrip(os.sep) + os.sep
        with self._lock:
            gone = [k for k in self._entries if k.startswith(prefix)]
            for k in gone:
                del self._entries[k]
        return len(gone)

    def __len__(self) -> int:
        return len(self._entries)


def _convert(ds: Dataset) -> None:
    """Turn every top-level raw element into its value now (pydicom converts on first
    access, which is the other half of selection's header cost)."""
    for tag in list(ds.keys()):
        try:
            ds[tag]
        except Exception:  # noqa: BLE001 - a bad value stays raw and fails where it is used, as before
            pass
