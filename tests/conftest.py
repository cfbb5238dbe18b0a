"""Shared test fixtures: where the WAPT 1.8.2 ground-truth fixtures live."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.ldap_fixture import ldap_server  # noqa: F401 (a shared fixture, used by name)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COMPTOIR_SHARED", ROOT.parent / "shared"))
WAPT_FIXTURES = SHARED / "fixtures" / "wapt-1.8.2"
TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def wapt_fixtures() -> Path:
    """The directory of packages, repository and verdicts made by WAPT 1.8.2's own code."""
    assert WAPT_FIXTURES.is_dir(), f"WAPT fixtures not found at {WAPT_FIXTURES}"
    return WAPT_FIXTURES


@pytest.fixture(scope="session")
def expected(wapt_fixtures: Path) -> dict[str, Any]:
    """WAPT's own verdicts and comparisons (`expected.json`)."""
    data: dict[str, Any] = json.loads((wapt_fixtures / "expected.json").read_text("utf-8"))
    return data


CHROMIUM = os.environ.get("COMPTOIR_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Playwright drives Debian's chromium, with nothing that reaches the network."""
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
        ],
    }
