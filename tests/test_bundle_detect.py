"""Sticks found automatically (`[usb] detect = true`): every bundle under the mount roots is
verified with the configured bundle root and offered; a refused stick is reported while the
others are still offered; a stick pulled out is no longer offered; the watcher notices both."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from agent_bridge.agent.bundle_source import DetectedBundles, StickWatcher, watch_sticks
from agent_bridge.agent.config import MOUNT_PATTERNS, ConfigError, UsbConfig, load_config
from agent_bridge.agent.sources import SourceError, make_sources
from tests.test_bundle_common import Corpus
from usb_bundler import BundleKeys, create_or_update_bundle
from wapt.trust import TrustStore

pytest_plugins = ["tests.test_bundle_common"]  # the shared bundle fixtures

MINIMAL = 'data_dir = "data"\ntrusted_certs = "ssl"\naccounts_file = "accounts.toml"\n'


def detected(tmp_path: Path, keys: BundleKeys) -> tuple[DetectedBundles, Path]:
    media = tmp_path / "media"
    media.mkdir()
    root = tmp_path / "agent" / "bundle-root.json"
    root.parent.mkdir()
    root.write_bytes(keys.root)  # the agent's own copy, never the stick's
    usb = UsbConfig(detect=True, bundle_root=root, roots=(f"{media}/*/*",), drive_letters=False)
    cache = tmp_path / "agent" / "cache"
    return DetectedBundles(usb, cache, tmp_path / "agent" / "bundles.json"), media


def test_sticks_are_offered_while_inserted(
    tmp_path: Path,
    bundle_v1: Path,
    site_keys: BundleKeys,
    other_keys: BundleKeys,
    ca_trust: TrustStore,
    corpus: Corpus,
) -> None:
    source, media = detected(tmp_path, site_keys)
    assert source.load_index(ca_trust).index.entries == []  # nothing inserted: nothing offered
    shutil.copytree(bundle_v1, media / "prof" / "CLE")
    (media / "prof" / "PHOTOS").mkdir()
    foreign = media / "prof" / "AUTRE-SITE"
    create_or_update_bundle(foreign, corpus.first[:1], other_keys)

    loaded = source.load_index(ca_trust)
    assert sorted(e.filename for e in loaded.index.entries) == sorted(p.name for p in corpus.first)
    assert loaded.warning is not None
    assert (
        f"USB stick {foreign}" in loaded.warning and "another site's bundle keys" in loaded.warning
    )
    assert source.inserted() == [media / "prof" / "CLE"]
    entry = loaded.index.entries[0]
    assert source.fetch(entry).read_bytes() == (bundle_v1 / entry.filename).read_bytes()
    assert source.fetch_icon(entry.package_uuid) is not None

    shutil.rmtree(media / "prof" / "CLE")  # pulled out
    with pytest.raises(SourceError, match="pulled out; insert it again"):
        source.fetch(loaded.index.entries[1])
    with pytest.raises(SourceError, match="another site's bundle keys"):
        source.load_index(ca_trust)  # only a refused stick is left
    assert source.cached_index(ca_trust) is None
    shutil.rmtree(foreign)
    assert source.load_index(ca_trust).index.entries == []
    assert source.inserted() == []


def test_watcher_notices_insert_rewrite_and_removal(
    tmp_path: Path, bundle_v1: Path, site_keys: BundleKeys, corpus: Corpus
) -> None:
    source, media = detected(tmp_path, site_keys)
    changes = threading.Semaphore(0)
    watcher = StickWatcher(source, changes.release, 0.02).start()
    try:
        stick = media / "prof" / "CLE"
        shutil.copytree(bundle_v1, stick)
        assert changes.acquire(timeout=5)
        create_or_update_bundle(stick, corpus.second, site_keys)  # rewritten in place
        assert changes.acquire(timeout=5)
        shutil.rmtree(stick)
        assert changes.acquire(timeout=5)
        assert not changes.acquire(timeout=0.2)  # nothing else changed
    finally:
        watcher.stop()


def test_usb_configuration(tmp_path: Path, site_keys: BundleKeys) -> None:
    (tmp_path / "root.json").write_bytes(site_keys.root)
    text = MINIMAL + "[usb]\ndetect = true\nbundle_root = 'root.json'\nroots = ['/mnt/*']\n"
    config = load_config(_write(tmp_path, text), environ={})
    assert config.usb == UsbConfig(True, tmp_path / "root.json", ("/mnt/*",), None, 5.0)
    [source] = make_sources(config)
    assert isinstance(source, DetectedBundles) and source.location == "usb:/mnt/*"
    assert isinstance(watch_sticks([source], lambda: None), StickWatcher)

    default = load_config(_write(tmp_path, MINIMAL), environ={})
    assert default.usb == UsbConfig() and default.usb.roots == MOUNT_PATTERNS
    assert make_sources(default) == [] and watch_sticks([], lambda: None) is None

    for extra, message in (
        ("[usb]\ndetect = true\n", "usb.bundle_root is required with usb.detect = true"),
        ("[usb]\ndetect = 'yes'\n", "usb.detect: expected bool"),
        ("[usb]\npoll_seconds = 0\n", "usb.poll_seconds must be positive"),
        ("[usb]\nmount = '/mnt'\n", r"usb: unknown key\(s\) mount"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(_write(tmp_path, MINIMAL + extra), environ={})


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text, "utf-8")
    return path
