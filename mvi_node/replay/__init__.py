"""Replay of archived studies through the node (issue 14).

- :mod:`.request`: what was asked (source, filters, dry run, force), and its redacted view;
- :mod:`.sources`: the DIMSE archive (C-FIND, C-MOVE / C-GET, C-CANCEL);
- :mod:`.query`: study queries in date windows that stay under the PACS's result cap;
- :mod:`.plan`: selection rules on C-FIND series answers: which series, why, counts, bytes;
- :mod:`.throttle`: instances-per-second budget and busy hours, per archive;
- :mod:`.store`: durable replay state (SQLite): a killed node resumes where it was;
- :mod:`.runner`: the worker thread inside the node; :mod:`.hooks`: what it asks of the node;
- :mod:`.progress`: counts, rate and ETA; :mod:`.schedule`: cron schedules; :mod:`.folder`,
  :mod:`.dicomweb`: the other sources; :mod:`.metrics`: Prometheus counters.

The node's own stages are reached through :class:`.hooks.NodeHooks`, which the
composition root (``mvi_node.app``) implements: this package sits below staging, the
pipeline and the admin API.
"""
