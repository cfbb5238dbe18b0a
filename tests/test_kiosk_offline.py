"""The offline USB kiosk without its window: trust from the machine, the bundle verified first,
the technician view unlocked by the stick's PIN through the real agent, a whole catalog
installed for real, the report written back onto the stick; and the unreachable-agent screen."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup
from flask.testing import FlaskClient

from agent_bridge.agent.auth import InvalidCredentialsError
from kiosk.offline import (
    STICK_KIOSK_DIR,
    TECHNICIAN,
    OfflineSite,
    TechnicianPin,
    bundle_beside,
    offline_agent_config,
    running_offline_site,
)
from kiosk.policy import KioskError
from portal import create_app
from tests.test_kiosk_common import PACKAGES, PIN, Machine, Stick, make_stick
from wapt.bundle import hash_technician_pin

pytest_plugins = ["tests.test_kiosk_common"]  # the shared kiosk fixtures


def csrf(html: str) -> str:
    field = BeautifulSoup(html, "html.parser").select_one("input[name=csrf_token]")
    assert field is not None
    return str(field["value"])


def unlock(client: FlaskClient, pin: str) -> Any:
    token = csrf(client.get("/technician/").get_data(as_text=True))
    return client.post("/technician/unlock", data={"pin": pin, "csrf_token": token})


# --- trust and configuration ----------------------------------------------------------------


def test_trust_comes_from_the_machine_and_the_bundle_is_the_only_source(machine: Machine) -> None:
    config = offline_agent_config(
        machine.stick.bundle, machine.data_dir, agent_config=machine.agent_config
    )
    (source,) = config.repositories
    assert source.path == machine.stick.bundle.resolve()
    assert source.bundle_root == machine.stick.root.resolve()  # the machine's, not the stick's
    assert config.trusted_certs == machine.stick.trusted.resolve()
    assert config.host_repository is None and config.ldap is None and config.site is None
    assert config.data_dir == (machine.data_dir / "agent").resolve()
    assert config.install_env["COMPTOIR_INSTALL_ROOT"] == str(machine.installed)


def test_without_a_root_of_trust_nothing_starts(machine: Machine) -> None:
    with pytest.raises(KioskError, match="never from the stick") as caught:
        offline_agent_config(machine.stick.bundle, machine.data_dir)
    assert "--root" in str(caught.value) and "--trusted" in str(caught.value)


def test_a_stick_signed_with_other_keys_is_refused(
    machine: Machine, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = make_stick(tmp_path_factory.mktemp("other-site"))
    config = offline_agent_config(
        other.bundle, machine.data_dir, root=machine.stick.root, trusted=machine.stick.trusted
    )
    with (
        pytest.raises(KioskError, match=r"USB bundle .* refused"),
        running_offline_site(config, data_dir=machine.data_dir, idle_timeout=60),
    ):
        pass
    assert not (machine.data_dir / "agent").exists()  # refused before the agent existed


def test_a_stick_without_pin_has_no_technician_view(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    stick = make_stick(tmp_path_factory.mktemp("no-pin"), pin=None)
    config = offline_agent_config(stick.bundle, tmp_path, root=stick.root, trusted=stick.trusted)
    with (
        pytest.raises(KioskError, match=r"no technician PIN.*--pin"),
        running_offline_site(config, data_dir=tmp_path, idle_timeout=60),
    ):
        pass


def test_the_pin_authenticator_wants_the_technician_and_the_pin() -> None:
    pin = TechnicianPin(
        hash_technician_pin("9917"), username=TECHNICIAN, groups=frozenset({"admins"})
    )
    identity = pin.authenticate(TECHNICIAN, "9917")
    assert identity.groups == frozenset({"admins"})
    for user, password in ((TECHNICIAN, "9918"), ("marie", "9917"), (TECHNICIAN, "")):
        with pytest.raises(InvalidCredentialsError):
            pin.authenticate(user, password)


def test_the_bundle_beside_the_executable_on_a_stick(pristine_stick: Stick, tmp_path: Path) -> None:
    stick = tmp_path / "usb"
    shutil.copytree(pristine_stick.bundle, stick)
    (stick / STICK_KIOSK_DIR).mkdir()
    executable = stick / STICK_KIOSK_DIR / "comptoir-kiosk"
    executable.write_bytes(b"")
    assert bundle_beside(executable) == stick.resolve()
    elsewhere = tmp_path / "opt" / "comptoir-kiosk"
    elsewhere.mkdir(parents=True)
    assert bundle_beside(elsewhere / "comptoir-kiosk") is None
    (tmp_path / "other" / STICK_KIOSK_DIR).mkdir(parents=True)
    assert bundle_beside(tmp_path / "other" / STICK_KIOSK_DIR / "comptoir-kiosk") is None


# --- the technician view --------------------------------------------------------------------


def test_pin_form_is_the_sign_in_page_and_wrong_pins_are_throttled(
    offline_site: OfflineSite,
) -> None:
    client = offline_site.portal_app.test_client()
    answer = client.get("/login")
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/technician/")
    page = client.get("/technician/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'name="pin"' in html and "Collège du Test" in html
    assert client.get("/technician/progress").status_code == 303  # locked
    no_token = client.post("/technician/unlock", data={"pin": PIN})
    assert no_token.status_code == 400  # CSRF
    assert "Code PIN incorrect" in unlock(client, "0000").get_data(as_text=True)
    statuses = [unlock(client, f"00{n:02d}").status_code for n in range(5)]
    assert statuses[0] == 401 and statuses[-1] == 429
    throttled = unlock(client, PIN)  # even the right PIN waits: the agent is not even asked
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0


def test_technician_installs_the_whole_stick_and_writes_the_report(
    offline_site: OfflineSite, machine: Machine
) -> None:
    client = offline_site.portal_app.test_client()
    answer = unlock(client, PIN)
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/technician/")
    page = client.get("/technician/").get_data(as_text=True)
    soup = BeautifulSoup(page, "html.parser")
    rows = {row["data-package"]: row["data-state"] for row in soup.select("tr[data-package]")}
    assert rows == dict.fromkeys(PACKAGES, "available")
    token = csrf(page)
    started = client.post(
        "/technician/install", data={"csrf_token": token}, headers={"HX-Request": "true"}
    )
    fragment = started.get_data(as_text=True)
    assert started.status_code == 200 and 'id="technician-progress"' in fragment
    assert "3 installations lancées" in fragment
    deadline = time.monotonic() + 60
    while True:
        box = client.get("/technician/progress", headers={"HX-Request": "true"})
        html = box.get_data(as_text=True)
        if 'hx-trigger="every 1s"' not in html:
            break
        assert 'role="progressbar"' in html and 'aria-live="polite"' in html
        assert time.monotonic() < deadline, html
        time.sleep(0.2)
    assert "3 installés, 0 en échec" in html
    assert sorted(p.name for p in machine.installed.iterdir()) == sorted(PACKAGES)
    assert (machine.installed / "tis-kiosk-timer").read_text() == "1.4-2"
    again = BeautifulSoup(client.get("/technician/").get_data(as_text=True), "html.parser")
    assert {r["data-state"] for r in again.select("tr[data-package]")} == {"installed"}
    assert again.select_one("form[action$='/technician/install'] button[disabled]") is not None

    report = client.post(
        "/technician/report", data={"csrf_token": token}, headers={"HX-Request": "true"}
    )
    assert "Le rapport a été écrit sur 1 clé USB." in report.get_data(as_text=True)
    (written,) = (machine.stick.bundle / "reports").glob("*.json")
    data = json.loads(written.read_text("utf-8"))
    assert json.dumps(data).count("tis-kiosk-") >= len(PACKAGES)


# --- the unreachable-agent screen -----------------------------------------------------------


def test_unreachable_agent_screen_checks_again_by_itself(tmp_path: Path) -> None:
    app = create_app({"data_dir": str(tmp_path), "agent_url": "http://127.0.0.1:9"})
    client = app.test_client()
    page = client.get("/unavailable")
    html = page.get_data(as_text=True)
    assert page.status_code == 503 and "Le service d’installation ne répond pas" in html
    soup = BeautifulSoup(html, "html.parser")
    status = soup.select_one("#unavailable-status")
    assert status is not None and status["aria-live"] == "polite"
    assert status["hx-get"] == "/unavailable/check" and "every" in str(status["hx-trigger"])
    poll = client.get("/unavailable/check", headers={"HX-Request": "true"})
    assert poll.status_code == 200 and 'id="unavailable-status"' in poll.get_data(as_text=True)
    english = client.post("/language", data={"lang": "en", "csrf_token": csrf(html)})
    assert english.status_code == 303
    assert "does not answer" in client.get("/unavailable").get_data(as_text=True)


def test_unreachable_screen_opens_the_login_page_once_the_agent_answers(
    offline_site: OfflineSite, tmp_path: Path
) -> None:
    app = create_app({"data_dir": str(tmp_path), "agent_url": offline_site.agent_url.rstrip("/")})
    client = app.test_client()
    assert client.get("/unavailable").headers["Location"].endswith("/login")
    poll = client.get("/unavailable/check", headers={"HX-Request": "true"})
    assert poll.status_code == 200 and poll.headers["HX-Redirect"] == "/login"
