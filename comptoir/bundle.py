"""`comptoir bundle`: write signed USB bundles, verify them, make the site's bundle keys."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

import click

from comptoir.common import (
    ProgressBar,
    SiteConfigError,
    emit_json,
    fails_cleanly,
    load_site_settings,
    read_passphrase,
    with_options,
)
from usb_bundler import (
    BundleKeys,
    WriteProgress,
    create_or_update_bundle,
    load_bundle_keys,
    new_bundle_keys,
    packages_from_repository,
)
from usb_bundler.keys import ALGORITHMS, ROOT_DAYS
from usb_bundler.writer import DEFAULT_EXPIRES_DAYS, BundleFile, kiosk_files
from wapt.bundle import BundleState, VerifiedBundle, verify_bundle
from wapt.errors import BundleError, BundleKeyError, BundleVerificationError, WaptError
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


MIN_PIN = 4

profile_options = with_options(
    [
        click.option(
            "--arch",
            "architectures",
            multiple=True,
            default=("x64", "x86"),
            show_default=True,
            help="Architectures to resolve for (repeatable).",
        ),
        click.option(
            "--maturity", "maturities", multiple=True, default=("PROD",), show_default=True
        ),
        click.option("--locale", "locales", multiple=True, default=("fr", "en"), show_default=True),
    ]
)


def host_profiles(
    architectures: tuple[str, ...], maturities: tuple[str, ...], locales: tuple[str, ...]
) -> list[HostProfile]:
    """One host profile per architecture: what `--arch`, `--maturity`, `--locale` ask for."""
    return [
        HostProfile(architectures=(arch,), maturities=maturities, locales=locales)
        for arch in architectures
    ]


def site_catalogs(site_config: Path, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The published catalogs `names` of the site: name, title, description, packages.

    Raises:
        SiteConfigError: the site or a catalog cannot be read (the message names it).
    """
    from portal.site.catalogs import CatalogStore
    from portal.site.model import ModelError
    from portal.site.storage import StorageError

    store = CatalogStore(load_site_settings(site_config, option="--site-config").data_dir)
    found = []
    for name in names:
        try:
            catalog = store.get(name)
        except (ModelError, LookupError, OSError, StorageError) as e:
            raise SiteConfigError(f"--catalog {name}: {e}") from e
        found.append(catalog.to_json())
    return found


def site_requests(site_config: Path) -> list[str]:
    """Every package the site needs: assigned (available, required, at shutdown) to a group
    or a host, or listed in a published catalog; sorted, once each.

    Raises:
        SiteConfigError: the site's stores cannot be read.
    """
    from portal.site.assignments import AssignmentStore
    from portal.site.catalogs import CatalogStore
    from portal.site.storage import StorageError

    site = load_site_settings(site_config, option="--site-config")
    try:
        assigned = [
            a.package
            for a in AssignmentStore(site.data_dir).assignments()
            if a.intent != "uninstall"
        ]
        listed = [p for c in CatalogStore(site.data_dir).list() for p in c.packages]
    except (ValueError, OSError, StorageError) as e:
        raise SiteConfigError(
            f"--site-config {site_config}: cannot read the site's stores: {e}"
        ) from e
    return sorted(set(assigned) | set(listed))


def _technician_pin(pin: bool, pin_file: Path | None) -> str | None:
    if pin_file is not None:
        text = pin_file.read_text("utf-8").splitlines()
        value = text[0].strip() if text else ""
    elif pin:
        value = str(
            click.prompt("Technician PIN", hide_input=True, confirmation_prompt=True, err=True)
        ).strip()
    else:
        return None
    if len(value) < MIN_PIN:
        raise BundleError(f"the technician PIN must have at least {MIN_PIN} characters")
    return value


@click.group()
def bundle() -> None:
    """Signed USB bundles of packages for offline sites."""


@bundle.command("create")
@click.option("--to", "dest", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--package", "packages", multiple=True, help="A package (with dependencies).")
@click.option("--group", "groups", multiple=True, help="A group package (with its members).")
@click.option(
    "--catalog",
    "catalogs",
    multiple=True,
    help="A published catalog of the site (needs --site-config): its packages and details.",
)
@click.option(
    "--site-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The site server's portal settings (with [site]): where --catalog is read.",
)
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
@profile_options
@click.option("--fat32", is_flag=True, help="Apply FAT32's 4 GiB limit whatever is detected.")
@click.option("--pin", is_flag=True, help="Ask for a technician PIN (twice) for the kiosk.")
@click.option(
    "--pin-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File whose first line is the technician PIN.",
)
@click.option(
    "--with-kiosk",
    "kiosk_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A built kiosk folder to put on the stick (under comptoir-kiosk/, signed like packages).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@_passphrase_file
@fails_cleanly
def create_command(
    dest: Path,
    packages: tuple[str, ...],
    groups: tuple[str, ...],
    catalogs: tuple[str, ...],
    site_config: Path | None,
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
    pin: bool,
    pin_file: Path | None,
    kiosk_dir: Path | None,
    as_json: bool,
    passphrase_file: Path | None,
) -> None:
    """Write (or bring up to date) a signed bundle in --to: only changed files are copied."""
    if not packages and not groups and not catalogs:
        raise click.UsageError("give at least one --package, --group or --catalog")
    if catalogs and site_config is None:
        raise click.UsageError("--catalog needs --site-config (the site server's settings)")
    details = site_catalogs(site_config, catalogs) if site_config and catalogs else []
    packages = (*packages, *(p for c in details for p in c["packages"]))
    technician_pin = _technician_pin(pin, pin_file)
    files: list[BundleFile] = kiosk_files(kiosk_dir) if kiosk_dir else []
    keys = _unlock(keys_dir, passphrase_file)
    profiles = host_profiles(architectures, maturities, locales)
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
            technician_pin=technician_pin,
            catalogs=details,
            files=files,
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


@bundle.command("collect")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--site-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The site server's settings file (else COMPTOIR_PORTAL_CONFIG).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what became of each file as JSON.")
def collect_command(path: Path, site_config: Path | None, as_json: bool) -> None:
    """Import the host reports a stick brought back (PATH/reports/*.json) into the site.

    Every file is verified; bad ones are listed, never stop the others. Exit status 0 only if
    no file was refused.
    """
    from portal.site.audit import AuditError, AuditLog
    from portal.site.hosts import HostStoreError, collect_reports, make_host_store

    try:
        site = load_site_settings(site_config, option="--site-config")
        with ProgressBar("Reports") as bar:
            result = collect_reports(
                make_host_store(site),
                path,
                audit_log=AuditLog(site.data_dir / "audit"),
                who=getpass.getuser(),
                progress=bar.update,
            )
    except (SiteConfigError, HostStoreError, AuditError) as e:
        click.echo(f"comptoir: {e}", err=True)
        sys.exit(1)
    if as_json:
        emit_json(
            [
                {
                    "file": f.name,
                    "outcome": f.outcome,
                    "host": f.host_uuid,
                    "seq": f.seq,
                    "message": f.message,
                }
                for f in result.files
            ]
        )
    else:
        counts = ", ".join(f"{result.count(o)} {o}" for o in ("taken", "registered", "stale"))
        click.echo(
            f"{path}: {len(result.files)} report(s): {counts}, {result.count('refused')} refused"
        )
        for item in result.registered:
            click.echo(f"  new host (trusted on first use): {item.host_uuid} ({item.name})")
        for item in result.files:
            if item.outcome == "stale":
                click.echo(f"  older than the site's: {item.name}: {item.message}")
        for item in result.files:
            if item.outcome == "refused":
                click.echo(f"  REFUSED {item.name}: {item.message}", err=True)
    sys.exit(1 if result.count("refused") else 0)
