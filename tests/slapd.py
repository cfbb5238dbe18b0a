"""A throwaway OpenLDAP slapd on 127.0.0.1, seeded with Comptoir's test directory.

Independent of pytest: `with SlapdServer() as server: ...` works in a script too. The server
listens on two free loopback ports, plain LDAP (StartTLS offered) and LDAPS, with a certificate
for 127.0.0.1 issued by a CA made for this instance (`ca_file`). Groups are `groupOfNames` with
the memberof overlay, so users also carry `memberOf`.

Follows `shared/recipes.md` §2: Debian's modules (`back_mdb`, `memberof`), slapd kept in the
foreground with `-d 0`, readiness polled with a rootDSE search.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import ldap
import ldap.dn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SUFFIX = "dc=example,dc=org"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
SERVICES = f"ou=services,{SUFFIX}"
ROOT_DN = f"cn=admin,{SUFFIX}"

SERVICE_DN = f"cn=comptoir,{SERVICES}"
SERVICE_PASSWORD = "service-secret-Ω"

# A uid with filter metacharacters (* ( ) \) and DN metacharacters (\ , and a space).
SPECIAL_UID = "o'brien*(x)\\, jr"

#: uid -> (password, display name, groups)
USERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "alice": ("alice-pw", "Alice Martin", ("profs-maths", "profs-tous")),
    "bob": ("bob-pw", "Bob Durand", ("profs-histoire", "profs-tous")),
    "carol": ("carol-pw", "Carol Petit", ()),
    "dave": ("dave-pw", "Dave Admin", ("comptoir-admins",)),
    SPECIAL_UID: ("obrien-pw", "Seán O'Brien", ("profs-tous",)),
}

SLAPD = shutil.which("slapd", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
MODULE_PATH = "/usr/lib/ldap"
SCHEMA_DIR = "/etc/ldap/schema"


def user_dn(uid: str) -> str:
    """The DN of a seeded user, with `uid` DN-escaped."""
    return f"uid={ldap.dn.escape_dn_chars(uid)},{PEOPLE}"


def group_dn(name: str) -> str:
    """The DN of a seeded group."""
    return f"cn={ldap.dn.escape_dn_chars(name)},{GROUPS}"


def ssha(password: str) -> bytes:
    """An OpenLDAP `{SSHA}` userPassword value, as `slappasswd` makes."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return b"{SSHA}" + base64.b64encode(digest + salt)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller must tolerate a race)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_test_ca(
    directory: Path, name: str
) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA valid for one day, written to `directory/<name>.crt`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def _write_server_certificate(
    directory: Path, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path = directory / "server.crt"
    key_path = directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _seed_entries() -> list[tuple[str, dict[str, list[bytes]]]]:
    """The test directory, parents first; groups after their members."""

    def attrs(**values: str | list[str] | bytes) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {}
        for name, value in values.items():
            items = value if isinstance(value, list) else [value]
            out[name] = [v if isinstance(v, bytes) else v.encode("utf-8") for v in items]
        return out

    entries = [
        (SUFFIX, attrs(objectClass=["dcObject", "organization"], dc="example", o="Example")),
        (PEOPLE, attrs(objectClass="organizationalUnit", ou="people")),
        (GROUPS, attrs(objectClass="organizationalUnit", ou="groups")),
        (SERVICES, attrs(objectClass="organizationalUnit", ou="services")),
        (
            SERVICE_DN,
            attrs(
                objectClass=["applicationProcess", "simpleSecurityObject"],
                cn="comptoir",
                userPassword=ssha(SERVICE_PASSWORD),
            ),
        ),
    ]
    members: dict[str, list[str]] = {}
    for uid, (password, display_name, groups) in USERS.items():
        surname = display_name.split()[-1]
        entries.append(
            (
                user_dn(uid),
                attrs(
                    objectClass="inetOrgPerson",
                    uid=uid,
                    cn=display_name,
                    sn=surname,
                    userPassword=ssha(password),
                ),
            )
        )
        for group in groups:
            members.setdefault(group, []).append(user_dn(uid))
    for group, dns in sorted(members.items()):
        entries.append((group_dn(group), attrs(objectClass="groupOfNames", cn=group, member=dns)))
    return entries


class SlapdError(RuntimeError):
    """slapd could not be found, configured or started; the message quotes its log."""


class SlapdServer:
    """A throwaway slapd on 127.0.0.1, seeded unless `seed=False`; stop it with `stop()`.

    `workdir` holds the configuration, database, certificates and `slapd.log`; by default a
    temporary directory that `stop()` removes.
    """

    suffix = SUFFIX
    root_dn = ROOT_DN

    def __init__(self, workdir: Path | None = None, *, seed: bool = True) -> None:
        self._own_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix="comptoir-slapd-")) if workdir is None else workdir
        )
        self.seed = seed
        self.root_password = secrets.token_urlsafe(16)
        self.port = 0
        self.ldaps_port = 0
        self.ca_file = self.workdir / "tls" / "test-ca.crt"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """The plain LDAP URI (StartTLS is offered on it)."""
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_uri(self) -> str:
        """The LDAPS URI."""
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "slapd.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> SlapdServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        """Configure, start and (if `seed`) seed the server; raise `SlapdError` on failure."""
        if SLAPD is None:
            raise SlapdError(
                "slapd not found: apt-get install -y slapd ldap-utils "
                "(preseed slapd/no_configuration=true)"
            )
        if self.running:
            return
        self._prepare()
        # A free port can be taken between the probe and slapd's bind: retry on that race.
        for attempt in range(3):
            self.port, self.ldaps_port = free_port(), free_port()
            self._spawn()
            try:
                self._wait_ready(timeout)
                break
            except SlapdError:
                self._terminate()
                if attempt == 2:
                    raise
        if self.seed:
            self._seed()

    def stop(self) -> None:
        """Stop slapd (SIGTERM, then SIGKILL after 10 s) and remove a temporary workdir."""
        self._terminate()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def connect(self) -> Any:
        """A python-ldap connection bound as the root DN, for tests that inspect or modify."""
        conn = ldap.initialize(self.uri)
        conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 5.0)
        conn.set_option(ldap.OPT_TIMEOUT, 5.0)
        conn.simple_bind_s(self.root_dn, self.root_password)
        return conn

    def _prepare(self) -> None:
        db = self.workdir / "db"
        tls = self.workdir / "tls"
        db.mkdir(parents=True, exist_ok=True)
        tls.mkdir(exist_ok=True)
        _, ca_cert, ca_key = write_test_ca(tls, "test-ca")
        cert_file, key_file = _write_server_certificate(tls, ca_cert, ca_key)
        # `allow bind_anon_dn`: a DN with an empty password binds as anonymous and succeeds, as
        # on many directories (Active Directory too), so tests show the agent refuses it itself.
        config = f"""\
include {SCHEMA_DIR}/core.schema
include {SCHEMA_DIR}/cosine.schema
include {SCHEMA_DIR}/inetorgperson.schema
pidfile {self.workdir}/slapd.pid
allow bind_anon_dn
modulepath {MODULE_PATH}
moduleload back_mdb
moduleload memberof
TLSCACertificateFile {self.ca_file}
TLSCertificateFile {cert_file}
TLSCertificateKeyFile {key_file}
database mdb
maxsize 104857600
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {self.root_password}
directory {db}
index objectClass,uid,member eq
overlay memberof
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
"""
        (self.workdir / "slapd.conf").write_text(config, "utf-8")

    def _spawn(self) -> None:
        assert SLAPD is not None
        urls = f"{self.uri}/ {self.ldaps_uri}/"
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [SLAPD, "-d", "0", "-f", str(self.workdir / "slapd.conf"), "-h", urls],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise SlapdError(
                    f"slapd exited with {self._process.returncode}: {self._log_tail()}"
                )
            try:
                conn = ldap.initialize(self.uri)
                conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 1.0)
                conn.set_option(ldap.OPT_TIMEOUT, 1.0)
                conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["namingContexts"])
                conn.unbind_s()
                return
            except ldap.LDAPError:
                if time.monotonic() > deadline:
                    raise SlapdError(
                        f"slapd not answering on {self.uri} after {timeout} s: {self._log_tail()}"
                    ) from None
                time.sleep(0.02)

    def _seed(self) -> None:
        conn = self.connect()
        try:
            for dn, attrs in _seed_entries():
                conn.add_s(dn, list(attrs.items()))
        finally:
            conn.unbind_s()

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text("utf-8", errors="replace")[-2000:].strip()
        except OSError:
            return "(no log)"
