"""Kept for callers of the first report module layout; see :mod:`mvi_node.report.sc`."""

from mvi_node.report.sc import jet, render, sc_preview_png, windowed  # noqa: F401
