"""Bundle verification: round trips and each TUF attack (rollback, freeze, mix-and-match,
arbitrary files, tampered and missing files, a root not chained from the trusted one)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.helpers import PKI
from tests.test_bundle_common import (
    PASSPHRASE,
    Corpus,
    fresh_copy,
)
from usb_bundler import BundleKeys, create_or_update_bundle, load_bundle_keys, rotate_bundle_keys
from wapt.bundle import (
    METADATA_DIR,
    BundleInfo,
    BundleState,
    TargetInfo,
    check_technician_pin,
    hash_technician_pin,
    sign_bundle_metadata,
    verify_bundle,
)
from wapt.errors import (
    BundleExpiredError,
    BundleExtraFileError,
    BundleFileError,
    BundleMetadataError,
    BundleMissingFileError,
    BundleMixAndMatchError,
    BundlePackageError,
    BundleRollbackError,
    BundleSignatureError,
    BundleVerificationError,
    WaptError,
)
from wapt.trust import TrustStore

pytest_plugins = ["tests.test_bundle_common"]  # the shared bundle fixtures


def problems(error: BundleVerificationError) -> list[str]:
    return [f"{type(p).__name__}: {p}" for p in error.problems]


def test_round_trip_with_package_signatures(
    bundle_v1: Path, site_keys: BundleKeys, corpus: Corpus, ca_trust: TrustStore
) -> None:
    verified = verify_bundle(bundle_v1, site_keys.root, trust=ca_trust)
    assert verified.info.name == "Collège Jean Moulin"
    assert verified.info.packages == (
        "tis-firefox(=128.0-1)",
        "tis-gimp(=2.10-1)",
        "tis-old(=1.0-1)",
        "tis-vlc(=3.0-1)",
    )
    assert verified.warnings == ()
    assert (verified.root_version, verified.timestamp_version) == (1, 1)
    firefox = verified.targets["tis-firefox_128.0-1.wapt"]
    assert firefox.kind == "package" and firefox.md5 and len(firefox.sha256) == 64
    assert verified.targets["Packages"].kind == "index"
    # the root of trust may be given as a file too
    assert verify_bundle(bundle_v1, site_keys.directory / "root.json").targets_version == 1


def test_the_metadata_are_plain_tuf(bundle_v1: Path) -> None:
    meta = bundle_v1 / METADATA_DIR
    names = sorted(p.name for p in meta.iterdir() if p.is_file())
    assert names == [
        "1.root.json",
        "1.snapshot.json",
        "1.targets.json",
        "root.json",
        "timestamp.json",
    ]
    timestamp = json.loads((meta / "timestamp.json").read_text())
    assert timestamp["signed"]["_type"] == "timestamp"
    assert timestamp["signed"]["meta"]["snapshot.json"]["hashes"]["sha256"]
    targets = json.loads((meta / "1.targets.json").read_text())["signed"]
    assert targets["x-comptoir-bundle"]["technician_pin"] is None
    assert all("sha256" in t["hashes"] for t in targets["targets"].values())


def test_rollback_is_refused_with_the_state(
    tmp_path: Path, bundle_v1: Path, site_keys: BundleKeys, corpus: Corpus
) -> None:
    old = fresh_copy(bundle_v1, tmp_path)
    stick = fresh_copy(bundle_v1, tmp_path)
    create_or_update_bundle(stick, corpus.second, site_keys)
    state = BundleState()
    state = state.recording(verify_bundle(stick, site_keys.root, state=state))
    state = BundleState.from_json(state.to_json())  # as the agent persists it
    # without memory, the old copy is a valid bundle; with it, a rollback
    assert verify_bundle(old, site_keys.root).targets_version == 1
    with pytest.raises(BundleVerificationError) as caught:
        verify_bundle(old, site_keys.root, state=state)
    assert caught.value.has(BundleRollbackError)
    text = str(caught.value)
    assert "version 1 is older than version 2" in text and "ask for the current one" in text
    # the same version again is fine
    assert verify_bundle(stick, site_keys.root, state=state).targets_version == 2


def test_freeze_expired_bundle_is_refused(
    tmp_path: Path, corpus: Corpus, site_keys: BundleKeys
) -> None:
    made = datetime(2026, 9, 1, tzinfo=UTC)
    stick = tmp_path / "stick"
    create_or_update_bundle(stick, corpus.first[:1], site_keys, now=made, expires_days=30)
    assert verify_bundle(stick, site_keys.root, now=made + timedelta(days=29)).targets_version
    with pytest.raises(BundleVerificationError) as caught:
        verify_bundle(stick, site_keys.root, now=made + timedelta(days=31))
    assert caught.value.has(BundleExpiredError)
    message = str(caught.value)
    assert "bundle expired on 2026-10-01" in message
    assert f"comptoir bundle create --to {stick}" in message
    # re-signing it copies nothing and makes it valid again
    result = create_or_update_bundle(stick, corpus.first[:1], site_keys)
    assert result.copied == [] and result.version == 2
    assert verify_bundle(stick, site_keys.root).targets_version == 2


def test_mix_and_match_snapshot_from_another_bundle(
    tmp_path: Path, bundle_v1: Path, corpus: Corpus, site_keys: BundleKeys
) -> None:
    stick = fresh_copy(bundle_v1, tmp_path)
    other = tmp_path / "other"
    create_or_update_bundle(other, corpus.second[:1], site_keys)
    shutil.copy(other / METADATA_DIR / "1.snapshot.json", stick / METADATA_DIR / "1.snapshot.json")
    with pytest.raises(BundleVerificationError) as caught:
        verify_bundle(stick, site_keys.root)
    assert caught.value.has(BundleMixAndMatchError)
    assert "different writes" in str(caught.value) or "different bundles" in str(caught.value)
    assert not caught.value.has(BundleSignatureError)  # correctly signed, just not pinned


def test_mix_and_match_targets_from_an_older_write(
    tmp_path: Path, bundle_v1: Path, corpus: Corpus, site_keys: BundleKeys
) -> None:
    stick = fresh_copy(bundle_v1, tmp_path)
    old_targets = (stick / METADATA_DIR / "1.targets.json").read_bytes()
    create_or_update_bundle(stick, corpus.second, site_keys)
    (stick / METADATA_DIR / "2.targets.json").write_bytes(old_targets)
    with pytest.raises(BundleVerificationError) as caught:
        verify_bundle(stick, site_keys.root)
    assert caught.value.has(BundleMixAndMatchError)
    assert "2.targets.json is not the targets metadata" in str(caught.value)
    assert "holds targets version 1" in str(caught.value)


def test_mix_and_match_timestamp_pinning_a_missing_snapshot(
    tmp_path: Path, bundle_v1: Path, corpus: Corpus, site_keys: BundleKeys
) -> None:
    stick = fresh_copy(bundle_v1, tmp_path)
    newer = fresh_copy(bundle_v1, tmp_path)
    create_or_update_bundle(newer, corpus.second, site_keys)
    shutil.copy(newer / METADATA_DIR / "timestamp.json", stick / METADATA_DIR / "timestamp.json")
    with pytest.raises(BundleVerificationError) as caught:
        verify_bundle(stick, site_keys.root)
    assert caught.value.has(BundleMixAndMatchError)
    assert "pins snapshot version 2 but comptoir-bundle/2.snapshot.json is missing" in str(
        caught.value
    )


def test_arbitrary_extra_files_are_reported(
    tmp_path: Path, bundle_v1: Path, site_keys: BundleKeys
) -> None:
    stick = fresh_copy(bundle_v1, tmp_path)
    (stick / "setup.exe").write_bytes(b"MZ evil")
    (stick / "icons" / "evil.png").write_bytes(b"x")
    (stick / METADATA_DIR / "delegated.json").write_text("{}")
    (stick / "bin").mkdir()
    (stick / "bin" / "run.sh").write_text("rm -rf /")
    (stick / "link.wapt").symlink_to(next(stick.glob("*.wapt")).name)
    # what operating systems put on a stick, and the agents' reports, are not the bundle's
    (stick / "System Volume Information").mkdir()
    (stick / "System Volume Information" / "IndexerVolumeGuid").write_text("x")
    (stick / "reports").mkdir()
    (stick / "reports" / "host.json").write_text("{}")
    with pytest.raises(BundleVerificationError) as caught:
        verify_bundle(stick, site_keys.root)
    extras = [p for p in caught.value.problems if isinstance(p, BundleExtraFileError)]
    named = sorted(str(p).split(":")[0] for p in extras)
    assert named == [
        "bin/run.sh",
        "comptoir-bundle/delegated.json",
        "icons/evil.png",
        "link.wapt",
        "setup.exe",
    ]
    assert "in none of its signed targets" in str(caught.value)


def test_tampered_truncated_and_missing_files_all_reported_at_once(
    tmp_path: Path, bundle_v1: Path, site_keys: BundleKeys, corpus: Corpus
) -> None:
    stick = fresh_copy(bundle_v1, tmp_path)
    firefox, gimp, old, vlc = (stick / p.name for p in corpus.first)
    data = bytearray(firefox.read_bytes())
    data[len(data) // 2] ^= 0xFF
    firefox.write_bytes(bytes(data))  # same length, other bytes
    gimp.write_bytes(gimp.read_bytes()[:-10])
    old.unlink()
    (stick / "extra.txt").write_text("x")
    with pytest.raises(BundleVerificationError) as caught:
        verify_bundle(stick, site_keys.root)
    found = problems(caught.value)
    assert len(found) == 4, found
    text = "\n".join(found)
    assert f"BundleFileError: {firefox.name}: sha256 differs from the signed targets" in text
    assert f"{gimp.name}: " in text and "instead of the" in text
    assert f"BundleMissingFileError: {old.name}: listed in the signed targets but missing" in text
    assert "BundleExtraFileError: extra.txt" in text
    assert caught.value.has(BundleFileError) and caught.value.has(BundleMissingFileError)
    assert vlc.exists()


def test_tampered_metadata_fails_its_signature(
    tmp_path: Path, bundle_v1: Path, site_keys: BundleKeys
) -> None:
    stick = fresh_copy(bundle_v1, tmp_path)
    path = stick / METADATA_DIR / "1.targets.json"
    document = json.loads(path.read_text())
    document["signed"]["x-comptoir-bundle"]["name"] = "Lycée pirate"
    path.write_text(json.dumps(document))
    with pytest.raises(BundleVerificationError) as caught:
        verify_bundle(stick, site_keys.root)
    assert caught.value.has(BundleSignatureError)  # targets no longer signed
    assert caught.value.has(BundleMixAndMatchError)  # nor the file the snapshot pins


def test_bundle_of_another_site_is_refused(
    tmp_path: Path, corpus: Corpus, site_keys: BundleKeys, other_keys: BundleKeys
) -> None:
    stick = tmp_path / "stick"
    create_or_update_bundle(stick, corpus.first[:1], other_keys)
    with pytest.raises(BundleVerificationError) as caught:
        verify_bundle(stick, site_keys.root)
    assert caught.value.has(BundleSignatureError)
    assert "made with another site's bundle keys" in str(caught.value)
    assert "not signed by the trusted timestamp key(s)" in str(caught.value)


def test_stick_root_not_chained_from_the_trusted_root_is_refused(
    tmp_path: Path, corpus: Corpus, site_keys: BundleKeys, other_keys: BundleKeys
) -> None:
    """An attacker writes a 2.root.json signed only by their own keys, then signs with them."""
    from tuf.api.metadata import Metadata, Root

    from wapt.bundle import sign_root

    stick = tmp_path / "stick"
    create_or_update_bundle(stick, corpus.first[:1], other_keys)
    forged: Metadata[Root] = Metadata[Root].from_bytes(other_keys.root)
    forged.signed.version = 2
    data = sign_root(forged, [other_keys.signers["root"]])
    (stick / METADATA_DIR / "2.root.json").write_bytes(data)
    (stick / METADATA_DIR / "root.json").write_bytes(data)
    with pytest.raises(BundleVerificationError) as caught:
        verify_bundle(stick, site_keys.root)
    text = str(caught.value)
    assert "root version 2 is not signed by both the keys of root version 1" in text
    assert "not chained from the one this machine trusts" in text
    assert caught.value.has(BundleSignatureError)


def test_root_rotation_chained_from_the_trusted_root_is_followed(
    tmp_path: Path, corpus: Corpus
) -> None:
    directory = tmp_path / "keys"
    from usb_bundler import new_bundle_keys

    first = new_bundle_keys(directory, PASSPHRASE)
    trusted_v1 = first.root  # what the agents were configured with
    rotated = rotate_bundle_keys(first, PASSPHRASE, ["root", "timestamp"])
    assert rotated.root_version == 2
    stick = tmp_path / "stick"
    create_or_update_bundle(stick, corpus.first[:1], load_bundle_keys(directory, PASSPHRASE))
    verified = verify_bundle(stick, trusted_v1)
    assert verified.root_version == 2
    # a machine that has seen root 2 refuses a stick still signed under root 1
    old_stick = tmp_path / "old"
    create_or_update_bundle(old_stick, corpus.first[:1], first)
    shutil.rmtree(old_stick / METADATA_DIR / "staging")
    state = BundleState().recording(verified)
    with pytest.raises(BundleVerificationError) as caught:
        verify_bundle(old_stick, trusted_v1, state=state)
    assert caught.value.has(BundleRollbackError) or caught.value.has(BundleSignatureError)


def test_wapt_signatures_are_checked_with_a_trust_store(
    bundle_v1: Path, site_keys: BundleKeys
) -> None:
    untrusted = TrustStore.from_path(PKI / "untrusted-ca.crt")
    with pytest.raises(BundleVerificationError) as caught:
        verify_bundle(bundle_v1, site_keys.root, trust=untrusted)
    packages = [p for p in caught.value.problems if isinstance(p, BundlePackageError)]
    assert len(packages) == 4


def test_index_that_disagrees_with_targets_is_reported(
    tmp_path: Path, bundle_v1: Path, site_keys: BundleKeys
) -> None:
    """A writer bug (or a stale source MD5) shows as a package problem, not silently."""
    stick = fresh_copy(bundle_v1, tmp_path)
    verified = verify_bundle(stick, site_keys.root)
    targets = [
        TargetInfo(t.path, t.length, t.sha256, {**t.custom, "md5": "0" * 32})
        if t.kind == "package"
        else t
        for t in verified.targets.values()
    ]
    signed = sign_bundle_metadata(
        targets,
        verified.info,
        version=2,
        expires=datetime.now(UTC) + timedelta(days=1),
        signers=site_keys.signers,
    )
    (stick / METADATA_DIR / signed.targets_name).write_bytes(signed.targets)
    (stick / METADATA_DIR / signed.snapshot_name).write_bytes(signed.snapshot)
    (stick / METADATA_DIR / "timestamp.json").write_bytes(signed.timestamp)
    with pytest.raises(BundleVerificationError) as caught:
        verify_bundle(stick, site_keys.root)
    assert caught.value.has(BundlePackageError)
    assert "MD5 differs" in str(caught.value)


def test_missing_or_garbage_metadata(
    tmp_path: Path, bundle_v1: Path, site_keys: BundleKeys
) -> None:
    stick = fresh_copy(bundle_v1, tmp_path)
    (stick / METADATA_DIR / "timestamp.json").unlink()
    with pytest.raises(BundleVerificationError) as caught:
        verify_bundle(stick, site_keys.root)
    assert "not a complete bundle" in str(caught.value)
    (stick / METADATA_DIR / "timestamp.json").write_bytes(b"\x00garbage")
    with pytest.raises(BundleVerificationError) as caught:
        verify_bundle(stick, site_keys.root)
    assert caught.value.has(BundleMetadataError)
    assert "not valid TUF timestamp metadata" in str(caught.value)
    (stick / METADATA_DIR / "timestamp.json").write_bytes(b"{" * (17 * 1024))
    with pytest.raises(BundleVerificationError, match="more than 16384"):
        verify_bundle(stick, site_keys.root)


def test_a_bad_trusted_root_is_a_configuration_error(bundle_v1: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleMetadataError, match="configured root of trust"):
        verify_bundle(bundle_v1, tmp_path / "absent.json")
    with pytest.raises(BundleMetadataError, match="not valid TUF root"):
        verify_bundle(bundle_v1, b"{}")
    assert issubclass(BundleMetadataError, WaptError)


def test_state_round_trip_and_corruption() -> None:
    state = BundleState(2, {"abc": {"timestamp": 3, "snapshot": 3, "targets": 3}})
    assert BundleState.from_json(state.to_json()) == state
    with pytest.raises(BundleMetadataError):
        BundleState.from_json(b"not json")


def test_technician_pin_hash() -> None:
    record = hash_technician_pin("2468")
    assert record["algorithm"] == "scrypt" and len(record["salt"]) == 32
    assert check_technician_pin("2468", record)
    assert not check_technician_pin("1357", record)
    assert not check_technician_pin("2468", {**record, "n": 2**30})
    assert not check_technician_pin("2468", {})
    info = BundleInfo("id", "n", "c", "me", technician_pin=record)
    assert BundleInfo.from_dict(info.to_dict()) == info
