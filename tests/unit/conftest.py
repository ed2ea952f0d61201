"""Unit tests run in one process: starting another (a stage, a Python child, git) makes a test an integration
test, which tests/integration holds. The guard fails such a test where it starts the process."""

from __future__ import annotations

import subprocess

import pytest


@pytest.fixture(autouse=True)
def one_process(monkeypatch):
    def refused(*args, **kwargs):
        raise AssertionError(f"a unit test started a process ({args[0] if args else kwargs.get('args')!r}): "
                             "move the test to tests/integration")

    monkeypatch.setattr(subprocess, "Popen", refused)
