"""Scheduled replays (``[[replay.schedules]]``): APScheduler cron triggers with a
persistent job store (SQLite through SQLAlchemy, ``<data_dir>/replay-schedules.sqlite3``).

Each schedule submits an ordinary replay for its window (``previous_day``: yesterday;
``last_<N>_days``: the N days before today) at its cron time. The store keeps every
schedule's next run across restarts: a run missed while the node was down fires once
when it is back (coalesced, within ``MISFIRE_GRACE_S``), instead of being lost. ``cron``
has five fields (minute hour day month weekday) or six with seconds first.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path
from typing import Any, Callable

from mvi_node.config.replay import ScheduleSettings
from mvi_node.replay.request import ReplayRequest

log = logging.getLogger("mvi_node.replay")

MISFIRE_GRACE_S = 6 * 3600
#: the running node's scheduler (APScheduler stores the job function by reference)
_ACTIVE: dict[str, "ReplayScheduler"] = {}


def trigger(schedule: ScheduleSettings):
    from apscheduler.triggers.cron import CronTrigger

    fields = schedule.cron.split()
    if len(fields) == 6:
        second, minute, hour, day, month, dow = fields
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month, day_of_week=dow)
    return CronTrigger.from_crontab(schedule.cron)


def name_of(schedule: ScheduleSettings, i: int) -> str:
    return schedule.name or f"schedule-{i + 1}"


def window(schedule: ScheduleSettings, today: dt.date) -> tuple[str, str]:
    """(from, to) StudyDates of the schedule's window, relative to ``today``."""
    m = re.match(r"^last_(\d+)_days$", schedule.window)
    days = int(m.group(1)) if m else 1
    return (today - dt.timedelta(days=days)).strftime("%Y%m%d"), (today - dt.timedelta(days=1)).strftime("%Y%m%d")


def request_for(schedule: ScheduleSettings, name: str, default_pacs: str, today: dt.date) -> ReplayRequest:
    start, end = window(schedule, today)
    return ReplayRequest(pacs=schedule.pacs or default_pacs, date_from=start, date_to=end,
                         modality=list(schedule.modality), requested_by=f"schedule:{name}")


def fire(name: str) -> None:
    """The job function APScheduler stores: hands the run to this process's scheduler."""
    scheduler = _ACTIVE.get("node")
    if scheduler is not None:
        scheduler.submit_scheduled(name)


def store_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


class ReplayScheduler:
    def __init__(self, schedules: list[ScheduleSettings], store_path: Path, default_pacs: str,
                 submit: Callable[[ReplayRequest], Any]) -> None:
        self.by_name = {name_of(s, i): s for i, s in enumerate(schedules)}
        self.store_path = Path(store_path)
        self.default_pacs = default_pacs
        self.submit = submit
        self.scheduler = None

    def start(self) -> None:
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        self.scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=store_url(self.store_path))},
            job_defaults={"coalesce": True, "misfire_grace_time": MISFIRE_GRACE_S, "max_instances": 1})
        _ACTIVE["node"] = self
        self.scheduler.start(paused=True)
        for name, schedule in self.by_name.items():
            new = trigger(schedule)
            job = self.scheduler.get_job(name)
            # the same trigger keeps its stored next run (a missed run then fires once now)
            if job is None or str(job.trigger) != str(new):
                self.scheduler.add_job(fire, new, id=name, kwargs={"name": name}, replace_existing=True)
        for job in self.scheduler.get_jobs():
            if job.id not in self.by_name:
                job.remove()
        self.scheduler.resume()
        for job in self.scheduler.get_jobs():
            log.info("replay schedule %s: next run %s", job.id, job.next_run_time)

    def submit_scheduled(self, name: str) -> None:
        schedule = self.by_name.get(name)
        if schedule is None:
            return
        try:
            replay = self.submit(request_for(schedule, name, self.default_pacs, dt.date.today()))
            log.info("replay schedule %s submitted replay %s", name, getattr(replay, "id", "?"))
        except Exception:  # noqa: BLE001 - a bad schedule must not stop the scheduler
            log.exception("replay schedule %s could not submit", name)

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        _ACTIVE.pop("node", None)


def stored_next_runs(store_path: Path) -> dict[str, str | None]:
    """Next runs as the persistent store holds them (what the running node will do)."""
    if not Path(store_path).exists():
        return {}
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    store = SQLAlchemyJobStore(url=store_url(store_path))
    store.start(None, "default")
    try:
        return {job.id: job.next_run_time.isoformat() if job.next_run_time else None
                for job in store.get_all_jobs()}
    finally:
        store.shutdown()


def next_runs(schedules: list[ScheduleSettings], store_path: Path | None = None,
              now: dt.datetime | None = None) -> list[dict[str, Any]]:
    now = now or dt.datetime.now().astimezone()
    stored = stored_next_runs(store_path) if store_path is not None else {}
    out = []
    for i, s in enumerate(schedules):
        name = name_of(s, i)
        fire_at = trigger(s).get_next_fire_time(None, now)
        out.append({"name": name, "cron": s.cron, "window": s.window, "modality": list(s.modality),
                    "pacs": s.pacs, "next_run": stored.get(name) or (fire_at.isoformat() if fire_at else None),
                    "from_store": name in stored})
    return out
