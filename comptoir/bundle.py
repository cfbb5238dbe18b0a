"""`comptoir bundle`: write signed USB bundles, verify them, make the site's bundle keys."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

import click

from comptoir.common import ProgressBar, emit_json, fails_cleanly, read_passphrase
from usb_bundler import (
    BundleKeys,
    WriteProgress,
    create_or_update_bundle,
    load_bundle_keys,
    new_bundle_keys,
    packages_from_repository,
)
from usb_bundler.keys import ALGORITHMS, ROOT_DAYS
from usb_bundler.writer import DEFAULT_EXPIRES_DAYS
from wapt.bundle import BundleState, VerifiedBundle, verify_bundle
from wapt.errors import BundleKeyError, BundleVerificationError, WaptError
from wapt.resolve import HostProfile
from wapt.trust import TrustStore

_passphrase_file = click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File holding the bundle keys' passphrase (else COMPTOIR_KEY_PASSPHRASE, or a prompt).",
)


def _mib(size: float) -> str:
    return f"{size / 1024**2:,.1f} MiB"


class BytesProgressBar(ProgressBar):
    """`ProgressBar` for a write: bytes done of the total, rate and time left."""

    def progress(self, report: WriteProgress) -> None:
        if not self.enabled or report.total == 0:
            return
        if self._bar is None or self._bar.length != report.total:
            if self._bar is not None:
                self._bar.__exit__(None, None, None)
            self._bar = click.progressbar(
                length=report.total,
                label=self.label,
                file=sys.stderr,
                show_eta=True,
                show_percent=True,
                item_show_func=lambda item: item,
            )
            self._bar.__enter__()
            self._done = 0
        rate = f"{_mib(report.rate)}/s"
        self._bar.update(report.done - self._done, f"{_mib(report.done)} {rate}")
        self._done = report.done


@click.group()
def bundle() -> None:
    """Signed USB bundles of packages for offline sites."""


@bundle.command("create")
@click.option("--to", "dest", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--package", "packages", multiple=True, help="A package (with dependencies).")
@click.option("--group", "groups", multiple=True, help="A group package (with its members).")
@click.option("--repo", required=True, help="Repository: a directory or an http(s) URL.")
@click.option(
    "--keys",
    "keys_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The site's bundle keys (`comptoir bundle keys new`).",
)
@click.option("--expires-days", default=DEFAULT_EXPIRES_DAYS, show_default=True, type=int)
@click.option(
    "--trusted",
    type=click.Path(exists=True, path_type=Path),
    help="Trusted certificates: verify the repository's index entries against them.",
)
@click.option("--name", default="", help="Bundle name shown to technicians.")
@click.option("--creator", default="", help="Who made it (default: the current user).")
@click.option(
    "--arch",
    "architectures",
    multiple=True,
    default=("x64", "x86"),
    show_default=True,
    help="Architectures to resolve for (repeatable).",
)
@click.option("--maturity", "maturities", multiple=True, default=("PROD",), show_default=True)
@click.option("--locale", "locales", multiple=True, default=("fr", "en"), show_default=True)
@click.option("--fat32", is_flag=True, help="Apply FAT32's 4 GiB limit whatever is detected.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@_passphrase_file
@fails_cleanly
def create_command(
    dest: Path,
    packages: tuple[str, ...],
    groups: tuple[str, ...],
    repo: str,
    keys_dir: Path,
    expires_days: int,
    trusted: Path | None,
    name: str,
    creator: str,
    architectures: tuple[str, ...],
    maturities: tuple[str, ...],
    locales: tuple[str, ...],
    fat32: bool,
    as_json: bool,
    passphrase_file: Path | None,
) -> None:
    """Write (or bring up to date) a signed bundle in --to: only changed files are copied."""
    if not packages and not groups:
        raise click.UsageError("give at least one --package or --group")
    keys = _unlock(keys_dir, passphrase_file)
    profiles = [
        HostProfile(architectures=(arch,), maturities=maturities, locales=locales)
        for arch in architectures
    ]
    trust = TrustStore.from_path(trusted) if trusted else None
    selection = packages_from_repository(
        repo, packages=packages, groups=groups, trust=trust, profiles=profiles
    )
    bar = BytesProgressBar("Writing bundle")
    with bar:
        result = create_or_update_bundle(
            dest,
            selection.packages,
            keys,
            name=name,
            creator=creator or getpass.getuser(),
            expires_days=expires_days,
            progress=bar.progress,
            fat32=True if fat32 else None,
            hash_cache=keys_dir / "source-hashes.json",
        )
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        emit_json(
            {
                "path": str(result.path),
                "version": result.version,
                "bundle_id": result.bundle_id,
                "copied": result.copied,
                "unchanged": result.unchanged,
                "removed": result.removed,
                "bytes_copied": result.bytes_copied,
                "warnings": result.warnings,
            }
        )
        return
    click.echo(
        f"{dest}: bundle version {result.version}, {len(selection.packages)} packages "
        f"({len(result.copied)} copied, {_mib(result.bytes_copied)}; {len(result.unchanged)} "
        f"unchanged; {len(result.removed)} files removed)"
    )


def _unlock(keys_dir: Path, passphrase_file: Path | None) -> BundleKeys:
    try:
        return load_bundle_keys(keys_dir, None)
    except BundleKeyError:
        return load_bundle_keys(keys_dir, read_passphrase(passphrase_file))


def _describe(verified: VerifiedBundle) -> dict[str, Any]:
    info = verified.info
    return {
        "path": str(verified.path),
        "id": info.bundle_id,
        "name": info.name,
        "created": info.created,
        "creator": info.creator,
        "version": verified.targets_version,
        "root_version": verified.root_version,
        "expires": verified.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "packages": list(info.packages),
        "files": len(verified.targets),
    }


@bundle.command("verify")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--root",
    "root_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The site's root.json: the root of trust (never the stick's own).",
)
@click.option(
    "--trusted",
    type=click.Path(exists=True, path_type=Path),
    help="Trusted certificates: also verify every package's WAPT signature.",
)
@click.option(
    "--state",
    "state_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Rollback state (highest versions seen), as an agent keeps it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def verify_command(
    path: Path, root_file: Path, trusted: Path | None, state_file: Path | None, as_json: bool
) -> None:
    """Verify the bundle in PATH completely; list every problem. Exit status 0 only if valid."""
    problems: list[dict[str, str]] = []
    verified: VerifiedBundle | None = None
    try:
        state = BundleState.from_json(state_file.read_bytes()) if state_file else None
        trust = TrustStore.from_path(trusted) if trusted else None
        verified = verify_bundle(path, root_file, state=state, trust=trust)
    except BundleVerificationError as e:
        problems = [{"kind": type(p).__name__, "message": str(p)} for p in e.problems]
    except (WaptError, OSError) as e:  # the root of trust, --trusted or --state is unusable
        problems = [{"kind": type(e).__name__, "message": str(e)}]
    if as_json:
        emit_json(
            {
                "valid": verified is not None,
                "bundle": _describe(verified) if verified else None,
                "warnings": list(verified.warnings) if verified else [],
                "problems": problems,
            }
        )
    elif verified is not None:
        d = _describe(verified)
        click.echo(
            f"{path}: valid bundle {d['name']!r} version {d['version']}, "
            f"{len(d['packages'])} packages, {d['files']} files, expires {d['expires'][:10]}"
        )
        for warning in verified.warnings:
            click.echo(f"warning: {warning}", err=True)
    else:
        click.echo(f"{path}: NOT a valid bundle, {len(problems)} problem(s):", err=True)
        for problem in problems:
            click.echo(f"  {problem['kind']}: {problem['message']}", err=True)
    sys.exit(0 if verified is not None else 1)


@bundle.group("keys")
def keys_group() -> None:
    """The site's bundle signing keys."""


@keys_group.command("new")
@click.option("--to", "directory", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--algorithm", type=click.Choice(ALGORITHMS), default="ed25519", show_default=True)
@click.option("--root-days", default=ROOT_DAYS, show_default=True, help="Validity of the root.")
@_passphrase_file
@fails_cleanly
def keys_new_command(
    directory: Path, algorithm: str, root_days: int, passphrase_file: Path | None
) -> None:
    """Make the four bundle keys (encrypted) and root.json, the file agents trust."""
    passphrase = read_passphrase(passphrase_file, confirm=True)
    if not passphrase:
        raise BundleKeyError(
            "a passphrase is required to encrypt the bundle keys: give --passphrase-file or "
            "set COMPTOIR_KEY_PASSPHRASE"
        )
    keys = new_bundle_keys(directory, passphrase, algorithm=algorithm, root_days=root_days)
    click.echo(
        f"{directory}: bundle keys ({algorithm}); configure agents with "
        f"{keys.directory / 'root.json'} (root version {keys.root_version})"
    )
