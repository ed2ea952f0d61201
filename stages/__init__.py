"""DVC stage entry points: ``python -m stages.<name>``, one module per stage in dvc.yaml.

Each parses its arguments and calls the ``transferbench`` package, where the work is done.
"""
