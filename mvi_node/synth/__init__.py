"""Synthetic DICOM data: nothing real about a patient ever ships with the project."""
