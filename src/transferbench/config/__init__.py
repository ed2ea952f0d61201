"""Typed params sections (pydantic, unknown keys refused), initial-weights values and disk-space checks; no Keras."""
