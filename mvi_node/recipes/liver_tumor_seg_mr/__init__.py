"""Seed 002's segmenter for MR: residual 3D U-Net labelling background / liver / tumour on the
registered sequences of a liver MRI exam (portal venous target, arterial, transitional, T2).

Torch-free: recipe (the served class; its inputs come from the shared MR preprocessing,
serving code in mvi_node.infer.segmentation). Training-only: data, train, card.
"""
