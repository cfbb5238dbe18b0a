"""`comptoir site`: the site server's commands (backup and restore here; more join the group).

They read the portal's settings file (`--config`, or `COMPTOIR_PORTAL_CONFIG`) for its
`[site]` table. `backup` signs with the site's deployer key; `restore` trusts the certificates
given with `--trusted` (default: the configured `trusted_certs`), never the archive's own.

Each command is audited in the site's log like an admin's action on the web (`site.init`,
`site.publish`, `site.backup`, `site.restore`; failures too): who is the operating-system
user running it, role admin, from `cli@<hostname>`. A restore is audited in the restored
data directory: its log goes on from the backup's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import click

from comptoir.common import ProgressBar, SiteConfigError, load_site_settings

# portal.settings.CONFIG_ENV; spelled out so that `comptoir --help` does not import Flask
CONFIG_ENV = "COMPTOIR_PORTAL_CONFIG"

_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar=CONFIG_ENV,
    help=f"The site server's TOML settings, with a [site] table; also {CONFIG_ENV}.",
)


def _site_settings(config_path: Path | None, *, required: bool = True) -> Any:
    """The `[site]` settings of the file (None when there is no file and none is required;
    click fills `--config` from the environment)."""
    if config_path is None:
        if required:
            raise click.UsageError(
                f"give --config (or set {CONFIG_ENV}): a file with a [site] table"
            )
        return None
    try:
        return load_site_settings(config_path)
    except SiteConfigError as e:
        raise click.ClickException(str(e)) from e


def _audit(
    data_dir: Path,
    action: str,
    target: str,
    *,
    outcome: Literal["ok", "failed"] = "ok",
    details: str = "",
) -> None:
    """Record a command-line action in the audit log of `data_dir` (who: the OS user).

    Raises:
        click.ClickException: the audit log cannot be written (the action is then reported
            as not fully done: an unaudited admin action must not pass silently).
    """
    import getpass
    import socket
    from datetime import UTC, datetime

    from portal.site.audit import AuditError, AuditEvent, AuditLog

    try:
        AuditLog(data_dir / "audit").record(
            AuditEvent.clipped(
                when=datetime.now(UTC),
                who=getpass.getuser(),
                role="admin",
                action=action,
                target=target,
                where=f"cli@{socket.gethostname()}",
                outcome=outcome,
                details=details,
            )
        )
    except (AuditError, OSError) as e:
        raise click.ClickException(f"{data_dir / 'audit'}: cannot audit {action}: {e}") from e


@click.group()
def site() -> None:
    """Run and maintain a site server (admin side)."""


@site.command("backup")
@_config_option
@click.option(
    "--to",
    "target",
    help="A directory or an http(s) URL (PUT); default: the configured backup_target.",
)
def backup_command(config_path: Path | None, target: str | None) -> None:
    """Back the site's state up, signed with the site's deployer key."""
    from portal.site.backup import BackupError, backup, load_backup_signer

    settings = _site_settings(config_path)
    where = target or settings.backup_target or ""
    try:
        with ProgressBar("Backing up") as bar:
            result = backup(settings, load_backup_signer(settings), target, progress=bar.update)
    except BackupError as e:
        _audit(settings.data_dir, "site.backup", where, outcome="failed", details=str(e))
        raise click.ClickException(str(e)) from e
    _audit(
        settings.data_dir,
        "site.backup",
        where,
        details=f"{result.location}/{result.archive}: {result.files} files",
    )
    click.echo(f"{result.location}/{result.archive}: {result.files} files, {result.size} bytes")
    if result.left_out:
        click.echo("left out (secrets and keys): " + ", ".join(result.left_out), err=True)


@site.command("restore")
@_config_option
@click.option("--from", "target", required=True, help="Where the backups are: a directory or URL.")
@click.option(
    "--to",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The new data directory (must not exist, or be empty).",
)
@click.option("--site", "site_name", help="The site's name (default: the configured one).")
@click.option(
    "--trusted",
    type=click.Path(exists=True, path_type=Path),
    help="Certificates the backup must chain to (default: the configured trusted_certs).",
)
def restore_command(
    config_path: Path | None,
    target: str,
    data_dir: Path,
    site_name: str | None,
    trusted: Path | None,
) -> None:
    """Rebuild a site's data directory from its latest backup, after verifying it."""
    from portal.site.backup import BackupError, restore

    settings = _site_settings(config_path, required=trusted is None or site_name is None)
    name = site_name or settings.name
    trusted_path = trusted or settings.trusted_certs
    if not target.startswith(("http://", "https://")):
        target = str(Path(target).absolute())
    try:
        result = restore(target, name, data_dir, trusted_path)
    except BackupError as e:
        if settings is not None:  # nothing was restored: the running site's log says it
            _audit(settings.data_dir, "site.restore", target, outcome="failed", details=str(e))
        raise click.ClickException(str(e)) from e
    _audit(
        result.data_dir,
        "site.restore",
        target,
        details=f"{result.archive} (made {result.created}, signed by {result.signer}): "
        f"{result.files} files into {result.data_dir}",
    )
    click.echo(
        f"{result.data_dir}: {result.files} files restored from {result.archive} "
        f"(made {result.created}, signed by {result.signer})"
    )
    click.echo(
        "Put the site's private keys and secrets back (they are never in a backup).", err=True
    )


_SKELETON = """\
# The site server's settings (written by `comptoir site init`; docs/portal.md).
# Serve it with: comptoir portal serve --config {config}
[site]
data_dir = "{data_dir}"
repository_dir = "{repository_dir}"
key_passphrase_file = "{passphrase_file}"
name = "{name}"
package_prefix = "{prefix}"
admin_group = "comptoir-admins"
# Admins log in with the directory (uncomment and fill in), or with local accounts.
# accounts_file = "accounts.toml"
# [site.ldap]
# uri = "ldaps://ldap.example.org"
# base_dn = "dc=example,dc=org"
# user_base = "ou=people,dc=example,dc=org"
# group_base = "ou=groups,dc=example,dc=org"
"""


@site.command("init")
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The site's state directory (its keys go to DATA_DIR/keys).",
)
@click.option(
    "--repository",
    "repository_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The site repository, served to the workstations.",
)
@click.option("--name", default="site", show_default=True, help="The site's name.")
@click.option(
    "--prefix", default="site", show_default=True, help="First part of generated package names."
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The key passphrase; made with a random one if absent "
    "(default: DATA_DIR/private/key_passphrase).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a settings skeleton here (never over an existing file).",
)
def init_command(
    data_dir: Path,
    repository_dir: Path,
    name: str,
    prefix: str,
    passphrase_file: Path | None,
    config_path: Path | None,
) -> None:
    """Make a new site's keys (never overwriting any) and a settings skeleton."""
    import secrets

    from portal.site.keys import SiteKeyError, init_site_keys
    from portal.site.model import ModelError, check_name
    from wapt.fsutil import write_atomic

    try:
        check_name(name, "site name")
        check_name(prefix, "package prefix")
    except ModelError as e:
        raise click.BadParameter(str(e)) from e
    data_dir, repository_dir = data_dir.absolute(), repository_dir.absolute()
    passphrase_file = (passphrase_file or data_dir / "private" / "key_passphrase").absolute()
    if not passphrase_file.exists():
        passphrase_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(
            passphrase_file, secrets.token_urlsafe(32).encode() + b"\n", mode=0o600, overwrite=False
        )
        click.echo(f"{passphrase_file}: a new random key passphrase (keep a copy in a safe)")
    passphrase = passphrase_file.read_bytes().rstrip(b"\r\n")
    repository_dir.mkdir(parents=True, exist_ok=True)
    try:
        keys = init_site_keys(data_dir / "keys", passphrase, site_name=name)
    except SiteKeyError as e:
        _audit(data_dir, "site.init", name, outcome="failed", details=str(e))
        raise click.ClickException(str(e)) from e
    _audit(
        data_dir,
        "site.init",
        name,
        details="made: " + (", ".join(keys.created) or "nothing (every key was there)"),
    )
    for created in keys.created:
        click.echo(f"{keys.keys_dir / created}")
    if not keys.created:
        click.echo(f"{keys.keys_dir}: every key was already there; nothing changed")
    click.echo(f"production machines trust: {keys.production_bundle}")
    click.echo(f"qualification machines trust: {keys.qualification_bundle}")
    if config_path is not None:
        text = _SKELETON.format(
            config=config_path,
            data_dir=data_dir,
            repository_dir=repository_dir,
            passphrase_file=passphrase_file,
            name=name,
            prefix=prefix,
        )
        try:
            write_atomic(config_path, text.encode("utf-8"), mode=0o640, overwrite=False)
        except FileExistsError:
            click.echo(f"{config_path}: exists, left as it is", err=True)
        else:
            click.echo(f"{config_path}: settings skeleton (set up the admins' login in it)")


@site.command("publish")
@_config_option
def publish_command(config_path: Path | None) -> None:
    """Write the signed group, selfservice and host packages from the groups and
    assignments, and regenerate the repository's index."""
    from portal.site.assignments import AssignmentStore
    from portal.site.publish import PublishError, publish

    settings = _site_settings(config_path)
    try:
        result = publish(settings, AssignmentStore(settings.data_dir))
    except PublishError as e:
        _audit(settings.data_dir, "site.publish", settings.name, outcome="failed", details=str(e))
        raise click.ClickException(str(e)) from e
    _audit(
        settings.data_dir,
        "site.publish",
        settings.name,
        details=", ".join(result.written) or "nothing changed",
    )
    for name in result.written:
        click.echo(f"written: {name}")
    click.echo(f"{len(result.written)} written, {len(result.unchanged)} unchanged")
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
