"""Datasets: the registry, sources, decoding, CAPTCHA generation, splits, preparation and validation; no Keras."""
