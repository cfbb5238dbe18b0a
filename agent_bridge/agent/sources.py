"""Where the agent gets packages: HTTP(S) repositories and directories (USB bundles).

Every source gives a verified index (`wapt.repository.read_index` against the agent's own trust
store, never one taken from the source) and fetches package files into the agent's cache. An
HTTP source asks with `If-None-Match`/`If-Modified-Since`, keeps the last good index on disk,
and falls back to it when the network is down, so a machine keeps working offline. Downloads
resume where a cut left them and are checked against the size and MD5 of the index.

Icons (`fetch_icons`) come in bulk: a first update of 5,000 packages asks for 5,000 small
files, so an HTTP source fetches them with a few threads, each keeping one connection open
(HTTP/1.1 keep-alive) instead of opening one per icon. Only PNG files of at most `MAX_ICON`
bytes are kept; any other answer is refused, and one icon's failure never stops the others.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from agent_bridge.agent.config import AgentConfig, RepositoryConfig
from wapt.control import PackageEntry
from wapt.errors import FetchError, WaptError
from wapt.fsutil import write_atomic
from wapt.repository import INDEX_NAME, Index, fetch, index_url, read_index
from wapt.trust import TrustStore

log = logging.getLogger("comptoir.agent.sources")

CHUNK = 1024 * 1024
MAX_ICON = 1024 * 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: threads (each with its own keep-alive connection) fetching one source's icons
ICON_WORKERS = 4
Progress = Callable[[int, int], None]
#: on_icon(package_uuid, png): called, from any thread, for each icon fetched and accepted
IconSink = Callable[[str, bytes], None]


class SourceError(Exception):
    """A source cannot give its index or a package; the message says which and why."""


@dataclass
class SourceIndex:
    """A source's verified index, and whether it came from the network or the local cache."""

    index: Index
    from_cache: bool = False
    warning: str | None = None


class Source(Protocol):
    name: str
    location: str
    maturities: tuple[str, ...] | None

    def load_index(self, trust: TrustStore, *, at: datetime | None = None) -> SourceIndex: ...

    def cached_index(self, trust: TrustStore) -> SourceIndex | None: ...

    def fetch(self, entry: PackageEntry, progress: Progress | None = None) -> Path: ...

    def fetch_icon(self, package_uuid: str) -> bytes | None: ...


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "source"


def _file_matches(path: Path, entry: PackageEntry) -> bool:
    """Whether `path` has the size and MD5 the index gives for `entry`."""
    try:
        if path.stat().st_size != entry.size:
            return False
    except OSError:
        return False
    return _md5(path) == entry.md5sum.lower()


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_download(path: Path, entry: PackageEntry, where: str) -> None:
    size = path.stat().st_size
    if size != entry.size:
        path.unlink(missing_ok=True)
        raise SourceError(f"{where}: {size} bytes instead of the {entry.size} of the index")
    if _md5(path) != entry.md5sum.lower():
        path.unlink(missing_ok=True)
        raise SourceError(f"{where}: MD5 differs from the index")


class HttpSource:
    """An HTTP(S) repository, with its last good index kept in `cache_dir`."""

    def __init__(self, config: RepositoryConfig, cache_dir: Path) -> None:
        assert config.url is not None
        self.name = config.name
        self.location = config.url.rstrip("/")
        self.maturities = config.maturities
        self.timeout = config.timeout
        self.ca_file = config.ca_file
        self.cache_dir = cache_dir
        self.index_dir = cache_dir / "indexes" / _safe_name(config.name)

    def load_index(self, trust: TrustStore, *, at: datetime | None = None) -> SourceIndex:
        """The verified index: fresh if the network answers, else the cached copy.

        Raises:
            SourceError: no answer and no cached copy, or a malformed index.
        """
        self.index_dir.mkdir(parents=True, exist_ok=True)
        cached = self.index_dir / INDEX_NAME
        meta_path = self.index_dir / "meta.json"
        meta = _read_meta(meta_path) if cached.exists() else {}
        headers = {}
        if meta.get("etag"):
            headers["If-None-Match"] = meta["etag"]
        if meta.get("last_modified"):
            headers["If-Modified-Since"] = meta["last_modified"]
        url = index_url(self.location)
        try:
            answer = fetch(url, timeout=self.timeout, headers=headers, ca_file=self.ca_file)
        except FetchError as e:
            if not cached.exists():
                raise SourceError(f"{self.name}: {e}; no cached index to fall back on") from e
            log.warning("%s: %s; using the cached index", self.name, e)
            return self._from_cache(cached, trust, at, warning=f"offline: {e}")
        if answer.status == 304:
            return self._from_cache(cached, trust, at)
        try:
            index = read_index(answer.body, trust, source=url, at=at)
        except WaptError as e:
            raise SourceError(f"{self.name}: {e}") from e
        write_atomic(cached, answer.body)
        new_meta = {
            "etag": answer.headers.get("etag"),
            "last_modified": answer.headers.get("last-modified"),
        }
        write_atomic(meta_path, json.dumps(new_meta).encode("utf-8"))
        index.etag, index.last_modified = new_meta["etag"], new_meta["last_modified"]
        return SourceIndex(index)

    def cached_index(self, trust: TrustStore) -> SourceIndex | None:
        """The last good index kept on disk, without asking the network; None if none."""
        cached = self.index_dir / INDEX_NAME
        return self._from_cache(cached, trust, None) if cached.exists() else None

    def _from_cache(
        self, cached: Path, trust: TrustStore, at: datetime | None, *, warning: str | None = None
    ) -> SourceIndex:
        try:
            index = read_index(cached.read_bytes(), trust, source=index_url(self.location), at=at)
        except (OSError, WaptError) as e:
            raise SourceError(f"{self.name}: cached index unreadable: {e}") from e
        return SourceIndex(index, from_cache=True, warning=warning)

    def fetch(self, entry: PackageEntry, progress: Progress | None = None) -> Path:
        """Download `entry`'s file into the cache (or reuse it), resuming a cut download.

        Raises:
            SourceError: the server fails, or the file does not match the index.
        """
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        dest = self.cache_dir / entry.filename
        if _file_matches(dest, entry):
            if progress:
                progress(entry.size or 0, entry.size or 0)
            return dest
        part = dest.with_name(dest.name + ".part")
        url = f"{self.location}/{urllib.parse.quote(entry.filename)}"
        self._download(url, part, entry, progress)
        _check_download(part, entry, url)
        part.replace(dest)
        return dest

    def fetch_icon(self, package_uuid: str) -> bytes | None:
        """The repository's `icons/<package_uuid>.png`, or None if it has none or fails."""
        if not _plain_name(package_uuid):
            return None
        url = self._icon_url(package_uuid)
        try:
            answer = fetch(url, timeout=self.timeout, max_size=MAX_ICON, ca_file=self.ca_file)
        except FetchError as e:
            log.info("%s: icon not fetched: %s", self.name, e)
            return None
        return _png_or_none(answer.body, url)

    def _icon_url(self, package_uuid: str) -> str:
        return f"{self.location}/icons/{urllib.parse.quote(package_uuid)}.png"

    def fetch_icons(
        self,
        package_uuids: Iterable[str],
        on_icon: IconSink,
        *,
        workers: int = ICON_WORKERS,
        stop: threading.Event | None = None,
    ) -> None:
        """Fetch many icons with `workers` threads, each over one keep-alive connection.

        `on_icon` gets each icon accepted (PNG, at most `MAX_ICON` bytes); a missing, refused
        or failing icon is logged and skipped. Returns when all were tried or `stop` is set.
        Through a proxy (the `*_proxy` variables name one for this host) each icon goes
        through urllib, which knows proxies, still `workers` at a time.
        """
        names = [u for u in package_uuids if _plain_name(u)]
        if not names:
            return
        pending = iter(names)
        lock = threading.Lock()

        def next_name() -> str | None:
            if stop is not None and stop.is_set():
                return None
            with lock:
                return next(pending, None)

        proxied = _proxied(self.location)

        def work() -> None:
            connection = None if proxied else _KeepAlive(self.location, self.timeout, self.ca_file)
            try:
                while (name := next_name()) is not None:
                    if connection is None:
                        icon = self.fetch_icon(name)
                    else:
                        icon = self._keep_alive_icon(connection, name)
                    if icon is not None:
                        on_icon(name, icon)
            finally:
                if connection is not None:
                    connection.close()

        threads = [
            threading.Thread(target=work, name=f"icons {self.name} {i}", daemon=True)
            for i in range(max(1, min(workers, len(names))))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _keep_alive_icon(self, connection: _KeepAlive, package_uuid: str) -> bytes | None:
        url = self._icon_url(package_uuid)
        try:
            status, body = connection.get(urllib.parse.urlsplit(url).path, MAX_ICON)
        except (OSError, http.client.HTTPException, SourceError) as e:
            log.info("%s: icon not fetched: %s: %s", self.name, url, e)
            return None
        if status != 200:
            if status != 404:
                log.info("%s: icon not fetched: %s: HTTP %s", self.name, url, status)
            return None
        return _png_or_none(body, url)

    def _download(
        self, url: str, part: Path, entry: PackageEntry, progress: Progress | None
    ) -> None:
        done = part.stat().st_size if part.exists() else 0
        total = entry.size or 0
        if done > total:
            part.unlink()
            done = 0
        headers = {"Range": f"bytes={done}-"} if done else {}
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 (http(s) only)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                mode = "ab" if done and response.status == 206 else "wb"
                if mode == "wb":
                    done = 0
                with open(part, mode) as out:
                    while chunk := response.read(CHUNK):
                        if done + len(chunk) > total:
                            raise SourceError(f"{url}: larger than the {total} bytes of the index")
                        out.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
        except urllib.error.HTTPError as e:
            if e.code == 416 and done == total:
                return
            raise SourceError(f"{url}: HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, OSError) as e:
            raise SourceError(f"{url}: {getattr(e, 'reason', e)}") from e


class DirectorySource:
    """A directory holding `.wapt` files and their `Packages` index (a USB bundle, a share)."""

    def __init__(self, config: RepositoryConfig, cache_dir: Path) -> None:
        assert config.path is not None
        self.name = config.name
        self.path = config.path
        self.location = str(config.path)
        self.maturities = config.maturities
        self.cache_dir = cache_dir

    def load_index(self, trust: TrustStore, *, at: datetime | None = None) -> SourceIndex:
        """The directory's verified index.

        Raises:
            SourceError: the directory or its index is missing or malformed.
        """
        index_path = self.path / INDEX_NAME
        try:
            data = index_path.read_bytes()
        except OSError as e:
            raise SourceError(f"{self.name}: {index_path}: {e.strerror or e}") from e
        try:
            return SourceIndex(read_index(data, trust, source=str(index_path), at=at))
        except WaptError as e:
            raise SourceError(f"{self.name}: {e}") from e

    def cached_index(self, trust: TrustStore) -> SourceIndex | None:
        """A directory is always at hand: its index, or None if it cannot be read now."""
        try:
            return self.load_index(trust)
        except SourceError:
            return None

    def fetch_icon(self, package_uuid: str) -> bytes | None:
        """The directory's `icons/<package_uuid>.png`, or None."""
        return _directory_icon(self.path, package_uuid)

    def fetch(self, entry: PackageEntry, progress: Progress | None = None) -> Path:
        """Copy `entry`'s file into the cache, checking it against the index.

        Raises:
            SourceError: the file is missing or does not match the index.
        """
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        dest = self.cache_dir / entry.filename
        if _file_matches(dest, entry):
            return dest
        source = self.path / entry.filename
        part = dest.with_name(dest.name + ".part")
        try:
            with open(source, "rb") as src, open(part, "wb") as out:
                total, done = entry.size or 0, 0
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        except OSError as e:
            part.unlink(missing_ok=True)
            raise SourceError(f"{source}: {e.strerror or e}") from e
        _check_download(part, entry, str(source))
        part.replace(dest)
        return dest


class _KeepAlive:
    """One HTTP/1.1 connection to a repository, opened again when the server closed it."""

    def __init__(self, base_url: str, timeout: float, ca_file: Path | None) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        self.timeout = timeout
        self.context: ssl.SSLContext | None = None
        if self.https:
            self.context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self.connection: http.client.HTTPConnection | None = None

    def _open(self) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self.context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def get(self, path: str, max_size: int) -> tuple[int, bytes]:
        """GET `path`: (status, body). A connection the server had closed is opened again
        once (keep-alive connections time out between requests).

        Raises:
            SourceError: the body is over `max_size` bytes (the connection is then dropped).
            OSError, http.client.HTTPException: the request failed twice.
        """
        for attempt in (1, 2):
            reused = self.connection is not None
            if self.connection is None:
                self.connection = self._open()
            try:
                self.connection.request("GET", path, headers={"Accept": "image/png"})
                response = self.connection.getresponse()
                length = response.getheader("Content-Length")
                if length is not None and length.isdigit() and int(length) > max_size:
                    self.close()
                    raise SourceError(f"larger than {max_size} bytes ({length})")
                body = response.read(max_size + 1)
                if len(body) > max_size:
                    self.close()
                    raise SourceError(f"larger than {max_size} bytes")
                if response.will_close:
                    self.close()
                return response.status, body
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2 or not reused:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def _proxied(url: str) -> bool:
    """True when urllib would send requests for `url` through a proxy."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    return parts.scheme in proxies and not urllib.request.proxy_bypass(parts.netloc)


def _png_or_none(data: bytes, where: str) -> bytes | None:
    """`data` if it is a PNG of at most `MAX_ICON` bytes; else None, logged with the reason."""
    if len(data) > MAX_ICON:
        log.warning("icon refused: %s: larger than %d bytes", where, MAX_ICON)
        return None
    if not data.startswith(PNG_MAGIC):
        log.warning("icon refused: %s: not a PNG file", where)
        return None
    return data


def fetch_icons(
    source: Source,
    package_uuids: Iterable[str],
    on_icon: IconSink,
    *,
    workers: int = ICON_WORKERS,
    stop: threading.Event | None = None,
) -> None:
    """Fetch the icons of `package_uuids` from `source`, calling `on_icon` for each accepted.

    An HTTP source uses `HttpSource.fetch_icons` (threads, keep-alive); the others read
    local files, one after the other.
    """
    if isinstance(source, HttpSource):
        source.fetch_icons(package_uuids, on_icon, workers=workers, stop=stop)
        return
    for package_uuid in _until(package_uuids, stop):
        icon = source.fetch_icon(package_uuid)
        if icon is not None:
            on_icon(package_uuid, icon)


def _until(items: Iterable[str], stop: threading.Event | None) -> Iterator[str]:
    for item in items:
        if stop is not None and stop.is_set():
            return
        yield item


def _plain_name(name: str) -> bool:
    return bool(name) and not any(c in name for c in "/\\:") and ".." not in name


def _directory_icon(root: Path, package_uuid: str) -> bytes | None:
    if not _plain_name(package_uuid):
        return None
    path = root / "icons" / f"{package_uuid}.png"
    try:
        if path.stat().st_size > MAX_ICON:
            log.warning("icon refused: %s: larger than %d bytes", path, MAX_ICON)
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return _png_or_none(data, str(path))


def make_source(config: RepositoryConfig, cache_dir: Path) -> Source:
    """The source for one configured repository."""
    if config.url is not None:
        return HttpSource(config, cache_dir)
    if config.bundle_root is not None:
        from agent_bridge.agent.bundle_source import BundleSource  # it imports this module

        assert config.path is not None
        return BundleSource(
            config.name,
            config.path,
            config.bundle_root,
            cache_dir,
            cache_dir.parent / "bundles.json",
            maturities=config.maturities,
        )
    return DirectorySource(config, cache_dir)


def make_sources(config: AgentConfig) -> list[Source]:
    """Every configured source, and the USB sticks' bundles when `[usb] detect` is on."""
    sources = [make_source(repo, config.cache_dir) for repo in config.repositories]
    if config.usb.detect:
        from agent_bridge.agent.bundle_source import DetectedBundles  # it imports this module

        sources.append(
            DetectedBundles(config.usb, config.cache_dir, config.cache_dir.parent / "bundles.json")
        )
    return sources


def _read_meta(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def remove_cached(cache_dir: Path, filename: str) -> None:
    """Forget a cached package file (after it failed verification)."""
    for path in (cache_dir / filename, cache_dir / (filename + ".part")):
        path.unlink(missing_ok=True)


__all__ = [
    "DirectorySource",
    "HttpSource",
    "Source",
    "SourceError",
    "SourceIndex",
    "make_source",
    "make_sources",
    "remove_cached",
]
