"""Shared pieces of the bundle tests: real signed packages, a site's bundle keys, bundles.

Imported by the other `test_bundle_*` modules (fixtures are used by name). It holds a few
checks of its own on the pieces it provides.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import PKI, fixture_signer, write_source
from usb_bundler import (
    BundleKeys,
    SourcePackage,
    create_or_update_bundle,
    load_bundle_keys,
    new_bundle_keys,
    packages_from_repository,
)
from wapt.bundle import METADATA_DIR, STAGING_DIR, VerifiedBundle, verify_bundle
from wapt.package import build_package
from wapt.repository import scan_repository
from wapt.trust import TrustStore

PASSPHRASE = b"correct horse battery staple"


def png(seed: int) -> bytes:
    """A small valid PNG whose bytes depend on `seed`."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixel = zlib.compress(b"\x00" + bytes([seed % 256, 7, 42]))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixel) + chunk(b"IEND", b"")
    )


def build(
    root: Path,
    package: str,
    version: str,
    *,
    size: int = 40_000,
    seed: int = 0,
    icon: int | None = None,
    out: Path,
    **fields: str,
) -> Path:
    """A real signed `.wapt` with an incompressible payload of `size` bytes."""
    rng = __import__("random").Random(f"{package}-{version}-{seed}")
    files = {"payload.bin": rng.randbytes(size)}
    if icon is not None:
        files["WAPT/icon.png"] = png(icon)
    source = write_source(root / f"src-{seed}", package, version, files=files, **fields)
    out.mkdir(parents=True, exist_ok=True)
    path = build_package(source, fixture_signer("codesign"), out, overwrite=True)
    shutil.rmtree(source)
    return path


@dataclass
class Corpus:
    """Packages for bundle tests: `first` makes version 1 of a bundle, `second` version 2."""

    first: list[Path]
    second: list[Path]
    #: first minus second
    removed: list[str]
    #: same file name in both, other bytes
    changed: str
    #: only in second
    added: str


def make_corpus(root: Path) -> Corpus:
    one, two = root / "set1", root / "set2"
    common = [
        build(root, "tis-firefox", "128.0-1", size=60_000, icon=1, out=one),
        build(root, "tis-gimp", "2.10-1", size=50_000, icon=2, out=one),
    ]
    removed = build(root, "tis-old", "1.0-1", size=30_000, icon=3, out=one)
    changed_v1 = build(root, "tis-vlc", "3.0-1", size=45_000, seed=1, icon=4, out=one)
    two.mkdir(parents=True, exist_ok=True)
    second = []
    for path in common:
        shutil.copy2(path, two / path.name)
        second.append(two / path.name)
    changed_v2 = build(root, "tis-vlc", "3.0-1", size=45_000, seed=2, icon=5, out=two)
    added = build(root, "tis-scratch", "3.1-1", size=35_000, icon=6, out=two)
    assert changed_v1.name == changed_v2.name
    return Corpus(
        first=[*common, removed, changed_v1],
        second=[*second, changed_v2, added],
        removed=[removed.name],
        changed=changed_v1.name,
        added=added.name,
    )


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return make_corpus(tmp_path_factory.mktemp("bundle-corpus"))


@pytest.fixture(scope="session")
def site_keys(tmp_path_factory: pytest.TempPathFactory) -> BundleKeys:
    """The site's bundle keys (Ed25519), made once and unlocked."""
    directory = tmp_path_factory.mktemp("bundle-keys") / "keys"
    new_bundle_keys(directory, PASSPHRASE)
    return load_bundle_keys(directory, PASSPHRASE)


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> BundleKeys:
    """Another site's keys: what an attacker (or a mistaken technician) signs with."""
    directory = tmp_path_factory.mktemp("other-keys") / "keys"
    return new_bundle_keys(directory, PASSPHRASE)


@pytest.fixture(scope="session")
def ca_trust() -> TrustStore:
    return TrustStore.from_path(PKI / "ca.crt")


@pytest.fixture(scope="session")
def bundle_v1(
    tmp_path_factory: pytest.TempPathFactory, corpus: Corpus, site_keys: BundleKeys
) -> Path:
    """A pristine version-1 bundle; tests copy it (`fresh_copy`) before changing anything."""
    stick = tmp_path_factory.mktemp("bundle-v1") / "stick"
    create_or_update_bundle(stick, corpus.first, site_keys, name="Collège Jean Moulin")
    return stick


def fresh_copy(bundle: Path, where: Path) -> Path:
    target = where / f"stick-{len(list(where.glob('stick-*')))}"
    shutil.copytree(bundle, target, symlinks=True)
    return target


def indexed(packages: list[Path], repo: Path) -> list[SourcePackage]:
    """Copy `packages` into the repository `repo`, index it (`scan_repository`, which records
    each file's sha256) and resolve them from it, as `comptoir bundle create --repo` does."""
    repo.mkdir(parents=True, exist_ok=True)
    for path in packages:
        shutil.copy2(path, repo / path.name)
    scan_repository(repo)
    names = [p.name.split("_")[0] for p in packages]
    selection = packages_from_repository(repo, packages=names)
    assert sorted(s.filename for s in selection.packages) == sorted(p.name for p in packages)
    assert all(s.recorded is not None for s in selection.packages)
    return selection.packages


def listing(stick: Path) -> set[str]:
    """Every file of a stick outside the metadata directory, as POSIX paths."""
    return {
        p.relative_to(stick).as_posix()
        for p in stick.rglob("*")
        if p.is_file() and p.relative_to(stick).parts[0] != METADATA_DIR
    }


def expected_files(packages: list[Path], verified: VerifiedBundle) -> set[str]:
    icons = {t for t in verified.targets if t.startswith("icons/")}
    return {p.name for p in packages} | {"Packages"} | icons


def staging_files(stick: Path) -> list[str]:
    staging = stick / METADATA_DIR / STAGING_DIR
    return sorted(os.listdir(staging)) if staging.is_dir() else []


def test_png_is_a_png() -> None:
    assert png(3).startswith(b"\x89PNG") and png(3) != png(4)


def test_pristine_bundle_verifies(bundle_v1: Path, site_keys: BundleKeys, corpus: Corpus) -> None:
    verified = verify_bundle(bundle_v1, site_keys.root)
    assert verified.targets_version == 1
    assert {t.path for t in verified.packages} == {p.name for p in corpus.first}
    assert len([t for t in verified.targets if t.startswith("icons/")]) == 4
