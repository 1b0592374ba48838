"""Seed 001 (Sun et al., WJSO 2022): MVI grade M0/M1/M2 from three DCE-MRI sequences."""

from mvi_node.recipes.mr_3seq_grade.recipe import RECIPE

__all__ = ["RECIPE"]
