"""Seed 002 segmentation recipe: residual 3D U-Net labelling background / liver / tumour on CT.

Torch-free: recipe (the served class; serving code in mvi_node.infer.segmentation),
evaluate (Dice, detection). Training-only: network, data, train, export.
"""
