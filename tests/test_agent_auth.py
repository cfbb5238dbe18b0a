"""The agent's authentication against a real slapd on loopback, local accounts and tokens.

Needs the `ldap_server` fixture (`tests/ldap_fixture.py`).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import itsdangerous
import pytest

from agent_bridge.agent.auth import (
    AuthConfigError,
    AuthError,
    ChainAuthenticator,
    DirectoryUnavailableError,
    Identity,
    InvalidCredentialsError,
    LdapAuthenticator,
    LdapSettings,
    LocalAccounts,
    TokenError,
    TokenSigner,
    hash_password,
    load_or_create_secret,
    verify_password,
)
from tests.slapd import (
    GROUPS,
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SPECIAL_UID,
    SUFFIX,
    USERS,
    SlapdServer,
    free_port,
    write_test_ca,
)

REFUSED = "invalid username or password"

# What the directory must answer; written out here rather than derived from the seed.
EXPECTED: dict[str, tuple[str, frozenset[str]]] = {
    "alice": ("Alice Martin", frozenset({"profs-maths", "profs-tous"})),
    "bob": ("Bob Durand", frozenset({"profs-histoire", "profs-tous"})),
    "carol": ("Carol Petit", frozenset()),
    "dave": ("Dave Admin", frozenset({"comptoir-admins"})),
    SPECIAL_UID: ("Seán O'Brien", frozenset({"profs-tous"})),
}

# Usernames that would match someone if they reached a filter or a DN unescaped.
HOSTILE_USERNAMES = [
    "*",
    "*)(uid=*",
    "alice)(uid=*",
    "*)(|(uid=*",
    "al*",
    "alice*",
    "alice)(|(objectClass=*",
    "\\2a",
    "uid=alice,ou=people,dc=example,dc=org",
    "alice,ou=people,dc=example,dc=org",
    "alice+cn=Alice Martin",
    "#616c696365",
    "o'brien*",
]

MODES = ["direct", "search-anonymous", "search-service"]
GROUP_SOURCES = ["group-search", "memberof"]


def password(uid: str) -> str:
    return USERS[uid][0]


def ldap_settings(
    uri: str, mode: str = "direct", groups: str = "group-search", **overrides: Any
) -> LdapSettings:
    """Settings for the seeded directory in one of `MODES` and `GROUP_SOURCES`."""
    fields: dict[str, Any] = {"uri": uri, "base_dn": SUFFIX, "timeout": 2.0}
    if mode == "direct":
        fields["bind_pattern"] = f"uid={{username}},{PEOPLE}"
    else:
        fields["user_base"] = PEOPLE
        if mode == "search-service":
            fields["service_dn"] = SERVICE_DN
            fields["service_password"] = SERVICE_PASSWORD
    if groups == "memberof":
        fields["use_memberof"] = True
    else:
        fields["group_base"] = GROUPS
    fields.update(overrides)
    return LdapSettings(**fields)


@pytest.fixture
def silent_listener() -> Iterator[socket.socket]:
    """A socket on 127.0.0.1 that lets clients connect but never accepts nor answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock
    finally:
        sock.close()  # resets the pending connections, which frees any stuck worker
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
            t.name == "comptoir-ldap-auth" for t in threading.enumerate()
        ):
            time.sleep(0.01)


def silent_uri(sock: socket.socket, scheme: str = "ldap") -> str:
    return f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"


def assert_never_connected(sock: socket.socket) -> None:
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.accept()


# --- LDAP: who logs in, with which groups ----------------------------------------------------


@pytest.mark.parametrize("uid", list(EXPECTED))
@pytest.mark.parametrize("groups", GROUP_SOURCES)
@pytest.mark.parametrize("mode", MODES)
def test_ldap_login_answers_the_users_identity_and_groups(
    ldap_server: SlapdServer, mode: str, groups: str, uid: str
) -> None:
    authenticator = LdapAuthenticator(ldap_settings(ldap_server.uri, mode, groups))

    identity = authenticator.authenticate(uid, password(uid))

    display_name, expected_groups = EXPECTED[uid]
    assert identity == Identity(uid, expected_groups, display_name)


@pytest.mark.parametrize("mode", MODES)
def test_wrong_password_and_unknown_user_give_the_same_error(
    ldap_server: SlapdServer, mode: str
) -> None:
    authenticator = LdapAuthenticator(ldap_settings(ldap_server.uri, mode))

    with pytest.raises(InvalidCredentialsError) as wrong_password:
        authenticator.authenticate("alice", "not-alices-password")
    with pytest.raises(InvalidCredentialsError) as unknown_user:
        authenticator.authenticate("zoe", "not-alices-password")
    with pytest.raises(InvalidCredentialsError) as other_users_password:
        authenticator.authenticate("alice", password("bob"))

    messages = {str(e.value) for e in (wrong_password, unknown_user, other_users_password)}
    assert messages == {REFUSED}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("username", HOSTILE_USERNAMES)
def test_filter_and_dn_metacharacters_match_nobody(
    ldap_server: SlapdServer, mode: str, username: str
) -> None:
    authenticator = LdapAuthenticator(ldap_settings(ldap_server.uri, mode))

    for candidate in ("alice", SPECIAL_UID):
        with pytest.raises(InvalidCredentialsError, match=f"^{REFUSED}$"):
            authenticator.authenticate(username, password(candidate))


def test_the_special_user_needs_its_exact_name(ldap_server: SlapdServer) -> None:
    for mode in MODES:
        authenticator = LdapAuthenticator(ldap_settings(ldap_server.uri, mode))
        assert authenticator.authenticate(SPECIAL_UID, password(SPECIAL_UID)).username == (
            SPECIAL_UID
        )
        for near in ("o'brien*(x)", "o'brien*", "o'brien*(x)\\2c jr"):
            with pytest.raises(InvalidCredentialsError):
                authenticator.authenticate(near, password(SPECIAL_UID))


@pytest.mark.parametrize("mode", MODES)
def test_empty_password_is_refused_without_contacting_the_directory(
    silent_listener: socket.socket, mode: str
) -> None:
    authenticator = LdapAuthenticator(ldap_settings(silent_uri(silent_listener), mode))

    with pytest.raises(InvalidCredentialsError, match=f"^{REFUSED}$"):
        authenticator.authenticate("alice", "")

    assert_never_connected(silent_listener)


@pytest.mark.parametrize(
    "username",
    ["", "alice\x00", "alice\n", "ali\tce", "alice\u200b", " alice", "alice ", "\udcff", "a" * 257],
)
def test_unacceptable_usernames_are_refused_without_contacting_the_directory(
    silent_listener: socket.socket, username: str
) -> None:
    authenticator = LdapAuthenticator(ldap_settings(silent_uri(silent_listener)))

    with pytest.raises(InvalidCredentialsError, match=f"^{REFUSED}$"):
        authenticator.authenticate(username, "some password")

    assert_never_connected(silent_listener)


def test_an_empty_password_is_refused_even_where_the_directory_would_accept_it(
    ldap_server: SlapdServer,
) -> None:
    # The hole the check closes: for slapd, a DN with no password is an anonymous bind, a success.
    conn = ldap_server.connect()
    try:
        conn.simple_bind_s(f"uid=alice,{PEOPLE}", "")
        assert conn.whoami_s() == ""
    finally:
        conn.unbind_s()
    with pytest.raises(InvalidCredentialsError):
        LdapAuthenticator(ldap_settings(ldap_server.uri)).authenticate("alice", "")


def test_wrong_service_password_is_a_configuration_error(ldap_server: SlapdServer) -> None:
    settings = ldap_settings(
        ldap_server.uri, "search-service", service_password="not-the-service-password"
    )

    with pytest.raises(AuthConfigError) as error:
        LdapAuthenticator(settings).authenticate("alice", password("alice"))

    assert SERVICE_DN in str(error.value)
    assert "not-the-service-password" not in str(error.value)
    assert password("alice") not in str(error.value)


@pytest.mark.parametrize("base", ["user_base", "group_base"])
def test_a_missing_search_base_is_a_configuration_error(
    ldap_server: SlapdServer, base: str
) -> None:
    settings = ldap_settings(ldap_server.uri, "search-service", **{base: f"ou=nowhere,{SUFFIX}"})

    with pytest.raises(AuthConfigError, match="ou=nowhere"):
        LdapAuthenticator(settings).authenticate("alice", password("alice"))


def test_a_filter_matching_several_entries_refuses_the_login(ldap_server: SlapdServer) -> None:
    settings = ldap_settings(
        ldap_server.uri, "search-service", user_filter="(|(uid={username})(uid=bob))"
    )

    with pytest.raises(InvalidCredentialsError):
        LdapAuthenticator(settings).authenticate("alice", password("alice"))


def test_concurrent_logins_each_get_their_own_identity(ldap_server: SlapdServer) -> None:
    authenticator = LdapAuthenticator(ldap_settings(ldap_server.uri, "search-service"))
    results: dict[int, Identity | BaseException] = {}
    uids = list(EXPECTED) * 4

    def login(i: int, uid: str) -> None:
        try:
            results[i] = authenticator.authenticate(uid, password(uid))
        except BaseException as e:
            results[i] = e

    threads = [threading.Thread(target=login, args=(i, uid)) for i, uid in enumerate(uids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert results == {
        i: Identity(uid, EXPECTED[uid][1], EXPECTED[uid][0]) for i, uid in enumerate(uids)
    }


# --- LDAP: TLS -----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["start_tls", "ldaps"])
def test_tls_with_the_servers_ca(ldap_server: SlapdServer, transport: str) -> None:
    uri = ldap_server.ldaps_uri if transport == "ldaps" else ldap_server.uri
    settings = ldap_settings(
        uri, "search-service", start_tls=transport == "start_tls", ca_file=ldap_server.ca_file
    )

    identity = LdapAuthenticator(settings).authenticate("bob", password("bob"))

    assert identity.groups == EXPECTED["bob"][1]


@pytest.mark.parametrize("transport", ["start_tls", "ldaps"])
def test_tls_refuses_a_certificate_from_another_ca(
    ldap_server: SlapdServer, tmp_path: Path, transport: str
) -> None:
    other_ca, _, _ = write_test_ca(tmp_path, "other-ca")
    uri = ldap_server.ldaps_uri if transport == "ldaps" else ldap_server.uri
    settings = ldap_settings(uri, start_tls=transport == "start_tls", ca_file=other_ca)

    with pytest.raises(DirectoryUnavailableError) as error:
        LdapAuthenticator(settings).authenticate("bob", password("bob"))

    assert uri in str(error.value)
    assert password("bob") not in str(error.value)


# --- LDAP: an unavailable directory --------------------------------------------------------


def test_stopped_directory_is_unavailable_and_named(tmp_path: Path) -> None:
    server = SlapdServer(tmp_path / "slapd")
    server.start()
    try:
        authenticator = LdapAuthenticator(ldap_settings(server.uri, timeout=1.0))
        assert authenticator.authenticate("carol", password("carol")).username == "carol"
    finally:
        server.stop()

    started = time.monotonic()
    with pytest.raises(DirectoryUnavailableError) as error:
        authenticator.authenticate("carol", password("carol"))

    assert time.monotonic() - started < 1.0
    assert error.value.uri == server.uri
    assert server.uri in str(error.value)
    assert password("carol") not in str(error.value)


@pytest.mark.parametrize(
    ("scheme", "mode", "start_tls"),
    [
        ("ldap", "direct", False),
        ("ldap", "search-service", False),
        ("ldap", "direct", True),
        # libldap has no timeout for a TLS handshake: the worker's deadline must end it.
        ("ldaps", "direct", False),
    ],
)
def test_a_directory_that_never_answers_times_out(
    silent_listener: socket.socket, scheme: str, mode: str, start_tls: bool
) -> None:
    uri = silent_uri(silent_listener, scheme)
    settings = ldap_settings(uri, mode, timeout=0.3, start_tls=start_tls)

    started = time.monotonic()
    with pytest.raises(DirectoryUnavailableError) as error:
        LdapAuthenticator(settings).authenticate("alice", password("alice"))
    elapsed = time.monotonic() - started

    assert 0.25 < elapsed < 2 * 0.3 + 0.5
    assert uri in str(error.value)


def test_stuck_workers_are_bounded(silent_listener: socket.socket) -> None:
    settings = ldap_settings(silent_uri(silent_listener, "ldaps"), timeout=0.2)
    authenticator = LdapAuthenticator(settings, max_stuck=1)

    with pytest.raises(DirectoryUnavailableError, match="no answer within"):
        authenticator.authenticate("alice", password("alice"))
    started = time.monotonic()
    with pytest.raises(DirectoryUnavailableError, match="still stuck"):
        authenticator.authenticate("alice", password("alice"))

    assert time.monotonic() - started < 0.1


def test_passwords_never_reach_messages_or_the_log(
    ldap_server: SlapdServer, silent_listener: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Pa55-w0rd-never-logged"
    attempts: list[tuple[LdapSettings, str]] = [
        (ldap_settings(ldap_server.uri, "search-service"), "alice"),
        (ldap_settings(ldap_server.uri, "direct"), "nobody"),
        (ldap_settings(silent_uri(silent_listener), timeout=0.2), "alice"),
        (ldap_settings(f"ldap://127.0.0.1:{free_port()}"), "alice"),
    ]
    caplog.set_level(logging.DEBUG, logger="comptoir.agent.auth")

    for settings, username in attempts:
        with pytest.raises(AuthError) as error:
            LdapAuthenticator(settings).authenticate(username, secret)
        assert secret not in str(error.value)
        assert secret not in repr(error.value)

    assert secret not in caplog.text
    refusals = [r for r in caplog.records if r.getMessage().startswith("login refused")]
    assert [r.getMessage() for r in refusals] == [
        "login refused for 'alice': invalid credentials",
        "login refused for 'nobody': invalid credentials",
    ]


# --- LDAP settings -------------------------------------------------------------------------


def test_settings_name_every_problem_at_once() -> None:
    with pytest.raises(AuthConfigError) as error:
        LdapSettings(
            uri="http://127.0.0.1",
            base_dn="not a dn",
            bind_pattern="uid=alice,ou=people",
            service_dn=SERVICE_DN,
            timeout=0,
            group_filter="(member=*)",
        )

    message = str(error.value)
    for expected in ("uri", "base_dn", "bind_pattern", "service_dn", "timeout", "group_filter"):
        assert expected in message


@pytest.mark.parametrize(
    "overrides",
    [
        {"service_dn": SERVICE_DN},  # without its password
        {"service_dn": SERVICE_DN, "service_password": ""},  # an anonymous bind in disguise
        {"user_filter": "uid={username}"},
        {"user_filter": "(uid={user})"},
        {"start_tls": True, "uri": "ldaps://127.0.0.1"},
        {"uri": "ldaps://127.0.0.1 ldap://127.0.0.2"},
        {"ca_file": Path("/nonexistent/ca.pem"), "start_tls": True},
        {"ca_file": Path(__file__)},  # set without any TLS
        {"timeout": float("nan")},
    ],
)
def test_settings_refuse(overrides: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"uri": "ldap://127.0.0.1", "base_dn": SUFFIX, **overrides}
    with pytest.raises(AuthConfigError):
        LdapSettings(**fields)


def test_settings_repr_hides_the_service_password() -> None:
    settings = ldap_settings("ldap://127.0.0.1", "search-service")

    assert SERVICE_PASSWORD not in repr(settings)
    assert SERVICE_PASSWORD not in repr(LdapAuthenticator(settings))
    assert replace(settings, timeout=1.0).service_password == SERVICE_PASSWORD


# --- local accounts ------------------------------------------------------------------------


def write_accounts(path: Path, text: str) -> Path:
    path.write_text(text, "utf-8")
    return path


@pytest.fixture(scope="module")
def alice_hash() -> str:
    return hash_password("alice-local-pw")


@pytest.fixture
def accounts_file(tmp_path: Path, alice_hash: str) -> Path:
    return write_accounts(
        tmp_path / "accounts.toml",
        f"""
[accounts.alice]
password = "{alice_hash}"
groups = ["profs-maths", "profs-tous"]
display_name = "Alice Martin"

[accounts."o'brien*(x)"]
password = "{alice_hash}"
""",
    )


def test_hash_password_format_and_verification(alice_hash: str) -> None:
    parts = alice_hash.split("$")

    assert parts[:4] == ["scrypt", "16384", "8", "1"]
    assert len(base64.b64decode(parts[4])) == 16
    assert len(base64.b64decode(parts[5])) == 32
    assert verify_password("alice-local-pw", alice_hash)
    assert not verify_password("alice-local-pW", alice_hash)
    assert hash_password("alice-local-pw") != alice_hash  # a fresh salt every time
    with pytest.raises(ValueError, match="empty"):
        hash_password("")


def test_local_accounts_login(accounts_file: Path) -> None:
    accounts = LocalAccounts.from_file(accounts_file)

    assert accounts.authenticate("alice", "alice-local-pw") == Identity(
        "alice", frozenset({"profs-maths", "profs-tous"}), "Alice Martin"
    )
    assert accounts.authenticate("o'brien*(x)", "alice-local-pw") == Identity(
        "o'brien*(x)", frozenset()
    )
    assert "alice-local-pw" not in repr(accounts)


def test_local_unknown_user_and_wrong_password_cost_and_say_the_same(
    accounts_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = LocalAccounts.from_file(accounts_file)
    real_scrypt = hashlib.scrypt
    calls: list[dict[str, Any]] = []

    def counting_scrypt(password: bytes, **kwargs: Any) -> bytes:
        calls.append(kwargs)
        return real_scrypt(password, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting_scrypt)
    messages = []
    for username, secret in [("alice", "wrong"), ("zoe", "alice-local-pw"), ("*", "wrong")]:
        with pytest.raises(InvalidCredentialsError) as error:
            accounts.authenticate(username, secret)
        messages.append(str(error.value))

    assert messages == [REFUSED] * 3
    assert [(c["n"], c["r"], c["p"]) for c in calls] == [(2**14, 8, 1)] * 3


def test_local_empty_password_is_refused_before_hashing(
    accounts_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = LocalAccounts.from_file(accounts_file)
    monkeypatch.setattr(hashlib, "scrypt", None)  # would raise if called

    with pytest.raises(InvalidCredentialsError, match=f"^{REFUSED}$"):
        accounts.authenticate("alice", "")


@pytest.mark.parametrize(
    "bad_hash",
    [
        "plaintext",
        "$2b$12$abcdefghijklmnopqrstuv",  # bcrypt
        "scrypt$16384$8$1$c2FsdA==",  # a part missing
        "scrypt$16385$8$1$c2FsdHNhbHQ=$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5",  # n not a power of two
        "scrypt$1073741824$8$1$c2FsdHNhbHQ=$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5",  # 1 TiB of memory
        "scrypt$16384$8$1$not base64!$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5",
        "scrypt$16384$8$1$c2FsdHNhbHQ=$a2V5",  # key too short
    ],
)
def test_accounts_file_with_a_bad_hash_is_a_configuration_error(
    tmp_path: Path, bad_hash: str
) -> None:
    path = write_accounts(
        tmp_path / "accounts.toml", f'[accounts.alice]\npassword = "{bad_hash}"\n'
    )

    with pytest.raises(AuthConfigError) as error:
        LocalAccounts.from_file(path)

    assert "'alice'" in str(error.value)
    assert str(path) in str(error.value)


def test_accounts_file_names_every_bad_account(tmp_path: Path, alice_hash: str) -> None:
    path = write_accounts(
        tmp_path / "accounts.toml",
        f"""
[accounts.alice]
password = "sha256$abc"
[accounts.bob]
password = "{alice_hash}"
groups = "profs-tous"
[accounts.carol]
groups = []
[accounts.dave]
password = "{alice_hash}"
admin = true
""",
    )

    with pytest.raises(AuthConfigError) as error:
        LocalAccounts.from_file(path)

    for name in ("'alice'", "'bob'", "'carol'", "'dave'"):
        assert name in str(error.value)


@pytest.mark.parametrize("content", ["[accounts.alice\n", "accounts = 3\n", b"\xff\xfe"])
def test_unreadable_accounts_files(tmp_path: Path, content: str | bytes) -> None:
    path = tmp_path / "accounts.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())

    with pytest.raises(AuthConfigError, match="accounts"):
        LocalAccounts.from_file(path)
    with pytest.raises(AuthConfigError, match="cannot read"):
        LocalAccounts.from_file(tmp_path / "missing.toml")


# --- chain ---------------------------------------------------------------------------------


@pytest.fixture
def local_accounts(tmp_path: Path) -> LocalAccounts:
    # "alice" also exists in the directory, with another password.
    return LocalAccounts.from_file(
        write_accounts(
            tmp_path / "accounts.toml",
            f"""
[accounts.alice]
password = "{hash_password("alice-offline-pw")}"
groups = ["profs-tous"]
[accounts.demo]
password = "{hash_password("demo-pw")}"
groups = ["demo"]
""",
        )
    )


def test_chain_falls_back_to_local_accounts_when_the_directory_is_down(
    local_accounts: LocalAccounts,
) -> None:
    down = LdapAuthenticator(ldap_settings(f"ldap://127.0.0.1:{free_port()}", timeout=1.0))
    chain = ChainAuthenticator(down, local_accounts)

    assert chain.authenticate("alice", "alice-offline-pw") == Identity(
        "alice", frozenset({"profs-tous"})
    )
    # The user may exist in the unreachable directory: "wrong password" would be a lie.
    with pytest.raises(DirectoryUnavailableError):
        chain.authenticate("alice", "wrong")


def test_chain_tries_each_authenticator_in_order(
    ldap_server: SlapdServer, local_accounts: LocalAccounts
) -> None:
    chain = ChainAuthenticator(LdapAuthenticator(ldap_settings(ldap_server.uri)), local_accounts)

    assert chain.authenticate("alice", password("alice")).groups == EXPECTED["alice"][1]
    assert chain.authenticate("alice", "alice-offline-pw").groups == {"profs-tous"}
    assert chain.authenticate("demo", "demo-pw").groups == {"demo"}
    for username, secret in [("alice", "wrong"), ("nobody", "demo-pw")]:
        with pytest.raises(InvalidCredentialsError, match=f"^{REFUSED}$"):
            chain.authenticate(username, secret)


def test_chain_stops_at_a_configuration_error(
    ldap_server: SlapdServer, local_accounts: LocalAccounts
) -> None:
    broken = ldap_settings(ldap_server.uri, "search-service", service_password="wrong")
    chain = ChainAuthenticator(LdapAuthenticator(broken), local_accounts)

    with pytest.raises(AuthConfigError):
        chain.authenticate("demo", "demo-pw")
    with pytest.raises(AuthConfigError):
        ChainAuthenticator()


# --- tokens --------------------------------------------------------------------------------

KEY = bytes(range(32))
ALICE = Identity("alice", frozenset({"profs-maths", "profs-tous"}), "Alice Martin")


def test_token_round_trip() -> None:
    signer = TokenSigner(KEY)
    token = signer.issue(ALICE)

    assert signer.verify(token, "alice") == ALICE
    assert TokenSigner(KEY).verify(token, "alice") == ALICE  # same key, another instance
    assert token not in repr(signer)


def test_token_expires_after_its_lifetime(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = TokenSigner(KEY, lifetime=3600)
    issued_at = int(time.time())
    token = signer.issue(ALICE)

    def at(moment: int) -> None:
        monkeypatch.setattr(itsdangerous.TimestampSigner, "get_timestamp", lambda self: moment)

    at(issued_at + 3600 - 1)
    assert signer.verify(token, "alice") == ALICE
    at(issued_at + 3600 + 2)
    with pytest.raises(TokenError, match="expired") as error:
        signer.verify(token, "alice")
    assert token not in str(error.value)


def test_forged_tokens_are_refused() -> None:
    signer = TokenSigner(KEY)
    token = signer.issue(Identity("bob", frozenset({"profs-tous"})))
    payload, timestamp, signature = token.rsplit(".", 2)
    # Bob makes himself an admin, keeping his signature.
    admin = base64.urlsafe_b64encode(
        b'{"username":"bob","groups":["comptoir-admins"],"display_name":""}'
    ).rstrip(b"=")
    forgeries = [
        f"{admin.decode()}.{timestamp}.{signature}",
        f"{payload}.{timestamp}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}"
        f"{signature[-1]}",
        f"{payload}.{timestamp}.",
        f"{payload}.{signature}",
        "not a token",
        "",
        "x" * 100_000,
    ]
    # Flip the high bit of every base64 character: a low bit of a segment's last character
    # may be padding that decoding ignores, so flipping it would change nothing.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i, char in enumerate(token):
        if char != ".":
            flipped = alphabet[alphabet.index(char) ^ 0b100000]
            forgeries.append(token[:i] + flipped + token[i + 1 :])

    for forged in forgeries:
        with pytest.raises(TokenError) as error:
            signer.verify(forged, "bob")
        assert not forged or forged not in str(error.value)


def test_token_of_another_user_or_key_is_refused() -> None:
    token = TokenSigner(KEY).issue(ALICE)

    with pytest.raises(TokenError, match="not issued for 'bob'"):
        TokenSigner(KEY).verify(token, "bob")
    with pytest.raises(TokenError, match="invalid"):
        TokenSigner(os.urandom(32)).verify(token, "alice")


def test_token_signer_refuses_weak_settings() -> None:
    with pytest.raises(AuthConfigError, match="32"):
        TokenSigner(b"short")
    with pytest.raises(AuthConfigError, match="lifetime"):
        TokenSigner(KEY, lifetime=0)


# --- the token key -------------------------------------------------------------------------


def test_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "private" / "secret_key"

    key = load_or_create_secret(path)

    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == key
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret_key"]


def test_secret_created_by_racing_agents_is_one_key(tmp_path: Path) -> None:
    path = tmp_path / "secret_key"
    keys: list[bytes] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        keys.append(load_or_create_secret(path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)

    assert len(keys) == 8
    assert set(keys) == {path.read_bytes()}


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [(os.urandom(32), 0o644, "chmod 600"), (b"short", 0o600, "5 bytes")],
)
def test_unsafe_or_truncated_secret_is_refused(
    tmp_path: Path, content: bytes, mode: int, message: str
) -> None:
    path = tmp_path / "secret_key"
    path.write_bytes(content)
    path.chmod(mode)

    with pytest.raises(AuthConfigError, match=message):
        load_or_create_secret(path)


def test_write_accounts_file_round_trips(tmp_path: Path) -> None:
    from agent_bridge.agent.auth import write_accounts_file

    path = tmp_path / "accounts.toml"
    write_accounts_file(path, {'jean "le" prof': ("s3cret", "Jean", ["profs", "é"])})
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert "s3cret" not in path.read_text("utf-8")
    identity = LocalAccounts.from_file(path).authenticate('jean "le" prof', "s3cret")
    assert identity.groups == frozenset({"profs", "é"}) and identity.display_name == "Jean"
