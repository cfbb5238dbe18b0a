"""`comptoir keys`: create a certificate authority and signer certificates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from comptoir.common import fails_cleanly, read_passphrase, with_options
from wapt.errors import KeyFileError
from wapt.trust import (
    KeySigner,
    load_certificate_file,
    load_private_key,
    new_ca,
    new_signer,
    save_certificate,
    save_private_key,
)

_passphrase_file = click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File holding the passphrase of the new key (else COMPTOIR_KEY_PASSPHRASE, or a prompt).",
)


def _new_key_passphrase(passphrase_file: Path | None) -> bytes:
    passphrase = read_passphrase(passphrase_file, confirm=True)
    if not passphrase:
        raise KeyFileError(
            "a passphrase is required to encrypt the new private key: give --passphrase-file "
            "or set COMPTOIR_KEY_PASSPHRASE"
        )
    return passphrase


def _make_parents(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)


@click.group()
def keys() -> None:
    """Create keys and certificates (private keys are always encrypted at rest)."""


def _certificate_options(what: str, days: int) -> Callable[[Any], Any]:
    """The options naming a new certificate and where its key and certificate go."""
    return with_options(
        [
            click.option("--cn", "common_name", required=True, help=f"Common name of the {what}."),
            click.option("--org", "organization", default="", help="Organisation (O)."),
            click.option("--country", default="", help="Two-letter country code (C)."),
            click.option("--days", default=days, show_default=True, help="Validity in days."),
            click.option("--key", "key_path", required=True, type=click.Path(path_type=Path)),
            click.option("--cert", "cert_path", required=True, type=click.Path(path_type=Path)),
            _passphrase_file,
        ]
    )


@keys.command("new-ca")
@_certificate_options("authority", 3650)
@fails_cleanly
def new_ca_command(
    common_name: str,
    organization: str,
    country: str,
    days: int,
    key_path: Path,
    cert_path: Path,
    passphrase_file: Path | None,
) -> None:
    """Create a certificate authority: the trust anchor that agents are configured with."""
    passphrase = _new_key_passphrase(passphrase_file)
    _make_parents(key_path, cert_path)
    key, cert = new_ca(common_name, organization=organization, country=country, days=days)
    save_private_key(key, key_path, passphrase)
    save_certificate([cert], cert_path)
    click.echo(f"{cert_path}: {cert.cn} (sha256 {cert.fingerprint})")


@keys.command("new-signer")
@_certificate_options("signer", 1095)
@click.option(
    "--code-signing/--deployer",
    default=True,
    show_default=True,
    help="Code signing may sign packages with setup.py; a deployer only control-only ones.",
)
@click.option("--ca-key", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--ca-cert", required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--ca-passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File holding the authority key's passphrase.",
)
@fails_cleanly
def new_signer_command(
    common_name: str,
    organization: str,
    country: str,
    days: int,
    code_signing: bool,
    ca_key: Path,
    ca_cert: Path,
    ca_passphrase_file: Path | None,
    key_path: Path,
    cert_path: Path,
    passphrase_file: Path | None,
) -> None:
    """Create a signer certificate issued by an authority; writes the chain to --cert."""
    authority = load_certificate_file(ca_cert)
    try:
        authority_key = load_private_key(ca_key, None)
    except KeyFileError:
        authority_key = load_private_key(ca_key, read_passphrase(ca_passphrase_file))
    KeySigner(authority_key, authority)  # the key must be the authority's
    passphrase = _new_key_passphrase(passphrase_file)
    _make_parents(key_path, cert_path)
    key, cert = new_signer(
        authority_key,
        authority[0],
        common_name,
        code_signing=code_signing,
        organization=organization,
        country=country,
        days=days,
    )
    save_private_key(key, key_path, passphrase)
    save_certificate([cert, *authority], cert_path)
    role = "code signing" if code_signing else "deployer"
    click.echo(f"{cert_path}: {cert.cn} ({role}, sha256 {cert.fingerprint})")
