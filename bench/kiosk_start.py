"""Kiosk cold start: from launching the process to a painted first page (target under 3 s).

    .venv/bin/python bench/kiosk_start.py [--quick]         (also part of `make bench`)

Two kiosks, each started afresh `rounds` times on Qt's offscreen platform, a real agent
answering on loopback (so the window opens on the login page): the installed one (`comptoir
kiosk --check`, which also starts the portal in-process) and the one-folder executable
(`kiosk.build`, built first if its sources changed; its size is recorded). The time is taken
from `Popen` to the JSON line `--check` prints once the login form is in the page and the
window's pixels are drawn. "Cold" is a new process each time: the operating system's file
cache is warm after the first round, as it is on a machine that has run the kiosk before.
The reference is a bare interpreter start (`python -c pass`) measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
from common import Row, Samples

TARGET_S = 3.0


def _environment(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPTOIR_", "DISPLAY"))}
    env.update(
        QT_QPA_PLATFORM="offscreen",
        QTWEBENGINE_DISABLE_SANDBOX="1",
        COMPTOIR_PORTAL_DATA_DIR=str(data),
    )
    return env


def _start_agent(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    from agent_bridge.agent.auth import write_accounts_file
    from agent_bridge.client import AgentClient
    from tests.slapd import free_port

    port = free_port()
    (root / "repo").mkdir(parents=True, exist_ok=True)
    write_accounts_file(root / "accounts.toml", {"marie": ("demo", "Marie", ("profs",))})
    config = root / "agent.toml"
    config.write_text(
        f'data_dir = "{root / "agent-data"}"\ntrusted_certs = "{common.PKI / "ca.crt"}"\n'
        f'port = {port}\naccounts_file = "{root / "accounts.toml"}"\n'
        f'[[repositories]]\nname = "empty"\npath = "{root / "repo"}"\n',
        "utf-8",
    )
    comptoir = Path(sys.executable).parent / "comptoir"
    process = subprocess.Popen(
        [str(comptoir), "agent", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    AgentClient(url, connect_retries=20.0).ping()
    return process, url


def _time_start(command: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    began = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    line = process.stdout.readline()
    elapsed = time.perf_counter() - began
    process.wait(60)
    outcome = json.loads(line) if line else {"ok": False}
    if not outcome.get("ok") or not str(outcome.get("url", "")).endswith("/login"):
        raise RuntimeError(f"{command[0]}: the login page was not drawn: {outcome}")
    return elapsed, outcome


def run(quick: bool = False) -> dict[str, Any]:
    from kiosk.build import build_kiosk, folder_size

    rounds = 3 if quick else 5
    prepare_start = time.perf_counter()
    exe = build_kiosk()
    size, files = folder_size(exe.parent)
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as tmp:
        root = Path(tmp)
        agent, agent_url = _start_agent(root)
        prepare_s = time.perf_counter() - prepare_start
        try:
            comptoir = str(Path(sys.executable).parent / "comptoir")
            installed = [comptoir, "kiosk", "--agent-url", agent_url, "--check"]
            frozen = [str(exe), "--agent-url", agent_url, "--check"]
            python, installed_s, frozen_s = Samples(), Samples(), Samples()
            inside: dict[str, list[float]] = {"installed": [], "executable": []}
            for i in range(rounds):
                began = time.perf_counter()
                subprocess.run([sys.executable, "-c", "pass"], check=True)
                python.add(time.perf_counter() - began)
                for name, command, samples in (
                    ("installed", installed, installed_s),
                    ("executable", frozen, frozen_s),
                ):
                    elapsed, outcome = _time_start(command, _environment(root / f"p-{name}-{i}"))
                    samples.add(elapsed)
                    inside[name].append(outcome["painted_s"])
        finally:
            agent.terminate()
            agent.wait(10)
    rows = [
        Row(
            f"kiosk start, installed (`comptoir kiosk`), median of {rounds}",
            f"< {TARGET_S:g} s",
            f"{installed_s.median:.2f} s",
            f"python -c pass {python.median:.3f} s",
            f"{installed_s.median / TARGET_S:.2f} of target",
            installed_s.median < TARGET_S,
        ),
        Row(
            f"kiosk start, executable (one folder), median of {rounds}",
            f"< {TARGET_S:g} s",
            f"{frozen_s.median:.2f} s",
            f"python -c pass {python.median:.3f} s",
            f"{frozen_s.median / TARGET_S:.2f} of target",
            frozen_s.median < TARGET_S,
        ),
        Row(
            "kiosk executable size (one folder)",
            "recorded",
            f"{size / 1e6:,.0f} MB, {files} files",
            "—",
            "—",
            None,
        ),
    ]
    return {
        "rows": rows,
        "prepare_s": prepare_s,
        "details": {
            "installed_s": installed_s.values,
            "executable_s": frozen_s.values,
            "python_s": python.values,
            "painted_in_process_s": inside,
            "size_bytes": size,
            "files": files,
        },
    }


def print_result(result: dict[str, Any]) -> None:
    print(common.table(result["rows"]))
    d = result["details"]
    print()
    for key in ("installed_s", "executable_s", "python_s"):
        print(f"  {key[:-2]:<11} {Samples(d[key]).describe()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 5")
    args = parser.parse_args()
    result = run(args.quick)
    print_result(result)


if __name__ == "__main__":
    main()
