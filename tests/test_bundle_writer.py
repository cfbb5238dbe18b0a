"""The bundle writer: incremental updates, versions, file system checks, full disks, FAT32,
repositories on disk and over HTTP."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.httpserver import serve_directory
from tests.test_bundle_common import (
    Corpus,
    build,
    expected_files,
    fresh_copy,
    indexed,
    listing,
    staging_files,
)
from usb_bundler import (
    BundleKeys,
    SourcePackage,
    WriteProgress,
    create_or_update_bundle,
    load_bundle_keys,
    new_bundle_keys,
    package_from_file,
    packages_from_repository,
)
from usb_bundler import fs as bundle_fs
from usb_bundler import writer as bundle_writer
from wapt.bundle import METADATA_DIR, verify_bundle
from wapt.errors import (
    BundleFilesystemError,
    BundleKeyError,
    BundleSpaceError,
    BundleVerificationError,
    BundleWriteError,
    MissingDependencyError,
    ResolveError,
)
from wapt.repository import SCAN_MEMBER, scan_repository
from wapt.resolve import HostProfile
from wapt.trust import TrustStore

pytest_plugins = ["tests.test_bundle_common"]  # the shared bundle fixtures


def count_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the bytes the writer streams into the staging area."""
    written: list[int] = []
    original = bundle_writer._write_chunk

    def counting(fd: int, chunk: memoryview) -> None:
        written.append(len(chunk))
        original(fd, chunk)

    monkeypatch.setattr(bundle_writer, "_write_chunk", counting)
    return written


def test_incremental_update_copies_only_what_changed(
    tmp_path: Path,
    bundle_v1: Path,
    corpus: Corpus,
    site_keys: BundleKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stick = fresh_copy(bundle_v1, tmp_path)
    written = count_writes(monkeypatch)
    progress: list[WriteProgress] = []
    result = create_or_update_bundle(
        stick, corpus.second, site_keys, progress=progress.append, creator="tech"
    )
    assert sorted(result.copied) == sorted([corpus.changed, corpus.added])
    changed_bytes = sum(
        p.stat().st_size for p in corpus.second if p.name in (corpus.changed, corpus.added)
    )
    assert sum(written) == changed_bytes  # packages streamed: only the two
    assert result.version == 2
    assert corpus.removed[0] in result.removed
    assert sorted(result.unchanged) == sorted(
        p.name for p in corpus.second if p.name not in (corpus.changed, corpus.added)
    )
    assert progress[-1].done == progress[-1].total == changed_bytes
    assert progress[-1].rate > 0 and progress[-1].eta == 0

    verified = verify_bundle(stick, site_keys.root)
    assert verified.targets_version == 2 and verified.warnings == ()
    assert verified.info.retired and corpus.removed[0] in verified.info.retired
    assert listing(stick) == expected_files(corpus.second, verified)
    assert staging_files(stick) == []
    assert sorted(p.name for p in (stick / METADATA_DIR).iterdir() if p.is_file()) == [
        "1.root.json",
        "2.snapshot.json",
        "2.targets.json",
        "root.json",
        "timestamp.json",
    ]
    # the changed package really is the new one
    assert (stick / corpus.changed).read_bytes() == next(
        p for p in corpus.second if p.name == corpus.changed
    ).read_bytes()


def test_unchanged_rerun_copies_nothing_and_reads_nothing_with_the_cache(
    tmp_path: Path, corpus: Corpus, site_keys: BundleKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    stick, cache = tmp_path / "stick", tmp_path / "hashes.json"
    first = create_or_update_bundle(stick, corpus.first, site_keys, hash_cache=cache)
    written = count_writes(monkeypatch)
    again = create_or_update_bundle(stick, corpus.first, site_keys, hash_cache=cache)
    assert (first.version, again.version) == (1, 2)
    assert again.copied == [] and written == []
    assert again.bytes_copied == 0 and again.bytes_hashed == 0
    # without the cache, sources of the same length are hashed (read), still not copied
    third = create_or_update_bundle(stick, corpus.first, site_keys)
    assert third.copied == [] and third.bytes_hashed == sum(p.stat().st_size for p in corpus.first)
    assert verify_bundle(stick, site_keys.root).targets_version == 3


def test_removed_packages_disappear(tmp_path: Path, corpus: Corpus, site_keys: BundleKeys) -> None:
    stick = tmp_path / "stick"
    create_or_update_bundle(stick, corpus.first, site_keys)
    result = create_or_update_bundle(stick, corpus.first[:1], site_keys)
    verified = verify_bundle(stick, site_keys.root)
    assert listing(stick) == expected_files(corpus.first[:1], verified)
    assert len(result.removed) == 3 + 3  # three packages and their icons
    assert [t.path for t in verified.packages] == [corpus.first[0].name]


def test_technician_pin_is_kept_across_writes(
    tmp_path: Path, corpus: Corpus, site_keys: BundleKeys
) -> None:
    from wapt.bundle import check_technician_pin

    stick = tmp_path / "stick"
    create_or_update_bundle(stick, corpus.first[:1], site_keys, technician_pin="0000")
    create_or_update_bundle(stick, corpus.first[:2], site_keys)
    pin = verify_bundle(stick, site_keys.root).info.technician_pin
    assert pin is not None and check_technician_pin("0000", pin)


def test_foreign_files_on_the_destination_are_refused(
    tmp_path: Path, corpus: Corpus, site_keys: BundleKeys
) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    (stick / "Rapport de stage.odt").write_text("x")
    (stick / "System Volume Information").mkdir()  # Windows' own: ignored
    with pytest.raises(BundleFilesystemError, match=r"Rapport de stage\.odt"):
        create_or_update_bundle(stick, corpus.first, site_keys)
    assert sorted(os.listdir(stick)) == [
        "Rapport de stage.odt",
        "System Volume Information",
        METADATA_DIR,
    ]
    assert staging_files(stick) == []


def test_a_bundle_of_other_keys_is_not_overwritten(
    tmp_path: Path, bundle_v1: Path, corpus: Corpus
) -> None:
    stick = fresh_copy(bundle_v1, tmp_path)
    mine = new_bundle_keys(tmp_path / "mine", b"pass")
    with pytest.raises(BundleKeyError, match="signed with other keys"):
        create_or_update_bundle(stick, corpus.first, mine)


def test_names_forbidden_on_fat_and_case_clashes(tmp_path: Path) -> None:
    bundle_fs.check_names(["tis-app_1.0-1_x64_PROD_fr.wapt", "icons/abc.png", "Packages"])
    for bad, why in [
        ('a"b.wapt', "forbidden character"),
        ("a?b.wapt", "forbidden character"),
        ("name.", "ends with a dot or a space"),
        ("name ", "ends with a dot or a space"),
        ("CON.wapt", "reserved device name"),
        ("lpt1", "reserved device name"),
        ("tab\tname", "forbidden character"),
    ]:
        with pytest.raises(BundleFilesystemError, match=why):
            bundle_fs.check_names([bad])
    with pytest.raises(BundleFilesystemError, match="same file once case is ignored") as caught:
        bundle_fs.check_names(["Tis-App_1.wapt", "tis-app_1.wapt", "icons/A.png", "icons/a.png"])
    assert "Tis-App_1.wapt" in str(caught.value) and "icons/A.png" in str(caught.value)


def test_case_clash_between_packages_is_refused_before_copying(
    tmp_path: Path, corpus: Corpus, site_keys: BundleKeys
) -> None:
    source = corpus.first[0]
    upper = tmp_path / "src" / source.name.upper().replace(".WAPT", ".wapt")
    upper.parent.mkdir()
    shutil.copy(source, upper)
    stick = tmp_path / "stick"
    with pytest.raises(BundleFilesystemError, match="case is ignored"):
        create_or_update_bundle(stick, [source, upper], site_keys)
    assert staging_files(stick) == [] and not (stick / METADATA_DIR / "timestamp.json").exists()


def test_fat32_refuses_a_file_of_4_gib_before_copying(
    tmp_path: Path, corpus: Corpus, site_keys: BundleKeys
) -> None:
    big = tmp_path / "big.wapt"
    with open(big, "wb") as f:
        f.truncate(4 * 1024**3)  # sparse: no disk used
    entry = package_from_file(corpus.first[0]).entry
    huge = SourcePackage("tis-huge_1.0-1.wapt", big, 4 * 1024**3, entry, md5="0" * 32)
    stick = tmp_path / "stick"
    with pytest.raises(BundleFilesystemError, match="FAT32 cannot hold files of 4 GiB") as caught:
        create_or_update_bundle(stick, [corpus.first[1], huge], site_keys, fat32=True)
    assert "tis-huge_1.0-1.wapt (4.00 GiB)" in str(caught.value)
    assert "exFAT" in str(caught.value)
    assert staging_files(stick) == []
    bundle_fs.check_file_sizes([("ok.wapt", bundle_fs.FAT32_MAX_FILE)], fat32=True)


def test_filesystem_type_from_proc_mounts(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        "/dev/sdb1 /media/tech/CLE\\040USB vfat rw,uid=1000 0 0\n"
        "/dev/sdc1 /run/media/tech/BIG exfat rw 0 0\n"
    )
    assert bundle_fs.filesystem_type(Path("/media/tech/CLE USB/x"), mounts) == "vfat"
    assert bundle_fs.filesystem_type(Path("/run/media/tech/BIG"), mounts) == "exfat"
    assert bundle_fs.filesystem_type(Path("/home/tech"), mounts) == "ext4"
    assert bundle_fs.filesystem_type(Path("/x"), tmp_path / "absent") is None


def test_full_disk_is_refused_before_writing(
    tmp_path: Path,
    bundle_v1: Path,
    corpus: Corpus,
    site_keys: BundleKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stick = fresh_copy(bundle_v1, tmp_path)
    before = {p: p.read_bytes() for p in stick.rglob("*") if p.is_file()}
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(bundle_fs.shutil, "disk_usage", lambda _path: usage(10**9, 10**9, 1000))
    with pytest.raises(BundleSpaceError, match=r"needed, only 0\.0 MiB free"):
        create_or_update_bundle(stick, corpus.second, site_keys)
    after = {p: p.read_bytes() for p in stick.rglob("*") if p.is_file()}
    assert after == before
    assert verify_bundle(stick, site_keys.root).targets_version == 1


def test_disk_filling_up_while_writing_leaves_the_previous_bundle(
    tmp_path: Path,
    bundle_v1: Path,
    corpus: Corpus,
    site_keys: BundleKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stick = fresh_copy(bundle_v1, tmp_path)
    budget = [50_000]

    def filling(fd: int, chunk: memoryview) -> None:
        if budget[0] < len(chunk):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        budget[0] -= len(chunk)
        os.write(fd, chunk)

    monkeypatch.setattr(bundle_writer, "_write_chunk", filling)
    with pytest.raises(BundleSpaceError, match="is full while writing") as caught:
        create_or_update_bundle(stick, corpus.second, site_keys)
    assert "the previous bundle on it is intact" in str(caught.value)
    assert verify_bundle(stick, site_keys.root).targets_version == 1
    assert not [n for n in staging_files(stick) if n.endswith(".part")]
    monkeypatch.undo()
    result = create_or_update_bundle(stick, corpus.second, site_keys)  # room again: finishes
    assert result.version == 2
    assert verify_bundle(stick, site_keys.root).warnings == ()


def test_packages_from_a_repository_with_dependencies_and_groups(
    tmp_path: Path, site_keys: BundleKeys, ca_trust: TrustStore
) -> None:
    repo = tmp_path / "repo"
    build(tmp_path, "tis-libx", "1.0-1", out=repo, icon=9)
    build(tmp_path, "tis-app", "2.0-1", out=repo, depends="tis-libx(>=1.0)")
    build(tmp_path, "tis-app", "1.0-1", out=repo, seed=3)
    build(tmp_path, "tis-lonely", "1.0-1", out=repo)
    build(tmp_path, "groupe-sciences", "1-1", out=repo, section="group", depends="tis-app")
    scan_repository(repo)
    selection = packages_from_repository(repo, packages=["tis-app"], trust=ca_trust)
    assert [p.filename for p in selection.packages] == [
        "tis-app_2.0-1.wapt",
        "tis-libx_1.0-1.wapt",
    ]
    assert all(p.md5 for p in selection.packages)
    grouped = packages_from_repository(repo, groups=["groupe-sciences"], trust=None)
    assert len(grouped.packages) == 3
    with pytest.raises(ResolveError, match="not a group"):
        packages_from_repository(repo, groups=["tis-lonely"], trust=ca_trust)
    with pytest.raises(MissingDependencyError, match="no such package"):
        packages_from_repository(repo, packages=["tis-absent"], trust=ca_trust)
    x86_only = packages_from_repository(
        repo, packages=["tis-app"], profiles=[HostProfile(architectures=("x86",))]
    )
    assert len(x86_only.packages) == 2
    stick = tmp_path / "stick"
    create_or_update_bundle(stick, selection.packages, site_keys)
    verified = verify_bundle(stick, site_keys.root, trust=ca_trust)
    assert len([t for t in verified.targets if t.startswith("icons/")]) == 1


def test_bundle_from_an_http_repository(
    tmp_path: Path, site_keys: BundleKeys, ca_trust: TrustStore
) -> None:
    from collections import Counter

    repo = tmp_path / "repo"
    build(tmp_path, "tis-libx", "1.0-1", out=repo, icon=9, size=200_000)
    build(tmp_path, "tis-app", "2.0-1", out=repo, depends="tis-libx", size=100_000)
    scan_repository(repo)
    counter: Counter[str] = Counter()
    stick = tmp_path / "stick"
    with serve_directory(repo, counter) as url:
        selection = packages_from_repository(url, packages=["tis-app"], trust=ca_trust)
        create_or_update_bundle(stick, selection.packages, site_keys)
        fetched = sum(v for k, v in counter.items() if k.endswith(".wapt"))
        # unchanged on the server: the index MD5 says so, nothing is downloaded again
        again = create_or_update_bundle(stick, selection.packages, site_keys)
        assert sum(v for k, v in counter.items() if k.endswith(".wapt")) == fetched == 2
    assert again.copied == [] and again.version == 2
    verified = verify_bundle(stick, site_keys.root, trust=ca_trust)
    assert len(verified.packages) == 2 and "icons/" in " ".join(verified.targets)


def test_keys_are_encrypted_and_checked(tmp_path: Path) -> None:
    from wapt.bundle import ROLES

    directory = tmp_path / "keys"
    new_bundle_keys(directory, b"s3cret", algorithm="rsa")
    for role in ROLES:
        pem = (directory / f"{role}.key").read_bytes()
        assert b"ENCRYPTED PRIVATE KEY" in pem
        assert (directory / f"{role}.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(BundleKeyError, match="wrong passphrase"):
        load_bundle_keys(directory, b"nope")
    with pytest.raises(BundleKeyError, match="no passphrase"):
        load_bundle_keys(directory, None)
    with pytest.raises(BundleKeyError, match="already holds bundle keys"):
        new_bundle_keys(directory, b"s3cret")
    keys = load_bundle_keys(directory, b"s3cret")
    shutil.copy(tmp_path / "keys" / "snapshot.key", tmp_path / "keys" / "targets.key")
    with pytest.raises(BundleKeyError, match="not the targets key"):
        load_bundle_keys(directory, b"s3cret")
    assert keys.root_version == 1


MTOOLS = shutil.which("mcopy") and shutil.which("mkfs.vfat") and shutil.which("mdir")


@pytest.mark.skipif(not MTOOLS, reason="mtools and dosfstools are not installed")
def test_round_trip_through_a_real_fat32_image(
    tmp_path: Path, corpus: Corpus, site_keys: BundleKeys
) -> None:
    """No loop mount here (no vfat in the kernel): mtools writes the bundle into a FAT32 image
    and reads it back; the copy read back from FAT32 verifies, before and after an update."""
    image = tmp_path / "stick.img"
    subprocess.run(
        ["mkfs.vfat", "-F", "32", "-C", str(image), "65536"], check=True, capture_output=True
    )
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}

    def put(bundle: Path) -> None:
        subprocess.run(
            ["mdeltree", "-i", str(image), "::/comptoir-bundle"],
            env=env,
            capture_output=True,
            check=False,
        )
        for item in bundle.iterdir():
            subprocess.run(
                ["mcopy", "-s", "-o", "-i", str(image), str(item), "::/"],
                env=env,
                check=True,
                capture_output=True,
            )

    def get() -> Path:
        out = tmp_path / f"read-{len(list(tmp_path.glob('read-*')))}"
        out.mkdir()
        subprocess.run(
            ["mcopy", "-s", "-i", str(image), "::/*", str(out)],
            env=env,
            check=True,
            capture_output=True,
        )
        return out

    local = tmp_path / "local"
    create_or_update_bundle(local, corpus.first, site_keys, fat32=True)
    put(local)
    listing_text = subprocess.run(
        ["mdir", "-/", "-b", "-i", str(image), "::/"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "tis-firefox_128.0-1.wapt" in listing_text  # long names kept, case kept
    assert verify_bundle(get(), site_keys.root).targets_version == 1

    create_or_update_bundle(local, corpus.second, site_keys, fat32=True)
    for removed in corpus.removed:
        subprocess.run(["mdel", "-i", str(image), f"::/{removed}"], env=env, check=True)
    for icon in verify_bundle(local, site_keys.root).info.retired:
        subprocess.run(
            ["mdel", "-i", str(image), f"::/{icon}"], env=env, check=False, capture_output=True
        )
    put(local)
    back = get()
    verified = verify_bundle(back, site_keys.root)
    assert verified.targets_version == 2 and verified.warnings == ()


def test_kiosk_links_inside_the_folder_go_onto_the_stick_as_copies(tmp_path: Path) -> None:
    build = tmp_path / "comptoir-kiosk"
    (build / "_internal" / "PyQt6").mkdir(parents=True)
    (build / "_internal" / "PyQt6" / "libQt6Core.so.6").write_bytes(b"ELF core")
    (build / "_internal" / "libQt6Core.so.6").symlink_to("PyQt6/libQt6Core.so.6")
    (build / "comptoir-kiosk").write_bytes(b"ELF kiosk")
    files = {f.filename: f for f in bundle_writer.kiosk_files(build)}
    link = files["comptoir-kiosk/_internal/libQt6Core.so.6"]
    assert link.location == (build / "_internal" / "PyQt6" / "libQt6Core.so.6").resolve()
    assert link.size == len(b"ELF core")
    assert len(files) == 3

    (tmp_path / "outside").write_bytes(b"secret")
    (build / "escape").symlink_to(tmp_path / "outside")
    (build / "loop-dir").symlink_to("_internal", target_is_directory=True)
    os.mkfifo(build / "pipe")
    with pytest.raises(BundleFilesystemError, match="links out of the folder") as refused:
        bundle_writer.kiosk_files(build)
    assert all(name in str(refused.value) for name in ("escape", "loop-dir", "pipe"))


# --- sha256 known before the write: copied by the kernel, not hashed --------------------------


def count_kernel_copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the bytes `os.copy_file_range` copies for the writer."""
    copied: list[int] = []
    original = os.copy_file_range

    def counting(fd_in: int, fd_out: int, count: int, *args: int) -> int:
        n = original(fd_in, fd_out, count, *args)
        copied.append(n)
        return n

    monkeypatch.setattr(os, "copy_file_range", counting)
    return copied


def rewrite_scan_record(repo: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the `comptoir/scan.json` record inside the repository's `Packages` zip."""
    index = repo / "Packages"
    with zipfile.ZipFile(index) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    record = json.loads(members[SCAN_MEMBER])
    change(record)
    members[SCAN_MEMBER] = json.dumps(record).encode()
    with zipfile.ZipFile(index, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


@pytest.mark.skipif(not hasattr(os, "copy_file_range"), reason="no os.copy_file_range here")
def test_an_indexed_repository_is_copied_by_the_kernel_without_hashing(
    tmp_path: Path,
    corpus: Corpus,
    site_keys: BundleKeys,
    ca_trust: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sources = indexed(corpus.first, tmp_path / "repo")
    written, kernel = count_writes(monkeypatch), count_kernel_copies(monkeypatch)
    stick, cache = tmp_path / "stick", tmp_path / "hashes.json"
    result = create_or_update_bundle(stick, sources, site_keys, hash_cache=cache)
    total = sum(s.size for s in sources)
    assert written == [] and sum(kernel) == total  # no byte through user space, none hashed
    assert sorted(result.copied) == sorted(p.name for p in corpus.first)
    verified = verify_bundle(stick, site_keys.root, trust=ca_trust)
    assert verified.warnings == () and listing(stick) == expected_files(corpus.first, verified)
    assert staging_files(stick) == []
    # the recorded hash also says "unchanged" without reading anything
    again = create_or_update_bundle(stick, sources, site_keys)
    assert again.copied == [] and again.bytes_hashed == 0 and sum(kernel) == total

    # the writer's own hash cache is a source of known hashes too (bare files, no record)
    monkeypatch.undo()
    create_or_update_bundle(tmp_path / "probe", corpus.first, site_keys, hash_cache=cache)
    written, kernel = count_writes(monkeypatch), count_kernel_copies(monkeypatch)
    create_or_update_bundle(tmp_path / "other", corpus.first, site_keys, hash_cache=cache)
    assert written == [] and sum(kernel) == total
    assert verify_bundle(tmp_path / "other", site_keys.root).warnings == ()


@pytest.mark.parametrize("change", ["mtime", "inode", "size"])
def test_a_file_changed_since_it_was_recorded_is_hashed(
    tmp_path: Path,
    corpus: Corpus,
    site_keys: BundleKeys,
    monkeypatch: pytest.MonkeyPatch,
    change: str,
) -> None:
    repo = tmp_path / "repo"
    sources = indexed(corpus.first, repo)
    target = repo / corpus.changed
    st = target.stat()
    if change == "mtime":
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    elif change == "inode":  # another file, same bytes, same size and mtime (`cp -p`, rsync)
        shutil.copy2(target, tmp_path / "copy")
        os.replace(tmp_path / "copy", target)
        assert target.stat().st_ino != st.st_ino and target.stat().st_mtime_ns == st.st_mtime_ns
    else:
        with open(target, "ab") as f:
            f.write(b"\0")
    written = count_writes(monkeypatch)
    stick = tmp_path / "stick"
    if change == "size":  # hashed while copied: the index is stale, nothing is committed
        with pytest.raises(BundleWriteError, match="rescan the repository"):
            create_or_update_bundle(stick, sources, site_keys)
        assert not (stick / METADATA_DIR / "timestamp.json").exists()
        return
    create_or_update_bundle(stick, sources, site_keys)
    assert sum(written) == st.st_size  # that file only went through user space, hashed
    assert verify_bundle(stick, site_keys.root).warnings == ()


def test_a_lying_scan_record_gives_a_bundle_that_verify_refuses(
    tmp_path: Path, corpus: Corpus, site_keys: BundleKeys
) -> None:
    repo = tmp_path / "repo"
    indexed(corpus.first, repo)
    wrong = hashlib.sha256(b"not the package").hexdigest()

    def lie(record: dict[str, Any]) -> None:
        record["files"][corpus.changed]["sha256"] = wrong

    rewrite_scan_record(repo, lie)
    names = [p.name.split("_")[0] for p in corpus.first]
    sources = packages_from_repository(repo, packages=names).packages
    assert next(s for s in sources if s.filename == corpus.changed).recorded.sha256 == wrong  # type: ignore[union-attr]
    stick = tmp_path / "stick"
    create_or_update_bundle(stick, sources, site_keys)
    with pytest.raises(BundleVerificationError, match=corpus.changed):
        verify_bundle(stick, site_keys.root)


def test_kernel_copy_unavailable_falls_back_to_sendfile_then_read_write(
    tmp_path: Path, corpus: Corpus, site_keys: BundleKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = indexed(corpus.first, tmp_path / "repo")
    total = sum(s.size for s in sources)
    monkeypatch.delattr(os, "copy_file_range", raising=False)
    sent: list[int] = []
    original_sendfile = os.sendfile

    def sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        n = original_sendfile(out_fd, in_fd, offset, count)
        sent.append(n)
        return n

    monkeypatch.setattr(os, "sendfile", sendfile)
    written = count_writes(monkeypatch)
    create_or_update_bundle(tmp_path / "stick", sources, site_keys)
    assert sum(sent) == total and written == []
    assert verify_bundle(tmp_path / "stick", site_keys.root).warnings == ()

    # neither kernel copy between these file systems (EXDEV, ENOSYS): read and write
    def refused(*_args: int) -> int:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    def missing(*_args: Any) -> int:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(os, "copy_file_range", refused, raising=False)
    monkeypatch.setattr(os, "sendfile", missing)
    create_or_update_bundle(tmp_path / "stick2", sources, site_keys)
    assert sum(written) == total
    assert verify_bundle(tmp_path / "stick2", site_keys.root).warnings == ()


@pytest.mark.skipif(not hasattr(os, "copy_file_range"), reason="no os.copy_file_range here")
def test_disk_filling_up_during_a_kernel_copy_leaves_the_previous_bundle(
    tmp_path: Path,
    bundle_v1: Path,
    corpus: Corpus,
    site_keys: BundleKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stick = fresh_copy(bundle_v1, tmp_path)
    sources = indexed(corpus.second, tmp_path / "repo")

    def full(*_args: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "copy_file_range", full)
    with pytest.raises(BundleSpaceError, match="is full while writing"):
        create_or_update_bundle(stick, sources, site_keys)
    assert verify_bundle(stick, site_keys.root).targets_version == 1
    assert not [n for n in staging_files(stick) if n.endswith(".part")]


def test_the_sync_mode_follows_the_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """One syncfs when every file is a kernel copy of known hashes (Linux), else an fsync per
    file; never syncfs where the system has none (it would flush nothing)."""
    known = bundle_writer._Planned(bundle_writer.BundleFile("k/a", Path("a"), 1), "0" * 64, "1")
    hashed = bundle_writer._Planned(bundle_writer.BundleFile("k/b", Path("b"), 1))
    choose = bundle_writer._Writer._choose_sync_mode
    monkeypatch.setattr(bundle_writer, "_SYNCFS", lambda fd: 0)
    monkeypatch.setattr(bundle_writer, "SYNC_MODE", "auto")
    assert choose(None, [known]) == "syncfs"  # type: ignore[arg-type]
    assert choose(None, [known, hashed]) == "fsync"  # type: ignore[arg-type]
    monkeypatch.setattr(bundle_writer, "SYNC_MODE", "fsync")
    assert choose(None, [known]) == "fsync"  # type: ignore[arg-type]
    monkeypatch.setattr(bundle_writer, "SYNC_MODE", "syncfs")
    assert choose(None, [hashed]) == "syncfs"  # type: ignore[arg-type]
    monkeypatch.setattr(bundle_writer, "_SYNCFS", None)
    assert choose(None, [known]) == "fsync"  # type: ignore[arg-type]
