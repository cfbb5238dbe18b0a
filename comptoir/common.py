"""Helpers shared by the command groups: clean failures, passphrases, signers, JSON output."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from wapt.errors import KeyFileError, WaptError
from wapt.trust import KeySigner, TrustStore

P = ParamSpec("P")
R = TypeVar("R")

PASSPHRASE_ENV = "COMPTOIR_KEY_PASSPHRASE"  # noqa: S105 (a variable name)


def fails_cleanly(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a core error into a message on stderr and exit status 1."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except WaptError as e:
            click.echo(f"comptoir: {e}", err=True)
            sys.exit(1)

    return wrapper


class SiteConfigError(WaptError):
    """The site server's settings or stores cannot be read; the message says which and why."""


SITE_CONFIG_ENV = "COMPTOIR_PORTAL_CONFIG"
"""The site server's settings file when no option names one (`portal.settings.CONFIG_ENV`)."""


def load_site_settings(config: Path | None, *, option: str = "--config") -> Any:
    """The `[site]` settings (`portal.site.settings.SiteSettings`) of the site server's
    settings file `config`, else of the file `COMPTOIR_PORTAL_CONFIG` names, read as the
    server reads it (its `COMPTOIR_PORTAL_*` variables apply).

    Portal modules are imported here, not at the top: `comptoir agent serve` must not hold them.

    Raises:
        SiteConfigError: no file given, or it cannot be read, or it has no `[site]` table.
    """
    from portal.settings import SettingsError, load_settings

    if config is None and os.environ.get(SITE_CONFIG_ENV):
        config = Path(os.environ[SITE_CONFIG_ENV])
    if config is None:
        raise SiteConfigError(f"give {option} (or set {SITE_CONFIG_ENV}): the site's settings")
    try:
        settings = load_settings(config)
    except SettingsError as e:
        raise SiteConfigError(f"{option}: {e}") from e
    if settings.site is None:
        raise SiteConfigError(f"{option} {config}: no [site] table: not a site server's settings")
    return settings.site


def read_passphrase(passphrase_file: Path | None, *, confirm: bool = False) -> bytes | None:
    """A key passphrase from a file, `COMPTOIR_KEY_PASSPHRASE`, or a prompt on a terminal."""
    if passphrase_file is not None:
        return passphrase_file.read_bytes().rstrip(b"\r\n")
    if PASSPHRASE_ENV in os.environ:
        return os.environ[PASSPHRASE_ENV].encode("utf-8")
    if sys.stdin.isatty():
        text = click.prompt(
            "Key passphrase", hide_input=True, confirmation_prompt=confirm, err=True
        )
        return str(text).encode("utf-8")
    return None


def load_trust(path: Path) -> TrustStore:
    return TrustStore.from_path(path)


def load_signer(key: Path, cert: Path, passphrase_file: Path | None) -> KeySigner:
    try:
        return KeySigner.from_files(key, cert, None)
    except KeyFileError:
        return KeySigner.from_files(key, cert, read_passphrase(passphrase_file))


def with_options(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    """One decorator applying several click options, in the order they are listed."""

    def decorate(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False))


class ProgressBar:
    """A progress bar on stderr for long work, shown only on a terminal.

    Use as a context manager and pass `update` as the core's `progress(done, total)` callback.
    """

    def __init__(self, label: str, *, unit: str = "") -> None:
        self.label = label
        self.unit = unit
        self.enabled = sys.stderr.isatty()
        self._bar: Any = None
        self._done = 0

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def update(self, done: int, total: int) -> None:
        if not self.enabled or total == 0:
            return
        if self._bar is None:
            self._bar = click.progressbar(
                length=total, label=self.label, file=sys.stderr, show_eta=True, show_pos=True
            )
            self._bar.__enter__()
        self._bar.update(done - self._done)
        self._done = done
