"""`comptoir bundle`: keys new, create from a repository, verify (exit status, every problem,
JSON); create with a published catalog of the site, a technician PIN and the kiosk's files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from comptoir.cli import main
from portal.site.catalogs import CatalogStore
from portal.site.model import PublishedCatalog
from tests.helpers import PKI
from tests.test_bundle_common import build
from wapt.bundle import check_technician_pin, verify_bundle
from wapt.repository import scan_repository
from wapt.trust import TrustStore


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("COMPTOIR_KEY_PASSPHRASE", "une phrase de passe")
    return CliRunner()


def test_keys_create_verify(tmp_path: Path, runner: CliRunner) -> None:
    repo = tmp_path / "repo"
    build(tmp_path, "tis-libx", "1.0-1", out=repo, icon=1)
    build(tmp_path, "tis-app", "2.0-1", out=repo, depends="tis-libx")
    build(tmp_path, "groupe-6e", "1-1", out=repo, section="group", depends="tis-app")
    scan_repository(repo)
    keys, stick = tmp_path / "keys", tmp_path / "stick"

    made = runner.invoke(main, ["bundle", "keys", "new", "--to", str(keys)])
    assert made.exit_code == 0, made.output
    assert "configure agents with" in made.output and (keys / "root.json").is_file()

    created = runner.invoke(
        main,
        [
            "bundle",
            "create",
            "--to",
            str(stick),
            "--group",
            "groupe-6e",
            "--repo",
            str(repo),
            "--keys",
            str(keys),
            "--trusted",
            str(PKI / "ca.crt"),
            "--name",
            "6e",
            "--json",
        ],
    )
    assert created.exit_code == 0, created.output
    report = json.loads(created.output)
    assert report["version"] == 1 and len(report["copied"]) == 3

    again = runner.invoke(
        main,
        [
            "bundle",
            "create",
            "--to",
            str(stick),
            "--group",
            "groupe-6e",
            "--repo",
            str(repo),
            "--keys",
            str(keys),
        ],
    )
    assert again.exit_code == 0, again.output
    assert "bundle version 2, 3 packages (0 copied" in again.output

    root = str(keys / "root.json")
    ok = runner.invoke(
        main, ["bundle", "verify", str(stick), "--root", root, "--trusted", str(PKI / "ca.crt")]
    )
    assert ok.exit_code == 0, ok.output
    assert "valid bundle '6e' version 2, 3 packages" in ok.output

    (stick / "tis-app_2.0-1.wapt").write_bytes(b"PK junk")
    (stick / "extra.exe").write_bytes(b"MZ")
    bad = runner.invoke(main, ["bundle", "verify", str(stick), "--root", root])
    assert bad.exit_code == 1
    assert "NOT a valid bundle, 2 problem(s)" in bad.output
    assert "BundleFileError: tis-app_2.0-1.wapt" in bad.output
    assert "BundleExtraFileError: extra.exe" in bad.output

    as_json = runner.invoke(main, ["bundle", "verify", str(stick), "--root", root, "--json"])
    assert as_json.exit_code == 1
    verdict = json.loads(as_json.output)
    assert verdict["valid"] is False
    assert {p["kind"] for p in verdict["problems"]} == {"BundleFileError", "BundleExtraFileError"}


def test_create_needs_a_package_or_group(tmp_path: Path, runner: CliRunner) -> None:
    keys = tmp_path / "keys"
    assert runner.invoke(main, ["bundle", "keys", "new", "--to", str(keys)]).exit_code == 0
    result = runner.invoke(
        main,
        [
            "bundle",
            "create",
            "--to",
            str(tmp_path / "s"),
            "--repo",
            str(tmp_path),
            "--keys",
            str(keys),
        ],
    )
    assert result.exit_code == 2 and "at least one --package, --group or --catalog" in result.output


def test_verify_with_a_bad_root_file(tmp_path: Path, runner: CliRunner) -> None:
    (tmp_path / "stick").mkdir()
    (tmp_path / "root.json").write_text("{}")
    result = runner.invoke(
        main, ["bundle", "verify", str(tmp_path / "stick"), "--root", str(tmp_path / "root.json")]
    )
    assert result.exit_code == 1 and "BundleMetadataError" in result.output


def write_site(tmp_path: Path) -> Path:
    """A site server's portal settings with a `[site]` table, and its stores' directory."""
    (tmp_path / "site-data").mkdir()
    path = tmp_path / "portal.toml"
    path.write_text(
        "[site]\n"
        f'data_dir = "{tmp_path / "site-data"}"\n'
        f'repository_dir = "{tmp_path / "site-repo"}"\n'
        f'accounts_file = "{tmp_path / "accounts.toml"}"\n',
        "utf-8",
    )
    return path


def test_create_with_a_catalog_a_pin_and_the_kiosk(tmp_path: Path, runner: CliRunner) -> None:
    repo = tmp_path / "repo"
    build(tmp_path, "tis-libx", "1.0-1", out=repo)
    build(tmp_path, "tis-app", "2.0-1", out=repo, depends="tis-libx")
    build(tmp_path, "tis-autre", "1.0-1", out=repo)
    scan_repository(repo)
    site_config = write_site(tmp_path)
    CatalogStore(tmp_path / "site-data").create(
        PublishedCatalog("maths-6e", "Maths en 6e", "Les logiciels « de géométrie »", ("tis-app",))
    )
    kiosk = tmp_path / "kiosk-build"
    (kiosk / "_internal").mkdir(parents=True)
    (kiosk / "comptoir-kiosk").write_bytes(b"\x7fELF kiosk")
    (kiosk / "_internal" / "base_library.zip").write_bytes(b"PK library")
    (tmp_path / "pin.txt").write_text("4821\n")
    keys, stick = tmp_path / "keys", tmp_path / "stick"
    assert runner.invoke(main, ["bundle", "keys", "new", "--to", str(keys)]).exit_code == 0
    create = ["bundle", "create", "--to", str(stick), "--repo", str(repo), "--keys", str(keys)]
    create += ["--catalog", "maths-6e", "--site-config", str(site_config), "--json"]

    made = runner.invoke(
        main, [*create, "--pin-file", str(tmp_path / "pin.txt"), "--with-kiosk", str(kiosk)]
    )
    assert made.exit_code == 0, made.output
    assert sorted(json.loads(made.output)["copied"]) == [
        "comptoir-kiosk/_internal/base_library.zip",
        "comptoir-kiosk/comptoir-kiosk",
        "tis-app_2.0-1.wapt",
        "tis-libx_1.0-1.wapt",
    ]
    verified = verify_bundle(stick, keys / "root.json", trust=TrustStore.from_path(PKI / "ca.crt"))
    info = verified.info
    assert info.catalogs == (
        {
            "name": "maths-6e",
            "title": "Maths en 6e",
            "description": "Les logiciels « de géométrie »",
            "packages": ["tis-app"],
        },
    )
    assert info.packages == ("tis-app(=2.0-1)", "tis-libx(=1.0-1)")
    assert info.technician_pin is not None and "4821" not in json.dumps(info.technician_pin)
    assert check_technician_pin("4821", info.technician_pin)
    assert not check_technician_pin("1234", info.technician_pin)
    assert verified.targets["comptoir-kiosk/comptoir-kiosk"].kind == "kiosk"
    library = stick / "comptoir-kiosk" / "_internal" / "base_library.zip"
    assert library.read_bytes() == b"PK library"

    # the kiosk is written incrementally too: one file changes, one leaves
    (kiosk / "comptoir-kiosk").write_bytes(b"\x7fELF kiosk v2")
    (kiosk / "_internal" / "base_library.zip").unlink()
    (kiosk / "_internal" / "python3.11.so").write_bytes(b"\x7fELF lib")
    again = runner.invoke(main, [*create, "--with-kiosk", str(kiosk)])
    assert again.exit_code == 0, again.output
    report = json.loads(again.output)
    assert sorted(report["copied"]) == [
        "comptoir-kiosk/_internal/python3.11.so",
        "comptoir-kiosk/comptoir-kiosk",
    ]
    assert report["removed"] == ["comptoir-kiosk/_internal/base_library.zip"]
    info = verify_bundle(stick, keys / "root.json").info
    assert info.technician_pin is not None  # kept from the previous write
    assert check_technician_pin("4821", info.technician_pin)


def test_create_option_errors(tmp_path: Path, runner: CliRunner) -> None:
    repo = tmp_path / "repo"
    build(tmp_path, "tis-libx", "1.0-1", out=repo)
    scan_repository(repo)
    keys = tmp_path / "keys"
    assert runner.invoke(main, ["bundle", "keys", "new", "--to", str(keys)]).exit_code == 0
    create = ["bundle", "create", "--to", str(tmp_path / "s"), "--repo", str(repo)]
    create += ["--keys", str(keys)]

    no_site = runner.invoke(main, [*create, "--catalog", "maths"])
    assert no_site.exit_code == 2 and "--catalog needs --site-config" in no_site.output
    site_config = write_site(tmp_path)
    unknown = runner.invoke(
        main, [*create, "--catalog", "maths", "--site-config", str(site_config)]
    )
    assert unknown.exit_code == 1 and "--catalog maths: catalog 'maths': no such" in unknown.output
    (tmp_path / "pin.txt").write_text("12\n")
    short = runner.invoke(
        main, [*create, "--package", "tis-libx", "--pin-file", str(tmp_path / "pin.txt")]
    )
    assert short.exit_code == 1 and "PIN must have at least 4 characters" in short.output
    prompted = runner.invoke(
        main, [*create, "--package", "tis-libx", "--pin"], input="9876\n9876\n"
    )
    assert prompted.exit_code == 0, prompted.output
    info = verify_bundle(tmp_path / "s", keys / "root.json").info
    assert info.technician_pin is not None and check_technician_pin("9876", info.technician_pin)

    kiosk = tmp_path / "kiosk"
    kiosk.mkdir()
    (kiosk / "AUX.txt").write_bytes(b"x")
    (kiosk / "notes:v2.txt").write_bytes(b"x")
    bad = runner.invoke(main, [*create, "--package", "tis-libx", "--with-kiosk", str(kiosk)])
    assert bad.exit_code == 1 and "names a FAT or exFAT stick cannot hold" in bad.output
    assert "comptoir-kiosk/AUX.txt" in bad.output and "comptoir-kiosk/notes:v2.txt" in bad.output
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = runner.invoke(main, [*create, "--package", "tis-libx", "--with-kiosk", str(empty)])
    assert nothing.exit_code == 1 and "empty; build the kiosk first" in nothing.output
