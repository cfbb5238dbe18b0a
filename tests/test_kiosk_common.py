"""Shared pieces of the kiosk tests: a real signed USB bundle with a technician PIN, the
machine's agent configuration that trusts it, and the offline site running over it.

Imported by the other `test_kiosk_*` modules (fixtures are used by name); it holds a few checks
of its own on what it provides.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent_bridge.agent.auth import write_accounts_file
from kiosk.offline import OfflineSite, offline_agent_config, running_offline_site
from tests.helpers import PKI, fixture_signer, write_source
from usb_bundler import create_or_update_bundle, new_bundle_keys
from wapt.bundle import verify_bundle
from wapt.package import build_package

PIN = "4821"
PASSPHRASE = b"kiosk test keys"

SETUP = """\
import os


def install():
    with open(os.path.join(os.environ["COMPTOIR_INSTALL_ROOT"], control.package), "w") as f:
        f.write(control.version)
    print("installed", control.package, control.version)


def uninstall():
    os.remove(os.path.join(os.environ["COMPTOIR_INSTALL_ROOT"], control.package))
"""

#: name -> (version, depends)
PACKAGES = {
    "tis-kiosk-atlas": ("2.0-1", "tis-kiosk-lib"),
    "tis-kiosk-lib": ("1.0-1", ""),
    "tis-kiosk-timer": ("1.4-2", ""),
}


@dataclass(frozen=True)
class Stick:
    """A pristine stick and what a machine needs to trust it."""

    bundle: Path
    root: Path
    trusted: Path
    name: str


def make_stick(where: Path, *, pin: str | None = PIN) -> Stick:
    """Build the packages, sign a bundle of them with a site's fresh keys and `pin`."""
    sources, out = where / "src", where / "packages"
    out.mkdir(parents=True)
    packages = []
    for name, (version, depends) in PACKAGES.items():
        source = write_source(
            sources,
            name,
            version,
            setup=False,
            name=name.removeprefix("tis-kiosk-").title(),
            description=f"Kiosk test package {name}",
            depends=depends,
            maturity="PROD",
            files={"setup.py": SETUP.encode()},
        )
        packages.append(build_package(source, fixture_signer("codesign"), out))
    keys = new_bundle_keys(where / "keys", PASSPHRASE)
    stick = where / "stick"
    create_or_update_bundle(
        stick, packages, keys, name="Collège du Test", creator="tests", technician_pin=pin
    )
    root = where / "machine" / "bundle-root.json"
    root.parent.mkdir(parents=True)
    root.write_bytes(keys.root)  # the machine's copy, never the stick's
    return Stick(stick, root, PKI / "ca.crt", "Collège du Test")


@pytest.fixture(scope="session")
def pristine_stick(tmp_path_factory: pytest.TempPathFactory) -> Stick:
    return make_stick(tmp_path_factory.mktemp("kiosk-stick"))


@dataclass(frozen=True)
class Machine:
    """A machine about to run the offline kiosk from a copy of the stick."""

    stick: Stick
    agent_config: Path
    data_dir: Path
    installed: Path


def machine_for(stick: Stick, where: Path) -> Machine:
    """A fresh copy of the stick and the machine's agent configuration trusting its keys."""
    bundle = where / "usb"
    shutil.copytree(stick.bundle, bundle)
    installed = where / "installed"
    installed.mkdir()
    write_accounts_file(where / "accounts.toml", {"marie": ("demo", "Marie", ("profs",))})
    config = where / "agent.toml"
    config.write_text(
        f"""
data_dir = "{where / "machine-agent"}"
trusted_certs = "{stick.trusted}"
accounts_file = "{where / "accounts.toml"}"
install_timeout = 60

[install_env]
COMPTOIR_INSTALL_ROOT = "{installed}"

[[repositories]]
name = "site"
url = "http://127.0.0.1:9/"

[[repositories]]
name = "usb"
path = "/media/usb"
bundle_root = "{stick.root}"
""",
        "utf-8",
    )
    copy = Stick(bundle, stick.root, stick.trusted, stick.name)
    return Machine(copy, config, where / "kiosk-data", installed)


@pytest.fixture
def machine(pristine_stick: Stick, tmp_path: Path) -> Machine:
    return machine_for(pristine_stick, tmp_path)


@pytest.fixture
def offline_site(machine: Machine) -> Iterator[OfflineSite]:
    """The offline kiosk's agent and portal, running over the machine's copy of the stick."""
    config = offline_agent_config(
        machine.stick.bundle, machine.data_dir, agent_config=machine.agent_config
    )
    with running_offline_site(config, data_dir=machine.data_dir, idle_timeout=300) as site:
        yield site


def test_the_stick_verifies_and_carries_a_hashed_pin(pristine_stick: Stick) -> None:
    verified = verify_bundle(pristine_stick.bundle, pristine_stick.root)
    record = verified.info.technician_pin
    assert record is not None and record["algorithm"] == "scrypt"
    assert PIN not in json.dumps(record)  # only the salted hash is on the stick
    assert sorted(t.path.split("_")[0] for t in verified.packages) == sorted(PACKAGES)
