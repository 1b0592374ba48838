"""Dispatch: results to PACS over C-STORE, durably queued, retried with back-off."""
