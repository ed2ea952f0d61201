"""Batches from memory-mapped arrays, fit with resume, and the training and evaluation of an experiment's runs."""
