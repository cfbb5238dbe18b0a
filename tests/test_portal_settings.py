"""The portal's settings, secret key, session store and throttle, without an agent."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest

from agent_bridge.models import Session
from portal import create_app
from portal.board import Catalog, fold
from portal.sessions import SessionStore
from portal.settings import _KINDS as KINDS
from portal.settings import (
    PortalSettings,
    SettingsError,
    is_loopback,
    load_or_create_secret_key,
    load_settings,
)
from portal.throttle import LoginThrottle
from tests.portal_site import FakeClock


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(None, environ={"XDG_STATE_HOME": str(tmp_path)})
    assert settings.data_dir == tmp_path / "comptoir" / "portal"
    assert settings.agent_url == "http://127.0.0.1:8088"
    assert (settings.listen_host, settings.port) == ("127.0.0.1", 8080)
    assert settings.idle_timeout == 600
    assert settings.languages == ("fr", "en") and settings.default_language == "fr"
    assert settings.page_size == 48
    assert settings.secret_key is None
    assert set(KINDS) == {f.name for f in dataclasses.fields(PortalSettings)}


def test_layers_file_then_environment_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "portal.toml"
    config.parent.mkdir()
    config.write_text(
        'data_dir = "state"\nicons_dir = "/var/cache/icons"\nport = 8181\n'
        'idle_timeout = 300\nlanguages = ["fr"]\ncookie_secure = true\n'
    )
    environ = {
        "COMPTOIR_PORTAL_PORT": "8282",
        "COMPTOIR_PORTAL_LANGUAGES": "fr,en",
        "COMPTOIR_PORTAL_DEFAULT_LANGUAGE": "en",
        "COMPTOIR_PORTAL_COOKIE_SECURE": "no",
        "COMPTOIR_AGENT_PORT": "1",  # not the portal's
    }
    settings = load_settings(config, environ=environ, overrides={"idle_timeout": 42})
    assert settings.data_dir == tmp_path / "etc" / "state", "relative to the file"
    assert settings.icons_dir == Path("/var/cache/icons")
    assert settings.port == 8282
    assert settings.languages == ("fr", "en") and settings.default_language == "en"
    assert settings.cookie_secure is False
    assert settings.idle_timeout == 42.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"colour": "blue"}, "unknown key(s) colour"),
        ({"port": "eighty"}, "port: expected a whole number"),
        ({"port": 70000}, "port: 70000 is not a TCP port"),
        ({"idle_timeout": 0}, "idle_timeout: 0.0 must be > 0"),
        ({"languages": ["fr", "de"]}, "languages"),
        ({"default_language": "en", "languages": ["fr"]}, "default_language: 'en'"),
        ({"agent_url": "http://10.0.0.1:8088"}, "agent_url"),
        ({"secret_key": "short"}, "secret_key: at least 32 characters"),
        ({"cookie_name": "a b"}, "cookie_name"),
        ({"cookie_secure": "maybe"}, "cookie_secure: expected true or false"),
        ({"login_delay": 60, "login_max_delay": 30}, "login_max_delay"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, values: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(None, environ={}, overrides={"data_dir": str(tmp_path), **values})
    assert message in str(caught.value)


def test_bad_environment_and_file_name_their_source(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="COMPTOIR_PORTAL_THREADS: expected a whole number"):
        load_settings(None, environ={"COMPTOIR_PORTAL_THREADS": "many"})
    broken = tmp_path / "broken.toml"
    broken.write_text("port = ")
    with pytest.raises(SettingsError, match=r"broken\.toml: not valid TOML"):
        load_settings(broken, environ={})
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", environ={})


def test_the_secret_key_is_made_once_private(tmp_path: Path) -> None:
    settings = load_settings(None, environ={}, overrides={"data_dir": tmp_path / "data"})
    key = load_or_create_secret_key(settings)
    assert len(key) == 32
    mode = stat.S_IMODE(settings.secret_file.stat().st_mode)
    assert mode == 0o600
    assert load_or_create_secret_key(settings) == key
    os.chmod(settings.secret_file, 0o644)
    with pytest.raises(SettingsError, match="accessible to others"):
        load_or_create_secret_key(settings)
    given = dataclasses.replace(settings, secret_key="k" * 40)
    assert load_or_create_secret_key(given) == b"k" * 40


def test_create_app_with_overrides_ignores_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPTOIR_PORTAL_PAGE_SIZE", "7")
    app = create_app({"data_dir": tmp_path})
    assert app.extensions["comptoir.settings"].page_size == 48
    config = tmp_path / "portal.toml"
    config.write_text(f'data_dir = "{tmp_path}"\npage_size = 9\n')
    monkeypatch.setenv("COMPTOIR_PORTAL_CONFIG", str(config))
    from_env = create_app()
    assert from_env.extensions["comptoir.settings"].page_size == 7, "variables over the file"
    assert (tmp_path / "secret_key").exists()


def test_loopback_addresses() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "example.org", "::"))


def _session(name: str) -> Session:
    return Session(name, "token-" + name, ())


def test_the_session_store_expires_and_makes_room() -> None:
    clock = FakeClock()
    store = SessionStore(idle_timeout=60, lifetime=600, max_sessions=3, clock=clock)
    anonymous = store.create({"lang": "en"})
    alice = store.create({}, _session("alice"))
    clock.advance(61)
    assert store.get(anonymous.sid) == (anonymous, None), "anonymous: no idle timeout"
    assert store.get(alice.sid) == (alice, "idle")
    assert store.get(alice.sid) == (None, None), "gone"

    bob = store.create({}, _session("bob"))
    carol = store.create({}, _session("carol"))
    dave = store.create({}, _session("dave"))  # full: the anonymous record goes first
    assert store.get(anonymous.sid) == (None, None)
    clock.advance(1)
    store.touch(bob)
    store.create({}, _session("erin"))  # then the least recently used
    assert store.get(carol.sid) == (None, None)
    assert store.get(bob.sid)[0] is bob and store.get(dave.sid)[0] is dave
    clock.advance(600)
    assert store.get(bob.sid) == (bob, "lifetime")
    assert len(bob.sid) >= 43 and bob.sid != dave.sid


def test_the_throttle_grows_and_forgets() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(
        per_user=2, per_address=10, delay=30, max_delay=100, window=900, clock=clock
    )
    assert throttle.failure("Alice", "1.2.3.4") == 0
    assert throttle.failure("alice ", "1.2.3.5") == 30, "names are case-insensitive"
    assert throttle.wait("ALICE", None) == 30
    clock.advance(30)
    assert throttle.failure("alice", None) == 60
    clock.advance(60)
    assert throttle.failure("alice", None) == 100, "capped"
    throttle.success("alice")
    assert throttle.wait("alice", None) == 0
    for _ in range(9):
        throttle.failure("x", "9.9.9.9")
    assert throttle.wait("someone-else", "9.9.9.9") == 0
    throttle.failure("y", "9.9.9.9")
    assert throttle.wait("someone-else", "9.9.9.9") == 30, "the address counts on its own"
    clock.advance(901)
    assert throttle.wait("someone-else", "9.9.9.9") == 0, "forgotten after the window"


def test_search_ignores_accents_and_case() -> None:
    assert fold("Géométrie ÉLÈVE") == "geometrie eleve"
    empty = Catalog.build([], signature=(), now=0.0)
    assert empty.search("x") == [] and empty.categories == ()
