"""Interoperability: every verdict WAPT 1.8.2 gave on the fixture packages is reproduced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WAPT_FIXTURES
from wapt import errors
from wapt.package import verify_package
from wapt.trust import TrustStore

# WAPT's exception for each rejected fixture, by role, and the precise class Comptoir names.
EXPECTED_CLASS: dict[str, type[errors.WaptError]] = {
    "bad_signature": errors.ManifestSignatureError,
    "expired_signer": errors.CertificateExpiredError,
    "tampered_control": errors.ControlSignatureError,
    "tampered_extra_file": errors.ExtraFileError,
    "tampered_missing_file": errors.MissingFileError,
    "tampered_payload": errors.CorruptedFileError,
    "tampered_signature_notbase64": errors.SignatureEncodingError,
    "tampered_signature": errors.ManifestSignatureError,
    "plain_cert_with_setup": errors.NotCodeSigningError,
    "untrusted_signer": errors.UntrustedCertificateError,
}


def _packages() -> list[dict[str, Any]]:
    import json

    data = json.loads((WAPT_FIXTURES / "expected.json").read_text("utf-8"))
    return list(data["packages"])


@pytest.fixture(scope="module")
def trust(wapt_fixtures: Path) -> TrustStore:
    return TrustStore.from_path(wapt_fixtures / "pki" / "ca.crt")


def test_every_rejected_role_is_mapped() -> None:
    roles = {p["role"] for p in _packages() if p["wapt_verdict"] != "ok"}
    assert roles == set(EXPECTED_CLASS)


@pytest.mark.parametrize("case", _packages(), ids=lambda c: c["file"])
def test_wapt_verdict_is_reproduced(
    case: dict[str, Any], wapt_fixtures: Path, trust: TrustStore
) -> None:
    path = wapt_fixtures / "packages" / case["file"]
    if case["wapt_verdict"] == "ok":
        verified = verify_package(path, trust)
        entry = verified.entry
        assert entry.package == case["package"]
        assert entry.version == case["version"]
        assert entry.maturity == case["maturity"]
        assert entry.package_uuid == case["package_uuid"]
        assert verified.signer.cn == case["signer"]
        assert verified.signer.fingerprint == case["signer_fingerprint"]
        assert [c.cn for c in verified.chain] == case["certificate_crt_chain"]
        assert verified.trust_path[-1].fingerprint == (
            "e98d822f9cae7ffc30738df6334e61c8196b671b7fc7d7ddfabaae261c76ad58"
        )
    else:
        with pytest.raises(errors.VerificationError) as caught:
            verify_package(path, trust)
        expected = EXPECTED_CLASS[case["role"]]
        assert caught.value.has(expected), caught.value.problems
        assert case["file"] in str(caught.value)


def test_tampered_payload_names_the_file(wapt_fixtures: Path, trust: TrustStore) -> None:
    path = wapt_fixtures / "packages" / "acme-hello_1.0.0-1_PROD_fr.tampered-payload.wapt"
    with pytest.raises(errors.VerificationError) as caught:
        verify_package(path, trust)
    assert [str(p) for p in caught.value.problems] == ["file files/hello.txt: sha256 mismatch"]


def test_rogue_package_is_trusted_when_its_ca_is(wapt_fixtures: Path) -> None:
    """Trust is the store's decision alone: add the rogue CA and the rogue package passes."""
    pki = wapt_fixtures / "pki"
    trust = TrustStore(
        [
            *TrustStore.from_path(pki / "ca.crt").certificates,
            *TrustStore.from_path(pki / "untrusted-ca.crt").certificates,
        ]
    )
    verified = verify_package(wapt_fixtures / "packages" / "acme-rogue_1.0-1_PROD.wapt", trust)
    assert verified.signer.cn == "Rogue Packager"


def test_an_empty_trust_store_trusts_nothing(wapt_fixtures: Path) -> None:
    path = wapt_fixtures / "packages" / "acme-hello_1.0.0-1_PROD_fr.wapt"
    with pytest.raises(errors.VerificationError) as caught:
        verify_package(path, TrustStore([]))
    assert caught.value.has(errors.UntrustedCertificateError)


def test_repo_copies_are_byte_identical_and_valid(wapt_fixtures: Path, trust: TrustStore) -> None:
    for path in sorted((wapt_fixtures / "repo").glob("*.wapt")):
        assert path.read_bytes() == (wapt_fixtures / "packages" / path.name).read_bytes()
        verify_package(path, trust)
