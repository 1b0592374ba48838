"""Where results go: a DICOM application entity written ``AE@HOST:PORT``."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPEC = re.compile(r"^(?P<ae>[^@\\\x00-\x1f]{1,16})@(?P<host>\[[0-9a-fA-F:]+\]|[^:@\s]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int
    tls: bool = False

    @classmethod
    def parse(cls, spec: str, tls: bool = False) -> "Destination":
        """``PACS@10.0.0.5:104`` -> Destination; ValueError naming what is wrong."""
        m = _SPEC.match(spec.strip())
        if not m:
            raise ValueError(f"{spec!r}: expected AE@HOST:PORT (AE title 1-16 characters)")
        port = int(m["port"])
        if not 0 < port < 65536:
            raise ValueError(f"{spec!r}: port out of range")
        return cls(m["ae"].strip(), m["host"].strip("[]"), port, tls)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"
