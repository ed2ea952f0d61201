"""The README's first screen must stay true: CI runs exactly its setup and test commands."""

import re

from transferbench.core import paths


def test_ci_runs_the_readme_setup_and_test_commands():
    readme = (paths.ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = {comment.strip(): command.strip() for command, comment in
                re.findall(r"^(.*?)#\s*(set up|run the main job|test)\b", first_block, re.M)}
    assert set(commands) == {"set up", "run the main job", "test"}
    ci = (paths.ROOT / ".ci" / "run").read_text()
    assert commands["set up"] in ci and commands["test"] in ci
    assert "dvc repro" in commands["run the main job"]
