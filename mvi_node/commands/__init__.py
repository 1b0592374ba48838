"""The ``mvi-node`` command line: one module per sub-command, above everything it calls."""
