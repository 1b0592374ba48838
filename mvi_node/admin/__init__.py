"""Admin HTTP API: health, readiness, metrics, jobs, clinical factors."""
