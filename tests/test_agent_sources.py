"""Package sources: conditional index requests, the offline cache, resumed and checked downloads."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from agent_bridge.agent.config import RepositoryConfig
from agent_bridge.agent.sources import DirectorySource, HttpSource, SourceError
from tests.helpers import PKI, fixture_signer, write_source
from tests.httpserver import serve_directory
from wapt.package import build_package
from wapt.repository import scan_repository
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
