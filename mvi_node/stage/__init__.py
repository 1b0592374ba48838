"""Stage: durable storage of received instances and the index that knows what is held."""
