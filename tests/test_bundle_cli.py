"""`comptoir bundle`: keys new, create from a repository, verify (exit status, every problem,
JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from comptoir.cli import main
from tests.helpers import PKI
from tests.test_bundle_common import build
from wapt.repository import scan_repository


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
    assert result.exit_code == 2 and "at least one --package or --group" in result.output


def test_verify_with_a_bad_root_file(tmp_path: Path, runner: CliRunner) -> None:
    (tmp_path / "stick").mkdir()
    (tmp_path / "root.json").write_text("{}")
    result = runner.invoke(
        main, ["bundle", "verify", str(tmp_path / "stick"), "--root", str(tmp_path / "root.json")]
    )
    assert result.exit_code == 1 and "BundleMetadataError" in result.output
