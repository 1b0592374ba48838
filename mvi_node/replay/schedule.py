"""Scheduled replays (``[[replay.schedules]]``): APScheduler cron triggers.

Each schedule submits an ordinary replay for its window (``previous_day``: yesterday;
``last_<N>_days``: the N days before today) at its cron time.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from mvi_node.config.replay import ScheduleSettings
from mvi_node.replay.request import ReplayRequest


def trigger(schedule: ScheduleSettings):
    from apscheduler.triggers.cron import CronTrigger

    return CronTrigger.from_crontab(schedule.cron)


def name_of(schedule: ScheduleSettings, i: int) -> str:
    return schedule.name or f"schedule-{i + 1}"


def window(schedule: ScheduleSettings, today: dt.date) -> tuple[str, str]:
    """(from, to) StudyDates of the schedule's window, relative to ``today``."""
    m = re.match(r"^last_(\d+)_days$", schedule.window)
    days = int(m.group(1)) if m else 1
    return (today - dt.timedelta(days=days)).strftime("%Y%m%d"), (today - dt.timedelta(days=1)).strftime("%Y%m%d")


def request_for(schedule: ScheduleSettings, default_pacs: str, today: dt.date) -> ReplayRequest:
    start, end = window(schedule, today)
    return ReplayRequest(pacs=schedule.pacs or default_pacs, date_from=start, date_to=end,
                         modality=list(schedule.modality), requested_by=f"schedule:{schedule.name or schedule.cron}")


def next_runs(schedules: list[ScheduleSettings], now: dt.datetime | None = None) -> list[dict[str, Any]]:
    now = now or dt.datetime.now().astimezone()
    out = []
    for i, s in enumerate(schedules):
        fire = trigger(s).get_next_fire_time(None, now)
        out.append({"name": name_of(s, i), "cron": s.cron, "window": s.window, "modality": list(s.modality),
                    "pacs": s.pacs, "next_run": fire.isoformat() if fire else None})
    return out
