"""The agent's configuration: TOML, environment, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_bridge.agent.config import ConfigError, load_config

MINIMAL = 'data_dir = "data"\ntrusted_certs = "ssl"\naccounts_file = "accounts.toml"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text, "utf-8")
    return path


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), environ={})
    assert config.data_dir == tmp_path / "data"
    assert config.trusted_certs == tmp_path / "ssl"
    assert (config.listen_host, config.port) == ("127.0.0.1", 8088)
    assert config.maturities == ("PROD",)
    assert config.update_period_minutes == 120


def test_repositories_ldap_and_install_env(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + 'maturities = "PREPROD,PROD"\n'
        + "[install_env]\nCOMPTOIR_INSTALL_ROOT = '/opt/x'\n"
        + "[[repositories]]\nname = 'web'\nurl = 'http://127.0.0.1:9/wapt'\n"
        + "[[repositories]]\nname = 'usb'\npath = 'stick'\nmaturities = ['PROD']\n"
        + "[ldap]\nuri = 'ldap://127.0.0.1:9'\nbase_dn = 'dc=example,dc=org'\n"
        + "service_dn = 'cn=svc,dc=example,dc=org'\nservice_password = 'hunter2'\n"
    )
    config = load_config(write(tmp_path, text), environ={})
    assert config.maturities == ("PREPROD", "PROD")
    assert [r.location for r in config.repositories] == [
        "http://127.0.0.1:9/wapt",
        str(tmp_path / "stick"),
    ]
    assert config.repositories[1].maturities == ("PROD",)
    assert config.install_env == {"COMPTOIR_INSTALL_ROOT": "/opt/x"}
    assert config.ldap is not None and config.ldap.uri == "ldap://127.0.0.1:9"
    assert "hunter2" not in repr(config)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, MINIMAL),
        environ={"COMPTOIR_AGENT_PORT": "18088", "COMPTOIR_AGENT_MATURITIES": "DEV,PROD"},
    )
    assert config.port == 18088 and config.maturities == ("DEV", "PROD")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('trusted_certs = "ssl"\n', "data_dir is required"),
        ('data_dir = "d"\ntrusted_certs = "ssl"\n', "configure [ldap] or accounts_file"),
        (MINIMAL + "colour = 'blue'\n", "unknown key(s) colour"),
        (MINIMAL + 'listen_host = "0.0.0.0"\n', "not a loopback address"),
        (MINIMAL + 'listen_host = "192.168.1.10"\n', "not a loopback address"),
        (MINIMAL + "port = 99999\n", "not a TCP port"),
        (MINIMAL + 'port = "8088"\n', "port: expected int"),
        (MINIMAL + "update_period_minutes = 0\n", "at least 1"),
        (MINIMAL + "[[repositories]]\nname = 'x'\n", "exactly one of url or path"),
        (MINIMAL + "[[repositories]]\nurl = 'ftp://x/'\n", "not an http(s) URL"),
        (MINIMAL + "[[repositories]]\nurl = 'http://x/'\npath = 'y'\n", "exactly one"),
        (MINIMAL + "[ldap]\nuri = 'ldap://127.0.0.1'\n", "ldap.base_dn is required"),
        (MINIMAL + "[ldap]\nuri = 'x'\nbase_dn = 'y'\nfoo = 1\n", "unknown key(s) foo"),
        ("data_dir = [\n", "not valid TOML"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r".*" + __import__("re").escape(message)):
        load_config(write(tmp_path, text), environ={})


def test_bad_environment_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="COMPTOIR_AGENT_PORT: 'eighty' is not a whole number"):
        load_config(write(tmp_path, MINIMAL), environ={"COMPTOIR_AGENT_PORT": "eighty"})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml", environ={})


def test_the_example_configuration_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "deploy" / "agent.example.toml"
    config = load_config(example, environ={})
    assert config.repositories and config.ldap is not None
