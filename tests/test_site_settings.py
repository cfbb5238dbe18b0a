"""The `[site]` table: defaults, paths, the shared `[ldap]` parser, and errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent_bridge.agent.auth import LdapSettings
from portal import create_app
from portal.settings import SettingsError, load_settings
from portal.site.settings import SiteSettings, SiteSettingsError, site_settings_from_mapping


def _site(tmp_path: Path, **values: Any) -> SiteSettings:
    raw: dict[str, Any] = {
        "data_dir": str(tmp_path / "state"),
        "repository_dir": str(tmp_path / "repo"),
        "accounts_file": str(tmp_path / "accounts.toml"),
    }
    raw.update(values)
    return site_settings_from_mapping(
        {k: v for k, v in raw.items() if v is not None}, source="test", base=tmp_path
    )


def test_defaults_derive_from_the_two_required_directories(tmp_path: Path) -> None:
    site = _site(tmp_path)
    assert site.data_dir == tmp_path / "state"
    assert site.host_repository_dir == tmp_path / "repo" / "wapt-host"
    assert site.keys_dir == tmp_path / "state" / "keys"
    assert site.trusted_certs == tmp_path / "state" / "keys" / "trusted"
    assert site.enrolment_secret_file == tmp_path / "state" / "private" / "enrolment_secret"
    assert (site.name, site.package_prefix, site.admin_group) == ("site", "site", "comptoir-admins")
    assert site.backup_target is None and site.backup_interval_hours == 24.0
    assert site.ldap is None and site.key_passphrase_file is None


def test_a_toml_file_with_a_site_table_makes_a_site_server(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "site.toml"
    config.parent.mkdir()
    config.write_text(
        """
data_dir = "portal-state"

[site]
data_dir = "state"
repository_dir = "/srv/comptoir/repository"
keys_dir = "keys"
name = "lycee-chateaubriand"
backup_target = "backups"
backup_interval_hours = 6
accounts_file = "accounts.toml"

[site.ldap]
uri = "ldap://127.0.0.1:3389"
base_dn = "dc=example,dc=org"
group_base = "ou=groups,dc=example,dc=org"
""",
        "utf-8",
    )
    settings = load_settings(config, environ={})
    site = settings.site
    assert site is not None
    assert site.data_dir == config.parent / "state", "relative to the file"
    assert site.keys_dir == config.parent / "keys"
    assert site.repository_dir == Path("/srv/comptoir/repository")
    assert site.backup_target == str(config.parent / "backups")
    assert site.backup_interval_hours == 6.0
    assert (
        isinstance(site.ldap, LdapSettings)
        and site.ldap.group_base == "ou=groups,dc=example,dc=org"
    )
    assert site.name == "lycee-chateaubriand"


def test_without_a_site_table_the_portal_has_no_admin_side(tmp_path: Path) -> None:
    settings = load_settings(None, environ={}, overrides={"data_dir": tmp_path})
    assert settings.site is None
    app = create_app(settings)
    assert not [rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/admin")]
    assert not [rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/catalogs")]


def test_an_http_backup_target_is_kept_as_it_is(tmp_path: Path) -> None:
    site = _site(tmp_path, backup_target="https://academie.example/site-backups/")
    assert site.backup_target == "https://academie.example/site-backups/"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"data_dir": None}, "site.data_dir is required"),
        ({"colour": "blue"}, "unknown key(s) colour"),
        ({"name": "Lycée"}, "site.name: 'Lycée': use 1 to 64 lower-case"),
        ({"package_prefix": "-x"}, "site.package_prefix"),
        ({"backup_interval_hours": 0}, "site.backup_interval_hours: 0.0 must be a positive"),
        ({"backup_interval_hours": "daily"}, "site.backup_interval_hours: expected a number"),
        ({"repository_dir": 3}, "site.repository_dir: expected a path, got 3"),
        ({"accounts_file": None}, "configure site.ldap or site.accounts_file"),
        ({"ldap": {"uri": "ldap://127.0.0.1"}}, "ldap.base_dn is required"),
        ({"ldap": {"uri": "x", "base_dn": "dc=a"}}, "not an ldap://"),
        ({"ldap": {"uri": "ldap://h", "base_dn": "dc=a", "port": 1}}, "ldap: unknown key(s) port"),
        ({"admin_group": " "}, "site.admin_group"),
    ],
)
def test_errors_name_the_key_and_the_reason(
    tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(SiteSettingsError) as caught:
        _site(tmp_path, **values)
    assert message in str(caught.value)
    assert str(caught.value).startswith("test")


def test_the_state_and_the_repository_stay_apart(tmp_path: Path) -> None:
    with pytest.raises(SiteSettingsError, match="one is inside the other"):
        _site(tmp_path, repository_dir=str(tmp_path / "state" / "repo"))
    with pytest.raises(SiteSettingsError, match="must not be data_dir"):
        _site(tmp_path, repository_dir=str(tmp_path / "state"))


def test_load_settings_reports_site_errors_as_settings_errors(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"overrides: site\.name"):
        load_settings(
            None,
            environ={},
            overrides={
                "data_dir": tmp_path,
                "site": {"data_dir": "s", "repository_dir": "r", "accounts_file": "a", "name": ""},
            },
        )
    with pytest.raises(SettingsError, match=r"expected a \[site\] table"):
        load_settings(
            None, environ={"COMPTOIR_PORTAL_SITE": "yes"}, overrides={"data_dir": tmp_path}
        )


def test_the_time_zone_is_checked_and_defaults_to_paris(tmp_path: Path) -> None:
    assert _site(tmp_path).timezone == "Europe/Paris"
    assert _site(tmp_path, timezone="America/Cayenne").timezone == "America/Cayenne"
    for bad in ("Europe/Lutece", "../../etc/passwd", "", 2):
        with pytest.raises(SiteSettingsError, match=r"site\.timezone"):
            _site(tmp_path, timezone=bad)
    with pytest.raises(SiteSettingsError, match="unknown"):
        _site(tmp_path, timezone="Europe/Lutece")
