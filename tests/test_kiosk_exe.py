"""Smoke test of the built kiosk executable (PyInstaller, one folder): it starts, draws its first
page, serves the portal, and installs packages from a USB bundle, running their setup.py with
itself as the interpreter, then writes the report onto the stick.

The executable is built once into `build/kiosk/dist/` and reused while its sources do not change
(`kiosk.build`); the first build takes about a minute.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent_bridge.client import AgentClient
from comptoir.cli import main
from kiosk.build import build_kiosk
from kiosk.offline import STICK_KIOSK_DIR, TECHNICIAN
from tests.agent_harness import wait_until
from tests.test_kiosk_common import PASSPHRASE, PIN, Machine, Stick, machine_for
from tests.test_kiosk_window import painted_png, qt_environment

pytest_plugins = ["tests.test_kiosk_common"]  # the shared kiosk fixtures

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def kiosk_exe() -> Path:
    return build_kiosk()


def environment() -> dict[str, str]:
    env = qt_environment()
    env.pop("PYTHONPATH")  # nothing of the checkout: only what is inside the build
    return env


def offline_args(machine: Machine) -> list[str]:
    return [
        "--bundle",
        str(machine.stick.bundle),
        "--agent-config",
        str(machine.agent_config),
        "--data-dir",
        str(machine.data_dir),
    ]


def test_the_executable_draws_the_technician_pin_form(
    kiosk_exe: Path, machine: Machine, tmp_path: Path
) -> None:
    shot = tmp_path / "exe.png"
    run = subprocess.run(
        [str(kiosk_exe), *offline_args(machine), "--check", "--screenshot", str(shot)],
        env=environment(),
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    outcome = json.loads(run.stdout.decode().strip().splitlines()[-1])
    assert outcome["ok"] is True and outcome["url"].endswith("/technician/")
    painted_png(shot)


@pytest.fixture
def serving_exe(kiosk_exe: Path, machine: Machine) -> Iterator[dict[str, str]]:
    process = subprocess.Popen(
        [str(kiosk_exe), *offline_args(machine), "--serve-only"],
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert line, process.stderr.read().decode()[-3000:] if process.stderr else ""
        yield json.loads(line)
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
        assert process.returncode == 0, errors.decode()[-3000:]


def test_the_executable_serves_the_portal_and_installs_from_the_bundle(
    serving_exe: dict[str, str], machine: Machine
) -> None:
    portal = serving_exe["portal"]
    try:
        urllib.request.urlopen(portal + "login", timeout=10)
    except urllib.error.HTTPError as e:  # pragma: no cover - a redirect is followed
        raise AssertionError(e) from e
    with urllib.request.urlopen(portal + "technician/", timeout=10) as answer:
        page = answer.read().decode()
    assert 'name="pin"' in page and "Collège du Test" in page
    with urllib.request.urlopen(portal + "static/vendor/htmx/htmx.min.js", timeout=10) as js:
        assert len(js.read()) > 10_000  # static files are inside the build

    agent = AgentClient(serving_exe["agent"].rstrip("/"), timeout=30)
    session = agent.login(TECHNICIAN, PIN)
    task = agent.install(session, "tis-kiosk-atlas")
    done = agent.wait_for_task(task.id, timeout=120)
    assert done.state == "done", done.logs
    assert (machine.installed / "tis-kiosk-atlas").read_text() == "2.0-1"
    assert (machine.installed / "tis-kiosk-lib").read_text() == "1.0-1"  # its dependency
    assert "installed tis-kiosk-atlas 2.0-1" in done.logs  # setup.py's own output
    # the agent writes its signed report onto the stick after the install (in the background)
    reports = wait_until(lambda: list((machine.stick.bundle / "reports").glob("*.json")))
    assert len(reports) == 1 and "tis-kiosk-atlas" in reports[0].read_text("utf-8")


def test_the_executable_put_on_the_stick_by_bundle_create_finds_its_bundle(
    kiosk_exe: Path, pristine_stick: Stick, tmp_path: Path
) -> None:
    """`comptoir bundle create --with-kiosk` then the executable started from the stick, with
    no --bundle: it finds the bundle it sits beside, verifies it with the machine's root, and
    opens the technician's PIN form."""
    keys = pristine_stick.bundle.parent / "keys"
    (tmp_path / "passphrase").write_bytes(PASSPHRASE)
    (tmp_path / "pin").write_text(PIN + "\n")
    stick = tmp_path / "stick"
    made = CliRunner().invoke(
        main,
        [
            *("bundle", "create", "--to", str(stick), "--repo", str(pristine_stick.bundle)),
            *("--keys", str(keys), "--passphrase-file", str(tmp_path / "passphrase")),
            *("--package", "tis-kiosk-atlas", "--pin-file", str(tmp_path / "pin")),
            *("--name", "Collège du Test", "--with-kiosk", str(kiosk_exe.parent), "--json"),
        ],
    )
    assert made.exit_code == 0, made.output
    on_stick = stick / STICK_KIOSK_DIR / kiosk_exe.name
    assert on_stick.is_file()
    machine = machine_for(Stick(stick, pristine_stick.root, pristine_stick.trusted, ""), tmp_path)
    executable = machine.stick.bundle / STICK_KIOSK_DIR / kiosk_exe.name
    shot = tmp_path / "stick.png"
    run = subprocess.run(
        [
            *(str(executable), "--agent-config", str(machine.agent_config)),
            *("--data-dir", str(machine.data_dir), "--check", "--screenshot", str(shot)),
        ],
        env=environment(),
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    outcome = json.loads(run.stdout.decode().strip().splitlines()[-1])
    assert outcome["ok"] is True and outcome["url"].endswith("/technician/")
    painted_png(shot)
