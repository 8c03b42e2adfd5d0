"""Datasets carried inside the package (no download at run time)."""
