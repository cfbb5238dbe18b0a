"""`comptoir repo`: scan a directory of packages into a `Packages` index; show an index; keep a
site mirror in step with the académie repository (`sync`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from comptoir.bundle import BytesProgressBar, host_profiles, profile_options, site_requests
from comptoir.common import ProgressBar, emit_json, fails_cleanly
from usb_bundler.sync import (
    parse_rate,
    parse_schedule,
    read_requests_file,
    sync_repository,
)
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


@repo.command("sync")
@click.option("--from", "upstream", required=True, help="The académie repository (http(s) URL).")
@click.option("--to", "dest", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--trusted",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Trusted certificates: the index and every downloaded package are verified.",
)
@click.option("--package", "packages", multiple=True, help="A package (with dependencies).")
@click.option("--group", "groups", multiple=True, help="A group package (with its members).")
@click.option(
    "--requests",
    "requests_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File of requests, one a line (`group:NAME` for a group).",
)
@click.option(
    "--site-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The site server's portal settings: also mirror every package assigned or published.",
)
@click.option("--max-rate", help="Bandwidth cap in bytes per second, e.g. 2M or 500K.")
@click.option(
    "--window",
    "windows",
    multiple=True,
    help="When bytes may move, e.g. 22:00-06:00 or 'sat,sun 00:00-24:00' (repeatable).",
)
@click.option("--days", help="Days of the windows that name none, e.g. mon-fri or sat,sun.")
@click.option("--wait", is_flag=True, help="Outside the window, wait for it instead of exiting.")
@profile_options
@click.option("--timeout", default=60.0, show_default=True, help="HTTP time-out in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@fails_cleanly
def sync_command(
    upstream: str,
    dest: Path,
    trusted: Path,
    packages: tuple[str, ...],
    groups: tuple[str, ...],
    requests_file: Path | None,
    site_config: Path | None,
    max_rate: str | None,
    windows: tuple[str, ...],
    days: str | None,
    wait: bool,
    architectures: tuple[str, ...],
    maturities: tuple[str, ...],
    locales: tuple[str, ...],
    timeout: float,
    as_json: bool,
) -> None:
    """Mirror into --to the packages this site needs from --from: only changed bytes, resumable,
    verified, switched over atomically."""
    wanted_packages, wanted_groups = list(packages), list(groups)
    if requests_file is not None:
        more_packages, more_groups = read_requests_file(requests_file)
        wanted_packages += more_packages
        wanted_groups += more_groups
    if site_config is not None:
        wanted_packages += site_requests(site_config)
    if not wanted_packages and not wanted_groups:
        raise click.UsageError(
            "give at least one --package, --group, --requests file or --site-config with "
            "assignments or catalogs"
        )
    profiles = host_profiles(architectures, maturities, locales)
    bar = BytesProgressBar("Downloading")
    with bar:
        result = sync_repository(
            upstream,
            dest,
            TrustStore.from_path(trusted),
            packages=wanted_packages,
            groups=wanted_groups,
            profiles=profiles,
            max_rate=parse_rate(max_rate) if max_rate else None,
            schedule=parse_schedule(windows, days),
            wait=wait,
            timeout=timeout,
            progress=bar.progress,
            notice=lambda message: click.echo(message, err=True),
        )
    if as_json:
        emit_json(
            {
                "path": str(result.path),
                "packages": result.packages,
                "downloaded": result.downloaded,
                "unchanged": result.unchanged,
                "removed": result.removed,
                "bytes_downloaded": result.bytes_downloaded,
                "bytes_resumed": result.bytes_resumed,
                "switched": result.switched,
            }
        )
        return
    click.echo(
        f"{dest}: {len(result.packages)} packages ({len(result.downloaded)} downloaded, "
        f"{result.bytes_downloaded / 1024**2:,.1f} MiB; {len(result.unchanged)} unchanged; "
        f"{len(result.removed)} removed)" + ("" if result.switched else "; index unchanged")
    )
