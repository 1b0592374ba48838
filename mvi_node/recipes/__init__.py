"""The package's own recipes, one folder each, on the interface of :mod:`mvi_node.infer.recipe`.

Each is registered through the ``mvi_node.recipes`` entry-point group in
``pyproject.toml``; nothing imports this package by name except the entry points, the
recipe's own trainer and tests. ``docs/architecture.md`` walks through adding one.
"""
