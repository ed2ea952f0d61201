"""The README's newcomer commands, read from its text: the small run and the look-at-the-answer block."""

from __future__ import annotations

import re
import shlex

from transferbench.core import paths


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", (paths.ROOT / "README.md").read_text(), re.S)


def small_run(sizes: dict[str, str] | None = None) -> list[str]:
    """The README's small run as argv; ``sizes`` replaces the values of those ``-S key=value`` overrides."""
    block = next(b for b in bash_blocks() if "dvc exp run" in b and " report " in b)
    command = next(line for line in block.replace("\\\n", " ").splitlines() if line.startswith("dvc exp run"))
    return with_values(shlex.split(command), sizes, "small run")


def with_values(argv: list[str], sizes: dict[str, str] | None, what: str) -> list[str]:
    """``argv`` with the values of the ``-S key=value`` overrides named in ``sizes`` replaced."""
    for i, arg in enumerate(argv):
        key = arg.split("=")[0]
        if sizes and key in sizes:
            argv[i] = f"{key}={sizes[key]}"
    missing = set(sizes or ()) - {a.split("=")[0] for a in argv}
    assert not missing, f"the README's {what} no longer sets {sorted(missing)}"
    return argv


def transfer_commands(sizes: dict[str, str] | None = None) -> list[list[str]]:
    """The README's step after the small run as argvs: copy its model, then train from it and from random
    weights; ``sizes`` replaces values of the training command's overrides."""
    block = next(b for b in bash_blocks() if "-n cpu-transfer" in b)
    lines = [line.split("#")[0].strip() for line in block.replace("\\\n", " ").splitlines()]
    copy, train = (shlex.split(line) for line in lines if line)
    return [copy, with_values(train, sizes, "transfer step")]


def look_commands() -> list[str]:
    """The block after the small run, one command a line, comments dropped."""
    block = next(b for b in bash_blocks() if b.lstrip().startswith("cat reports/README.md"))
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
