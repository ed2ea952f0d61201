"""Experiments and their runs (arms x seeds), and params.yaml loaded and cross-checked against the registries."""
