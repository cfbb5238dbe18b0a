"""The agent's bundle source: a valid stick is offered and installs with no repository at all;
rollback, freeze, mix-and-match, foreign keys, extra and tampered files are refused with a
message that says what to do."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent_bridge.agent.bundle_source import BundleSource, find_bundles
from agent_bridge.agent.config import AgentConfig
from agent_bridge.agent.installer import Installer
from agent_bridge.agent.sources import SourceError
from agent_bridge.agent.state import AgentState
from tests.helpers import PKI, fixture_signer, write_source
from tests.test_bundle_common import (
    Corpus,
    fresh_copy,
)
from usb_bundler import BundleKeys, create_or_update_bundle
from wapt.bundle import METADATA_DIR
from wapt.package import build_package
from wapt.trust import TrustStore

pytest_plugins = ["tests.test_bundle_common"]  # the shared bundle fixtures


def source_for(stick: Path, keys: BundleKeys, data_dir: Path) -> BundleSource:
    root = data_dir / "bundle-root.json"
    if not root.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        root.write_bytes(keys.root)  # the agent's configuration, never the stick's copy
    return BundleSource("usb", stick, root, data_dir / "cache", data_dir / "bundles.json")


def test_valid_bundle_is_offered_and_fetched(
    tmp_path: Path, bundle_v1: Path, site_keys: BundleKeys, ca_trust: TrustStore, corpus: Corpus
) -> None:
    source = source_for(bundle_v1, site_keys, tmp_path / "agent")
    loaded = source.load_index(ca_trust)
    assert loaded.warning is None and not loaded.from_cache
    assert sorted(e.filename for e in loaded.index.entries) == sorted(p.name for p in corpus.first)
    state = json.loads((tmp_path / "agent" / "bundles.json").read_text())
    assert state["root_version"] == 1 and next(iter(state["bundles"].values()))["timestamp"] == 1
    entry = loaded.index.entries[0]
    path = source.fetch(entry)
    assert path.read_bytes() == (bundle_v1 / entry.filename).read_bytes()
    assert source.fetch(entry) == path  # reused from the cache
    icon = source.fetch_icon(entry.package_uuid)
    assert icon is not None and icon.startswith(b"\x89PNG")
    assert source.fetch_icon("../../etc/passwd") is None
    assert source.cached_index(ca_trust) is not None


def test_rollback_is_refused(
    tmp_path: Path, bundle_v1: Path, site_keys: BundleKeys, ca_trust: TrustStore, corpus: Corpus
) -> None:
    old = fresh_copy(bundle_v1, tmp_path)
    newer = fresh_copy(bundle_v1, tmp_path)
    create_or_update_bundle(newer, corpus.second, site_keys)
    agent = tmp_path / "agent"
    source_for(newer, site_keys, agent).load_index(ca_trust)
    with pytest.raises(SourceError) as caught:
        source_for(old, site_keys, agent).load_index(ca_trust)
    message = str(caught.value)
    assert "USB bundle" in message and "refused" in message
    assert "older than version 2 already seen" in message and "ask for the current one" in message


def test_expired_bundle_is_refused(
    tmp_path: Path, bundle_v1: Path, site_keys: BundleKeys, ca_trust: TrustStore
) -> None:
    source = source_for(bundle_v1, site_keys, tmp_path / "agent")
    later = datetime.now(UTC) + timedelta(days=120)
    with pytest.raises(SourceError, match=r"bundle expired on .*ask for a fresh bundle"):
        source.load_index(ca_trust, at=later)


def test_mix_and_match_is_refused(
    tmp_path: Path, bundle_v1: Path, site_keys: BundleKeys, ca_trust: TrustStore, corpus: Corpus
) -> None:
    stick = fresh_copy(bundle_v1, tmp_path)
    other = tmp_path / "other"
    create_or_update_bundle(other, corpus.second, site_keys)
    shutil.copy(other / METADATA_DIR / "1.snapshot.json", stick / METADATA_DIR / "1.snapshot.json")
    with pytest.raises(SourceError, match=r"different (writes|bundles)"):
        source_for(stick, site_keys, tmp_path / "agent").load_index(ca_trust)


def test_other_sites_bundle_and_extra_files_are_refused(
    tmp_path: Path,
    bundle_v1: Path,
    site_keys: BundleKeys,
    other_keys: BundleKeys,
    ca_trust: TrustStore,
    corpus: Corpus,
) -> None:
    foreign = tmp_path / "foreign"
    create_or_update_bundle(foreign, corpus.first[:1], other_keys)
    with pytest.raises(SourceError, match="another site's bundle keys"):
        source_for(foreign, site_keys, tmp_path / "agent").load_index(ca_trust)
    stick = fresh_copy(bundle_v1, tmp_path)
    (stick / "autorun.inf").write_text("[autorun]\nopen=evil.exe\n")
    with pytest.raises(SourceError, match=r"autorun\.inf: not part of the bundle"):
        source_for(stick, site_keys, tmp_path / "agent").load_index(ca_trust)


def test_tampered_package_is_refused_when_fetched(
    tmp_path: Path, bundle_v1: Path, site_keys: BundleKeys, ca_trust: TrustStore
) -> None:
    stick = fresh_copy(bundle_v1, tmp_path)
    source = source_for(stick, site_keys, tmp_path / "agent")
    entry = source.load_index(ca_trust).index.entries[0]
    data = bytearray((stick / entry.filename).read_bytes())
    data[100] ^= 1
    (stick / entry.filename).write_bytes(bytes(data))
    with pytest.raises(SourceError, match="does not match the signed bundle"):
        source.fetch(entry)
    assert not (tmp_path / "agent" / "cache" / entry.filename).exists()
    assert not list((tmp_path / "agent" / "cache").glob("*.part"))


def test_corrupt_state_is_not_forgotten(
    tmp_path: Path, bundle_v1: Path, site_keys: BundleKeys, ca_trust: TrustStore
) -> None:
    agent = tmp_path / "agent"
    agent.mkdir()
    (agent / "bundles.json").write_text("{garbage")
    with pytest.raises(SourceError, match="must repair or remove it"):
        source_for(bundle_v1, site_keys, agent).load_index(ca_trust)


def test_absent_stick(tmp_path: Path, site_keys: BundleKeys, ca_trust: TrustStore) -> None:
    source = source_for(tmp_path / "not-inserted", site_keys, tmp_path / "agent")
    with pytest.raises(SourceError, match="stick not inserted"):
        source.load_index(ca_trust)
    assert source.cached_index(ca_trust) is None


def test_find_bundles(tmp_path: Path, bundle_v1: Path) -> None:
    media = tmp_path / "media"
    (media / "tech" / "CLE").mkdir(parents=True)
    (media / "tech" / "PHOTOS").mkdir(parents=True)
    shutil.copytree(bundle_v1, media / "tech" / "BUNDLE")
    extra = tmp_path / "share"
    shutil.copytree(bundle_v1, extra)
    found = find_bundles([extra], patterns=[f"{media}/*/*"], drive_letters=False)
    assert found == [extra, media / "tech" / "BUNDLE"]


def test_agent_installs_from_a_bundle_with_no_repository(
    tmp_path: Path, site_keys: BundleKeys, ca_trust: TrustStore
) -> None:
    """The agent has no repository configured at all: the stick is its only source."""
    setup = "def install():\n    open(r'{marker}', 'w').write('installed')\n"
    marker = tmp_path / "installed.txt"
    repo = tmp_path / "repo"
    repo.mkdir()
    source_dir = write_source(tmp_path / "s", "tis-offline", "1.0-2")
    (source_dir / "setup.py").write_text(setup.format(marker=marker))
    package = build_package(source_dir, fixture_signer("codesign"), repo)
    stick = tmp_path / "stick"
    create_or_update_bundle(stick, [package], site_keys)

    data_dir = tmp_path / "agent"
    config = AgentConfig(data_dir=data_dir, trusted_certs=PKI / "ca.crt", repositories=())
    data_dir.mkdir()
    state = AgentState(config.state_file)
    try:
        source = source_for(stick, site_keys, data_dir)
        entry = source.load_index(ca_trust).index.entries[0]
        installer = Installer(config, ca_trust, state)
        record = installer.install(entry, source, user="technicien", progress=lambda *_: None)
        assert record.package == "tis-offline" and marker.read_text() == "installed"
    finally:
        state.close()
