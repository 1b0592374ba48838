"""``[replay]``: archives the node may replay studies from, and how kindly to treat them.

```toml
[replay.pacs.ARCHIVE]
ae_title = "PACS"
host = "10.0.0.5"
port = 104
retrieve = "move"            # C-MOVE to the node's own AE title, or "get" (C-GET)
max_concurrent = 2           # associations/moves at a time
instances_per_second = 50    # 0: no budget (or mb_per_second)
result_cap = 500             # the PACS's C-FIND answer limit: a window that hits it is split
busy_hours = ["07:00-19:00"] # local times during which a running replay pauses

[[replay.schedules]]
cron = "0 1 * * *"
window = "previous_day"
modality = ["CT", "MR"]
pacs = "ARCHIVE"
```
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_WINDOW_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-(([01]\d|2[0-3]):[0-5]\d|24:00)$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ArchiveSettings(_Section):
    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    #: C-MOVE sends to ``move_destination`` (default: the node's own AE title, which the
    #: PACS must know); C-GET brings the instances back on the query association
    retrieve: Literal["move", "get"] = "move"
    move_destination: str = ""
    max_concurrent: int = Field(default=2, ge=1, le=32)
    #: 0 = unlimited
    instances_per_second: float = Field(default=0.0, ge=0)
    #: megabytes (10^6 bytes) per second, counted on what the node staged; 0 = unlimited
    mb_per_second: float = Field(default=0.0, ge=0)
    result_cap: int = Field(default=500, ge=1)
    #: "HH:MM-HH:MM" local times during which retrieval pauses (busy hours)
    busy_hours: list[str] = Field(default_factory=list)
    #: or the other way round: when given, retrieval runs only inside these windows
    #: (a running replay pauses outside them and resumes when the next one opens)
    off_peak: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)

    @field_validator("busy_hours", "off_peak")
    @classmethod
    def _windows(cls, value: list[str]) -> list[str]:
        for w in value:
            if not _WINDOW_RE.match(w):
                raise ValueError(f"a busy window is HH:MM-HH:MM, got {w!r}")
        return value


class ScheduleSettings(_Section):
    cron: str
    #: "previous_day" or "last_<N>_days"
    window: str = "previous_day"
    modality: list[str] = Field(default_factory=list)
    pacs: str = ""
    name: str = ""

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) not in (5, 6):
            raise ValueError("cron has 5 fields (minute hour day month weekday), or 6 with seconds first")
        return value

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        if value != "previous_day" and not re.match(r"^last_\d{1,4}_days$", value):
            raise ValueError("window is previous_day or last_<N>_days")
        return value


class ReplaySettings(_Section):
    enabled: bool = True
    pacs: dict[str, ArchiveSettings] = Field(default_factory=dict)
    #: folders a replay may read (--folder DIR must lie under one); empty: no folder replays
    folder_roots: list[Path] = Field(default_factory=list)
    #: an incomplete series is retrieved again this many times before the study fails
    retries: int = Field(default=2, ge=0, le=20)
    #: how long a retrieved study may wait for its job before it counts as failed
    process_timeout_s: float = Field(default=3600.0, gt=0)
    poll_seconds: float = Field(default=0.5, gt=0, le=60)
    schedules: list[ScheduleSettings] = Field(default_factory=list)
