"""`dvc status` after an edit: the stages whose code imports the edited module change, and no others."""

from __future__ import annotations

import json

import pytest

from tests.repo_copy import copy_repository, dvc

TRAIN = "train@captcha"
GENERATE = "generate_captcha"


def changed(repo, env) -> set[str]:
    """Stages `dvc status` reports as changed, of the two this test recorded."""
    return set(json.loads(dvc(repo, env, "status", "--json", GENERATE, TRAIN, stdout_only=True) or "{}"))


@pytest.mark.slow  # DVC status on a repository copy after each of several edits: about 17 s
def test_an_edit_reruns_exactly_the_stages_that_import_it(tmp_path):
    repo, env = copy_repository(tmp_path / "repo", lambda params: None)
    # Stand-ins for what the upstream stages would have written, so both stages can be recorded as run.
    for folder in ("data/prepared/captcha", "models/captcha/init/none", "models/captcha/runs/none-s42"):
        (repo / folder).mkdir(parents=True)
        (repo / folder / "placeholder").write_text(folder)
    (repo / "reports/captcha/validation").mkdir(parents=True, exist_ok=True)
    (repo / "reports/captcha/validation/summary.json").write_text("{}")
    dvc(repo, env, "commit", "--force", GENERATE, TRAIN)
    assert changed(repo, env) == set()

    # Imported by training alone: train@ reruns, generation does not.
    fit = repo / "src/transferbench/training/fit.py"
    fit.write_text(fit.read_text() + "\n# an edit\n")
    assert changed(repo, env) == {TRAIN}

    # Imported by generation alone: the other way round.
    dvc(repo, env, "commit", "--force", TRAIN)
    generation = repo / "src/transferbench/data/generation.py"
    generation.write_text(generation.read_text() + "\n# an edit\n")
    assert changed(repo, env) == {GENERATE}

    # Imported by both (the paths every stage reads): both rerun.
    dvc(repo, env, "commit", "--force", GENERATE)
    paths_yaml = repo / "src/transferbench/core/paths.yaml"
    paths_yaml.write_text(paths_yaml.read_text() + "\n# an edit\n")
    assert changed(repo, env) == {GENERATE, TRAIN}

    # A backbone or a head: the params check reads models.catalog only, so generation does not rerun.
    for module in ("models/backbones.py", "models/heads.py"):
        dvc(repo, env, "commit", "--force", GENERATE, TRAIN)
        edited = repo / "src/transferbench" / module
        edited.write_text(edited.read_text() + "\n# an edit\n")
        assert changed(repo, env) == {TRAIN}, module
