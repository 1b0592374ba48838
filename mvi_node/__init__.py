"""mvi-node: a DICOM node that predicts microvascular invasion (MVI) of HCC."""

__version__ = "0.1.0"
