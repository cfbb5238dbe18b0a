"""`comptoir package`: build, sign, verify and show `.wapt` files; compare versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from comptoir.common import emit_json, fails_cleanly, load_signer, with_options
from wapt.control import format_control
from wapt.errors import VerificationError, VersionError, WaptError
from wapt.package import build_package, read_control, resign_package, verify_package
from wapt.trust import TrustStore
from wapt.version import compare_versions

_trusted = click.option(
    "--trusted",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Trusted certificates: a PEM file or a directory of them.",
)
_signer_options = [
    click.option("--key", required=True, type=click.Path(exists=True, path_type=Path)),
    click.option(
        "--cert",
        required=True,
        type=click.Path(exists=True, path_type=Path),
        help="The signer's certificate (chain, leaf first).",
    ),
    click.option(
        "--passphrase-file",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="File holding the key passphrase (else COMPTOIR_KEY_PASSPHRASE, or a prompt).",
    ),
]


_output_options = [
    click.option("--to", "dest", required=True, type=click.Path(file_okay=False, path_type=Path)),
    click.option("--overwrite", is_flag=True, help="Replace an existing file of the same name."),
]

_with_signer = with_options(_signer_options)
_with_output = with_options(_output_options)


@click.group()
def package() -> None:
    """Build, sign, verify and inspect WAPT packages."""


@package.command("build")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_with_signer
@_with_output
@click.option("--maturity", help="Set the maturity (DEV, PREPROD, PROD) before signing.")
@fails_cleanly
def build_command(
    source: Path,
    key: Path,
    cert: Path,
    passphrase_file: Path | None,
    dest: Path,
    maturity: str | None,
    overwrite: bool,
) -> None:
    """Build and sign a package from SOURCE, a directory holding WAPT/control."""
    signer = load_signer(key, cert, passphrase_file)
    dest.mkdir(parents=True, exist_ok=True)
    overrides = {"maturity": maturity} if maturity else None
    path = build_package(source, signer, dest, overrides=overrides, overwrite=overwrite)
    click.echo(str(path))


@package.command("sign")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_with_signer
@_trusted
@_with_output
@click.option("--maturity", help="New maturity, e.g. PROD for a promotion.")
@fails_cleanly
def sign_command(
    file: Path,
    key: Path,
    cert: Path,
    passphrase_file: Path | None,
    trusted: Path,
    dest: Path,
    maturity: str | None,
    overwrite: bool,
) -> None:
    """Re-sign FILE (verified first against --trusted) with another key and maturity."""
    signer = load_signer(key, cert, passphrase_file)
    dest.mkdir(parents=True, exist_ok=True)
    trust = TrustStore.from_path(trusted)
    path = resign_package(file, signer, dest, trust, maturity=maturity, overwrite=overwrite)
    click.echo(str(path))


@package.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_trusted
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def verify_command(file: Path, trusted: Path, as_json: bool) -> None:
    """Verify FILE completely; exit 0 only when it is valid and trusted."""
    result: dict[str, Any] = {
        "ok": False,
        "package": None,
        "version": None,
        "maturity": None,
        "signer": None,
        "signer_fingerprint": None,
        "problems": [],
    }
    try:
        trust = TrustStore.from_path(trusted)
        verified = verify_package(file, trust)
    except WaptError as e:
        problems = e.problems if isinstance(e, VerificationError) else [e]
        result["problems"] = [{"error": type(p).__name__, "message": str(p)} for p in problems]
        try:
            entry = read_control(file)
            result.update(
                package=entry.package,
                version=entry.version,
                maturity=entry.maturity,
                signer=entry.signer,
                signer_fingerprint=entry.signer_fingerprint,
            )
        except (WaptError, OSError):
            pass
        if as_json:
            emit_json(result)
        else:
            click.echo(f"{file.name}: INVALID", err=True)
            for p in result["problems"]:
                click.echo(f"  {p['error']}: {p['message']}", err=True)
        raise SystemExit(1) from None
    entry = verified.entry
    result.update(
        ok=True,
        package=entry.package,
        version=entry.version,
        maturity=entry.maturity,
        signer=verified.signer.cn,
        signer_fingerprint=verified.signer.fingerprint,
    )
    if as_json:
        emit_json(result)
    else:
        click.echo(
            f"{file.name}: OK {entry.package} {entry.version} {entry.maturity or '(no maturity)'}"
            f", signed by {verified.signer.cn} ({verified.signer.fingerprint[:16]}…)"
        )


@package.command("show")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the control fields as JSON.")
@fails_cleanly
def show_command(file: Path, as_json: bool) -> None:
    """Print the control data of FILE, NOT verified (use `verify` for that)."""
    entry = read_control(file)
    if as_json:
        emit_json(dict(entry.fields))
    else:
        click.echo(format_control(entry))


@package.command("compare-versions")
@click.argument("a")
@click.argument("b")
def compare_command(a: str, b: str) -> None:
    """Print -1, 0 or 1 as version A is older than, equal to or newer than B (WAPT's order)."""
    try:
        click.echo(str(compare_versions(a, b)))
    except VersionError as e:
        click.echo(f"comptoir: {e}", err=True)
        raise SystemExit(1) from None
