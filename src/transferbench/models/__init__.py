"""Backbones and heads (registries), fine-tuning strategies and initial weights; Keras only where a model is built."""
