"""Tests of `wapt.trust`: certificates, the trust store and its cache, keys, signers, issuing.

Ground truth comes from WAPT 1.8.2's own PKI and packages (`pki/README.txt`, `expected.json`).
Hostile chains (forged issuers, loops, over-long or branching chains) are built here with
`cryptography`, reusing the fixture RSA keys and cheap EC keys: the only RSA keys generated are
the three of the session-scoped Comptoir PKI.
"""

from __future__ import annotations

import base64
import os
import re
import stat
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from wapt.errors import (
    CertificateExpiredError,
    CertificateFormatError,
    CertificateNotYetValidError,
    KeyFileError,
    ManifestSignatureError,
    SignatureError,
    TrustError,
    UntrustedCertificateError,
)
from wapt.trust import (
    MAX_CHAIN_DEPTH,
    Certificate,
    KeySigner,
    Signer,
    TrustStore,
    fingerprint_of,
    load_certificate_file,
    load_certificates,
    load_private_key,
    new_ca,
    new_signer,
    save_certificate,
    save_private_key,
)

# Inside every fixture certificate's validity, and the day WAPT's verdicts were recorded.
AT = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
PASSPHRASE = b"correct horse battery staple"
WRONG_PASSPHRASE = b"Tr0ub4dor&3-not-it"

# (name in pki/, is_ca, is_code_signing), as pki/README.txt describes their roles.
FIXTURE_ROLES = [
    ("ca", True, False),
    ("codesign", False, True),
    ("plain", False, False),
    ("expired-codesign", False, True),
    ("untrusted-ca", True, False),
    ("untrusted-codesign", False, True),
]


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(scope="session")
def pki(wapt_fixtures: Path) -> Path:
    return wapt_fixtures / "pki"


@pytest.fixture(scope="session")
def readme(pki: Path) -> dict[str, dict[str, str]]:
    """pki/README.txt, as {certificate name: {field: value}}."""
    entries: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in (pki / "README.txt").read_text("utf-8").splitlines():
        header = re.fullmatch(r"([\w-]+)\.crt / [\w-]+\.key", line)
        if header:
            current = entries.setdefault(header.group(1), {})
            continue
        field = re.fullmatch(r"    ([\w()]+):\s+(.*)", line)
        if field and current is not None:
            current[field.group(1)] = field.group(2)
    assert len(entries) == len(FIXTURE_ROLES)
    return entries


@pytest.fixture(scope="session")
def certs(pki: Path) -> dict[str, Certificate]:
    loaded = {}
    for name, _, _ in FIXTURE_ROLES:
        (loaded[name],) = load_certificate_file(pki / f"{name}.crt")
    return loaded


@pytest.fixture(scope="session")
def keys(pki: Path) -> dict[str, rsa.RSAPrivateKey]:
    return {name: load_private_key(pki / f"{name}.key", None) for name, _, _ in FIXTURE_ROLES}


@pytest.fixture(scope="session")
def ca_store(certs: dict[str, Certificate]) -> TrustStore:
    return TrustStore([certs["ca"]])


@dataclass(frozen=True)
class ComptoirPki:
    ca_key: rsa.RSAPrivateKey
    ca: Certificate
    packager_key: rsa.RSAPrivateKey
    packager: Certificate
    deployer_key: rsa.RSAPrivateKey
    deployer: Certificate


@pytest.fixture(scope="session")
def comptoir() -> ComptoirPki:
    """A CA, a code-signing leaf and a deployer leaf made by Comptoir (3 RSA keys, once)."""
    ca_key, ca = new_ca("Comptoir Test CA", organization="Comptoir Lab", country="FR")
    packager_key, packager = new_signer(
        ca_key, ca, "Comptoir Packager", code_signing=True, organization="Comptoir Lab"
    )
    # Asks for far more days than the CA has left: the leaf must stop with the CA.
    deployer_key, deployer = new_signer(
        ca_key, ca, "Comptoir Deployer", code_signing=False, country="FR", days=100_000
    )
    return ComptoirPki(ca_key, ca, packager_key, packager, deployer_key, deployer)


@pytest.fixture
def count_issued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Count (issuer, child) signature checks made through `Certificate.issued`."""
    calls: list[tuple[str, str]] = []
    original = Certificate.issued

    def counting(self: Certificate, child: Certificate) -> bool:
        calls.append((self.cn, child.cn))
        return original(self, child)

    monkeypatch.setattr(Certificate, "issued", counting)
    return calls


def package_chain(wapt_fixtures: Path, filename: str) -> list[Certificate]:
    with zipfile.ZipFile(wapt_fixtures / "packages" / filename) as archive:
        return load_certificates(archive.read("WAPT/certificate.crt"), source=filename)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def issue(
    cn: str,
    public_key: Any,
    *,
    issuer: Certificate | None,
    issuer_key: Key,
    ca: bool,
    key_cert_sign: bool = True,
    path_length: int | None = None,
    code_signing: bool = False,
    subject: x509.Name | None = None,
    not_before: datetime = datetime(2024, 2, 1, tzinfo=UTC),
    not_after: datetime = datetime(2033, 1, 1, tzinfo=UTC),
) -> Certificate:
    """A certificate for hostile-chain tests; self-issued when `issuer` is None."""
    name = subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name = issuer.x509.subject if issuer else name
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    aki_digest = issuer.subject_key_id if issuer else ski.digest
    assert aki_digest is not None
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=key_cert_sign,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier(aki_digest, None, None),
            critical=False,
        )
    )
    if code_signing:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=True
        )
    return Certificate.from_x509(builder.sign(issuer_key, hashes.SHA256()))


def messages(error: BaseException) -> Iterator[str]:
    """The message of an error and of every error it was raised from."""
    seen: BaseException | None = error
    while seen is not None:
        yield str(seen)
        yield repr(seen)
        seen = seen.__cause__ or seen.__context__


# --- certificates --------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "is_ca", "is_code_signing"), FIXTURE_ROLES)
def test_fixture_certificate_properties(
    certs: dict[str, Certificate],
    readme: dict[str, dict[str, str]],
    name: str,
    is_ca: bool,
    is_code_signing: bool,
) -> None:
    cert = certs[name]
    described = readme[name]
    assert cert.fingerprint == described["sha256(DER)"]
    assert cert.cn == re.search(r"CN=([^,]+)", described["subject"]).group(1)  # type: ignore[union-attr]
    assert cert.issuer_cn == re.search(r"CN=([^,]+)", described["issuer"]).group(1)  # type: ignore[union-attr]
    start, end = described["validity"].removesuffix(" (UTC)").split(" .. ")
    assert cert.not_before == datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert cert.not_after == datetime.fromisoformat(end).replace(tzinfo=UTC)
    assert cert.is_ca is is_ca
    assert cert.can_sign_certificates is is_ca  # WAPT leaves have keyCertSign, but CA:FALSE
    assert cert.is_code_signing is is_code_signing
    assert cert.subject_key_id is not None
    if is_ca:
        assert cert.authority_key_id is None
    else:
        issuer = certs["untrusted-ca" if cert.issuer_cn.startswith("Rogue") else "ca"]
        assert cert.authority_key_id == issuer.subject_key_id
        assert issuer.issued(cert)
        assert not cert.issued(cert)


def test_certificate_encodings_round_trip(certs: dict[str, Certificate]) -> None:
    cert = certs["codesign"]
    assert cert.pem.startswith(b"-----BEGIN CERTIFICATE-----\n")
    assert cert.pem.endswith(b"-----END CERTIFICATE-----\n")
    assert load_certificates(cert.pem, source="x") == [cert]
    assert Certificate.from_der(cert.der) == cert
    assert fingerprint_of(cert.der) == cert.fingerprint
    assert hash(Certificate.from_x509(cert.x509)) == hash(cert)
    assert cert != certs["plain"]
    assert cert.fingerprint[:16] in repr(cert)


def test_certificate_is_immutable(certs: dict[str, Certificate]) -> None:
    cert = certs["plain"]
    with pytest.raises(AttributeError):
        cert.is_code_signing = True  # type: ignore[misc]
    with pytest.raises(AttributeError):
        cert._is_code_signing = True
    assert not cert.is_code_signing


def test_load_certificates_keeps_order_and_ignores_surrounding_text(
    certs: dict[str, Certificate],
) -> None:
    text = (
        b"subject=CN = Acme Packager\r\n"
        + certs["codesign"].pem.replace(b"\n", b"\r\n")
        + b"\n"  # WAPT's certificate.crt has a blank line between certificates
        + certs["ca"].pem
        + b"trailing words\n"
    )
    assert load_certificates(text, source="chain.crt") == [certs["codesign"], certs["ca"]]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "no PEM certificate"),
        (b"hello, I am not a certificate\n", "no PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB\n", "truncated"),
        (b"-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n", "not a valid"),
        (
            b"-----BEGIN CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\n"
            b"-----END CERTIFICATE-----\n",
            "truncated",
        ),
    ],
)
def test_load_certificates_rejects_garbage_naming_the_source(data: bytes, reason: str) -> None:
    with pytest.raises(CertificateFormatError, match=reason) as excinfo:
        load_certificates(data, source="evil.crt")
    assert "evil.crt" in str(excinfo.value)


def test_from_der_rejects_garbage() -> None:
    with pytest.raises(CertificateFormatError, match="blob"):
        Certificate.from_der(b"\x30\x03\x02\x01\x01", source="blob")


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data())
def test_load_certificates_raises_only_its_own_error(
    certs: dict[str, Certificate], data: st.DataObject
) -> None:
    pem = certs["codesign"].pem
    fragments = [
        b"-----BEGIN CERTIFICATE-----\n",
        b"-----END CERTIFICATE-----\n",
        pem,
        pem[: len(pem) // 2],
        pem[len(pem) // 2 :],
        pem.replace(b"A", b"B", 3),
        pem.replace(b"\n", b""),
    ]
    parts = data.draw(
        st.lists(st.one_of(st.binary(max_size=64), st.sampled_from(fragments)), max_size=6)
    )
    try:
        loaded = load_certificates(b"".join(parts), source="fuzz")
    except CertificateFormatError as e:
        assert str(e).startswith("fuzz")
        return
    assert all(isinstance(cert, Certificate) for cert in loaded)


def test_load_certificate_file_missing_names_file(tmp_path: Path) -> None:
    with pytest.raises(TrustError, match=r"nowhere\.crt"):
        load_certificate_file(tmp_path / "nowhere.crt")


# --- the trust decision on WAPT's fixtures -------------------------------------------------


def test_package_chains_get_wapt_verdicts(wapt_fixtures: Path, expected: dict[str, Any]) -> None:
    store = TrustStore.from_path(wapt_fixtures / expected["trusted_ca"]["file"])
    assert [c.fingerprint for c in store.certificates] == [
        expected["trusted_ca"]["fingerprint_sha256"]
    ]
    problems = []
    for package in expected["packages"]:
        chain = package_chain(wapt_fixtures, package["file"])
        if [c.cn for c in chain] != package["certificate_crt_chain"]:
            problems.append(f"{package['file']}: chain {[c.cn for c in chain]}")
        verdict = package["wapt_verdict"]
        if verdict.startswith("EWaptCertificateUnknownIssuer"):
            wanted: str = UntrustedCertificateError.__name__
        elif verdict.startswith("EWaptCertificateExpired"):
            wanted = CertificateExpiredError.__name__
        else:  # accepted, or refused for reasons other than the chain
            wanted = "trusted"
        try:
            path = store.check_chain(chain, at=AT)
            got = "trusted"
            assert path[0] == chain[0] and path[-1] in store
        except TrustError as e:
            got = type(e).__name__
        if got != wanted:
            problems.append(f"{package['file']}: {got}, WAPT says {verdict}")
    assert problems == []


def test_ca_store_accepts_codesign_and_plain_chains(
    ca_store: TrustStore, certs: dict[str, Certificate]
) -> None:
    for leaf in ("codesign", "plain"):
        chain = [certs[leaf], certs["ca"]]
        assert ca_store.check_chain(chain, at=AT) == chain
    # The leaf alone (acme-toolbox's certificate.crt): its issuer comes from the store.
    assert ca_store.check_chain([certs["plain"]], at=AT) == [certs["plain"], certs["ca"]]


def test_expired_leaf_is_refused_naming_it_and_the_date(
    ca_store: TrustStore, certs: dict[str, Certificate]
) -> None:
    with pytest.raises(CertificateExpiredError) as excinfo:
        ca_store.check_chain([certs["expired-codesign"], certs["ca"]], at=AT)
    assert "Acme Packager 2024" in str(excinfo.value)
    assert "2025-03-01 00:00:00" in str(excinfo.value)
    # ... and it was fine while valid.
    inside = datetime(2024, 6, 1, tzinfo=UTC)
    assert len(ca_store.check_chain([certs["expired-codesign"]], at=inside)) == 2


def test_rogue_chain_is_untrusted_naming_both_certificates(
    ca_store: TrustStore, certs: dict[str, Certificate]
) -> None:
    with pytest.raises(UntrustedCertificateError) as excinfo:
        ca_store.check_chain([certs["untrusted-codesign"], certs["untrusted-ca"]], at=AT)
    message = str(excinfo.value)
    assert message.startswith('None of certificates ("Rogue Packager","Rogue Fixture CA")')
    assert "are trusted" in message


def test_not_yet_valid(ca_store: TrustStore, certs: dict[str, Certificate]) -> None:
    with pytest.raises(CertificateNotYetValidError) as excinfo:
        ca_store.check_chain([certs["codesign"], certs["ca"]], at=datetime(2023, 6, 1, tzinfo=UTC))
    assert "Acme Packager" in str(excinfo.value)
    assert "2024-01-16 09:30:00" in str(excinfo.value)


def test_trust_anchor_dates_are_checked_too(
    ca_store: TrustStore, certs: dict[str, Certificate]
) -> None:
    # The CA ends 2034-01-12 09:30, the leaf a day later.
    between = datetime(2034, 1, 12, 12, 0, tzinfo=UTC)
    with pytest.raises(CertificateExpiredError, match="Acme Fixture Root CA"):
        ca_store.check_chain([certs["codesign"]], at=between)


def test_at_must_be_aware(ca_store: TrustStore, certs: dict[str, Certificate]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ca_store.check_chain([certs["codesign"]], at=datetime(2026, 1, 1))


def test_empty_chain_is_untrusted(ca_store: TrustStore) -> None:
    with pytest.raises(UntrustedCertificateError, match="empty"):
        ca_store.check_chain([], at=AT)


def test_pinned_leaf_is_trusted_alone(certs: dict[str, Certificate]) -> None:
    store = TrustStore([certs["untrusted-codesign"]])
    rogue = certs["untrusted-codesign"]
    assert store.check_chain([rogue], at=AT) == [rogue]
    assert store.check_chain([rogue, certs["untrusted-ca"]], at=AT) == [rogue]
    with pytest.raises(UntrustedCertificateError):
        store.check_chain([certs["codesign"], certs["ca"]], at=AT)
    expired = TrustStore([certs["expired-codesign"]])
    with pytest.raises(CertificateExpiredError):
        expired.check_chain([certs["expired-codesign"]], at=AT)


def test_store_lookup(certs: dict[str, Certificate]) -> None:
    store = TrustStore([certs["ca"], certs["codesign"], certs["ca"]])
    assert len(store) == 2
    assert store.certificates == (certs["ca"], certs["codesign"])
    assert certs["ca"] in store
    assert certs["ca"].fingerprint in store
    assert certs["ca"].fingerprint.upper() in store
    assert certs["plain"] not in store
    assert 42 not in store
    assert store.find(certs["codesign"].fingerprint) == certs["codesign"]
    assert store.find("00" * 32) is None


# --- loading a store -----------------------------------------------------------------------


def test_store_from_directory_reads_every_crt_and_pem(
    tmp_path: Path, pki: Path, certs: dict[str, Certificate]
) -> None:
    (tmp_path / "ca.crt").write_bytes((pki / "ca.crt").read_bytes())
    (tmp_path / "LEAVES.PEM").write_bytes(certs["codesign"].pem + certs["plain"].pem)
    (tmp_path / "notes.txt").write_bytes(b"not a certificate, and ignored")
    (tmp_path / "ca.key").write_bytes((pki / "ca.key").read_bytes())
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "rogue.crt").write_bytes(certs["untrusted-ca"].pem)  # not recursive
    (tmp_path / "dir.crt").mkdir()  # a directory named like a certificate
    store = TrustStore.from_path(tmp_path)
    assert len(store) == 3
    assert {certs["ca"], certs["codesign"], certs["plain"]} == set(store.certificates)
    assert certs["untrusted-ca"] not in store


def test_store_from_one_file_with_two_certificates(
    tmp_path: Path, certs: dict[str, Certificate]
) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(certs["ca"].pem + b"\n" + certs["untrusted-ca"].pem)
    store = TrustStore.from_path(bundle)
    assert store.certificates == (certs["ca"], certs["untrusted-ca"])
    path = store.check_chain([certs["untrusted-codesign"], certs["untrusted-ca"]], at=AT)
    assert path == [certs["untrusted-codesign"], certs["untrusted-ca"]]


def test_store_from_directory_names_every_bad_file(
    tmp_path: Path, certs: dict[str, Certificate]
) -> None:
    (tmp_path / "good.crt").write_bytes(certs["ca"].pem)
    (tmp_path / "bad-one.crt").write_bytes(b"garbage")
    (tmp_path / "bad-two.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nxx\n")
    with pytest.raises(CertificateFormatError) as excinfo:
        TrustStore.from_path(tmp_path)
    assert "bad-one.crt" in str(excinfo.value)
    assert "bad-two.pem" in str(excinfo.value)


def test_store_from_missing_path(tmp_path: Path) -> None:
    with pytest.raises(TrustError, match="missing"):
        TrustStore.from_path(tmp_path / "missing")


def test_empty_directory_gives_an_empty_store_that_trusts_nothing(
    tmp_path: Path, certs: dict[str, Certificate]
) -> None:
    store = TrustStore.from_path(tmp_path)
    assert len(store) == 0
    with pytest.raises(UntrustedCertificateError):
        store.check_chain([certs["codesign"], certs["ca"]], at=AT)


# --- hostile chains ------------------------------------------------------------------------


def test_leaf_cannot_act_as_issuer(
    ca_store: TrustStore, certs: dict[str, Certificate], keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    # WAPT's plain leaf has keyUsage keyCertSign, but CA:FALSE: its holder mints a packager.
    forged = issue(
        "Forged Packager",
        keys["untrusted-codesign"].public_key(),
        issuer=certs["plain"],
        issuer_key=keys["plain"],
        ca=False,
        code_signing=True,
    )
    assert certs["plain"].issued(forged)  # the signature itself is sound
    with pytest.raises(UntrustedCertificateError, match="not a CA") as excinfo:
        ca_store.check_chain([forged, certs["plain"], certs["ca"]], at=AT)
    assert '"Forged Packager","Acme Deployer","Acme Fixture Root CA"' in str(excinfo.value)


def test_ca_without_key_cert_sign_cannot_issue(
    ca_store: TrustStore, certs: dict[str, Certificate], keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    intermediate_key = ec_key()
    intermediate = issue(
        "Signing-only CA",
        intermediate_key.public_key(),
        issuer=certs["ca"],
        issuer_key=keys["ca"],
        ca=True,
        key_cert_sign=False,
    )
    assert intermediate.is_ca and not intermediate.can_sign_certificates
    leaf = issue(
        "Leaf", ec_key().public_key(), issuer=intermediate, issuer_key=intermediate_key, ca=False
    )
    with pytest.raises(UntrustedCertificateError, match="not a CA allowed"):
        ca_store.check_chain([leaf, intermediate], at=AT)


def test_issuer_signature_must_verify(
    ca_store: TrustStore, certs: dict[str, Certificate], keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    # Names the trusted CA as issuer, with its key id, but signed by the rogue CA's key.
    impostor = issue(
        "Acme Packager",
        keys["untrusted-codesign"].public_key(),
        issuer=certs["ca"],
        issuer_key=keys["untrusted-ca"],
        ca=False,
        code_signing=True,
    )
    assert impostor.authority_key_id == certs["ca"].subject_key_id
    with pytest.raises(UntrustedCertificateError, match="does not verify"):
        ca_store.check_chain([impostor, certs["ca"]], at=AT)


def test_intermediate_from_the_chain(
    ca_store: TrustStore, certs: dict[str, Certificate], keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    intermediate_key = ec_key()
    intermediate = issue(
        "Acme Issuing CA",
        intermediate_key.public_key(),
        issuer=certs["ca"],
        issuer_key=keys["ca"],
        ca=True,
        not_after=datetime(2030, 1, 1, tzinfo=UTC),
    )
    leaf = issue(
        "Acme Packager 2",
        ec_key().public_key(),
        issuer=intermediate,
        issuer_key=intermediate_key,
        ca=False,
        code_signing=True,
    )
    assert ca_store.check_chain([leaf, intermediate], at=AT) == [leaf, intermediate, certs["ca"]]
    # The chain's own copy of the root changes nothing: the store's copy is the anchor.
    full = [leaf, intermediate, certs["ca"]]
    assert ca_store.check_chain(full, at=AT) == full
    with pytest.raises(UntrustedCertificateError, match="Acme Issuing CA"):
        ca_store.check_chain([leaf], at=AT)
    # An intermediate that expired makes the whole path fail.
    late = datetime(2031, 6, 1, tzinfo=UTC)  # the leaf is still valid
    with pytest.raises(CertificateExpiredError, match="Acme Issuing CA"):
        ca_store.check_chain([leaf, intermediate], at=late)


def test_path_length_constraint_is_enforced(
    ca_store: TrustStore, certs: dict[str, Certificate], keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    first_key, second_key = ec_key(), ec_key()
    first = issue(
        "No-sub-CA CA",
        first_key.public_key(),
        issuer=certs["ca"],
        issuer_key=keys["ca"],
        ca=True,
        path_length=0,
    )
    second = issue("Sub CA", second_key.public_key(), issuer=first, issuer_key=first_key, ca=True)
    leaf = issue("Leaf", ec_key().public_key(), issuer=second, issuer_key=second_key, ca=False)
    with pytest.raises(UntrustedCertificateError, match="at most 0 intermediates"):
        ca_store.check_chain([leaf, second, first], at=AT)


def test_renewed_ca_with_the_same_key_picks_the_valid_copy(
    certs: dict[str, Certificate], keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    old = issue(
        "Acme Fixture Root CA",
        keys["ca"].public_key(),
        issuer=None,
        issuer_key=keys["ca"],
        ca=True,
        subject=certs["ca"].x509.subject,
        not_before=datetime(2014, 1, 1, tzinfo=UTC),
        not_after=datetime(2024, 1, 1, tzinfo=UTC),
    )
    assert old.subject_key_id == certs["ca"].subject_key_id
    store = TrustStore([old, certs["ca"]])  # the expired copy comes first
    assert store.check_chain([certs["codesign"]], at=AT) == [certs["codesign"], certs["ca"]]


def test_certificate_loop_terminates(
    ca_store: TrustStore, count_issued: list[tuple[str, str]]
) -> None:
    a_key, b_key = ec_key(), ec_key()
    a_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Loop A")])
    b_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Loop B")])
    a_self = issue("Loop A", a_key.public_key(), issuer=None, issuer_key=a_key, ca=True)
    b_self = issue("Loop B", b_key.public_key(), issuer=None, issuer_key=b_key, ca=True)
    a = issue(
        "Loop A", a_key.public_key(), issuer=b_self, issuer_key=b_key, ca=True, subject=a_name
    )
    b = issue(
        "Loop B", b_key.public_key(), issuer=a_self, issuer_key=a_key, ca=True, subject=b_name
    )
    leaf = issue("Looped Leaf", ec_key().public_key(), issuer=a, issuer_key=a_key, ca=False)
    with pytest.raises(UntrustedCertificateError, match="loop"):
        ca_store.check_chain([leaf, a, b], at=AT)
    # leaf by A, A by B; B names A as issuer, already on the path: refused unverified.
    assert count_issued == [("Loop A", "Looped Leaf"), ("Loop B", "Loop A")]


def _ladder(
    ca: Certificate, ca_key: rsa.RSAPrivateKey, intermediates: int
) -> tuple[Certificate, list[Certificate]]:
    """A leaf under `intermediates` CAs under `ca`; returns (leaf, intermediates nearest first)."""
    issuer: Certificate = ca
    issuer_key: Key = ca_key
    chain: list[Certificate] = []
    for level in range(intermediates):
        key = ec_key()
        issuer = issue(
            f"Level {level}", key.public_key(), issuer=issuer, issuer_key=issuer_key, ca=True
        )
        issuer_key = key
        chain.insert(0, issuer)
    leaf = issue("Deep Leaf", ec_key().public_key(), issuer=issuer, issuer_key=issuer_key, ca=False)
    return leaf, chain


def test_long_paths(
    ca_store: TrustStore, certs: dict[str, Certificate], keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    assert MAX_CHAIN_DEPTH == 8
    leaf, intermediates = _ladder(certs["ca"], keys["ca"], MAX_CHAIN_DEPTH - 2)
    path = ca_store.check_chain([leaf, *intermediates], at=AT)
    assert len(path) == MAX_CHAIN_DEPTH
    leaf, intermediates = _ladder(certs["ca"], keys["ca"], MAX_CHAIN_DEPTH - 1)
    assert len([leaf, *intermediates]) == MAX_CHAIN_DEPTH
    with pytest.raises(UntrustedCertificateError, match="longer than 8"):
        ca_store.check_chain([leaf, *intermediates], at=AT)
    with pytest.raises(UntrustedCertificateError, match="chain of 9 certificates"):
        ca_store.check_chain([leaf, *intermediates, certs["ca"]], at=AT)


def test_branching_chain_search_is_bounded(
    ca_store: TrustStore, count_issued: list[tuple[str, str]]
) -> None:
    # Seven distinct CA certificates with one name and one key: each can issue any other.
    key = ec_key()
    hydra = [
        issue("Hydra", key.public_key(), issuer=None, issuer_key=key, ca=True) for _ in range(7)
    ]
    leaf = issue("Hydra Leaf", ec_key().public_key(), issuer=hydra[0], issuer_key=key, ca=False)
    with pytest.raises(UntrustedCertificateError):
        ca_store.check_chain([leaf, *hydra], at=AT)
    assert 0 < len(count_issued) <= 64


# --- the cache -----------------------------------------------------------------------------


def test_repeated_checks_verify_signatures_once(
    certs: dict[str, Certificate], count_issued: list[tuple[str, str]]
) -> None:
    store = TrustStore([certs["ca"]])
    chain = [certs["codesign"], certs["ca"]]
    for _ in range(5_000):
        assert store.check_chain(chain, at=AT) == chain
    assert count_issued == [("Acme Fixture Root CA", "Acme Packager")]
    # Same chain, re-parsed (as each package of an index would be): still cached.
    reparsed = load_certificates(b"".join(c.pem for c in chain), source="again")
    store.check_chain(reparsed, at=AT)
    # Dates are still checked on every call.
    with pytest.raises(CertificateExpiredError):
        store.check_chain(chain, at=datetime(2040, 1, 1, tzinfo=UTC))
    with pytest.raises(CertificateNotYetValidError):
        store.check_chain(chain, at=datetime(2023, 1, 1, tzinfo=UTC))
    assert store.check_chain(chain, at=AT) == chain
    assert len(count_issued) == 1


def test_refusals_are_cached_too(
    certs: dict[str, Certificate],
    keys: dict[str, rsa.RSAPrivateKey],
    count_issued: list[tuple[str, str]],
) -> None:
    impostor = issue(
        "Acme Packager",
        keys["codesign"].public_key(),
        issuer=certs["ca"],
        issuer_key=keys["untrusted-ca"],
        ca=False,
    )
    store = TrustStore([certs["ca"]])
    for _ in range(100):
        with pytest.raises(UntrustedCertificateError, match="does not verify"):
            store.check_chain([impostor], at=AT)
    assert len(count_issued) == 1


def test_stores_do_not_share_decisions(certs: dict[str, Certificate]) -> None:
    chain = [certs["untrusted-codesign"], certs["untrusted-ca"]]
    assert TrustStore([certs["untrusted-ca"]]).check_chain(chain, at=AT)[-1] == chain[-1]
    with pytest.raises(UntrustedCertificateError):
        TrustStore([certs["ca"]]).check_chain(chain, at=AT)


# --- issuing certificates ------------------------------------------------------------------


def _profile(cert: Certificate) -> dict[str, Any]:
    return {
        "is_ca": cert.is_ca,
        "can_sign_certificates": cert.can_sign_certificates,
        "is_code_signing": cert.is_code_signing,
        "extensions": sorted((e.oid.dotted_string, e.critical) for e in cert.x509.extensions),
        "hash": cert.x509.signature_hash_algorithm.name,  # type: ignore[union-attr]
        "key_bits": cert.x509.public_key().key_size,  # type: ignore[union-attr]
    }


@pytest.mark.parametrize(
    ("wapt_name", "comptoir_name"),
    [("ca", "ca"), ("codesign", "packager"), ("plain", "deployer")],
)
def test_comptoir_certificates_are_classified_like_wapt_ones(
    certs: dict[str, Certificate], comptoir: ComptoirPki, wapt_name: str, comptoir_name: str
) -> None:
    made: Certificate = getattr(comptoir, comptoir_name)
    assert _profile(made) == _profile(certs[wapt_name])
    assert [a.oid for a in made.x509.subject][-1] == NameOID.COMMON_NAME


def test_new_ca_and_signers(comptoir: ComptoirPki) -> None:
    ca, packager, deployer = comptoir.ca, comptoir.packager, comptoir.deployer
    assert ca.cn == ca.issuer_cn == "Comptoir Test CA"
    assert [a.oid for a in ca.x509.subject] == [
        NameOID.COUNTRY_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.COMMON_NAME,
    ]
    assert [a.oid for a in packager.x509.subject] == [
        NameOID.ORGANIZATION_NAME,
        NameOID.COMMON_NAME,
    ]
    assert packager.authority_key_id == ca.subject_key_id
    key_usage = packager.x509.extensions.get_extension_for_class(x509.KeyUsage).value
    assert key_usage.digital_signature and key_usage.content_commitment
    assert not key_usage.key_cert_sign
    assert packager.x509.serial_number != deployer.x509.serial_number
    assert ca.not_before <= packager.not_before and packager.not_after <= ca.not_after
    assert deployer.not_after == ca.not_after  # clamped: 100,000 days were asked for
    assert (packager.not_after - packager.not_before).days in (1095, 1096)
    store = TrustStore([ca])
    assert store.check_chain([packager]) == [packager, ca]  # default `at`: now
    assert store.check_chain([deployer, ca]) == [deployer, ca]


def test_comptoir_and_wapt_pkis_do_not_trust_each_other(
    comptoir: ComptoirPki, ca_store: TrustStore, certs: dict[str, Certificate]
) -> None:
    with pytest.raises(UntrustedCertificateError):
        ca_store.check_chain([comptoir.packager, comptoir.ca])
    with pytest.raises(UntrustedCertificateError):
        TrustStore([comptoir.ca]).check_chain([certs["codesign"], certs["ca"]], at=AT)


def test_new_signer_refuses_bad_issuers(
    certs: dict[str, Certificate], keys: dict[str, rsa.RSAPrivateKey], comptoir: ComptoirPki
) -> None:
    with pytest.raises(TrustError, match="not a CA"):
        new_signer(keys["plain"], certs["plain"], "Minted", code_signing=True, now=AT)
    with pytest.raises(TrustError, match="does not match"):
        new_signer(keys["untrusted-ca"], certs["ca"], "Minted", code_signing=True, now=AT)
    with pytest.raises(TrustError, match="expired"):
        new_signer(
            keys["ca"],
            certs["ca"],
            "Minted",
            code_signing=True,
            now=datetime(2099, 1, 1, tzinfo=UTC),
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"common_name": ""}, "common name"),
        ({"common_name": "X", "country": "France"}, "two-letter"),
        ({"common_name": "X", "key_size": 1024}, "at least 2048"),
        ({"common_name": "X", "days": 0}, "at least one day"),
        ({"common_name": "X", "now": datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
def test_new_ca_validates_before_generating(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        new_ca(**kwargs)


# --- private keys --------------------------------------------------------------------------


def _public(key: rsa.RSAPrivateKey) -> rsa.RSAPublicNumbers:
    return key.public_key().public_numbers()


def test_load_fixture_traditional_key(pki: Path, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    assert (pki / "codesign.key").read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert keys["codesign"].key_size == 2048
    # A passphrase given for an unencrypted key is not an error.
    again = load_private_key(pki / "codesign.key", PASSPHRASE)
    assert _public(again) == _public(keys["codesign"])


def test_save_and_load_encrypted_key(tmp_path: Path, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    path = tmp_path / "packager.pem"
    save_private_key(keys["codesign"], path, PASSPHRASE)
    data = path.read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert PASSPHRASE not in data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _public(load_private_key(path, PASSPHRASE)) == _public(keys["codesign"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["packager.pem"]  # no temp file left


def test_save_unencrypted_key_only_when_asked(
    tmp_path: Path, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    path = tmp_path / "clear.pem"
    with pytest.raises(KeyFileError, match="unencrypted"):
        save_private_key(keys["plain"], path, None)
    with pytest.raises(KeyFileError, match="empty"):
        save_private_key(keys["plain"], path, b"")
    assert not path.exists()
    save_private_key(keys["plain"], path, None, unencrypted_ok=True)
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _public(load_private_key(path, None)) == _public(keys["plain"])


def test_save_key_refuses_to_overwrite(tmp_path: Path, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(b"precious")
    with pytest.raises(KeyFileError, match="already exists") as excinfo:
        save_private_key(keys["plain"], path, PASSPHRASE)
    assert str(path) in str(excinfo.value)
    assert path.read_bytes() == b"precious"
    save_private_key(keys["plain"], path, PASSPHRASE, overwrite=True)
    assert _public(load_private_key(path, PASSPHRASE)) == _public(keys["plain"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.pem"]


@pytest.fixture(scope="module")
def encrypted_key_file(
    tmp_path_factory: pytest.TempPathFactory, keys: dict[str, rsa.RSAPrivateKey]
) -> Path:
    path = tmp_path_factory.mktemp("keys") / "secret.pem"
    save_private_key(keys["plain"], path, PASSPHRASE)
    return path


@pytest.mark.parametrize(
    ("passphrase", "match"),
    [(WRONG_PASSPHRASE, "wrong passphrase"), (None, "no passphrase"), (b"", "wrong passphrase")],
)
def test_bad_passphrase_names_file_not_passphrase(
    encrypted_key_file: Path, passphrase: bytes | None, match: str
) -> None:
    with pytest.raises(KeyFileError, match=match) as excinfo:
        load_private_key(encrypted_key_file, passphrase)
    assert str(encrypted_key_file) in str(excinfo.value)
    for text in messages(excinfo.value):
        assert WRONG_PASSPHRASE.decode() not in text
        assert PASSPHRASE.decode() not in text


def _write_ec_key(path: Path) -> None:
    path.write_bytes(
        ec_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE),
        )
    )


def _write_ed25519_key(path: Path) -> None:
    path.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.mark.parametrize(
    ("write", "match"),
    [
        (lambda p: p.write_bytes(b"\x00garbage\xff" * 40), "not a PEM private key"),
        (lambda p: p.write_bytes(b""), "not a PEM private key"),
        (
            lambda p: p.write_bytes(
                b"-----BEGIN RSA PRIVATE KEY-----\nbm9wZQ==\n-----END RSA PRIVATE KEY-----\n"
            ),
            "not a PEM private key",
        ),
        (_write_ec_key, "not an RSA private key"),
        (_write_ed25519_key, "not an RSA private key"),
    ],
    ids=["garbage", "empty", "broken-pem", "ec", "ed25519"],
)
def test_unusable_key_files(tmp_path: Path, write: Callable[[Path], object], match: str) -> None:
    path = tmp_path / "odd.key"
    write(path)
    with pytest.raises(KeyFileError, match=match) as excinfo:
        load_private_key(path, PASSPHRASE)
    assert str(path) in str(excinfo.value)
    for text in messages(excinfo.value):
        assert PASSPHRASE.decode() not in text


def test_certificate_is_not_a_key_and_missing_file(pki: Path, tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"ca\.crt"):
        load_private_key(pki / "ca.crt", None)
    with pytest.raises(KeyFileError, match=r"absent\.key"):
        load_private_key(tmp_path / "absent.key", None)


def test_save_certificate(tmp_path: Path, certs: dict[str, Certificate]) -> None:
    path = tmp_path / "chain.crt"
    chain = [certs["codesign"], certs["ca"]]
    save_certificate(chain, path)
    assert load_certificate_file(path) == chain
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    with pytest.raises(TrustError, match="already exists"):
        save_certificate([certs["plain"]], path)
    assert load_certificate_file(path) == chain
    save_certificate([certs["plain"]], path, overwrite=True)
    assert load_certificate_file(path) == [certs["plain"]]
    with pytest.raises(TrustError, match="no certificate"):
        save_certificate([], tmp_path / "empty.crt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain.crt"]


def test_save_into_missing_directory(tmp_path: Path, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    with pytest.raises(KeyFileError, match="cannot write"):
        save_private_key(keys["plain"], tmp_path / "no" / "key.pem", PASSPHRASE)


# --- signers -------------------------------------------------------------------------------


def test_key_signer_round_trip(
    certs: dict[str, Certificate], keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    signer = KeySigner(keys["codesign"], [certs["codesign"], certs["ca"]])
    assert isinstance(signer, Signer)
    assert signer.certificate == certs["codesign"]
    assert signer.chain == (certs["codesign"], certs["ca"])
    data = b'[["WAPT/control","0123"]]'
    signature = signer.sign(data)
    assert len(signature) == 256
    signer.certificate.verify(data, signature, what="manifest")
    with pytest.raises(SignatureError) as excinfo:
        signer.certificate.verify(data + b" ", signature, what="acme.wapt: WAPT/manifest.sha256")
    message = str(excinfo.value)
    assert message.startswith("acme.wapt: WAPT/manifest.sha256: signature does not verify")
    assert "Acme Packager" in message and certs["codesign"].fingerprint[:16] in message
    with pytest.raises(ManifestSignatureError):
        certs["plain"].verify(data, signature, what="manifest", error=ManifestSignatureError)


def test_key_signer_repr_hides_the_key(
    certs: dict[str, Certificate], keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    signer = KeySigner(keys["plain"], [certs["plain"]])
    text = repr(signer)
    assert "Acme Deployer" in text
    assert str(keys["plain"].private_numbers().d)[:20] not in text
    assert "PRIVATE" not in text.upper()
    assert not hasattr(signer, "__dict__")


def test_key_signer_refuses_mismatched_key(
    certs: dict[str, Certificate], keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    with pytest.raises(TrustError, match="does not match certificate Acme Packager"):
        KeySigner(keys["plain"], [certs["codesign"]])
    with pytest.raises(TrustError, match="at least"):
        KeySigner(keys["plain"], [])


def test_key_signer_from_files(
    tmp_path: Path, pki: Path, certs: dict[str, Certificate], keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    chain_file = tmp_path / "packager-chain.crt"
    chain_file.write_bytes(certs["codesign"].pem + b"\n" + certs["ca"].pem)
    signer = KeySigner.from_files(pki / "codesign.key", chain_file, None)
    assert signer.chain == (certs["codesign"], certs["ca"])
    certs["codesign"].verify(b"x", signer.sign(b"x"), what="x")
    key_file = tmp_path / "packager.pem"
    save_private_key(keys["codesign"], key_file, PASSPHRASE)
    assert KeySigner.from_files(key_file, pki / "codesign.crt", PASSPHRASE).chain == (
        certs["codesign"],
    )
    with pytest.raises(TrustError, match="does not match"):
        KeySigner.from_files(pki / "plain.key", chain_file, None)


def test_comptoir_signer_output_verifies(comptoir: ComptoirPki) -> None:
    signer = KeySigner(comptoir.packager_key, [comptoir.packager, comptoir.ca])
    TrustStore([comptoir.ca]).check_chain(signer.chain)
    signer.certificate.verify(b"payload", signer.sign(b"payload"), what="payload")


@pytest.mark.parametrize(
    ("filename", "verifies"),
    [
        ("acme-hello_1.0.0-1_PROD_fr.wapt", True),
        ("acme-toolbox_1-2_PROD.wapt", True),
        ("acme-hello_1.0.0-1_PROD_fr.tampered-signature.wapt", False),
        ("acme-broken_1.0-1_PROD.wapt", False),
    ],
)
def test_verify_wapt_manifest_signatures(
    wapt_fixtures: Path, filename: str, verifies: bool
) -> None:
    with zipfile.ZipFile(wapt_fixtures / "packages" / filename) as archive:
        manifest = archive.read("WAPT/manifest.sha256")
        signature = base64.b64decode(archive.read("WAPT/signature.sha256"))
    leaf = package_chain(wapt_fixtures, filename)[0]
    what = f"{filename}: WAPT/signature.sha256"
    if verifies:
        leaf.verify(manifest, signature, what=what, error=ManifestSignatureError)
    else:
        with pytest.raises(ManifestSignatureError, match=re.escape(filename)):
            leaf.verify(manifest, signature, what=what, error=ManifestSignatureError)


def test_verify_refuses_non_rsa_certificates() -> None:
    key = ec_key()
    cert = issue(
        "EC Signer",
        key.public_key(),
        issuer=None,
        issuer_key=key,
        ca=False,
        not_after=datetime.now(UTC) + timedelta(days=1),
    )
    with pytest.raises(SignatureError, match="no RSA key"):
        cert.verify(b"data", b"\x00" * 64, what="data")


def test_file_mode_survives_restrictive_umask(
    tmp_path: Path, certs: dict[str, Certificate]
) -> None:
    previous = os.umask(0o077)
    try:
        save_certificate([certs["ca"]], tmp_path / "ca.crt")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "ca.crt").stat().st_mode) == 0o644
