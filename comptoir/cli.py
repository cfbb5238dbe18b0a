"""The `comptoir` command line: one group per area (keys, package, repo, demo, …).

Commands parse their arguments, call one function of the core, and print. Errors of the core
become a one-line message on stderr and exit status 1 (click's usage errors exit with 2);
`--json` output is stable for scripts.
"""

from __future__ import annotations

import click

from comptoir.agent import agent
from comptoir.bundle import bundle
from comptoir.demo import demo
from comptoir.keys import keys
from comptoir.kiosk import kiosk
from comptoir.packages import package
from comptoir.portal import portal
from comptoir.repo import repo
from comptoir.shutdown import shutdown
from comptoir.site import site


@click.group()
@click.version_option(package_name="comptoir")
def main() -> None:
    """Comptoir: self-service software for managed school workstations (WAPT packages)."""


main.add_command(agent)
main.add_command(keys)
main.add_command(package)
main.add_command(repo)
main.add_command(demo)
main.add_command(portal)
main.add_command(bundle)
main.add_command(site)
main.add_command(shutdown)
main.add_command(kiosk)
