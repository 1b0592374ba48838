"""Replay metrics (process registry, shown on the admin API's ``/metrics``); the only
label is the archive's configured name or AE title, never patient data."""

from prometheus_client import Counter, Gauge

STUDIES = Counter("mvi_replay_studies", "Replayed studies by outcome (queued, retrieved, skipped, done, failed)",
                  ["pacs", "outcome"])
INSTANCES = Counter("mvi_replay_instances_retrieved", "Instances retrieved by replays", ["pacs"])
RATE = Gauge("mvi_replay_instances_per_second", "Retrieval rate of the running replay", ["pacs"])
FAILED_SUBOPS = Counter("mvi_replay_failed_suboperations", "Failed C-MOVE/C-GET sub-operations", ["pacs"])
