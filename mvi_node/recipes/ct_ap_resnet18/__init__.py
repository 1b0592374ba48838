"""Seed 000 recipe: CT arterial phase, ResNet-18 + clinical factors, Grad-CAM in the graph.

Torch-free modules: preprocess, recipe, evaluate, card (the metrics and the card writer are
mvi_node.evaluation's). Training-only: network, train, export.
"""
