"""Source of `dogs_vs_cats`: Kaggle's `dogs-vs-cats` competition (25,000 labelled photos in its train.zip).

Without any network when placed by hand: raw_dir/<competition>.zip (the competition's "Download All"
bundle: train.zip, test1.zip, sampleSubmission.csv) or raw_dir/train.zip. Otherwise the bundle is
downloaded through the `kaggle` package and only its train.zip is kept (test1.zip has no labels).
Images are extracted to raw_dir/extracted/train/{cat,dog}.N.jpg; all are source_split train, since the
dataset registry draws its own splits.

Credentials are the kaggle package's (kaggle.json, KAGGLE_USERNAME/KAGGLE_KEY, KAGGLE_API_TOKEN); this
module only says where they were found, never what they are.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import shutil
import socket
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import requests

from transferbench.config.extraction import Extraction
from transferbench.data.raw import SourceUnavailable, refuse, sha256_file, write_raw_manifest
from transferbench.data.sources.archives import DEFAULT_LIMITS, check_zip, ensure_extracted, extract_member
from transferbench.data.sources.unpacked import file_row, is_image, summary

# kagglesdk knows fixed endpoints only (api.kaggle.com, localhost, localhost:7777): this variable points
# the client at another one (the tests' fake Kaggle on loopback, or a proxy) without patching the package.
ENDPOINT_ENV = "TRANSFERBENCH_KAGGLE_ENDPOINT"
CONNECT_TIMEOUT_S = 5.0
TRAIN_ZIP = "train.zip"
CLASSES = ("cat", "dog")
SETTINGS_URL = "https://www.kaggle.com/settings"
PARAM = "dogs_vs_cats.source.competition"

log = logging.getLogger(__name__)



def fetch(values: Any, raw_dir: Path | str, seed: int, limits: Extraction = DEFAULT_LIMITS) -> dict:
    """Find or download train.zip, unpack it safely, and write one manifest row per labelled photo."""
    from transferbench.config.sections import parse
    from transferbench.data.datasets import DogsVsCatsParams

    competition, raw_dir = parse(DogsVsCatsParams, values, "dogs_vs_cats").source.competition, Path(raw_dir)
    train_zip = train_archive(raw_dir, competition, limits)
    train_sha256 = sha256_file(train_zip)
    extracted = ensure_extracted(train_zip, raw_dir / "extracted", train_sha256, limits)
    rows = image_rows(raw_dir, extracted)
    write_raw_manifest(raw_dir, rows)
    return summary(rows, train_zip, train_sha256)


def train_archive(raw_dir: Path, competition: str, limits: Extraction = DEFAULT_LIMITS) -> Path:
    """raw_dir/train.zip with every CRC checked: as placed, else taken from the bundle (placed or downloaded)."""
    train_zip = raw_dir / TRAIN_ZIP
    if _good_zip(train_zip):
        return train_zip
    bundle = raw_dir / f"{competition}.zip"
    if _good_zip(bundle):
        return extract_member(bundle, TRAIN_ZIP, train_zip, limits)
    staging = raw_dir / ".kaggle-download"
    downloaded = download_bundle(competition, staging, raw_dir)
    extract_member(downloaded, TRAIN_ZIP, train_zip, limits)
    shutil.rmtree(staging)  # the unlabelled test1.zip is not worth keeping
    return train_zip


def image_rows(raw_dir: Path, extracted: Path) -> list[dict]:
    """One row per photo; the label is the name's first part (cat.12.jpg), other names are excluded."""
    rows = []
    for path in sorted(extracted.rglob("*")):
        # __MACOSX folders and resource forks are archive junk, not items.
        if "__MACOSX" in path.relative_to(extracted).parts or not is_image(path):
            continue
        label = path.name.split(".")[0]
        if label in CLASSES:
            rows.append(file_row(raw_dir, path, "train", label))
        else:
            rows.append({"key": path.relative_to(raw_dir).as_posix(), "source_split": "train", "label": "",
                         "bytes": path.stat().st_size, "sha256": sha256_file(path), "status": "excluded",
                         "reason": f"name is not <{'|'.join(CLASSES)}>.N.jpg"})
    if not rows:
        raise SourceUnavailable(f"no images under {extracted}: the archive is not Kaggle's {TRAIN_ZIP}")
    return rows


def _good_zip(path: Path) -> bool:
    """True for a zip whose entries all pass their CRC; a bad one is moved to refused/ so it is never used."""
    if not path.is_file():
        return False
    try:
        check_zip(path)
        return True
    except ValueError as err:
        log.warning("%s; moved to %s", err, refuse(path, path.name, str(err)))
        return False


def download_bundle(competition: str, staging: Path, raw_dir: Path) -> Path:
    """The competition's zip, downloaded into ``staging`` by the kaggle package (which resumes it) and CRC-checked."""
    api = _authenticated_api(competition, raw_dir)
    _probe(api, competition, raw_dir)
    try:
        api.competition_download_files(competition, path=str(staging), quiet=False)
    except requests.HTTPError as err:
        raise SourceUnavailable(_refusal_message(err, competition, raw_dir)) from err
    except (requests.RequestException, OSError, ValueError) as err:
        raise SourceUnavailable(f"downloading {competition} from Kaggle failed: {type(err).__name__}: {err}. "
                                f"Run again to resume, or {_by_hand(competition, raw_dir)}") from err
    downloaded = _downloaded_file(staging, competition, raw_dir)
    try:
        check_zip(downloaded)
    except ValueError as err:
        where = refuse(downloaded, downloaded.name, str(err), f"kaggle competition {competition}")
        raise SourceUnavailable(f"Kaggle sent a corrupt {competition} zip ({err}); it is moved to {where}, "
                                "run again") from err
    return downloaded


def credentials_source() -> str | None:
    """Where the kaggle package will find credentials (a file or variable names), or None; never their values."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    from_env = {k for k in ("username", "key") if os.environ.get(f"KAGGLE_{k.upper()}")}
    if from_env == {"username", "key"}:
        return "KAGGLE_USERNAME and KAGGLE_KEY"
    config = config_dir() / "kaggle.json"
    if _json_keys(config) | from_env == {"username", "key"}:  # the package merges the two
        return str(config)
    home = Path.home() / ".kaggle"
    for token in (home / "access_token", home / "access_token.txt", home / "credentials.json"):
        if token.is_file():
            return str(token)
    return None


def config_dir() -> Path:
    """Where the kaggle package reads kaggle.json: $KAGGLE_CONFIG_DIR, ~/.kaggle, or ~/.config/kaggle."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    home = Path.home() / ".kaggle"
    if home.exists() or not sys.platform.startswith("linux"):
        return home
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def _json_keys(path: Path) -> set[str]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return {k for k in ("username", "key") if isinstance(content, dict) and content.get(k)}


@functools.cache
def _api_class() -> type:
    # `import kaggle` authenticates at import and prints its own help when there are no credentials;
    # ours is more specific, so that output is dropped.
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi

    class Api(KaggleApi):
        """KaggleApi whose client talks to $TRANSFERBENCH_KAGGLE_ENDPOINT when it is set."""

        def build_kaggle_client(self):
            client = super().build_kaggle_client()
            endpoint = os.environ.get(ENDPOINT_ENV)
            if endpoint:
                client.http_client()._endpoint = endpoint.rstrip("/")
            return client

    return Api


def _authenticated_api(competition: str, raw_dir: Path):
    if credentials_source() is None:
        raise SourceUnavailable(_missing_credentials_message(competition, raw_dir))
    api = _api_class()()
    # KaggleApi computes its config path once, at import; follow the environment of this call instead.
    api.config_dir = str(config_dir())
    api.config = str(config_dir() / "kaggle.json")
    # Verbose mode prints every request's headers, Authorization included.
    api.args = [a for a in api.args if a not in ("--verbose", "-v")]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            api.authenticate()
    except SystemExit:
        raise SourceUnavailable(_missing_credentials_message(competition, raw_dir)) from None
    return api


def _probe(api, competition: str, raw_dir: Path) -> None:
    """Fail in seconds when Kaggle cannot be reached (the kaggle client sets no connect timeout)."""
    endpoint = api.build_kaggle_client().http_client()._endpoint
    parts = urllib.parse.urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise SourceUnavailable(f"cannot reach Kaggle at {endpoint}: {err}. Offline? "
                                f"{_by_hand(competition, raw_dir).capitalize()}") from err


def _downloaded_file(staging: Path, competition: str, raw_dir: Path) -> Path:
    # The kaggle package names the file after the competition and the extension in its storage address.
    files = [p for p in staging.rglob("*") if p.is_file() and not p.name.endswith(".kaggle-partial")]
    if len(files) != 1:
        raise SourceUnavailable(f"expected one file from Kaggle in {staging}, found {[str(p) for p in files]}; "
                                f"{_by_hand(competition, raw_dir)}")
    return files[0]


def _by_hand(competition: str, raw_dir: Path) -> str:
    return (f"download the data yourself (https://www.kaggle.com/c/{competition}/data, 'Download All') and put "
            f"the zip at {raw_dir / f'{competition}.zip'} (or only its {TRAIN_ZIP} at {raw_dir / TRAIN_ZIP}), "
            "then run again: placed files are used without any network")


def _missing_credentials_message(competition: str, raw_dir: Path) -> str:
    return (f"no Kaggle credentials found. Create an API token at {SETTINGS_URL} (API, 'Create New Token'), "
            f"save the kaggle.json it gives as {config_dir() / 'kaggle.json'} and `chmod 600` it, or set "
            f"KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN for a new-style token). "
            f"Or {_by_hand(competition, raw_dir)}.")


def _refusal_message(err: requests.HTTPError, competition: str, raw_dir: Path) -> str:
    status = err.response.status_code if err.response is not None else None
    if status == 403:
        return (f"Kaggle refused the download of {competition} (HTTP 403): the competition's rules have not "
                f"been accepted for this account. Open https://www.kaggle.com/c/{competition}/rules, log in "
                f"as the account of the token ({credentials_source()}), accept the rules, and run again. "
                f"Or {_by_hand(competition, raw_dir)}.")
    if status == 401:
        return (f"Kaggle rejected the credentials from {credentials_source()} (HTTP 401): the token is wrong, "
                f"expired or revoked. Create a new one at {SETTINGS_URL}. Or {_by_hand(competition, raw_dir)}.")
    if status == 404:
        return f"Kaggle has no competition {competition!r} (HTTP 404); check {PARAM} in params.yaml"
    return f"Kaggle answered HTTP {status}: {err}. Run again later, or {_by_hand(competition, raw_dir)}."
