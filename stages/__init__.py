"""DVC stage entry points: ``python -m stages.<name>``, one module per stage in dvc.yaml.

Each parses its arguments and calls the ``transferbench`` package, where the work is done.
"""

import sys
from pathlib import Path

# Run the package beside these modules, not an installed one: DVC hashes this copy's src/ as the stages'
# deps, and `dvc exp run --temp` runs them in a copy of the repository, whose outputs belong there too
# (transferbench.core.paths finds the repository from its own file).
_SRC = str(Path(__file__).resolve().parent.parent / "src")
if _SRC not in sys.path[:1]:
    sys.path.insert(0, _SRC)
