"""Package sources: conditional index requests, the offline cache, resumed and checked downloads."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import ClassVar

import pytest

from agent_bridge.agent.auth import LocalAccounts
from agent_bridge.agent.config import AgentConfig, RepositoryConfig
from agent_bridge.agent.core import Agent
from agent_bridge.agent.sources import (
    ICON_WORKERS,
    MAX_ICON,
    PNG_MAGIC,
    DirectorySource,
    HttpSource,
    SourceError,
)
from tests.helpers import PKI, fixture_signer, write_source
from tests.httpserver import _Handler, serve_directory
from tests.portal_site import tiny_png
from wapt.package import build_package
from wapt.repository import load_index, scan_repository
from wapt.trust import TrustStore


@pytest.fixture(scope="module")
def trust() -> TrustStore:
    return TrustStore.from_path(PKI / "ca.crt")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    source = write_source(
        tmp_path / "src", "tis-big", "1-1", files={"blob.bin": bytes(range(256)) * 4000}
    )
    build_package(source, fixture_signer("codesign"), repo)
    scan_repository(repo)
    return repo


def test_index_is_cached_and_asked_again_conditionally(
    repo: Path, tmp_path: Path, trust: TrustStore
) -> None:
    counter: Counter[str] = Counter()
    with serve_directory(repo, counter) as url:
        source = HttpSource(RepositoryConfig("school", url=url), tmp_path / "cache")
        first = source.load_index(trust)
        assert not first.from_cache and [e.package for e in first.index.entries] == ["tis-big"]
        second = source.load_index(trust)
        assert second.from_cache and second.warning is None, "a 304 answer reuses the cache"
        assert counter["/Packages"] == 2
    offline = source.load_index(trust)
    assert offline.from_cache and offline.warning and offline.warning.startswith("offline")
    assert [e.package for e in offline.index.entries] == ["tis-big"]


def test_no_network_and_no_cache_is_a_clear_error(tmp_path: Path, trust: TrustStore) -> None:
    with serve_directory(tmp_path) as url:
        pass
    source = HttpSource(RepositoryConfig("school", url=url, timeout=2), tmp_path / "cache")
    with pytest.raises(SourceError, match="no cached index to fall back on"):
        source.load_index(trust)


def test_download_is_checked_cached_and_resumed(
    repo: Path, tmp_path: Path, trust: TrustStore
) -> None:
    counter: Counter[str] = Counter()
    with serve_directory(repo, counter) as url:
        source = HttpSource(RepositoryConfig("school", url=url), tmp_path / "cache")
        [entry] = source.load_index(trust).index.entries
        original = (repo / entry.filename).read_bytes()
        part = tmp_path / "cache" / (entry.filename + ".part")
        part.write_bytes(original[: len(original) // 2])
        seen: list[tuple[int, int]] = []
        path = source.fetch(entry, progress=lambda done, total: seen.append((done, total)))
        assert path.read_bytes() == original and not part.exists()
        assert seen[0][0] > len(original) // 2, "the download resumed where it stopped"
        assert seen[-1] == (len(original), len(original))
        source.fetch(entry)
        assert counter[f"/{entry.filename}"] == 1, "a cached file that matches is not fetched again"


def test_a_file_that_does_not_match_its_index_is_refused(
    repo: Path, tmp_path: Path, trust: TrustStore
) -> None:
    with serve_directory(repo) as url:
        source = HttpSource(RepositoryConfig("school", url=url), tmp_path / "cache")
        [entry] = source.load_index(trust).index.entries
        path = repo / entry.filename
        data = bytearray(path.read_bytes())
        data[100] ^= 1
        path.write_bytes(bytes(data))
        with pytest.raises(SourceError, match="MD5 differs from the index"):
            source.fetch(entry)
    assert not (tmp_path / "cache" / entry.filename).exists()


def test_directory_source(repo: Path, tmp_path: Path, trust: TrustStore) -> None:
    source = DirectorySource(RepositoryConfig("usb", path=repo), tmp_path / "cache")
    [entry] = source.load_index(trust).index.entries
    assert source.fetch(entry).read_bytes() == (repo / entry.filename).read_bytes()
    missing = DirectorySource(
        RepositoryConfig("usb", path=tmp_path / "nothing"), tmp_path / "cache"
    )
    with pytest.raises(SourceError, match=r"usb: .*Packages"):
        missing.load_index(trust)
    assert missing.cached_index(trust) is None


def test_icons_come_from_the_repository(wapt_fixtures: Path, tmp_path: Path) -> None:
    repo = wapt_fixtures / "repo"
    known = sorted(p.stem for p in (repo / "icons").glob("*.png"))[0]
    with serve_directory(repo) as url:
        source = HttpSource(RepositoryConfig("school", url=url), tmp_path / "cache")
        icon = source.fetch_icon(known)
        assert icon is not None and icon.startswith(b"\x89PNG")
        assert source.fetch_icon("00000000-0000-0000-0000-000000000000") is None
    directory = DirectorySource(RepositoryConfig("usb", path=repo), tmp_path / "cache")
    assert directory.fetch_icon(known) == icon
    assert directory.fetch_icon("../Packages") is None
    assert source.fetch_icon("../../etc/passwd") is None


# --- icons in bulk -----------------------------------------------------------------------------

BAD_ICONS = ("not-png", "too-large", "cut", "missing")


class KeepAliveHandler(_Handler):
    """HTTP/1.1 with keep-alive, as nginx serves a repository; remembers each connection, and
    drops the connection without an answer for the icons named in `cut`."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    connections: ClassVar[set[tuple[str, int]]] = set()
    cut: ClassVar[set[str]] = set()

    def do_GET(self) -> None:
        self.connections.add(self.client_address)
        if self.path.rsplit("/", 1)[-1] in self.cut:
            self.counter[self.path] += 1
            self.close_connection = True
            return  # no answer at all: the client sees the connection close
        super().do_GET()


def test_refresh_icons_fetches_them_all_over_few_connections_and_refuses_bad_ones(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    names = [f"tis-icon-{n:02d}" for n in range(24)]
    for name in names:
        build_package(write_source(tmp_path / "src", name, "1-1"), fixture_signer("codesign"), repo)
    scan_repository(repo)
    config = AgentConfig(
        data_dir=tmp_path / "agent",
        trusted_certs=PKI / "ca.crt",
        repositories=(RepositoryConfig("school", url="http://127.0.0.1:9"),),
        host_uuid="4c4c4544-0042-3010-8053-b7c04f4e3132",
    )
    uuids = {
        e.package: e.package_uuid
        for e in load_index(repo, TrustStore.from_path(PKI / "ca.crt")).entries
    }
    icons = repo / "icons"
    icons.mkdir(exist_ok=True)
    bad = dict(zip(BAD_ICONS, [uuids[n] for n in names[: len(BAD_ICONS)]], strict=True))
    good = {
        u: tiny_png() + bytes([n]) for n, u in enumerate(uuids.values()) if u not in bad.values()
    }
    for package_uuid, png in good.items():
        (icons / f"{package_uuid}.png").write_bytes(png)
    (icons / f"{bad['not-png']}.png").write_bytes(b"<html>not an icon</html>")
    (icons / f"{bad['too-large']}.png").write_bytes(PNG_MAGIC + bytes(MAX_ICON))
    (icons / f"{bad['cut']}.png").write_bytes(tiny_png())
    (icons / f"{bad['missing']}.png").unlink(missing_ok=True)
    counter: Counter[str] = Counter()
    handler = type(
        "Handler", (KeepAliveHandler,), {"connections": set(), "cut": {f"{bad['cut']}.png"}}
    )
    with serve_directory(repo, counter, handler=handler) as url:
        config = dataclasses.replace(config, repositories=(RepositoryConfig("school", url=url),))
        agent = Agent(config, authenticator=LocalAccounts({}))
        try:
            assert agent.refresh_catalog(network=True)["count"] == len(names)
            assert agent.refresh_icons() == len(good)
            cache = config.cache_dir / "icons"
            kept = {p.stem: p.read_bytes() for p in cache.glob("*.png")}
            assert kept == good, "every good icon, byte for byte, and no bad one"
            assert not list(cache.glob(".*"))  # no temporary file left
            # a few keep-alive connections, not one per icon: one per worker, the index's,
            # one more after the too-large icon (dropped, not read) and two for the cut one
            assert len(handler.connections) <= ICON_WORKERS + 5 < len(names)
            # asked again once if it was a reused connection (a keep-alive one may have timed
            # out), then skipped
            assert counter[f"/icons/{bad['cut']}.png"] in (1, 2)

            # the next update asks for nothing it has; an icon a power cut left empty is
            # fetched again
            counter.clear()
            (cache / f"{next(iter(good))}.png").write_bytes(b"")
            assert agent.refresh_icons() == 1
            asked = {path for path in counter if path.startswith("/icons/")}
            assert asked == {f"/icons/{u}.png" for u in [next(iter(good)), *bad.values()]}
            assert (cache / f"{next(iter(good))}.png").read_bytes() == next(iter(good.values()))
        finally:
            agent.stop()
