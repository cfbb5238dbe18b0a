"""The `comptoir` command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from comptoir.cli import main
from tests.helpers import PKI, write_source

CA = str(PKI / "ca.crt")


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_verify_json_for_a_valid_package(wapt_fixtures: Path) -> None:
    path = wapt_fixtures / "packages" / "acme-app_3.0.1-1_PROD.wapt"
    code, out, _ = run("package", "verify", str(path), "--trusted", CA, "--json")
    assert code == 0
    assert json.loads(out) == {
        "ok": True,
        "package": "acme-app",
        "version": "3.0.1-1",
        "maturity": "PROD",
        "signer": "Acme Packager",
        "signer_fingerprint": "3f5029b48b352c80e50048f963b48738a69c06df1e5aaf61eb3e0d00ac87f7c6",
        "problems": [],
    }


def test_verify_json_lists_every_problem(wapt_fixtures: Path) -> None:
    path = wapt_fixtures / "packages" / "acme-rogue_1.0-1_PROD.wapt"
    code, out, _ = run("package", "verify", str(path), "--trusted", CA, "--json")
    assert code == 1
    verdict = json.loads(out)
    assert verdict["ok"] is False and verdict["package"] == "acme-rogue"
    assert [p["error"] for p in verdict["problems"]] == ["UntrustedCertificateError"]


def test_verify_accepts_a_trust_directory(wapt_fixtures: Path, tmp_path: Path) -> None:
    shutil.copy(PKI / "ca.crt", tmp_path / "ca.crt")
    path = wapt_fixtures / "packages" / "acme-hello_1.0.0-1_PROD_fr.wapt"
    code, out, _ = run("package", "verify", str(path), "--trusted", str(tmp_path))
    assert code == 0 and "OK acme-hello 1.0.0-1 PROD" in out


def test_verify_of_garbage_is_an_error_not_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "x.wapt"
    bad.write_bytes(b"garbage")
    code, _, err = run("package", "verify", str(bad), "--trusted", CA)
    assert code == 1 and "NotAZipError" in err


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [("1.2-1", "1.2.0-1", "-1"), ("1.0-10", "1.0-9", "1"), ("1.0-01", "1.0-1", "0")],
)
def test_compare_versions(a: str, b: str, expected: str) -> None:
    assert run("package", "compare-versions", a, b)[:2] == (0, expected + "\n")


def test_keys_build_sign_scan_show(tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text("s3cret phrase\n")
    pf = ("--passphrase-file", str(secret))
    k = tmp_path / "k"
    code, out, err = run(
        "keys", "new-ca", "--cn", "Test CA", "--key", f"{k}/ca.key", "--cert", f"{k}/ca.crt", *pf
    )
    assert code == 0, err
    assert "s3cret" not in (k / "ca.key").read_text() and "ENCRYPTED" in (k / "ca.key").read_text()
    common = (
        "--ca-key",
        f"{k}/ca.key",
        "--ca-cert",
        f"{k}/ca.crt",
        "--ca-passphrase-file",
        str(secret),
        *pf,
    )
    assert (
        run(
            "keys",
            "new-signer",
            "--cn",
            "Dev",
            "--code-signing",
            *common,
            "--key",
            f"{k}/dev.key",
            "--cert",
            f"{k}/dev.crt",
        )[0]
        == 0
    )
    assert (
        run(
            "keys",
            "new-signer",
            "--cn",
            "Prod",
            *common,
            "--key",
            f"{k}/prod.key",
            "--cert",
            f"{k}/prod.crt",
        )[0]
        == 0
    )

    source = write_source(tmp_path, "tis-cli", "1.0-1", files={"f.txt": b"hello"})
    repo = tmp_path / "repo"
    code, out, err = run(
        "package",
        "build",
        str(source),
        "--key",
        f"{k}/dev.key",
        "--cert",
        f"{k}/dev.crt",
        *pf,
        "--to",
        str(repo),
        "--maturity",
        "PREPROD",
    )
    assert code == 0, err
    built = Path(out.strip())
    assert built.name == "tis-cli_1.0-1_PREPROD.wapt"

    code, out, err = run(
        "package",
        "sign",
        str(built),
        "--key",
        f"{k}/prod.key",
        "--cert",
        f"{k}/prod.crt",
        *pf,
        "--trusted",
        f"{k}/ca.crt",
        "--to",
        str(repo),
        "--maturity",
        "PROD",
    )
    assert code == 0, err
    assert Path(out.strip()).name == "tis-cli_1.0-1_PROD.wapt"

    assert run("repo", "scan", str(repo))[0] == 0
    code, out, _ = run("repo", "show", str(repo), "--trusted", f"{k}/ca.crt", "--json")
    shown = json.loads(out)
    assert sorted(e["maturity"] for e in shown["accepted"]) == ["PREPROD", "PROD"]
    assert shown["discarded"] == []
    code, out, _ = run("repo", "show", str(repo), "--trusted", CA, "--json")
    assert json.loads(out)["accepted"] == [] and len(json.loads(out)["discarded"]) == 2


def test_wrong_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text("right")
    run(
        "keys",
        "new-ca",
        "--cn",
        "CA",
        "--key",
        f"{tmp_path}/ca.key",
        "--cert",
        f"{tmp_path}/ca.crt",
        "--passphrase-file",
        str(secret),
    )
    source = write_source(tmp_path, "tis-x", "1-1", setup=False)
    code, _, err = run(
        "package",
        "build",
        str(source),
        "--key",
        f"{tmp_path}/ca.key",
        "--cert",
        f"{tmp_path}/ca.crt",
        "--to",
        str(tmp_path),
        env={"COMPTOIR_KEY_PASSPHRASE": "Zx9-not-it-Q"},
    )
    assert code == 1 and "ca.key: wrong passphrase" in err and "Zx9-not-it-Q" not in err


def test_console_script_is_installed(wapt_fixtures: Path) -> None:
    exe = Path(sys.executable).parent / "comptoir"
    path = wapt_fixtures / "packages" / "acme-broken_1.0-1_PROD.wapt"
    proc = subprocess.run(
        [str(exe), "package", "verify", str(path), "--trusted", CA, "--json"],
        capture_output=True,
        text=True,
        env={**os.environ},
        check=False,
    )
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["problems"][0]["error"] == "ManifestSignatureError"


def test_demo_builds_a_verified_catalog(tmp_path: Path) -> None:
    code, out, err = run("demo", "--to", str(tmp_path / "demo"))
    assert code == 0, err
    assert "10 packages verified" in out and "0 discarded" in out
    assert "demo-salle-101" in out and "Atlas du monde" in out


def test_demo_serves_the_agent_and_the_portal(tmp_path: Path) -> None:
    """`make demo` runs this with --serve (until Ctrl-C); --check stops once a teacher logs in."""
    from tests.slapd import free_port

    exe = Path(sys.executable).parent / "comptoir"
    proc = subprocess.run(
        [
            str(exe),
            "demo",
            "--to",
            str(tmp_path / "demo"),
            "--serve",
            "--check",
            "--agent-port",
            str(free_port()),
            "--portal-port",
            str(free_port()),
            "--site-port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "check: portal health 200" in proc.stdout
    assert "demo-geometrie" in proc.stdout, "marie (profs-maths) is offered the maths software"
    assert (tmp_path / "demo" / "installed" / "demo-chronometre").is_dir(), "assigned by room 101"
    # the site server: the admin signed in and saw the seeded site on the dashboard (French)
    assert "Site administration: open http://127.0.0.1:" in proc.stdout
    assert "check: admin signed in on the site server" in proc.stdout
    for item in ("Paquets en production: 7", "Paquets en qualification: 1", "Groupes de postes: 1"):
        assert item in proc.stdout, proc.stdout
    assert "Catalogues publiés: 1" in proc.stdout
    # the demo machine registered with the site server and reported what it installed
    assert "check: comptoir-demo-poste reported to the site server: 3 packages" in proc.stdout
    site = tmp_path / "demo" / "site"
    assert (site / "keys" / "production.pem").stat().st_mode & 0o077 == 0
    assert (site / "repository" / "demo-atlas_2.1-1_PREPROD.wapt").is_file()
    assert (site / "repository" / "wapt-host" / "comptoir-demo-poste.wapt").is_file()
    # the teacher side still reads the demo repository, not the site's
    assert 'path = "repo"' in (tmp_path / "demo" / "agent.toml").read_text("utf-8")


def test_demo_site_admin_check_fails_on_a_refused_login(tmp_path: Path) -> None:
    """The demo's admin check passes only when the sign-in really reaches the dashboard."""
    from comptoir.demo_site import _serving, check_admin_login
    from tests.site_harness import ADMIN, TEACHER, make_site
    from tests.slapd import free_port

    site = make_site(tmp_path)
    with _serving(site.app(), free_port()) as url:
        assert any(item.startswith("Catalogues publiés") for item in check_admin_login(url, *ADMIN))
        with pytest.raises(RuntimeError, match=r"refused \(401\)"):
            check_admin_login(url, ADMIN[0], "wrong")
        with pytest.raises(RuntimeError, match=r"refused \(403\)"):
            check_admin_login(url, *TEACHER)  # not in the admin group
    site.stop()
