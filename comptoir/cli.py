"""The `comptoir` command line: one group per area (keys, package, repo, demo, …).

Commands parse their arguments, call one function of the core, and print. Errors of the core
become a one-line message on stderr and exit status 1 (click's usage errors exit with 2);
`--json` output is stable for scripts.
"""

from __future__ import annotations

import importlib

import click

#: command name -> (module, attribute): each area is imported only when its command runs, so
#: that `comptoir agent serve`, a long-running service, does not hold the portal, the site
#: server and the USB writer in memory (about 7.5 MiB of imports)
COMMANDS = {
    "agent": ("comptoir.agent", "agent"),
    "keys": ("comptoir.keys", "keys"),
    "package": ("comptoir.packages", "package"),
    "repo": ("comptoir.repo", "repo"),
    "demo": ("comptoir.demo", "demo"),
    "portal": ("comptoir.portal", "portal"),
    "bundle": ("comptoir.bundle", "bundle"),
    "site": ("comptoir.site", "site"),
    "shutdown": ("comptoir.shutdown", "shutdown"),
    "kiosk": ("comptoir.kiosk", "kiosk"),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported from `COMMANDS` when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attribute = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{module}.{attribute} is not a click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup)
@click.version_option(package_name="comptoir")
def main() -> None:
    """Comptoir: self-service software for managed school workstations (WAPT packages)."""
