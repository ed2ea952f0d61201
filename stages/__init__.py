"""DVC stage entry points: ``python -m stages.<name>``, one module per stage in dvc.yaml.

Each parses its arguments and calls the ``transferbench`` package, where the work is done.
"""

import sys
from pathlib import Path

# A stage runs the package of its own checkout. DVC runs queued and --temp experiments in a copy of
# the repository and hashes that copy's src/ as the stages' deps; an editable install would import
# the developer's working tree instead, whose code (and paths) may be another revision's.
_SRC = str(Path(__file__).resolve().parent.parent / "src")
if sys.path[:1] != [_SRC]:
    sys.path.insert(0, _SRC)
