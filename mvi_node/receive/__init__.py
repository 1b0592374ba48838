"""Receive stage: the DICOM listener that accepts what PACS routes to the node."""
