"""User authentication for the agent: LDAP, local accounts, and the signed tokens of `/login`.

What this module owns (ADR 0005, `wapt-format.md` §4.2):

- `LdapAuthenticator`: a password checked by an LDAP bind, either directly on a DN built from a
  pattern or after a search for the user (anonymous or as a service account), then the user's
  groups from a group search or from `memberOf`. One connection per call, so it is thread safe.
- `LocalAccounts`: accounts from a TOML file with scrypt-hashed passwords, for the demo and for
  sites without a directory.
- `ChainAuthenticator`: tries several authenticators in order (LDAP, then local accounts).
- `TokenSigner`: the token `/login` answers, signed with itsdangerous and time limited, carrying
  the user and the groups; `load_or_create_secret` makes its key once.

Every error is an `AuthError`. A refused login is always `InvalidCredentialsError` with one
message, whether the user is unknown or the password wrong. Passwords and tokens never appear in a
message, a `repr` or the log; refusals are logged (logger ``comptoir.agent.auth``) with the
username only.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import logging
import math
import secrets
import threading
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

import itsdangerous

from wapt import fsutil

logger = logging.getLogger("comptoir.agent.auth")

MAX_USERNAME_LENGTH = 256
MAX_PASSWORD_LENGTH = 1024
SECRET_KEY_SIZE = 32
TOKEN_SALT = "comptoir.agent.token"  # noqa: S105 - a namespace, not a secret
MAX_TOKEN_LENGTH = 8192


class _LazyLdap:
    """python-ldap, imported on first use: an agent with local accounts only never loads it
    (it weighs about 6 MiB of the agent's memory)."""

    def __getattr__(self, name: str) -> Any:
        import ldap as module
        import ldap.dn
        import ldap.filter

        globals()["ldap"] = module
        return getattr(module, name)


ldap: Any = _LazyLdap()


# --- errors and the interface --------------------------------------------------------------


class AuthError(Exception):
    """Root of every error raised by the agent's authentication."""


class InvalidCredentialsError(AuthError):
    """Unknown user or wrong password; the message never says which."""

    MESSAGE = "invalid username or password"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class DirectoryUnavailableError(AuthError):
    """The LDAP directory did not answer (down, unreachable, timed out, TLS failed)."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(f"LDAP directory {uri} unavailable: {reason}")
        self.uri = uri


class AuthConfigError(AuthError):
    """The authentication settings, the accounts file or the token key are wrong."""


class TokenError(AuthError):
    """A token is missing, expired, forged, or was issued for another user."""


@dataclass(frozen=True)
class Identity:
    """Who logged in, and the groups the self-service rules are matched against."""

    username: str
    groups: frozenset[str]
    display_name: str = ""


class Authenticator(Protocol):
    """Checks a password. What `/login` calls."""

    def authenticate(self, username: str, password: str) -> Identity:
        """The identity of `username`.

        Raises `InvalidCredentialsError` (unknown user or wrong password),
        `DirectoryUnavailableError`, or `AuthConfigError`.
        """
        ...


def _shown(username: str) -> str:
    """`username` as it may appear in a log line: quoted, escaped, shortened."""
    return repr(username[:64] + ("…" if len(username) > 64 else ""))


def _refuse(username: str, reason: str) -> NoReturn:
    logger.warning("login refused for %s: %s", _shown(username), reason)
    raise InvalidCredentialsError()


def _check_credentials(username: str, password: str) -> None:
    """Refuse, before any lookup, what no account can match.

    An empty password must never reach LDAP: a simple bind with a DN and no password is an
    unauthenticated bind, which many servers answer with success.
    """
    if not username:
        _refuse(username, "empty username")
    if len(username) > MAX_USERNAME_LENGTH:
        _refuse(username, f"username longer than {MAX_USERNAME_LENGTH} characters")
    if not username.isprintable() or username != username.strip():
        _refuse(username, "control characters or surrounding spaces in the username")
    if not password:
        _refuse(username, "empty password")
    if len(password) > MAX_PASSWORD_LENGTH or "\x00" in password:
        _refuse(username, "unacceptable password")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        _refuse(username, "unacceptable password")


# --- LDAP ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LdapSettings:
    """How to check passwords and find groups in an LDAP directory.

    Direct bind when `bind_pattern` is set (``"uid={username},ou=people,dc=example,dc=org"``,
    the username DN-escaped). Otherwise search-then-bind: `user_filter` (``{username}``
    filter-escaped) is searched under `user_base` (default `base_dn`), anonymously or as
    `service_dn`, and exactly one entry must match.

    Groups: with `use_memberof`, the first RDN value of each `memberOf` DN of the user's entry;
    otherwise the `group_name_attribute` values of the entries matching `group_filter`
    (``{user_dn}`` and ``{username}`` filter-escaped) under `group_base` (default `base_dn`).
    Group lookups run bound as the user, after the password was accepted.

    `uri` may list several servers separated by spaces (libldap tries them in turn). `ldaps://`
    or `start_tls` require a certificate that `ca_file` (or the system's LDAP configuration)
    trusts. `timeout` bounds the connection and each operation; a whole authentication is
    abandoned after twice that.

    Raises `AuthConfigError` naming every problem found.
    """

    uri: str
    base_dn: str
    bind_pattern: str | None = None
    user_base: str | None = None
    user_filter: str = "(uid={username})"
    service_dn: str | None = None
    service_password: str | None = field(default=None, repr=False)
    group_base: str | None = None
    group_filter: str = "(&(objectClass=groupOfNames)(member={user_dn}))"
    group_name_attribute: str = "cn"
    use_memberof: bool = False
    start_tls: bool = False
    ca_file: Path | None = None
    timeout: float = 5.0
    display_name_attribute: str = "cn"

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise AuthConfigError("LDAP settings: " + "; ".join(problems))

    @property
    def uses_tls(self) -> bool:
        """Whether every connection is TLS: StartTLS, or only ldaps:// URIs."""
        uris = self.uri.lower().split()
        return self.start_tls or (bool(uris) and all(u.startswith("ldaps://") for u in uris))

    @property
    def users_under(self) -> str:
        return self.user_base or self.base_dn

    @property
    def groups_under(self) -> str:
        return self.group_base or self.base_dn

    def _problems(self) -> Iterator[str]:
        uris = self.uri.split()
        if not uris:
            yield "uri is empty"
        for uri in uris:
            scheme = uri.partition("://")[0].lower()
            if scheme not in ("ldap", "ldaps", "ldapi") or "://" not in uri:
                yield f"uri {uri!r}: not an ldap://, ldaps:// or ldapi:// URI"
            elif scheme == "ldaps" and self.start_tls:
                yield f"uri {uri!r}: start_tls makes no sense on ldaps://"
        if not self.uses_tls and any(u.lower().startswith("ldaps://") for u in uris):
            yield "uri mixes ldaps:// with plain URIs: some logins would go in clear"
        for name in ("base_dn", "user_base", "group_base", "service_dn"):
            value = getattr(self, name)
            if value is not None and (not value or not ldap.dn.is_dn(value)):
                yield f"{name} {value!r}: not a DN"
        if self.bind_pattern is not None:
            try:
                dn = self.bind_pattern.format(username="x")
            except (KeyError, IndexError, ValueError):
                dn = ""
            if "{username}" not in self.bind_pattern or not ldap.dn.is_dn(dn):
                yield f"bind_pattern {self.bind_pattern!r}: not a DN with {{username}}"
            if self.service_dn is not None:
                yield "service_dn is only used by search-then-bind (without bind_pattern)"
        elif not _formats(self.user_filter, "username", username="x"):
            yield f"user_filter {self.user_filter!r}: not a (filter) with {{username}}"
        if not self.use_memberof and not _formats(
            self.group_filter, "user_dn", "username", user_dn="x", username="x"
        ):
            yield (
                f"group_filter {self.group_filter!r}: not a (filter) with {{user_dn}} "
                "or {username}"
            )
        if (self.service_dn is None) != (self.service_password is None):
            yield "service_dn and service_password go together"
        if self.service_password == "":
            # An empty password turns the service bind into an anonymous one.
            yield "service_password is empty"
        for name in ("group_name_attribute", "display_name_attribute"):
            if not getattr(self, name).replace("-", "").replace(";", "").isalnum():
                yield f"{name} {getattr(self, name)!r}: not an attribute name"
        if not (isinstance(self.timeout, int | float) and math.isfinite(self.timeout)) or (
            self.timeout <= 0
        ):
            yield f"timeout {self.timeout!r}: not a positive number of seconds"
        if self.ca_file is not None:
            if not self.uses_tls:
                yield "ca_file is set but neither ldaps:// nor start_tls is used"
            if not Path(self.ca_file).is_file():
                yield f"ca_file {str(self.ca_file)!r}: no such file"


def _formats(template: str, *placeholders: str, **values: str) -> bool:
    """Whether `template` is a parenthesised filter using one of `placeholders` and no other."""
    try:
        formatted = template.format(**values)
    except (KeyError, IndexError, ValueError):
        return False
    used = any("{" + name + "}" in template for name in placeholders)
    return used and formatted.startswith("(") and formatted.endswith(")")


@functools.cache
def _errors() -> dict[str, tuple[type[Exception], ...]]:
    """python-ldap's error classes by what they mean (looked up once, when LDAP is first used).

    unavailable: libldap could not get an answer, try again later; refused: a user bind was
    answered, the account cannot log in with that password; sizelimit: too many entries.
    """
    return {
        "unavailable": (
            ldap.SERVER_DOWN,
            ldap.TIMEOUT,
            ldap.CONNECT_ERROR,
            ldap.UNAVAILABLE,
            ldap.BUSY,
            ldap.TIMELIMIT_EXCEEDED,
            ldap.ADMINLIMIT_EXCEEDED,
        ),
        "refused": (
            ldap.INVALID_CREDENTIALS,
            ldap.INAPPROPRIATE_AUTH,
            ldap.UNWILLING_TO_PERFORM,
            ldap.CONSTRAINT_VIOLATION,
        ),
        "sizelimit": (ldap.SIZELIMIT_EXCEEDED,),
    }


def _reason(error: Any) -> str:
    """The description of a python-ldap error (its `desc` and `info`; never a request value)."""
    details = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
    desc = str(details.get("desc") or type(error).__name__)
    info = str(details.get("info") or "").strip()
    return f"{desc} ({info})" if info and info != desc else desc


class LdapAuthenticator:
    """Checks passwords against an LDAP directory; see `LdapSettings` for the modes.

    Thread safe: every call opens its own connection and closes it. Each call runs in a short
    worker thread so that it returns within `2 * timeout` even where libldap has no timeout (a
    TLS handshake with a server that accepted the connection and stays silent). A worker given up
    that way stays blocked until the server closes the connection; while `max_stuck` are, calls
    fail at once with `DirectoryUnavailableError` rather than pile up more.
    """

    def __init__(self, settings: LdapSettings, *, max_stuck: int = 8) -> None:
        self.settings = settings
        self._max_stuck = max_stuck
        self._stuck = 0
        self._lock = threading.Lock()
        if not settings.uses_tls and not all(
            uri.lower().startswith(("ldap://127.", "ldap://localhost", "ldap://[::1]", "ldapi:"))
            for uri in settings.uri.split()
        ):
            logger.warning(
                "LDAP directory %s is used without TLS: passwords cross the network in clear",
                settings.uri,
            )

    def __repr__(self) -> str:
        return f"LdapAuthenticator({self.settings!r})"

    def authenticate(self, username: str, password: str) -> Identity:
        """The identity of `username` if the directory accepts `password`.

        Raises `InvalidCredentialsError` (unknown user, wrong or empty password, or a username
        no account can have), `DirectoryUnavailableError` (down, timed out, TLS failure), or
        `AuthConfigError` (the directory refuses the service account, a base does not exist,
        the server demands TLS).
        """
        _check_credentials(username, password)
        uri = self.settings.uri
        with self._lock:
            stuck = self._stuck
        if stuck >= self._max_stuck:
            logger.error("LDAP directory %s: %d operations still stuck", uri, stuck)
            raise DirectoryUnavailableError(uri, f"{stuck} earlier operations are still stuck")
        outcome: list[Identity | BaseException] = []
        done = threading.Event()
        given_up = False

        def work() -> None:
            try:
                outcome.append(self._authenticate(username, password))
            except BaseException as e:  # handed to the caller's thread below
                outcome.append(e)
            finally:
                with self._lock:
                    done.set()
                    if given_up:
                        self._stuck -= 1

        threading.Thread(target=work, name="comptoir-ldap-auth", daemon=True).start()
        deadline = 2 * self.settings.timeout
        if not done.wait(deadline):
            with self._lock:
                # Checked under the lock: the worker may have finished since the wait ended.
                given_up = not done.is_set()
                if given_up:
                    self._stuck += 1
            if given_up:
                logger.error("LDAP directory %s: no answer within %g s", uri, deadline)
                raise DirectoryUnavailableError(uri, f"no answer within {deadline:g} s")
        result = outcome[0]
        if isinstance(result, DirectoryUnavailableError | AuthConfigError):
            logger.error("login for %s failed: %s", _shown(username), result)
        if isinstance(result, BaseException):
            raise result
        logger.info("login accepted for %s by LDAP", _shown(username))
        return result

    def _authenticate(self, username: str, password: str) -> Identity:
        s = self.settings
        conn = self._connect()
        try:
            if s.start_tls:
                with self._ldap_errors("StartTLS"):
                    conn.start_tls_s()
            if s.bind_pattern is not None:
                user_dn = s.bind_pattern.format(username=ldap.dn.escape_dn_chars(username))
                self._bind_user(conn, user_dn, password, username)
                entry = self._read_user(conn, user_dn)
            else:
                if s.service_dn is not None:
                    with self._ldap_errors("service account bind", service=True):
                        conn.simple_bind_s(s.service_dn, s.service_password)
                user_dn, entry = self._find_user(conn, username)
                self._bind_user(conn, user_dn, password, username)
            if s.use_memberof:
                groups = _first_rdn_values(_values(entry, "memberOf"))
            else:
                groups = self._search_groups(conn, user_dn, username)
            names = _values(entry, s.display_name_attribute)
            return Identity(username, frozenset(groups), names[0] if names else "")
        finally:
            with suppress(ldap.LDAPError):
                conn.unbind_s()

    def _connect(self) -> Any:
        s = self.settings
        with self._ldap_errors("connection"):
            conn = ldap.initialize(s.uri)
            conn.set_option(ldap.OPT_PROTOCOL_VERSION, ldap.VERSION3)
            conn.set_option(ldap.OPT_REFERRALS, 0)
            conn.set_option(ldap.OPT_NETWORK_TIMEOUT, float(s.timeout))
            conn.set_option(ldap.OPT_TIMEOUT, float(s.timeout))
            conn.timeout = float(s.timeout)  # python-ldap's own wait for each result
            if s.uses_tls:
                # Per connection, never ldap.set_option: other threads have their own settings.
                conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
                if s.ca_file is not None:
                    conn.set_option(ldap.OPT_X_TLS_CACERTFILE, str(s.ca_file))
                conn.set_option(ldap.OPT_X_TLS_PROTOCOL_MIN, ldap.OPT_X_TLS_PROTOCOL_TLS1_2)
                conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)  # last: applies the options above
        return conn

    def _bind_user(self, conn: Any, user_dn: str, password: str, username: str) -> None:
        try:
            with self._ldap_errors("user bind", refused=_errors()["refused"]):
                conn.simple_bind_s(user_dn, password)
        except _errors()["refused"]:
            _refuse(username, "invalid credentials")

    def _find_user(self, conn: Any, username: str) -> tuple[str, dict[str, list[bytes]]]:
        s = self.settings
        search = s.user_filter.format(username=ldap.filter.escape_filter_chars(username))
        try:
            with self._ldap_errors(
                f"user search under {s.users_under}", refused=_errors()["sizelimit"]
            ):
                results = conn.search_ext_s(
                    s.users_under, ldap.SCOPE_SUBTREE, search, self._user_attributes(), sizelimit=2
                )
        except _errors()["sizelimit"]:
            results = None  # more than two entries
        entries = [(dn, attrs) for dn, attrs in results or () if dn is not None]
        if results is None or len(entries) > 1:
            logger.error("LDAP directory %s: %s matches several entries", s.uri, search)
            _refuse(username, "ambiguous username")
        if not entries:
            _refuse(username, "invalid credentials")
        dn, attrs = entries[0]
        return dn, attrs

    def _read_user(self, conn: Any, user_dn: str) -> dict[str, list[bytes]]:
        with self._ldap_errors("reading the user's entry"):
            results = conn.search_s(
                user_dn, ldap.SCOPE_BASE, "(objectClass=*)", self._user_attributes()
            )
        return next((attrs for dn, attrs in results if dn is not None), {})

    def _user_attributes(self) -> list[str]:
        attributes = [self.settings.display_name_attribute]
        if self.settings.use_memberof:
            attributes.append("memberOf")  # operational: returned only when asked for
        return attributes

    def _search_groups(self, conn: Any, user_dn: str, username: str) -> set[str]:
        s = self.settings
        search = s.group_filter.format(
            user_dn=ldap.filter.escape_filter_chars(user_dn),
            username=ldap.filter.escape_filter_chars(username),
        )
        with self._ldap_errors(f"group search under {s.groups_under}"):
            results = conn.search_s(
                s.groups_under, ldap.SCOPE_SUBTREE, search, [s.group_name_attribute]
            )
        return {
            name
            for dn, attrs in results
            if dn is not None
            for name in _values(attrs, s.group_name_attribute)
        }

    @contextmanager
    def _ldap_errors(
        self, step: str, *, service: bool = False, refused: tuple[type[Exception], ...] = ()
    ) -> Iterator[None]:
        """Turn python-ldap's errors during `step` into this module's; let `refused` through."""
        uri = self.settings.uri
        try:
            yield
        except refused:
            raise
        except _errors()["unavailable"] as e:
            raise DirectoryUnavailableError(uri, f"{step}: {_reason(e)}") from e
        except _errors()["refused"] as e:
            if not service:  # a user bind passes these through `refused`
                raise AuthConfigError(f"LDAP directory {uri}: {step}: {_reason(e)}") from e
            raise AuthConfigError(
                f"LDAP directory {uri} refuses the service account {self.settings.service_dn} "
                f"({_reason(e)}): check service_dn and service_password"
            ) from e
        except (
            ldap.NO_SUCH_OBJECT,
            ldap.INSUFFICIENT_ACCESS,
            ldap.CONFIDENTIALITY_REQUIRED,
            ldap.STRONG_AUTH_REQUIRED,
            ldap.INAPPROPRIATE_AUTH,
            ldap.INVALID_DN_SYNTAX,
            ldap.FILTER_ERROR,
            ldap.UNDEFINED_TYPE,
        ) as e:
            raise AuthConfigError(f"LDAP directory {uri}: {step}: {_reason(e)}") from e
        except ldap.LDAPError as e:
            raise DirectoryUnavailableError(uri, f"{step}: {_reason(e)}") from e


def _values(attrs: Mapping[str, list[bytes]], name: str) -> list[str]:
    """The values of attribute `name` (case-insensitive), decoded."""
    wanted = name.lower()
    return [
        value.decode("utf-8", errors="replace")
        for key, values in attrs.items()
        if key.lower() == wanted
        for value in values
    ]


def _first_rdn_values(dns: list[str]) -> set[str]:
    """``cn=profs-maths,ou=groups,...`` → ``profs-maths``; DNs that do not parse are skipped."""
    names = set()
    for dn in dns:
        try:
            names.add(ldap.dn.str2dn(dn)[0][0][1])
        except (ldap.DECODING_ERROR, IndexError):
            logger.warning("ignoring memberOf value that is not a DN: %r", dn)
    return names


# --- local accounts ------------------------------------------------------------------------

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAX_MEMORY = 64 * 1024 * 1024


@dataclass(frozen=True)
class _Scrypt:
    """A parsed ``scrypt$n$r$p$salt$key`` password hash."""

    n: int
    r: int
    p: int
    salt: bytes = field(repr=False)
    key: bytes = field(repr=False)

    @classmethod
    def parse(cls, encoded: str) -> _Scrypt:
        """Raises `ValueError` saying what is wrong (never quoting the hash)."""
        parts = encoded.split("$")
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError("not a scrypt$n$r$p$salt$key hash")
        try:
            n, r, p = (int(part) for part in parts[1:4])
            salt, key = (base64.b64decode(part, validate=True) for part in parts[4:])
        except (ValueError, binascii.Error):
            raise ValueError("scrypt hash: bad number or base64") from None
        if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16:
            raise ValueError(f"scrypt hash: bad parameters n={n} r={r} p={p}")
        if 128 * n * r > _SCRYPT_MAX_MEMORY:
            raise ValueError(f"scrypt hash: parameters n={n} r={r} need too much memory")
        if len(salt) < 8 or not 16 <= len(key) <= 64:
            raise ValueError("scrypt hash: salt or key too short")
        return cls(n, r, p, salt, key)

    def matches(self, password: str) -> bool:
        derived = hashlib.scrypt(
            password.encode("utf-8"),
            salt=self.salt,
            n=self.n,
            r=self.r,
            p=self.p,
            maxmem=_SCRYPT_MAX_MEMORY + 1024 * 1024,
            dklen=len(self.key),
        )
        return hmac.compare_digest(derived, self.key)


def write_accounts_file(path: Path, accounts: Mapping[str, tuple[str, str, Iterable[str]]]) -> None:
    """Write a local accounts file (the format `LocalAccounts.from_file` reads).

    `accounts` maps a user name to (password, display name, groups); passwords are stored
    hashed. The file is written atomically, mode 0600.
    """
    lines = []
    for user, (password, display_name, groups) in accounts.items():
        lines += [
            f"[accounts.{json.dumps(user)}]",
            f"password = {json.dumps(hash_password(password))}",
            f"groups = {json.dumps(list(groups))}",
            f"display_name = {json.dumps(display_name)}",
            "",
        ]
    fsutil.write_atomic(path, "\n".join(lines).encode("utf-8"), mode=0o600)


def hash_password(password: str) -> str:
    """``scrypt$16384$8$1$<salt>$<key>`` (base64) for an accounts file; random 16-byte salt.

    Raises `ValueError` for an empty password, which no login accepts.
    """
    if not password:
        raise ValueError("refusing to hash an empty password")
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    encoded = (base64.b64encode(salt).decode(), base64.b64encode(key).decode())
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${encoded[0]}${encoded[1]}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches `encoded` (from `hash_password`), in constant time.

    Raises `ValueError` if `encoded` is not such a hash.
    """
    return _Scrypt.parse(encoded).matches(password)


@dataclass(frozen=True)
class LocalAccount:
    """One account of an accounts file; `password_hash` comes from `hash_password`."""

    password_hash: str = field(repr=False)
    groups: frozenset[str] = frozenset()
    display_name: str = ""


class LocalAccounts:
    """Accounts kept by the agent itself, for the demo and for sites without a directory.

    The file is TOML::

        [accounts.alice]
        password = "scrypt$16384$8$1$…$…"   # hash_password("…")
        groups = ["profs-maths"]
        display_name = "Alice Martin"

    Raises `AuthConfigError` naming every bad account.
    """

    def __init__(self, accounts: Mapping[str, LocalAccount], *, source: str = "accounts") -> None:
        problems = []
        self._accounts: dict[str, tuple[_Scrypt, LocalAccount]] = {}
        for name, account in accounts.items():
            try:
                self._accounts[name] = (_Scrypt.parse(account.password_hash), account)
            except ValueError as e:
                problems.append(f"account {name!r}: password: {e}")
        if problems:
            raise AuthConfigError(f"{source}: " + "; ".join(problems))
        # Unknown users are checked against this, so that they cost as much as a wrong password.
        self._dummy = _Scrypt(
            _SCRYPT_N, _SCRYPT_R, _SCRYPT_P, secrets.token_bytes(16), secrets.token_bytes(32)
        )

    def __repr__(self) -> str:
        return f"LocalAccounts({len(self._accounts)} accounts)"

    def __contains__(self, username: object) -> bool:
        return username in self._accounts

    @classmethod
    def from_file(cls, path: Path) -> LocalAccounts:
        """Read an accounts file. Raises `AuthConfigError` (unreadable, bad TOML, bad account)."""
        try:
            data = tomllib.loads(Path(path).read_text("utf-8"))
        except OSError as e:
            raise AuthConfigError(f"{path}: cannot read accounts: {e.strerror or e}") from e
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise AuthConfigError(f"{path}: not a TOML accounts file: {e}") from e
        problems = []
        accounts: dict[str, LocalAccount] = {}
        table = data.get("accounts", {})
        unknown = set(data) - {"accounts"}
        if unknown:
            problems.append(f"unknown top-level keys {sorted(unknown)}")
        if not isinstance(table, dict):
            raise AuthConfigError(f"{path}: [accounts] is not a table")
        for name, entry in table.items():
            where = f"account {name!r}"
            if not isinstance(entry, dict):
                problems.append(f"{where}: not a table")
                continue
            if not name or not name.isprintable() or name != name.strip():
                problems.append(f"{where}: a username must be printable, without edge spaces")
            password = entry.get("password")
            groups = entry.get("groups", [])
            display_name = entry.get("display_name", "")
            extra = set(entry) - {"password", "groups", "display_name"}
            if extra:
                problems.append(f"{where}: unknown keys {sorted(extra)}")
            if not isinstance(password, str):
                problems.append(f"{where}: password must be a hash_password() string")
                continue
            try:
                _Scrypt.parse(password)
            except ValueError as e:
                problems.append(f"{where}: password: {e}")
            if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
                problems.append(f"{where}: groups must be a list of strings")
                groups = []
            if not isinstance(display_name, str):
                problems.append(f"{where}: display_name must be a string")
                display_name = ""
            accounts[name] = LocalAccount(password, frozenset(groups), display_name)
        if problems:
            raise AuthConfigError(f"{path}: " + "; ".join(problems))
        return cls(accounts, source=str(path))

    def authenticate(self, username: str, password: str) -> Identity:
        """The identity of `username` if `password` matches its hash.

        Raises `InvalidCredentialsError`, the same for an unknown user and a wrong password,
        after the same work.
        """
        _check_credentials(username, password)
        found = self._accounts.get(username)
        hashed = found[0] if found is not None else self._dummy
        matches = hashed.matches(password)
        if found is None or not matches:
            _refuse(username, "invalid credentials")
        account = found[1]
        logger.info("login accepted for %s by local accounts", _shown(username))
        return Identity(username, account.groups, account.display_name)


# --- several authenticators ----------------------------------------------------------------


class ChainAuthenticator:
    """Tries authenticators in order; the first that accepts the password wins.

    `InvalidCredentialsError` and `DirectoryUnavailableError` move on to the next one. If none
    accepts: `DirectoryUnavailableError` if a directory was unavailable (the user may exist
    there, so "wrong password" would be a lie), else `InvalidCredentialsError`.
    `AuthConfigError` stops the chain: a broken configuration must be seen, not bypassed.
    """

    def __init__(self, *authenticators: Authenticator) -> None:
        if not authenticators:
            raise AuthConfigError("ChainAuthenticator needs at least one authenticator")
        self.authenticators = authenticators

    def __repr__(self) -> str:
        return f"ChainAuthenticator{self.authenticators!r}"

    def authenticate(self, username: str, password: str) -> Identity:
        """See the class. Raises `InvalidCredentialsError`, `DirectoryUnavailableError`,
        `AuthConfigError`."""
        unavailable: DirectoryUnavailableError | None = None
        for authenticator in self.authenticators:
            try:
                return authenticator.authenticate(username, password)
            except InvalidCredentialsError:
                continue
            except DirectoryUnavailableError as e:
                logger.info("%s; trying the next authenticator", e)
                unavailable = unavailable or e
        if unavailable is not None:
            raise unavailable
        raise InvalidCredentialsError()


# --- tokens --------------------------------------------------------------------------------


class TokenSigner:
    """The tokens `/login` hands out, then sent back as the Basic password (WAPT's model).

    A token is an itsdangerous URL-safe timed signature (HMAC-SHA256, salt `TOKEN_SALT`) of
    ``{"username", "groups", "display_name"}``. It is valid for `lifetime` seconds; the groups
    are those of the login, so a change in the directory shows after the next login.
    """

    def __init__(self, secret_key: bytes, lifetime: int = 86400) -> None:
        """Raises `AuthConfigError` for a key shorter than 32 bytes or a lifetime below 1 s."""
        if len(secret_key) < SECRET_KEY_SIZE:
            raise AuthConfigError(
                f"token secret key is {len(secret_key)} bytes, at least {SECRET_KEY_SIZE} needed"
            )
        if lifetime < 1:
            raise AuthConfigError(f"token lifetime {lifetime!r}: must be at least 1 s")
        self.lifetime = lifetime
        self._serializer = itsdangerous.URLSafeTimedSerializer(
            secret_key, salt=TOKEN_SALT, signer_kwargs={"digest_method": hashlib.sha256}
        )

    def __repr__(self) -> str:
        return f"TokenSigner(lifetime={self.lifetime})"

    def issue(self, identity: Identity) -> str:
        """A token for `identity`, valid `lifetime` seconds from now."""
        payload = {
            "username": identity.username,
            "groups": sorted(identity.groups),
            "display_name": identity.display_name,
        }
        return self._serializer.dumps(payload)

    def verify(self, token: str, username: str) -> Identity:
        """The identity in `token`, if it is genuine, unexpired and issued for `username`.

        Raises `TokenError` (missing, malformed, forged, expired, or another user's).
        """
        who = _shown(username)
        if not token:
            raise TokenError(f"no token for {who}")
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenError(f"token for {who} is too long")
        # `from None`: itsdangerous' messages quote the signature, a piece of the token.
        try:
            payload = self._serializer.loads(token, max_age=self.lifetime)
        except itsdangerous.SignatureExpired:
            raise TokenError(f"token for {who} has expired") from None
        except itsdangerous.BadData:
            raise TokenError(f"token for {who} is invalid") from None
        if not (
            isinstance(payload, dict)
            and isinstance(payload.get("username"), str)
            and isinstance(payload.get("groups"), list)
            and all(isinstance(g, str) for g in payload["groups"])
            and isinstance(payload.get("display_name", ""), str)
        ):
            raise TokenError(f"token for {who} has a malformed payload")
        if payload["username"] != username:
            raise TokenError(f"token was not issued for {who}")
        return Identity(username, frozenset(payload["groups"]), payload.get("display_name", ""))


def load_or_create_secret(path: Path) -> bytes:
    """The token key in `path`, made once with 32 random bytes, mode 0600 (`wapt.fsutil`).

    Raises `AuthConfigError` if the file cannot be read or made, is shorter than 32 bytes,
    is not a regular file, or (on POSIX) is readable or writable by anyone but its owner.
    """
    try:
        return fsutil.load_or_create_secret(Path(path), size=SECRET_KEY_SIZE, what="token key")
    except fsutil.SecretFileError as e:
        raise AuthConfigError(str(e)) from e
