"""`comptoir demo`: a demo repository of signed sample packages, built and verified end to end.

It creates a demo certificate authority with a code-signing and a deployer certificate (keys
encrypted with the demo passphrase), writes the sources of a few small school packages that
really install something on Linux, builds and signs them, scans the repository into a
`Packages` index, then loads that index back through full verification and prints the catalog.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from agent_bridge.agent.auth import write_accounts_file
from comptoir.common import fails_cleanly
from comptoir.demo_site import (
    AGENT_PORT,
    PORTAL_PORT,
    SITE_PORT,
    apply_assignments,
    check_admin_login,
    display_available,
    open_window,
    prepare_site,
    running_agent,
    running_portal,
    running_site,
    seed_site,
    wait_for_report,
    write_agent_config,
)
from portal.site.keys import SiteKeyError
from portal.site.lifecycle import LifecycleError
from portal.site.model import MachineGroup, ModelError, PublishedCatalog
from portal.site.publish import PublishError
from portal.site.settings import SiteSettingsError
from wapt.control import PackageEntry, format_control
from wapt.fsutil import SecretFileError, load_or_create_secret
from wapt.package import build_package, verify_package
from wapt.repository import load_index, scan_repository
from wapt.trust import (
    KeySigner,
    TrustStore,
    load_certificate_file,
    load_private_key,
    new_ca,
    new_signer,
    save_certificate,
    save_private_key,
)

if TYPE_CHECKING:
    from portal.site.settings import SiteSettings

#: demo only: the passphrase of the demo keys, unless COMPTOIR_KEY_PASSPHRASE says otherwise
DEMO_PASSPHRASE = "comptoir-demo"  # noqa: S105 (published demo keys)

SETUP_TEMPLATE = '''\
# -*- coding: utf-8 -*-
"""Demo package: copies files/ to $COMPTOIR_INSTALL_ROOT/<package>/ on Linux."""
from setuphelpers import *  # noqa: F403 (every WAPT package starts so)
import os
import platform
import shutil

PACKAGE = {package!r}


def _target():
    root = os.environ.get("COMPTOIR_INSTALL_ROOT")
    if platform.system() != "Linux" or not root:
        return None
    return os.path.join(root, PACKAGE)


def install():
    target = _target()
    if target is None:
        print("%s: nothing to do on this system" % PACKAGE)
        return
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.isdir(target):
        shutil.rmtree(target)
    shutil.copytree(os.path.join(here, "files"), target)
    print("%s: installed in %s" % (PACKAGE, target))


def uninstall():
    target = _target()
    if target and os.path.isdir(target):
        shutil.rmtree(target)
        print("%s: removed from %s" % (PACKAGE, target))
'''


@dataclass(frozen=True)
class DemoPackage:
    package: str
    version: str
    name: str
    description: str
    description_fr: str
    categories: str = ""
    depends: str = ""
    maturity: str = "PROD"
    locale: str = ""
    section: str = "base"
    editor: str = "Comptoir demo"
    files: dict[str, str] = field(default_factory=dict)
    #: the icon's colour (RGB), for the catalog's cards
    colour: tuple[int, int, int] = (0x1F, 0x5F, 0x8B)
    #: for a `selfservice` package: group -> package names it grants
    rules: dict[str, list[str]] = field(default_factory=dict)

    def control(self) -> PackageEntry:
        entry = PackageEntry()
        for key, value in (
            ("package", self.package),
            ("version", self.version),
            ("architecture", "all"),
            ("section", self.section),
            ("priority", "optional"),
            ("name", self.name),
            ("categories", self.categories),
            ("maintainer", "Comptoir <demo@comptoir.invalid>"),
            ("description", self.description),
            ("depends", self.depends),
            ("maturity", self.maturity),
            ("locale", self.locale),
            ("target_os", "linux" if self.section == "base" else ""),
            ("description_fr", self.description_fr),
            ("editor", self.editor),
            ("licence", "GPL-3.0-or-later"),
        ):
            entry[key] = value
        return entry


DEMO_PACKAGES = (
    DemoPackage(
        "demo-libcommun",
        "1.0-1",
        "Bibliothèque commune",
        "Shared files used by the other demo applications.",
        "Fichiers partagés par les autres applications de démonstration.",
        categories="Système",
        files={"LISEZMOI.txt": "Bibliothèque commune de démonstration.\n"},
        colour=(0x55, 0x55, 0x55),
    ),
    DemoPackage(
        "demo-atlas",
        "2.0-1",
        "Atlas du monde",
        "A small world atlas for geography lessons.",
        "Un petit atlas du monde pour les cours de géographie.",
        categories="Géographie,Histoire",
        depends="demo-libcommun(>=1.0)",
        files={"atlas.txt": "Paris, Berlin, Madrid, Rome, Lisbonne.\n"},
        colour=(0x2E, 0x7D, 0x32),
    ),
    DemoPackage(
        "demo-atlas",
        "2.1-1",
        "Atlas du monde",
        "A small world atlas for geography lessons (qualification).",
        "Un petit atlas du monde pour les cours de géographie (en qualification).",
        categories="Géographie,Histoire",
        depends="demo-libcommun(>=1.0)",
        maturity="PREPROD",
        files={"atlas.txt": "Paris, Berlin, Madrid, Rome, Lisbonne, Athènes.\n"},
        colour=(0x2E, 0x7D, 0x32),
    ),
    DemoPackage(
        "demo-dictionnaire",
        "5.2-3",
        "Dictionnaire français",
        "A French dictionary for the classroom.",
        "Un dictionnaire de français pour la classe.",
        categories="Français",
        locale="fr",
        files={"mots.txt": "abricot\nbibliothèque\ncahier\n"},
        colour=(0xAD, 0x14, 0x57),
    ),
    DemoPackage(
        "demo-chronometre",
        "1.4-2",
        "Chronomètre de classe",
        "A big classroom timer.",
        "Un grand chronomètre pour la classe.",
        categories="Outils",
        files={"chronometre.sh": "#!/bin/sh\necho 'Chronomètre : 00:00'\n"},
        colour=(0xE6, 0x51, 0x00),
    ),
    DemoPackage(
        "demo-geometrie",
        "3.0-1",
        "Géométrie dynamique",
        "Construct and measure figures.",
        "Construire et mesurer des figures.",
        categories="Mathématiques",
        files={"figures.txt": "triangle, cercle, médiatrice\n"},
        colour=(0x15, 0x65, 0xC0),
    ),
    DemoPackage(
        "demo-calcul-mental",
        "1.1-1",
        "Calcul mental",
        "Mental arithmetic drills.",
        "Exercices de calcul mental.",
        categories="Mathématiques",
        files={"tables.txt": "7 x 8 = 56\n"},
        colour=(0x6A, 0x1B, 0x9A),
    ),
    DemoPackage(
        "demo-frise",
        "2.2-1",
        "Frise chronologique",
        "Build timelines for history lessons.",
        "Construire des frises pour les cours d'histoire.",
        categories="Histoire",
        files={"frise.txt": "1789, 1848, 1870, 1914, 1945\n"},
        colour=(0x8D, 0x6E, 0x63),
    ),
    DemoPackage(
        "demo-salle-101",
        "1-1",
        "Salle 101",
        "Software of room 101.",
        "Logiciels de la salle 101.",
        section="group",
        depends="demo-chronometre",
    ),
    DemoPackage(
        "demo-regles-profs",
        "1-1",
        "Libre-service des enseignants",
        "Which teacher groups may install what.",
        "Quels groupes d'enseignants peuvent installer quoi.",
        section="selfservice",
        rules={
            "profs": ["demo-dictionnaire", "demo-chronometre"],
            "profs-maths": ["demo-geometrie", "demo-calcul-mental"],
            "profs-histoire": ["demo-frise", "demo-atlas"],
        },
    ),
)

#: the demo machine's name, and what its host package assigns to it
DEMO_HOST = "comptoir-demo-poste"
DEMO_HOST_DEPENDS = "demo-regles-profs,demo-salle-101"

#: demo only: user -> (password, display name, groups), for the agent's local accounts file
DEMO_ACCOUNTS = {
    "marie": ("demo", "Marie Curie", ("profs", "profs-maths")),
    "victor": ("demo", "Victor Hugo", ("profs", "profs-histoire")),
    "admin": ("demo", "Administrateur", ("waptselfservice",)),
}

#: demo only: the site server's local admin account (in the site's admin group)
DEMO_SITE_ACCOUNTS = {
    "admin": ("demo", "Administrateur du site", ("comptoir-admins",)),
}

#: what the demo site shows: the demo machine's room, and one published catalog
DEMO_SITE_GROUP = MachineGroup(
    "salle-101", "Lycée Chateaubriand — salle 101", hosts=(DEMO_HOST,), teacher_groups=("profs",)
)
DEMO_SITE_CATALOG = PublishedCatalog(
    "logiciels-du-lycee",
    "Logiciels du lycée",
    "Les logiciels que les enseignants peuvent demander pour leurs salles.",
    packages=tuple(dict.fromkeys(spec.package for spec in DEMO_PACKAGES if spec.section == "base")),
)


def icon_png(colour: tuple[int, int, int], size: int = 48) -> bytes:
    """A plain square PNG icon of one colour (WAPT's icons are 48x48)."""
    row = b"\x00" + bytes(colour) * size
    raw = zlib.compress(row * size, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def write_source(spec: DemoPackage, root: Path) -> Path:
    """Write the source directory of one demo package; return it."""
    source = root / f"{spec.package}_{spec.version}_{spec.maturity}"
    if source.exists():
        shutil.rmtree(source)
    (source / "WAPT").mkdir(parents=True)
    (source / "WAPT" / "control").write_text(format_control(spec.control()), "utf-8")
    if spec.section == "base":
        (source / "setup.py").write_text(SETUP_TEMPLATE.format(package=spec.package), "utf-8")
        (source / "files").mkdir()
        for name, text in spec.files.items():
            (source / "files" / name).write_text(text, "utf-8")
        (source / "WAPT" / "icon.png").write_bytes(icon_png(spec.colour))
    if spec.rules:
        persistent = source / "WAPT" / "persistent"
        persistent.mkdir()
        (persistent / "selfservice.json").write_text(json.dumps(spec.rules, indent=2), "utf-8")
    return source


def ensure_demo_pki(pki: Path, passphrase: bytes) -> tuple[KeySigner, KeySigner, Path]:
    """The demo authority and its two signers, created on first use; returns the CA path."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_cert = pki / "ca.crt"
    if not ca_cert.exists():
        ca_key, ca = new_ca("Comptoir Demo CA", organization="Comptoir demo", country="FR")
        save_private_key(ca_key, pki / "ca.key", passphrase, overwrite=True)
        save_certificate([ca], ca_cert, overwrite=True)
        for stem, cn, code_signing in (
            ("codesign", "Comptoir Demo Packager", True),
            ("deployer", "Comptoir Demo Deployer", False),
        ):
            key, cert = new_signer(
                ca_key, ca, cn, code_signing=code_signing, organization="Comptoir demo"
            )
            save_private_key(key, pki / f"{stem}.key", passphrase, overwrite=True)
            save_certificate([cert, ca], pki / f"{stem}.crt", overwrite=True)
    packager, deployer = (
        KeySigner(
            load_private_key(pki / f"{stem}.key", passphrase),
            load_certificate_file(pki / f"{stem}.crt"),
        )
        for stem in ("codesign", "deployer")
    )
    return packager, deployer, ca_cert


def build_demo_repository(root: Path, passphrase: bytes) -> tuple[Path, Path]:
    """Build the demo PKI, sources and repository under `root`; return (repo, trusted CA)."""
    packager, deployer, ca_cert = ensure_demo_pki(root / "pki", passphrase)
    repo = root / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    for old in repo.glob("*.wapt"):
        old.unlink()
    for spec in DEMO_PACKAGES:
        source = write_source(spec, root / "src")
        signer = packager if spec.section == "base" else deployer
        build_package(source, signer, repo, overwrite=True)
    scan_repository(repo, force=True)
    host = DemoPackage(
        DEMO_HOST, "1", "Poste de démonstration", "", "", section="host", depends=DEMO_HOST_DEPENDS
    )
    hosts = root / "hosts"
    hosts.mkdir(exist_ok=True)
    build_package(write_source(host, root / "src"), deployer, hosts, overwrite=True)
    return repo, ca_cert


@click.command()
@click.option(
    "--to",
    "root",
    default="build/demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to put the demo PKI, sources and repository.",
)
@click.option("--serve", is_flag=True, help="Then run the agent and the portal on loopback.")
@click.option(
    "--check", is_flag=True, help="With --serve: start everything, check a login, then stop."
)
@click.option("--agent-port", default=AGENT_PORT, show_default=True, help="The agent's port.")
@click.option("--portal-port", default=PORTAL_PORT, show_default=True, help="The portal's port.")
@click.option(
    "--site-port", default=SITE_PORT, show_default=True, help="The site server's (admin) port."
)
@fails_cleanly
def demo(
    root: Path, serve: bool, check: bool, agent_port: int, portal_port: int, site_port: int
) -> None:
    """Build a demo repository of signed sample packages and print its verified catalog.

    With --serve, run Comptoir's agent and portal on 127.0.0.1 over it, with the demo
    accounts, until interrupted: everything a teacher sees, with no network at all; and the
    site server, where an admin manages the site's packages, machine groups and catalogs.
    """
    passphrase = os.environ.get("COMPTOIR_KEY_PASSPHRASE", DEMO_PASSPHRASE).encode("utf-8")
    repo, ca_cert = build_demo_repository(root, passphrase)
    trust = TrustStore.from_path(ca_cert)
    for path in sorted(repo.glob("*.wapt")):
        verify_package(path, trust)
    index = load_index(repo, trust)
    click.echo(f"Demo repository: {repo.resolve()}")
    click.echo(f"Trusted authority: {ca_cert.resolve()}")
    click.echo("")
    click.echo(f"{'package':<20} {'version':<8} {'maturity':<8} {'section':<11} name")
    for entry in sorted(index.entries, key=lambda e: (e.package, e.version)):
        click.echo(
            f"{entry.package:<20} {entry.version:<8} {entry.maturity:<8} {entry.section:<11} "
            f"{entry.name}"
        )
    click.echo("")
    click.echo(
        f"{len(index.entries)} packages verified (signatures, certificates, every file), "
        f"{len(index.discarded)} discarded."
    )
    for d in index.discarded:
        click.echo(f"DISCARDED {d.entry.filename}: {d.reason}", err=True)
    if serve:
        site = build_demo_site(root, passphrase, repo, ca_cert)
        serve_demo(
            root,
            site,
            agent_port=agent_port,
            portal_port=portal_port,
            site_port=site_port,
            check=check,
        )


def build_demo_site(root: Path, passphrase: bytes, repo: Path, ca_cert: Path) -> SiteSettings:
    """The demo site server's keys, admin account, state and repository under `root/site`,
    seeded with copies of the demo's software packages (see `comptoir.demo_site`)."""
    click.echo("\nPreparing the site server (keys, packages, group, catalog)…")
    packages = [
        repo / spec.control().package_filename() for spec in DEMO_PACKAGES if spec.section == "base"
    ]
    try:
        site = prepare_site(root / "site", passphrase, DEMO_SITE_ACCOUNTS, ca_cert)
        seed_site(site, packages, DEMO_SITE_GROUP, DEMO_SITE_CATALOG, who="comptoir-demo")
    except (SiteKeyError, SiteSettingsError, LifecycleError, ModelError, PublishError) as e:
        raise click.ClickException(f"the demo site server in {root / 'site'}: {e}") from e
    return site


def serve_demo(
    root: Path,
    site: SiteSettings,
    *,
    agent_port: int,
    portal_port: int,
    site_port: int,
    check: bool,
) -> None:
    """Run the agent and the portal over the demo repository, and the site server (see
    `comptoir.demo_site`)."""
    write_accounts_file(root / "accounts.toml", DEMO_ACCOUNTS)
    try:  # made here so that the agent can prove it before the site server first runs
        load_or_create_secret(site.enrolment_secret_file, what="enrolment secret")
    except SecretFileError as e:
        raise click.ClickException(str(e)) from e
    config = write_agent_config(
        root,
        DEMO_HOST,
        agent_port,
        site_url=f"http://127.0.0.1:{site_port}/",
        enrolment=site.enrolment_secret_file.resolve(),
    )
    click.echo("\nStarting the agent…")
    with running_agent(root, config, agent_port) as agent:
        apply_assignments(agent)
        with (
            running_portal(root, agent.base_url, portal_port) as url,
            running_site(
                site, root / "site" / "portal-data", agent.base_url, site_port
            ) as site_url,
        ):
            click.echo(f"\nComptoir is running: open {url}")
            click.echo("Demo accounts (password: demo):")
            for user, (_, display_name, groups) in DEMO_ACCOUNTS.items():
                click.echo(f"  {user:<8} {display_name:<16} groups: {', '.join(groups)}")
            click.echo(f"Software installs into {(root / 'installed').resolve()}")
            click.echo(f"\nSite administration: open {site_url}admin/")
            for user, (_, display_name, groups) in DEMO_SITE_ACCOUNTS.items():
                click.echo(
                    f"  {user:<8} {display_name:<24} groups: {', '.join(groups)} (password: demo)"
                )
            click.echo(f"Site repository: {site.repository_dir}")
            if check:
                session = agent.login("marie", DEMO_ACCOUNTS["marie"][0])
                offered = sorted(p.package for p in agent.packages(session))
                with urllib.request.urlopen(url + "healthz", timeout=10) as answer:  # noqa: S310
                    health = answer.status
                click.echo(f"check: portal health {health}; marie may install {offered}")
                if health != 200 or not offered:
                    raise click.ClickException("the demo did not come up as expected")
                try:
                    dashboard = check_admin_login(site_url, "admin", DEMO_SITE_ACCOUNTS["admin"][0])
                except RuntimeError as e:
                    raise click.ClickException(f"the site server: {e}") from e
                click.echo(f"check: admin signed in on the site server; {'; '.join(dashboard)}")
                reported = wait_for_report(site, DEMO_HOST)
                if reported is None:
                    raise click.ClickException(
                        f"the agent did not report to the site server ({site_url})"
                    )
                click.echo(
                    f"check: {DEMO_HOST} reported to the site server: "
                    f"{len(reported.installed)} packages installed"
                )
                return
            if open_window(url):
                return  # the window was closed
            if display_available():
                click.echo(
                    "(no Qt for a window here: pip install 'comptoir[kiosk]'; use a browser)"
                )
            click.echo("Press Ctrl-C to stop.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                click.echo("\nStopping.")
