"""Download one file from a list of addresses (current first, older ones as fallbacks), resumably and verified.

The file grows as ``<name>.partial`` beside its final path; an interrupted run leaves it there and the next
run continues it with an HTTP Range request (or starts it again where the server ignores ranges). Only a
verified file is renamed to the final name, so a file under that name is always a good one.

Every download is keyed on what was asked for. Beside the final file, ``<name>.source.json`` records the
address it came from, what the server said of it (size, ETag, Last-Modified) and its sha256; a file is
reused only when its address is still among those asked for (or its sha256 is the one pinned in params),
so pointing a source at another archive fetches that archive, and, without a pinned sha256, only while the
server still describes the same file (a HEAD request: size, ETag, Last-Modified), so a file changed on the
mirror is fetched again. A server that cannot be asked leaves the recorded file in use, so offline runs work.
The partial file has its own key (``<name>.partial.json``): it is continued only from the same address and
the same version (ETag, Last-Modified, size) of the file. A file that fails verification is moved to
``refused/`` (raw.refuse), never deleted and never left where the next run would trip over it.

Resuming is hand-written: urllib3's ``Retry`` repeats a request that failed to start, but a body that breaks
off half-way is neither retried nor continued by requests or urllib3. Each try of a transfer goes through
``raw.retry`` (tenacity), so a dropped connection costs the bytes after the break, not the whole file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import requests
import urllib3

from transferbench.core.files import read_json, write_json
from transferbench.core.inputs import shown
from transferbench.core.progress import Progress
from transferbench.core.redact import redact
from transferbench.data.raw import SourceUnavailable, record_path, refuse, retry, sha256_file

# A dead or blackholed address should cost seconds, not the operating system's two-minute connect timeout.
CONNECT_TIMEOUT_S = 5.0
# Between two blocks of a transfer; a slow mirror is fine, a stalled one is retried.
READ_TIMEOUT_S = 60.0
ATTEMPTS = 4
BLOCK = 1 << 20

log = logging.getLogger(__name__)


class Transient(Exception):
    """Worth another try at the same address: a dropped connection, a 5xx or 429, a stalled read."""


class RestartNeeded(Transient):
    """The partial file cannot be continued from this server: the next try starts it from byte 0."""


class AddressRefused(Exception):
    """This address cannot give the file (unreachable, 4xx, bad content): go on to the next one."""


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".partial")


def _partial_key_path(partial: Path) -> Path:
    return partial.with_name(partial.name + ".json")


def download_record(dest: Path | str) -> dict | None:
    """What :func:`download` recorded of ``dest`` (url, size, etag, last_modified, sha256), None if nothing."""
    return _read_key(record_path(Path(dest)))


def recorded_from(dest: Path | str, url: str, missing: bool = False) -> bool:
    """True when :func:`download` recorded ``dest`` as downloaded from ``url``; ``missing`` when it has no record."""
    record = download_record(dest)
    return missing if record is None else record.get("url_sha256") == _url_id(url)


def _read_key(path: Path) -> dict | None:
    try:
        key = read_json(path)
    except (OSError, ValueError):  # missing, or cut short by a kill before atomic writes: no key
        return None
    return key if isinstance(key, dict) else None


def _address(url: str) -> dict:
    """How a key names its address: shown without credentials, matched by the hash of the whole URL."""
    return {"url": redact(url), "url_sha256": _url_id(url)}


def _url_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def _discard_partial(partial: Path) -> None:
    partial.unlink(missing_ok=True)
    _partial_key_path(partial).unlink(missing_ok=True)


def download(urls: Sequence[str], dest: Path | str, *, param: str, sha256: str | None = None,
             size: int | None = None, check: Callable[[Path], None] | None = None,
             attempts: int = ATTEMPTS, base_delay: float = 1.0, connect_timeout: float = CONNECT_TIMEOUT_S,
             read_timeout: float = READ_TIMEOUT_S, advice: str | None = None) -> Path:
    """``dest``, verified (size, sha256, then ``check``, each if given), downloaded from the first address that works.

    ``check(path)`` raises ValueError for bad content. ``param`` names the setting that lists the addresses,
    for the error that says how to use a mirror. Raises SourceUnavailable naming every address tried, then
    ``advice`` (default: how to place the file by hand or list a mirror in ``param``).
    """
    dest = Path(dest)
    if _present(dest, urls, size, sha256, check, connect_timeout):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors: list[tuple[str, str]] = []
    for url in urls:
        try:
            _fetch_verified(url, dest, size=size, sha256=sha256, check=check, attempts=attempts,
                            base_delay=base_delay, timeout=(connect_timeout, read_timeout))
            return dest
        except (AddressRefused, Transient) as err:
            errors.append((url, str(err)))
            log.warning("%s: %s", url, err)
    raise SourceUnavailable(_unavailable_message(dest, errors, param, size, sha256, advice))


def _present(dest: Path, urls: Sequence[str], size: int | None, sha256: str | None,
             check: Callable[[Path], None] | None, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """True when ``dest`` is there, is what is asked for now, and verifies; a bad one is moved to refused/.

    What is asked for: the sha256 when params pin one (it names the bytes, wherever they came from), else
    a file downloaded from one of ``urls``, unchanged there since (as far as the server says) and here (its
    recorded sha256).
    """
    if not dest.is_file():
        return False
    record = download_record(dest) or {}
    if sha256 is None and record.get("url_sha256") not in {_url_id(url) for url in urls}:
        came_from = f"from {record['url']}" if record.get("url") else "without a record of its address"
        log.info("%s was downloaded %s, not from the addresses now given: downloading it again", dest, came_from)
        return False
    if sha256 is None:
        url = next(url for url in urls if _url_id(url) == record["url_sha256"])
        changed = _changed_since(url, record, timeout)
        if changed:
            log.info("%s changed on %s since it was downloaded (%s): downloading it again", dest, redact(url), changed)
            return False
    problem = verify(dest, size=size, sha256=sha256 or record.get("sha256"), check=check)
    if problem is None:
        return True
    record_path(dest).unlink(missing_ok=True)
    where = refuse(dest, dest.name, problem, record.get("url"))
    log.warning("%s: %s; moved to %s and downloading it again", dest, problem, where)
    return False


def _changed_since(url: str, record: dict, timeout: float) -> str | None:
    """What the server now says differs from ``record`` (size, ETag, Last-Modified), or None: the same file,
    or a server that cannot be asked (offline: the recorded file stays in use)."""
    try:
        version = _current_version(url, timeout)
    except (requests.RequestException, OSError) as err:
        version = None
        log.info("%s: could not ask whether the file changed (%s): using the one downloaded before",
                 redact(url), type(err).__name__)
    if version is None:
        return None
    changed = [f"{name} {record.get(name)!r} -> {value!r}" for name, value in version.items()
               if value is not None and record.get(name) is not None and record.get(name) != value]
    return ", ".join(changed) or None


def _current_version(url: str, timeout: float) -> dict | None:
    """Size, ETag and Last-Modified of the file at ``url`` now, as a download records them; None if not given."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        source = Path(urllib.request.url2pathname(parts.path))
        if not source.is_file():
            return None
        return {"size": source.stat().st_size, "etag": None, "last_modified": str(source.stat().st_mtime_ns)}
    with requests.head(url, headers={"Accept-Encoding": "identity"}, allow_redirects=True,
                       timeout=(timeout, timeout)) as response:
        if response.status_code != 200:
            return None
        length = response.headers.get("Content-Length")
        return {"size": int(length) if length is not None else None, "etag": response.headers.get("ETag"),
                "last_modified": response.headers.get("Last-Modified")}


def verify(path: Path, *, size: int | None = None, sha256: str | None = None,
           check: Callable[[Path], None] | None = None) -> str | None:
    """What is wrong with ``path`` (size, then sha256, then ``check``), or None when it passes."""
    got_size = path.stat().st_size
    if size is not None and got_size != size:
        return f"size mismatch: expected {size} bytes, got {got_size}"
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256:
            return f"sha256 mismatch: expected {sha256}, got {got}"
    if check is not None:
        try:
            check(path)
        except ValueError as err:
            return str(err)
    return None


def _fetch_verified(url: str, dest: Path, *, size, sha256, check, attempts, base_delay, timeout) -> None:
    """Download ``url`` into the partial file, verify it, and only then give it the final name."""
    partial = partial_path(dest)
    if partial.is_file() and (_read_key(_partial_key_path(partial)) or {}).get("url_sha256") != _url_id(url):
        # Bytes from another address (another archive, perhaps) must not be continued from this one.
        _discard_partial(partial)
    resumed = partial.is_file() and partial.stat().st_size > 0

    def transfer() -> None:
        retry(lambda: _transfer(url, partial, size, timeout, dest.name), what=f"download {url}",
              attempts=attempts, base_delay=base_delay, retry_on=(Transient,))

    transfer()
    problem = verify(partial, size=size, sha256=sha256, check=check)
    if problem is not None and resumed:
        # The partial may have come from an older version of the file: one fresh start before giving up.
        log.warning("%s: resumed download is bad (%s); starting it again from byte 0", url, problem)
        _discard_partial(partial)
        transfer()
        problem = verify(partial, size=size, sha256=sha256, check=check)
    if problem is not None:
        _partial_key_path(partial).unlink(missing_ok=True)
        where = refuse(partial, dest.name, problem, url)
        raise AddressRefused(f"{problem} (the download is moved to {shown(where)})")
    record = {**(_read_key(_partial_key_path(partial)) or {}), **_address(url), "size": partial.stat().st_size,
              "sha256": sha256 or sha256_file(partial)}
    # No moment where the old record describes the new file: a kill in between leaves no record at all.
    record_path(dest).unlink(missing_ok=True)
    os.replace(partial, dest)
    write_json(record_path(dest), record)
    _partial_key_path(partial).unlink(missing_ok=True)


def _transfer(url: str, partial: Path, size: int | None, timeout: tuple[float, float], name: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme == "file":
        _copy_file(url, partial, name)
    elif scheme in ("http", "https"):
        _http_get(url, partial, size, timeout, name)
    else:
        raise AddressRefused(f"unsupported address scheme {scheme!r}; accepted: http, https, file")


def _http_get(url: str, partial: Path, size: int | None, timeout: tuple[float, float], name: str) -> None:
    """Append the rest of ``url`` to ``partial`` (Range from its current size), or restart it from byte 0."""
    offset = partial.stat().st_size if partial.is_file() else 0
    if size is not None and offset >= size:
        offset = 0  # a partial as long as the file failed verification before: nothing to continue
    # identity: a server's gzip Content-Encoding would change the bytes and the offsets a Range refers to.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = requests.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.ConnectionError as err:
        if _unreachable(err):
            raise AddressRefused(f"cannot connect: {_reason(err)}") from err
        raise Transient(f"connection failed: {_reason(err)}") from err
    except requests.Timeout as err:
        raise Transient(f"timed out: {err}") from err
    with response:
        length = response.headers.get("Content-Length")
        try:
            offset = _start_offset(response, offset)
            total = offset + int(length) if length is not None else None
            version = {"size": total, "etag": response.headers.get("ETag"),
                       "last_modified": response.headers.get("Last-Modified")}
            if offset:
                _same_version(partial, version)
        except RestartNeeded:
            _discard_partial(partial)
            raise
        if size is not None and total is not None and total != size:
            raise AddressRefused(f"server says the file has {total} bytes, expected {size}")
        if not offset:
            write_json(_partial_key_path(partial), {**_address(url), **version})
        with open(partial, "ab" if offset else "wb") as out, _progress(name, total, offset) as bar:
            for block in _blocks(response):
                out.write(block)
                bar.update(len(block))
            got = out.tell()
    if total is not None and got != total:
        raise Transient(f"connection closed after {got} of {total} bytes")


def _same_version(partial: Path, version: dict) -> None:
    """RestartNeeded when the server's file is not the one the partial began (ETag, Last-Modified, size)."""
    key = _read_key(_partial_key_path(partial)) or {}
    changed = [name for name, value in version.items() if value is not None and key.get(name) not in (None, value)]
    if changed:
        raise RestartNeeded(f"the file changed on the server since the partial download ({', '.join(changed)})")


def _start_offset(response: requests.Response, offset: int) -> int:
    """Where the body starts in the file: ``offset`` for a matching 206, 0 when the server sent it whole."""
    status = response.status_code
    if status == 206:
        content_range = response.headers.get("Content-Range", "")
        start = content_range.removeprefix("bytes ").split("-")[0]
        if not offset or start != str(offset):
            raise RestartNeeded(f"server answered Range bytes={offset}- with Content-Range {content_range!r}")
        return offset
    if status == 416:
        raise RestartNeeded("server cannot continue the partial file (HTTP 416)")
    if status == 429 or status >= 500:
        raise Transient(f"HTTP {status} {response.reason}")
    if status >= 400:
        raise AddressRefused(f"HTTP {status} {response.reason}")
    return 0  # 200: the server ignored Range (or none was sent); the body is the whole file


def _blocks(response: requests.Response) -> Iterator[bytes]:
    """The raw body (undecoded), turning a dropped or stalled connection into a retryable error."""
    try:
        yield from response.raw.stream(BLOCK, decode_content=False)
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise Transient(f"transfer broke off: {type(err).__name__}: {err}") from err


def _unreachable(err: requests.ConnectionError) -> bool:
    """True when no connection was made at all (refused, no route, unknown host, connect timeout, TLS)."""
    if isinstance(err, (requests.ConnectTimeout, requests.exceptions.SSLError, requests.exceptions.ProxyError)):
        return True
    reason = getattr(err.args[0], "reason", None) if err.args else None
    # NewConnectionError and NameResolutionError are ConnectTimeoutError subclasses in urllib3 2.
    return isinstance(reason, urllib3.exceptions.ConnectTimeoutError)


def _reason(err: requests.RequestException) -> str:
    reason = getattr(err.args[0], "reason", None) if err.args else None
    return str(reason or err)


def _copy_file(url: str, partial: Path, name: str) -> None:
    """A file:// mirror (a shared disk): copied, continuing the partial like a Range request would."""
    source = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
    if not source.is_file():
        raise AddressRefused(f"no such file: {source}")
    total = source.stat().st_size
    version = {"size": total, "etag": None, "last_modified": str(source.stat().st_mtime_ns)}
    offset = partial.stat().st_size if partial.is_file() else 0
    if offset > total:
        offset = 0
    if offset:
        try:
            _same_version(partial, version)
        except RestartNeeded:
            offset = 0
    if not offset:
        write_json(_partial_key_path(partial), {**_address(url), **version})
    with open(source, "rb") as src, open(partial, "ab" if offset else "wb") as out, \
            _progress(name, total, offset) as bar:
        src.seek(offset)
        for block in iter(lambda: src.read(BLOCK), b""):
            out.write(block)
            bar.update(len(block))


def _progress(name: str, total: int | None, initial: int) -> Progress:
    # A terminal's bar is cleared when done: the line after it says what came of the download.
    return Progress(name, total, initial=initial, unit="B", leave=False)


def _unavailable_message(dest: Path, errors: list[tuple[str, str]], param: str, size: int | None,
                         sha256: str | None, advice: str | None = None) -> str:
    tried = "\n".join(f"  - {url}: {error}" for url, error in errors) or "  (no addresses given)"
    if advice is not None:
        return f"could not get a verified {dest.name} from any address; tried:\n{tried}\n{advice}"
    expect = ", ".join(part for part in (f"{size} bytes" if size is not None else "",
                                         f"sha256 {sha256}" if sha256 else "") if part)
    # Without a pinned sha256 a file nobody downloaded could be any archive: pinning it says which.
    pin = "" if sha256 else f", set `{param.rpartition('.')[0]}.sha256` in params.yaml to its sha256,"
    return (f"could not get a verified {dest.name} from any address; tried:\n{tried}\n"
            f"To provide it by hand, put the file at {dest}" + (f" ({expect})" if expect else "") + pin +
            f" and run again. To use a mirror, list its address first in `{param}` in params.yaml "
            f"(http://, https:// or file://).")
