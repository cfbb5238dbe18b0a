"""`comptoir portal serve`: loopback by default, and a real waitress answering."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from comptoir.cli import main
from comptoir.portal import CONFIG_ENV
from portal import settings
from tests.slapd import free_port


def test_the_config_variable_is_the_portals() -> None:
    assert settings.CONFIG_ENV == CONFIG_ENV


def test_a_network_address_needs_allow_remote(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"XDG_STATE_HOME": str(tmp_path)}
    result = runner.invoke(main, ["portal", "serve", "--host", "0.0.0.0"], env=env)
    assert result.exit_code == 2
    assert "0.0.0.0 is not a loopback address" in result.output
    assert "--allow-remote" in result.output


def test_bad_settings_are_reported(tmp_path: Path) -> None:
    config = tmp_path / "portal.toml"
    config.write_text('agent_url = "http://192.0.2.1:8088"\n')
    result = CliRunner().invoke(main, ["portal", "serve", "--config", str(config)])
    assert result.exit_code == 1
    assert "agent_url" in result.output and "loopback" in result.output


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_serve_answers_on_loopback(tmp_path: Path) -> None:
    port, dead_agent = free_port(), free_port()
    config = tmp_path / "portal.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\nagent_connect_retries = 0\n')
    exe = Path(sys.executable).parent / "comptoir"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPTOIR_")}
    command = [str(exe), "portal", "serve", "--config", str(config), "--port", str(port)]
    command += ["--agent-url", f"http://127.0.0.1:{dead_agent}"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                status, headers, body = _get(base + "/healthz")
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        assert status == 503 and b'"reachable":false' in body.replace(b" ", b"")
        status, headers, body = _get(base + "/login")
        assert status == 200 and b"Se connecter" in body
        assert headers["Server"] == "comptoir-portal"
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        assert (tmp_path / "data" / "secret_key").exists()
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert f"http://127.0.0.1:{port}/" in stderr.decode()
