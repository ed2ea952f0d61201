"""The tools every photo source shares: retries with back-off, file hashes."""

from __future__ import annotations

import hashlib
import logging

import pytest

from transferbench.core.files import read_json
from transferbench.data.raw import refuse, retry, sha256_file, write_raw_manifest


class Flaky:
    """Raises the given errors in turn, then returns "done"; counts its calls."""

    def __init__(self, *errors: BaseException):
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_retry_sleeps_with_growing_jittered_waits_and_logs_each_retry(caplog):
    waits: list[float] = []
    call = Flaky(OSError("reset"), OSError("reset"), OSError("reset"))
    with caplog.at_level(logging.WARNING, logger="transferbench.data.raw"):
        assert retry(call, what="get f.bin", attempts=4, base_delay=1.0, sleep=waits.append) == "done"
    assert call.calls == 4 and len(waits) == 3
    assert all(0 <= wait <= 2 ** n for n, wait in enumerate(waits))
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == [
        f"get f.bin: OSError: reset; retry {n}/3" for n in (1, 2, 3)]


def test_retry_gives_up_after_the_attempts_and_raises_the_last_error():
    call = Flaky(OSError("first"), OSError("second"), OSError("third"))
    with pytest.raises(OSError, match="second"):
        retry(call, what="x", attempts=2, sleep=lambda _: None)
    assert call.calls == 2


def test_retry_lets_other_errors_through_at_once():
    call = Flaky(ValueError("bad content"))
    with pytest.raises(ValueError, match="bad content"):
        retry(call, what="x", retry_on=(ConnectionError,), sleep=lambda _: pytest.fail("retried a ValueError"))
    assert call.calls == 1


def test_sha256_file_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 5000  # several of hashlib's read blocks
    (tmp_path / "f.bin").write_bytes(data)
    assert sha256_file(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()


def test_a_failure_reason_quoting_an_address_keeps_no_credentials(tmp_path):
    rows = [{"key": "a.jpg", "source_split": "train", "label": "cat", "status": "failed",
             "reason": "S3 endpoint http://user:hunter2@proxy:9000/ went away (?X-Amz-Signature=abc)"}]
    write_raw_manifest(tmp_path, rows)
    text = (tmp_path / "manifest.csv").read_text()
    assert "http://***@proxy:9000/" in text and "X-Amz-Signature=***" in text
    assert "hunter2" not in text and "abc" not in text


def test_a_refused_file_is_kept_under_refused_with_why_and_from_where(tmp_path):
    bad = tmp_path / "a.zip.partial"
    bad.write_bytes(b"bad bytes")
    where = refuse(bad, "a.zip", "entry '../x' climbs out with '..'", "https://u:pw@mirror/a.zip?sig=s")
    assert where == tmp_path / "refused" / f"a.zip.{hashlib.sha256(b'bad bytes').hexdigest()[:12]}"
    assert where.read_bytes() == b"bad bytes" and not bad.exists()
    note = read_json(where.with_name(where.name + ".json"))
    assert note == {"file": "a.zip", "sha256": hashlib.sha256(b"bad bytes").hexdigest(),
                    "reason": "entry '../x' climbs out with '..'", "url": "https://***@mirror/a.zip?sig=***"}
