"""Issue #5 end to end: an admin forces a package at shutdown on a machine group; the machine
installs it at its next shutdown; the admin sees it installed.

Real parts only: the site server app (`tests.site_harness`, admins through the session's slapd)
served on loopback, its repository served by a static HTTP server, the real agent process
(`comptoir agent serve`) configured with that repository, host repository, site URL and trust
bundle, and the real `comptoir shutdown --no-window` command.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from bs4 import BeautifulSoup

from portal.site.hosts import HostStore
from tests.agent_harness import HOST_UUID, AgentProcess, wait_until
from tests.helpers import write_source
from tests.httpserver import serve_directory
from tests.shutdown_harness import APP_NAME, SETUP, dummy_app, write_agent_config
from tests.site_harness import make_site
from tests.slapd import USERS, SlapdServer
from tests.test_agent_reporting import ServedApp
from wapt.package import build_package
from wapt.trust import KeySigner, new_signer

pytestmark = pytest.mark.slow
COMPTOIR = str(Path(sys.executable).parent / "comptoir")
PACKAGE = "tis-heavy"


def test_an_at_shutdown_assignment_reaches_the_machine_and_comes_back_installed(
    tmp_path: Path, ldap_server: SlapdServer
) -> None:
    site = make_site(tmp_path / "site", ldap_server)
    app = site.app()  # also makes the enrolment secret
    hosts: HostStore = app.extensions["comptoir.hosts"]
    repository = site.site.repository_dir

    # The académie's package, signed by a packager of the site's authority.
    key, cert = new_signer(site.ca_key, site.ca_cert, "Site packager", code_signing=True)
    source = write_source(
        tmp_path / "src",
        PACKAGE,
        "1.0-1",
        setup=False,
        impacted_process=APP_NAME,
        files={"setup.py": SETUP.replace("SLEEP", "0").encode()},
    )
    build_package(source, KeySigner(key, [cert, site.ca_cert]), repository)

    # The admin (dave, from the directory) makes a room and forces the package there at shutdown.
    admin = site.admin_client("dave", USERS["dave"][0])
    made = admin.post(
        "/admin/groups", {"name": "salle-101", "title": "Salle 101", "hosts": HOST_UUID}
    )
    assert made.status_code == 303, made.get_data(as_text=True)
    deadline = datetime.now(UTC) + timedelta(days=2)  # users may postpone until then
    forced = admin.post(
        "/admin/shutdown",
        {
            "package": PACKAGE,
            "group": "salle-101",
            # typed in the site's time zone; kept and published in UTC
            "deadline": deadline.astimezone(ZoneInfo("Europe/Paris")).strftime("%Y-%m-%dT%H:%M"),
        },
    )
    assert forced.status_code == 303, forced.get_data(as_text=True)
    assert (site.site.host_repository_dir / f"{HOST_UUID}.wapt").is_file()

    # The machine: its agent reads the site's repository and host repository, trusts the
    # site's authority only, and reports to the site server.
    secret = tmp_path / "enrolment-secret"
    (tmp_path / "machine").mkdir()
    shutil.copy(site.site.enrolment_secret_file, secret)
    secret.chmod(0o600)
    served = ServedApp(app)
    try:
        with serve_directory(repository) as repo_url:
            config, port, installed = write_agent_config(
                tmp_path / "machine",
                trusted=site.site.data_dir / "keys" / "trusted" / "ca.crt",
                repo_url=repo_url,
                host_repository=f"{repo_url}/wapt-host",
                extra=f'[site]\nurl = "{served.url}"\nenrolment_secret_file = "{secret}"\n'
                "retry_seconds = 0.3\n",
            )
            agent = AgentProcess(config, port, tmp_path / "agent.log")
            client = agent.start()
            try:
                upgrades = wait_until(
                    lambda: (u := client.checkupgrades()) and u.pending.at_shutdown and u, 30
                )
                assert upgrades.pending.at_shutdown == (f"{PACKAGE}(=1.0-1)",)
                [item] = upgrades.shutdown_items
                assert item.deadline == deadline.strftime("%Y-%m-%dT%H:%M:00Z")
                assert item.impacted_process == (APP_NAME,)
                assert not (installed / PACKAGE).exists(), "kept for the shutdown run"
                # the site already knows it is pending at the next shutdown
                wait_until(lambda: (h := hosts.get(HOST_UUID)) and h.pending.at_shutdown, 30)

                env = {k: v for k, v in os.environ.items() if not k.startswith("COMPTOIR_")}
                env.pop("DISPLAY", None)
                with dummy_app(tmp_path) as editor:
                    run = subprocess.run(
                        [
                            COMPTOIR,
                            "shutdown",
                            "--no-window",
                            "--countdown",
                            "1",
                            "--agent-config",
                            str(config),
                            "--grace",
                            "5",
                            "--json",
                        ],
                        capture_output=True,
                        text=True,
                        timeout=120,
                        env=env,
                        check=False,
                    )
                    assert editor.wait(10) == -signal.SIGTERM, "the impacted app is closed"
                assert run.returncode == 0, run.stdout + run.stderr + agent.log_text()
                report = json.loads(run.stdout[run.stdout.index("{") :])
                # what waptexit would do (the room's group package), and the shutdown item
                assert report["done"][-1] == f"{PACKAGE}(=1.0-1)"
                assert report["failed"] == report["not_done"] == []
                assert report["closed_apps"] == [APP_NAME]
                assert (installed / PACKAGE).exists()

                # The agent reports; the admin's host page shows the package installed.
                record = wait_until(
                    lambda: (
                        (h := hosts.get(HOST_UUID))
                        and PACKAGE in {p.package for p in h.installed}
                        and h
                    ),
                    30,
                )
                assert not record.pending.at_shutdown
                page = admin.get(f"/admin/hosts/{HOST_UUID}")
                assert page.status_code == 200
                soup = BeautifulSoup(page.get_data(as_text=True), "html.parser")
                rows = [
                    [cell.get_text(strip=True) for cell in row.find_all("td")]
                    for row in soup.select("table.installed-table tbody tr")
                ]
                assert [PACKAGE, "1.0-1"] in [row[:2] for row in rows]
            finally:
                agent.stop()
    finally:
        served.stop()
        site.stop()
