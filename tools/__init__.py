"""Developer tools, run as ``python -m tools.<name>``: each keeps a file in step with the code (``--check`` in CI)."""
