"""A disk that fills up while worker processes write is one line naming the file, exit 1, through the real
`python -m stages.prepare`: the worker's error crosses the process pool intact (no BrokenProcessPool)."""

from __future__ import annotations

from tests.integration.test_prepare import H, W, write_raw
from tests.integration.test_stage_errors import error_line, file_size_limit
from tests.stage_run import copy_code, run_stage


def test_full_disk_in_a_preparation_worker_is_one_line_with_two_workers(tmp_path):
    def small(params: dict) -> None:
        params["pets"].update(height=H, width=W, workers=2)
        params["experiments"] = {k: v for k, v in params["experiments"].items() if v["dataset"] != "pets"}

    root = copy_code(tmp_path / "repo", small)
    write_raw(root / "data" / "raw" / "pets")
    # Each chunk's decoded pixels (several 16x20 RGB images) pass 2 KiB; what the stage writes before
    # decoding (its plan) does not.
    with file_size_limit(2048):
        result = run_stage(root, "prepare", "pets")
    line = error_line(result, "prepare@pets", "cannot write tmp/prepare/pets-",
                      ".npy: the disk is full or the file size limit",
                      "free some space on that disk and rerun the stage")
    assert "BrokenProcessPool" not in result.stderr, line
    assert not (root / "data" / "prepared" / "pets").exists()
