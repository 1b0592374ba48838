"""Seed 000 recipe: CT arterial phase, ResNet-18 + clinical factors, Grad-CAM in the graph.

Torch-free modules: preprocess, recipe, evaluate. Training-only: network, train, export.
"""
