"""Credentials never leave in what we print or record: URL userinfo and secret query parameters are masked."""

from __future__ import annotations

import logging

import pytest

from transferbench.core.redact import RedactingFilter, redact, redact_data


@pytest.mark.parametrize("text, shown", [
    ("http://user:password@127.0.0.1:8080/a.zip", "http://***@127.0.0.1:8080/a.zip"),
    ("tried: - https://al:p%40ss@mirror.example/x.tgz: 404", "tried: - https://***@mirror.example/x.tgz: 404"),
    ("https://u:p@ss@host/x", "https://***@host/x"),  # an unescaped @ in the password: all of it goes
    ("https://token@github.example/x", "https://***@github.example/x"),
    ("https://h/a.zip?token=abc&v=2", "https://h/a.zip?token=***&v=2"),
    ("https://b.s3.example/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=deadbeef&X-Amz-Expires=60",
     "https://b.s3.example/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60"),
    ("https://h/?ACCESS_TOKEN=1;sig=2#api_key=3", "https://h/?ACCESS_TOKEN=***;sig=***#api_key=***"),
    ("https://h/?password=hunter2 and more", "https://h/?password=*** and more"),
])
def test_secrets_are_masked(text, shown):
    assert redact(text) == shown


@pytest.mark.parametrize("text", [
    "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip",
    "file:///shared/mirror/cifar-10-python.tar.gz", "mail alice@example.com", "https://h/x?page=2&size=10",
    "data/raw/pets/manifest.csv is missing; run `dvc repro fetch@pets`",
])
def test_text_without_secrets_is_unchanged(text):
    assert redact(text) == text


def test_reports_are_redacted_keys_and_values_throughout():
    report = {"archive_url": "http://u:pw@h/a.zip", "tried": ["https://h/a?token=t"], "bytes": 12, "ok": None}
    assert redact_data(report) == {"archive_url": "http://***@h/a.zip", "tried": ["https://h/a?token=***"],
                                   "bytes": 12, "ok": None}


def test_the_log_filter_masks_arguments_and_tracebacks():
    record = logging.LogRecord("transferbench.x", logging.WARNING, __file__, 1, "%s: %s", ("http://u:pw@h/", 5), None)
    try:
        raise OSError("cannot reach https://h/?token=leaked")
    except OSError as err:
        record.exc_info = (type(err), err, err.__traceback__)
    assert RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert "http://***@h/: 5" in text and "token=***" in text
    assert "pw" not in text and "leaked" not in text
