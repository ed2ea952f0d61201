"""The README's newcomer commands, read from its text: the small run and the look-at-the-answer block."""

from __future__ import annotations

import re
import shlex

from transferbench.core import paths


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", (paths.ROOT / "README.md").read_text(), re.S)


def small_run(sizes: dict[str, str] | None = None) -> list[str]:
    """The README's small study (its first screen's main job on a CPU) as argv, with ``sizes`` as more overrides."""
    line = next(line for line in bash_blocks()[0].splitlines() if "# run the main job" in line)
    command = line.split("#")[0].split("&&")[-1].strip()
    return with_values(shlex.split(command), sizes)


def with_values(argv: list[str], sizes: dict[str, str] | None) -> list[str]:
    """``argv`` with ``-S key=value`` for each of ``sizes`` added after the README's own overrides (Hydra applies
    them in order: these win over the profile's)."""
    return argv + [arg for key, value in (sizes or {}).items() for arg in ("-S", f"{key}={value}")]


def transfer_commands(sizes: dict[str, str] | None = None) -> list[list[str]]:
    """The README's step after the small run as argvs: copy its model, then train from it and from random
    weights; ``sizes`` replaces values of the training command's overrides."""
    block = next(b for b in bash_blocks() if "-n cpu-transfer" in b)
    lines = [line.split("#")[0].strip() for line in block.replace("\\\n", " ").splitlines()]
    copy, train = (shlex.split(line) for line in lines if line)
    return [copy, with_values(train, sizes)]


def look_commands() -> list[str]:
    """The block after the small run, one command a line, comments dropped."""
    block = next(b for b in bash_blocks() if b.lstrip().startswith("cat reports/README.md"))
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
