"""Ground floor: helpers every layer shares (durable writes, SQLite set-up, polling threads).

Nothing here imports another ``mvi_node`` package, so any package may import it
without creating a cycle.
"""
