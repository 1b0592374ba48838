"""Empty files made durable ahead of time, so that receiving an instance costs one fsync, not two.

An instance is durable once its bytes *and* its name survive a crash. Written to a new
file, that takes two commits one after the other: fsync the file, then fsync the folder
its name was put in. A :class:`FilePool` creates empty files in batches and makes their
names durable with one folder fsync per batch, off the receive path. An instance
received into one of them is made durable by one ``fdatasync`` (:func:`seal`), and is
then renamed into staging without a folder fsync: a rename is atomic across a crash on
the journalling filesystems the node runs on (ext4, XFS), so after a crash the file is
either at its staged name or still at its pool name, and start-up stages what it finds
sealed in the pool (:mod:`mvi_node.stage.reconcile`).

A crash can also leave a pool file half written, never acknowledged. The seal tells
the two apart: the last write before the ``fdatasync`` puts the file's length and the
CRC-32 of everything after the preamble into the 128-byte DICOM preamble (PS3.10 §7.1
leaves it to the implementation), so a file whose length or checksum does not match
was not acknowledged and is removed.
"""

from __future__ import annotations

import collections
import os
import struct
import threading
import uuid
import zlib
from pathlib import Path

from mvi_node.common.durable import fsync_dir
from mvi_node.common.poller import Poller

#: name prefix of a pool file (start-up reconcile stages sealed ones, removes the rest)
POOL_PREFIX = ".pool-"
PREAMBLE_LENGTH = 128
_MAGIC = b"MVI-NODE SEALED\x00"
_SEAL = struct.Struct("<16sQI")


def seal_bytes(length: int, crc: int) -> bytes:
    """The preamble of a sealed file: ``length`` bytes in all, ``crc`` of bytes 128 on."""
    return _SEAL.pack(_MAGIC, length, crc & 0xFFFFFFFF).ljust(PREAMBLE_LENGTH, b"\x00")


def seal(path: str | os.PathLike, length: int, crc: int) -> None:
    """Write the seal into the preamble of the complete file at ``path`` and make the file
    durable (``fdatasync``: its data and its length; its name already is)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, seal_bytes(length, crc), 0)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def is_sealed(path: Path) -> bool:
    """True when the file at ``path`` is whole as sealed: its length and checksum match."""
    with open(path, "rb") as fh:
        head = fh.read(PREAMBLE_LENGTH)
        if len(head) < _SEAL.size:
            return False
        magic, length, crc = _SEAL.unpack_from(head)
        if magic != _MAGIC or os.fstat(fh.fileno()).st_size != length:
            return False
        running = 0
        while block := fh.read(1 << 20):
            running = zlib.crc32(block, running)
    return running == crc


class FilePool(Poller):
    """Empty files under ``directory`` whose names are durable, refilled in batches.

    ``take()`` hands one out (None when the pool is empty: the caller then creates a file
    the ordinary way and pays the folder fsync itself). Names carry a token of this pool,
    so listener processes that share the folder never hand out each other's files.
    """

    thread_name = "file-pool"
    failure_message = "refilling the receive file pool failed"

    def __init__(self, directory: Path, size: int = 32) -> None:
        super().__init__(poll_seconds=5.0)
        self.directory = Path(directory)
        self.size = size
        self.low_water = max(1, size // 2)
        self._token = uuid.uuid4().hex[:12]
        self._ready: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        self.created = 0

    def take(self) -> str | None:
        with self._lock:
            name = self._ready.popleft() if self._ready else None
            left = len(self._ready)
        if left < self.low_water:
            self.wake()
        return name

    def fill(self) -> int:
        """Create files up to ``size``, one folder fsync for the batch; return how many."""
        with self._lock:
            missing = self.size - len(self._ready)
        if missing <= 0:
            return 0
        self.directory.mkdir(parents=True, exist_ok=True)
        made = []
        for _ in range(missing):
            name = str(self.directory / f"{POOL_PREFIX}{self._token}-{uuid.uuid4().hex}")
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
            made.append(name)
        fsync_dir(self.directory)  # only now are the names durable: hand them out after this
        with self._lock:
            self._ready.extend(made)
        self.created += len(made)
        return len(made)

    def poll(self) -> bool:
        self.fill()
        return False

    def first_pass(self) -> bool:
        self.fill()  # in start(): the first instances already get pool files
        return True


def not_spare(directory: Path) -> list[Path]:
    """The files in ``directory`` other than empty pool files (spares waiting to be used)."""
    if not Path(directory).is_dir():
        return []
    return [p for p in Path(directory).rglob("*") if p.is_file()
            and not (p.name.startswith(POOL_PREFIX) and p.stat().st_size == 0)]
