"""`comptoir repo`: scan a directory of packages into a `Packages` index; show an index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from comptoir.common import ProgressBar, emit_json, fails_cleanly
from wapt.control import PackageEntry
from wapt.repository import load_index, scan_repository
from wapt.trust import TrustStore


def _summary(entry: PackageEntry) -> dict[str, Any]:
    return {
        "package": entry.package,
        "version": entry.version,
        "maturity": entry.maturity,
        "section": entry.section,
        "name": entry.name,
        "signer": entry.signer,
        "signer_fingerprint": entry.signer_fingerprint,
        "filename": entry.filename,
        "size": entry.size,
        "md5sum": entry.md5sum,
    }


@click.group()
def repo() -> None:
    """Build and inspect package repositories."""


@repo.command("scan")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Read every package again.")
@click.option("--include-host-packages", is_flag=True, help="Index host packages too.")
@fails_cleanly
def scan_command(directory: Path, force: bool, include_host_packages: bool) -> None:
    """Write DIRECTORY/Packages, reading only new or changed packages."""
    with ProgressBar("Reading packages") as bar:
        result = scan_repository(
            directory,
            force=force,
            include_host_packages=include_host_packages,
            progress=bar.update,
        )
    for name, error in result.skipped:
        click.echo(f"skipped {name}: {error}", err=True)
    state = "written" if result.written else "unchanged"
    click.echo(
        f"{result.index}: {state}, {len(result.entries)} packages "
        f"({len(result.read)} read, {result.reused} unchanged, {len(result.removed)} removed, "
        f"{len(result.skipped)} skipped)"
    )


@repo.command("show")
@click.argument("location")
@click.option(
    "--trusted",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Trusted certificates: a PEM file or a directory of them.",
)
@click.option("--json", "as_json", is_flag=True, help="Print accepted and discarded entries.")
@click.option("--timeout", default=30.0, show_default=True, help="HTTP time-out in seconds.")
@fails_cleanly
def show_command(location: str, trusted: Path, as_json: bool, timeout: float) -> None:
    """Load and verify the index of LOCATION: a directory, a Packages file or an HTTP(S) URL."""
    index = load_index(location, TrustStore.from_path(trusted), timeout=timeout)
    if as_json:
        emit_json(
            {
                "source": index.source,
                "accepted": [_summary(e) for e in index.entries],
                "discarded": [
                    {**_summary(d.entry), "error": type(d.reason).__name__, "reason": str(d.reason)}
                    for d in index.discarded
                ],
            }
        )
        return
    for entry in index.entries:
        click.echo(
            f"{entry.package:<30} {entry.version:<14} {entry.maturity or '-':<8} {entry.name}"
        )
    for d in index.discarded:
        click.echo(f"DISCARDED {d.entry.filename or d.entry.package}: {d.reason}", err=True)
    click.echo(f"{len(index.entries)} accepted, {len(index.discarded)} discarded")
