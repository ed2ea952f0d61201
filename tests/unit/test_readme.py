"""The README's first screen must stay true: CI runs exactly its setup and test commands."""

import re

import yaml

from transferbench.core import paths

LABELS = ("set up", "run the main job", "test the slow set", "test")  # longest first: "test" prefixes one


def first_screen_commands() -> dict[str, str]:
    """The README's first bash block: comment label -> the command before it."""
    readme = (paths.ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    pattern = rf"^(.*?)#\s*({'|'.join(LABELS)})\b"
    return {label.strip(): command.strip() for command, label in re.findall(pattern, first_block, re.M)}


def test_ci_runs_the_readme_setup_and_test_commands():
    commands = first_screen_commands()
    assert set(commands) == set(LABELS)
    ci = (paths.ROOT / ".ci" / "run").read_text()
    for label in ("set up", "test", "test the slow set"):
        assert f"# README: {label}\n{commands[label]}\n" in ci, f"{label}: {commands[label]!r} is not in .ci/run"
    assert "-S profile=cpu" in commands["run the main job"]
    first_block = re.search(r"```bash\n(.*?)```", (paths.ROOT / "README.md").read_text(), re.S).group(1)
    assert ". .venv/bin/activate && dvc repro " in first_block, "the whole study follows the CPU study"


def test_the_two_test_commands_split_the_suite_at_the_slow_marker():
    """Plain pytest is the fast set (pyproject's -m 'not slow'); the other command selects the slow set."""
    import tomllib

    commands = first_screen_commands()
    assert commands["test"].endswith("&& pytest")
    assert commands["test the slow set"].endswith("&& pytest -m slow")
    pytest_config = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "-m 'not slow'" in pytest_config["addopts"] and "--strict-markers" in pytest_config["addopts"]
    assert any(marker.startswith("slow:") for marker in pytest_config["markers"])


def test_the_small_run_ends_with_the_report_needs_no_network_and_is_followed_by_what_to_look_at():
    from tests.readme_commands import look_commands, small_run
    from tools.compose_params import composed

    argv = small_run()
    assert argv[:3] == ["dvc", "exp", "run"] and "report" in argv
    params = yaml.safe_load(composed(*(argv[i + 1] for i, arg in enumerate(argv) if arg == "-S")))
    assert list(params["experiments"]) == ["captcha"], "the small run trains the CAPTCHA experiment alone"
    assert params["weights"] == "none", "offline: no ImageNet weights"
    assert [c.split()[:2] for c in look_commands()] == [
        ["cat", "reports/README.md"], ["dvc", "metrics"], ["dvc", "exp"], ["dvc", "plots"], ["mlflow", "ui"]]


def test_dvc_plots_page_is_not_committed():
    assert "/dvc_plots/" in (paths.ROOT / ".gitignore").read_text().splitlines()


def test_ci_runs_the_readme_jax_commands_on_the_jax_marker():
    """The environment without TensorFlow (README: Backends and GPUs) is made and tested as .ci/run does."""
    import tomllib

    from tests.readme_commands import bash_blocks

    block = next(b for b in bash_blocks() if ".venv-jax" in b)
    assert f"# README: JAX without TensorFlow\n{block}" in (paths.ROOT / ".ci" / "run").read_text()
    assert "'.[jax,dev]'" in block and "tensorflow" not in block
    assert block.rstrip().endswith("KERAS_BACKEND=jax .venv-jax/bin/pytest -m jax")
    pytest_config = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert any(marker.startswith("jax:") for marker in pytest_config["markers"])


def test_the_setup_lines_install_one_backend_each():
    """The first screen's setup command and one line per GPU choice under it, each a backend extra."""
    import tomllib

    extras = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    first_block = re.search(r"```bash\n(.*?)```", (paths.ROOT / "README.md").read_text(), re.S).group(1)
    chosen = re.findall(r"pip install -q -e '\.\[(\w[\w-]*),dev\]'", first_block)
    assert chosen == ["tensorflow", "jax-gpu", "tensorflow-gpu"]  # the measured GPU path first
    assert all(name in extras for name in chosen) and not any("tensorflow" in d for d in extras["dev"])
