"""The `ldap_server` fixture: one seeded throwaway slapd on loopback for the whole session.

Import it into a conftest (``from tests.ldap_fixture import ldap_server  # noqa: F401``) or load
it as a plugin (``pytest -p tests.ldap_fixture``). The directory is shared by every test of the
session, so a test that changes it must put it back; `tests.slapd` describes the seed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.slapd import SlapdServer


@pytest.fixture(scope="session")
def ldap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    """A running slapd seeded with `tests.slapd.USERS`, its groups and the service account."""
    server = SlapdServer(tmp_path_factory.mktemp("slapd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
