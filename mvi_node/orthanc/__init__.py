"""Orthanc as the node's front door and results path, in one package.

``client`` talks REST; ``intake`` imports stable studies into staging (plugin hand-off
and the ``/changes`` catch-up); ``results`` uploads results and watches Orthanc's
C-STORE jobs; ``routes`` are the admin API's Orthanc endpoints; ``sink`` is the
"orthanc" result sink; ``wiring`` assembles it all for the node. Only the composition
root (``mvi_node.app.node``, ``mvi_node.commands.status``) imports this package.
"""
