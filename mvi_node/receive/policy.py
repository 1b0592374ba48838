"""Who may associate, and whether the node can take more data right now."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 §9.3.4
REJECT_CALLING_AE = (0x01, 0x01, 0x03)  # permanent, service user, calling AE not recognised
REJECT_CONGESTION = (0x02, 0x03, 0x01)  # transient, service provider, temporary congestion
REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)  # transient, service provider, local limit exceeded


@dataclass(frozen=True)
class Rejection:
    codes: tuple[int, int, int]
    reason: str


def _resolve(host: str) -> set[str]:
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return set()


class CallerPolicy:
    """Allow-list of calling AE titles, each optionally bound to a host.

    Entries are ``AE`` (any host) or ``AE@host`` (host name or address). An empty
    list admits every caller.
    """

    def __init__(self, entries: list[str]) -> None:
        self._any_host: set[str] = set()
        self._by_host: dict[str, set[str]] = {}
        for entry in entries:
            ae, sep, host = entry.partition("@")
            if sep:
                self._by_host.setdefault(ae.strip(), set()).update(_resolve(host))
            else:
                self._any_host.add(ae.strip())

    @property
    def enabled(self) -> bool:
        return bool(self._any_host or self._by_host)

    def admits(self, calling_ae: str, address: str) -> bool:
        if not self.enabled:
            return True
        ae = calling_ae.strip()
        if ae in self._any_host:
            return True
        return address in self._by_host.get(ae, set())


class DiskGuard:
    """Back-pressure: below ``min_free_bytes`` free, the node takes nothing new."""

    #: statvfs is cheap but runs per instance; free space does not move that fast.
    CACHE_SECONDS = 0.5

    def __init__(self, path: Path, min_free_bytes: int) -> None:
        self.path = Path(path)
        self.min_free_bytes = min_free_bytes
        self._checked_at = -1e9
        self._low = False

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.path).free

    def low(self) -> bool:
        if self.min_free_bytes <= 0:
            return False
        now = time.monotonic()
        if now - self._checked_at > self.CACHE_SECONDS:
            self._low = self.free_bytes() < self.min_free_bytes
            self._checked_at = now
        return self._low
