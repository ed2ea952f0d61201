"""docs/params.md is what tools.params_doc writes from the params model and params.yaml: never stale."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from tools import params_doc
from transferbench.study.params import read_params_file


def test_docs_params_md_is_current():
    assert params_doc.DOC.read_text(encoding="utf-8") == params_doc.render(), \
        "run `python -m tools.params_doc --write` to rewrite docs/params.md"


def _keys(node: Mapping, prefix: str = "") -> Iterator[str]:
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        yield dotted
        if dotted == "experiments":
            for section in value.values():
                yield from _keys(section, f"experiments.{params_doc.NAME}.")
        elif isinstance(value, Mapping):
            yield from _keys(value, f"{dotted}.")


def test_every_key_of_params_yaml_has_a_described_row():
    rows = [row for table in params_doc.tables(read_params_file()).values() for row in table]
    assert set(_keys(read_params_file())) <= {row.key for row in rows}
    assert "experiments.<name>.fixed_features" in {row.key for row in rows}  # a key params.yaml leaves out


def test_check_shows_a_stale_doc_and_write_restores_it(tmp_path, capsys):
    doc = tmp_path / "params.md"
    doc.write_text(params_doc.render().replace("| `seeds` |", "| `seedz` |"), encoding="utf-8")
    assert params_doc.main(["--check", "--file", str(doc)]) == 1
    err = capsys.readouterr().err
    assert "+| `seeds` |" in err and "--write" in err
    assert params_doc.main(["--write", "--file", str(doc)]) == 0
    assert params_doc.main(["--check", "--file", str(doc)]) == 0


def test_help_and_no_action_write_nothing(tmp_path):
    doc = tmp_path / "params.md"
    doc.write_text("untouched\n", encoding="utf-8")
    for argv in (["--help"], [], ["--file", str(doc)]):
        with pytest.raises(SystemExit):
            params_doc.main(argv)
    assert doc.read_text(encoding="utf-8") == "untouched\n"
