"""The node's composition root: every stage, sink, worker and readiness probe wired
together from the settings (:mod:`.node`), and the verified inference engine (:mod:`.engine`)."""
