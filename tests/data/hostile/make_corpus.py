"""Generate the corpus of hostile `.wapt` files that the package verifier must refuse.

Regenerate from the project root (it rewrites every `*.wapt` here and `corpus.json`)::

    .venv/bin/python tests/data/hostile/make_corpus.py

and check that the files on disk are exactly what this script makes (exit status 1 if not)::

    .venv/bin/python tests/data/hostile/make_corpus.py --check

Every case starts from a package made by WAPT 1.8.2 itself (`acme-hello_1.0.0-1_PROD_fr.wapt`,
or the control-only `acme-toolbox_1-2_PROD.wapt`) and is hostile in ONE way where possible: after
the edit, the control and the manifest are re-signed (by `codesign.key` unless the case is about
the signer), so a verifier that only checked signatures would accept it. The few cases made on
purpose WITHOUT re-signing say so (`tampered-payload`, `extra-file`, `missing-file`).

This script deliberately does not import the project's `wapt` package: it re-implements the little
signing it needs with `cryptography` (WAPT format spec §1.2, §2.1, §2.2):

- control signature: RSA PKCS#1 v1.5 / SHA-256 over ``json.dumps({attr: value for attr in
  signed_attributes}, sort_keys=True, separators=(",", ":"))`` with the values as a parser reads
  them back (stripped, continuations joined with "\\n", `installed_size` an int), base64, one line;
- manifest: compact JSON list of ``[path, sha256hex]`` over every member but the manifest and its
  signature; `WAPT/signature.sha256` is the MIME base64 (76-column lines) of the signature over the
  raw manifest bytes.

Before writing anything the script checks that these primitives reproduce WAPT's own bytes: the
fixture control re-rendered is byte-identical, and re-signing it (same uuid and date) and its
manifest with `codesign.key` gives WAPT's exact signatures (PKCS#1 v1.5 is deterministic).

Output is deterministic: fixed zip dates, fixed `package_uuid` and `signature_date`, pseudo-random
bytes derived from SHA-256 of a label, certificates built with fixed serials, dates and existing
keys. Two runs give byte-identical files (with the same zlib: deflate output can differ between
zlib versions, which `--check` would show).

`corpus.json` is a list of ``{"file", "expect", "also_acceptable", "what"}``:

- ``expect``: name of the class in `wapt/errors.py` a correct verifier reports for this file
  (raised directly, or one of `VerificationError.problems`). ``null`` marks the two positive
  controls (`baseline-*.wapt`), re-signed by this script and otherwise untouched: they MUST verify,
  which proves the re-signing is sound and that a failure on the other files has the stated cause;
- ``also_acceptable``: classes a correct verifier may report instead, where the class depends on
  the order of checks or on how a foreign error is mapped (the reason is in ``what``);
- ``what``: one sentence saying what is hostile and why.

Byte-level patches, made after `zipfile` wrote a valid archive because `zipfile` cannot write
these (offsets are those of the zip specification; both the local header and the central
directory record are patched unless stated):

- `name-nul-byte`: the name `files/evil_.txt` becomes `files/evil\\x00.txt` (same length);
- `local-header-name-mismatch`: ONLY the local header name of `files/hello.txt` becomes
  `../../../ev.txt`; the central directory still says `files/hello.txt`;
- `encrypted-member`: general-purpose flag bit 0 of `files/hello.txt` (data left in clear);
- `zipbomb-lying-size`: uncompressed size of `files/zeros.bin` set to 1024 (stream holds 20 MiB);
- `zipbomb-lying-size-crc`: the same, plus CRC-32 set to that of the first 1024 bytes;
- `zipbomb-overlap`: 1,024 central records appended, copies of `files/o0000.bin`'s record under
  other names (same local header offset), end-of-central-directory counts and size updated;
- `truncated-zip`, `zip-prepended-data`: whole-file slicing and prefixing.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import io
import json
import os
import re
import stat
import struct
import sys
import unicodedata
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SHARED = Path(os.environ.get("COMPTOIR_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "wapt-1.8.2"
PKI = FIXTURES / "pki"
HELLO = FIXTURES / "packages" / "acme-hello_1.0.0-1_PROD_fr.wapt"
TOOLBOX = FIXTURES / "packages" / "acme-toolbox_1-2_PROD.wapt"
ERRORS_PY = ROOT / "wapt" / "errors.py"
CATALOGUE = HERE / "corpus.json"

ZIP_DATE = (2025, 6, 1, 12, 0, 0)
SIGNATURE_DATE = "2025-06-01T12:00:00.123456"
PACKAGE_UUID = "0c0ffee0-5a1e-4d0e-9bad-c0de00000001"

CONTROL = "WAPT/control"
CERTIFICATE = "WAPT/certificate.crt"
MANIFEST = "WAPT/manifest.sha256"
SIGNATURE = "WAPT/signature.sha256"
NOT_IN_MANIFEST = {MANIFEST, SIGNATURE}

PAYLOAD_MODE = stat.S_IFREG | 0o644  # how WAPT stores payload files (external_attr 0x81a40000)
WAPT_MODE = 0o600  # how WAPT stores WAPT/* members: no file-type bits at all (0x01800000)

EVIL_TEXT = b"written outside the package directory by a hostile archive\n"
EVIL_SETUP = b"from setuphelpers import *\n\ndef install():\n    run('calc.exe')\n"
MiB = 1024 * 1024


# --- deterministic bytes -------------------------------------------------------------------


def noise(label: str, size: int) -> bytes:
    """Pseudo-random bytes, the same on every run: SHA-256 in counter mode over a label."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{label}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- control files (spec §1.2, §2.1) -------------------------------------------------------


class Control:
    """An ordered list of `key: value` fields, read and written with WAPT's rules."""

    def __init__(self, fields: Iterable[tuple[str, str]]) -> None:
        self.fields: list[list[str]] = [[k, v] for k, v in fields]

    @classmethod
    def parse(cls, text: str) -> Control:
        fields: list[tuple[str, str]] = []
        for line in text.split("\n"):
            if not line.strip():
                break
            if line.startswith(" "):
                key, value = fields[-1]
                fields[-1] = (key, value + "\n" + line.strip())
            else:
                key, _, value = line.partition(":")
                fields.append((key.strip().lower(), value.strip()))
        return cls(fields)

    def copy(self) -> Control:
        return Control((k, v) for k, v in self.fields)

    def __getitem__(self, key: str) -> str:
        values = [v for k, v in self.fields if k == key]
        if not values:
            raise KeyError(key)
        return values[-1]

    def __setitem__(self, key: str, value: str) -> None:
        for pair in self.fields:
            if pair[0] == key:
                pair[1] = value
                return
        self.fields.append([key, value])

    def __delitem__(self, key: str) -> None:
        self.fields = [pair for pair in self.fields if pair[0] != key]

    def render(self) -> str:
        """WAPT's `ascontrol`: `%-18s: %s`, a space after each newline, no final newline."""
        return "\n".join(f"{k:<18}: {v.replace(chr(10), chr(10) + ' ')}" for k, v in self.fields)

    def signed_content(self) -> bytes:
        """The canonical JSON WAPT signs: the values of `signed_attributes`, as read back."""
        values = dict(Control.parse(self.render()).fields)  # last occurrence wins, like WAPT
        content: dict[str, Any] = {}
        for attr in values["signed_attributes"].split(","):
            value: Any = values.get(attr)
            if attr == "installed_size" and value is not None and re.fullmatch(r"-?\d+", value):
                value = int(value)
            content[attr] = value
        return json.dumps(content, sort_keys=True, separators=(",", ":")).encode("ascii")


# --- signers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """A private key, the certificate it signs as, and the `WAPT/certificate.crt` it ships."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    chain_pem: bytes

    @property
    def cn(self) -> str:
        attrs = self.cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(attrs[0].value)

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
        return self.key.sign(data, padding.PKCS1v15(), algorithm or hashes.SHA256())


def pem_chain(*certs: x509.Certificate) -> bytes:
    """Leaf first, PEMs joined with "\\n" as WAPT writes them (a blank line in between)."""
    return b"\n".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@cache
def pki_key(name: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key((PKI / f"{name}.key").read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@cache
def pki_cert(name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((PKI / f"{name}.crt").read_bytes())


def pki_signer(name: str, *chain: str) -> Signer:
    certs = [pki_cert(name), *(pki_cert(c) for c in chain)]
    return Signer(pki_key(name), certs[0], pem_chain(*certs))


def codesign() -> Signer:
    return pki_signer("codesign", "ca")


def plain() -> Signer:
    return pki_signer("plain", "ca")


def rogue() -> Signer:
    return pki_signer("untrusted-codesign", "untrusted-ca")


def issue_certificate(
    *,
    template: x509.Certificate,
    subject: x509.Name,
    public_key: rsa.RSAPublicKey,
    issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
    replace_extensions: Sequence[x509.ExtensionType] = (),
) -> x509.Certificate:
    """A certificate with the template's extensions copied one for one (some replaced)."""
    replaced = {type(e) for e in replace_extensions}
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for ext in template.extensions:
        if type(ext.value) not in replaced:
            builder = builder.add_extension(ext.value, critical=ext.critical)
    for value in replace_extensions:
        critical = template.extensions.get_extension_for_class(type(value)).critical
        builder = builder.add_extension(value, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def with_cn(name: x509.Name, cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(a.oid, cn) if a.oid == x509.NameOID.COMMON_NAME else a for a in name]
    )


# --- members and packages ------------------------------------------------------------------


@dataclass
class Member:
    """One zip member: its name, bytes, and the header details that matter here."""

    name: str
    data: bytes
    mode: int = PAYLOAD_MODE  # st_mode, stored in the high 16 bits of external_attr
    compress_type: int = zipfile.ZIP_DEFLATED
    compresslevel: int | None = None
    dos_attr: int = 0  # low 16 bits of external_attr (0x10 = MS-DOS directory)
    extra: bytes = b""


@dataclass
class Draft:
    """A package being edited: payload members (WAPT/icon.png included) and its control."""

    payload: list[Member]
    control: Control


@cache
def _fixture_members(path: Path) -> tuple[tuple[str, bytes, int], ...]:
    with zipfile.ZipFile(path) as zf:
        return tuple((i.filename, zf.read(i), i.external_attr >> 16) for i in zf.infolist())


def load_draft(path: Path) -> Draft:
    payload: list[Member] = []
    control = None
    for name, data, mode in _fixture_members(path):
        if name == CONTROL:
            control = Control.parse(data.decode("utf-8"))
        elif name not in {CERTIFICATE, MANIFEST, SIGNATURE}:
            payload.append(Member(name, data, mode))
    assert control is not None, path
    return Draft(payload, control)


def hello() -> Draft:
    """The WAPT-made `acme-hello` package (setup.py, files/hello.txt, icon), to be re-signed."""
    return load_draft(HELLO)


def toolbox() -> Draft:
    """The WAPT-made control-only group package `acme-toolbox`."""
    return load_draft(TOOLBOX)


def sign_control(
    control: Control,
    signer: Signer,
    *,
    uuid: str = PACKAGE_UUID,
    signature_date: str = SIGNATURE_DATE,
) -> Control:
    """WAPT's `_sign_control`: fill uuid, signer, fingerprint and date, then sign (§2.1)."""
    signed = control.copy()
    signed["package_uuid"] = uuid
    signed["signer"] = signer.cn
    signed["signer_fingerprint"] = signer.fingerprint
    signed["signature_date"] = signature_date
    return resign_control(signed, signer)


def resign_control(control: Control, signer: Signer) -> Control:
    """Sign the control's signed attributes as they stand, changing no other field."""
    signed = control.copy()
    signed["signature"] = base64.b64encode(signer.sign(signed.signed_content())).decode()
    return signed


def manifest_entries(members: Iterable[Member]) -> list[list[str]]:
    return [[m.name, sha256_hex(m.data)] for m in members if m.name not in NOT_IN_MANIFEST]


def compact_json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("ascii")


ManifestEdit = Callable[[list[list[str]]], object]


def seal(
    payload: Sequence[Member],
    control_bytes: bytes,
    signer: Signer,
    *,
    certificate: bytes | None = None,
    edit_manifest: ManifestEdit | None = None,
    omit: Iterable[str] = (),
) -> list[Member]:
    """Append control, certificate, manifest and manifest signature, as `sign_package` does.

    `edit_manifest` gets the manifest entries and returns what to serialise instead (or raw
    bytes); `omit` names members left out of the archive and of the manifest.
    """
    omitted = set(omit)
    members = [
        *payload,
        Member(CONTROL, control_bytes, WAPT_MODE),
        Member(CERTIFICATE, signer.chain_pem if certificate is None else certificate, WAPT_MODE),
    ]
    members = [m for m in members if m.name not in omitted]
    entries = manifest_entries(members)
    manifest = entries if edit_manifest is None else edit_manifest(entries)
    manifest_bytes = manifest if isinstance(manifest, bytes) else compact_json(manifest)
    signature = base64.encodebytes(signer.sign(manifest_bytes))
    members += [
        Member(MANIFEST, manifest_bytes, WAPT_MODE),
        Member(SIGNATURE, signature, WAPT_MODE),
    ]
    return [m for m in members if m.name not in omitted]


def package(
    draft: Draft | None = None,
    signer: Signer | None = None,
    *,
    encode: Callable[[str], bytes] = lambda text: text.encode("utf-8"),
    sign: bool = True,
    certificate: bytes | None = None,
    edit_manifest: ManifestEdit | None = None,
    omit: Iterable[str] = (),
) -> list[Member]:
    """A draft signed all the way (control, then manifest): the members of a valid package."""
    draft = draft or hello()
    signer = signer or codesign()
    control = sign_control(draft.control, signer) if sign else draft.control
    return seal(
        draft.payload,
        encode(control.render()),
        signer,
        certificate=certificate,
        edit_manifest=edit_manifest,
        omit=omit,
    )


def write_zip(members: Iterable[Member]) -> bytes:
    """Write members in order with fixed dates and Unix attributes, like WAPT's zipfile."""
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": on purpose here
        with zipfile.ZipFile(out, "w") as zf:
            for m in members:
                info = zipfile.ZipInfo(m.name, date_time=ZIP_DATE)
                info.create_system = 3
                info.external_attr = (m.mode << 16) | m.dos_attr
                info.compress_type = m.compress_type
                info.extra = m.extra
                zf.writestr(info, m.data, compresslevel=m.compresslevel)
    return out.getvalue()


def valid_zip(draft: Draft | None = None, signer: Signer | None = None, **kw: Any) -> bytes:
    return write_zip(package(draft, signer, **kw))


def with_payload(*extra: Member) -> bytes:
    """The hello package with extra payload members, all listed in a re-signed manifest."""
    draft = hello()
    draft.payload.extend(extra)
    return valid_zip(draft)


def replace_data(members: list[Member], name: str, data: bytes) -> list[Member]:
    [target] = [m for m in members if m.name == name]
    target.data = data
    return members


def rename(members: Iterable[Member], old: str, new: str) -> list[Member]:
    return [replace(m, name=new) if m.name == old else m for m in members]


# --- byte-level zip surgery ----------------------------------------------------------------

EOCD = b"PK\x05\x06"
CD_HEADER = b"PK\x01\x02"
LOCAL_HEADER = b"PK\x03\x04"


def _eocd_position(data: bytes | bytearray) -> int:
    pos = data.rfind(EOCD)
    if pos < 0:
        raise ValueError("no end of central directory record")
    return pos


def _central_records(data: bytes | bytearray) -> list[tuple[int, int, bytes, int]]:
    """(offset, length, name bytes, local header offset) of each central directory record."""
    eocd = _eocd_position(data)
    count, size, offset = struct.unpack_from("<HII", data, eocd + 10)
    records = []
    pos = offset
    for _ in range(count):
        assert data[pos : pos + 4] == CD_HEADER
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, pos + 28)
        (local,) = struct.unpack_from("<I", data, pos + 42)
        length = 46 + name_len + extra_len + comment_len
        records.append((pos, length, bytes(data[pos + 46 : pos + 46 + name_len]), local))
        pos += length
    assert pos == offset + size
    return records


def patch_member(
    data: bytes,
    name: bytes,
    *,
    flags_or: int = 0,
    crc: int | None = None,
    file_size: int | None = None,
    local_name: bytes | None = None,
    both_names: bytes | None = None,
) -> bytes:
    """Change header fields of ONE member, in its central record and its local header.

    `local_name` rewrites only the local header's name, `both_names` both names (same length).
    """
    buf = bytearray(data)
    matches = [r for r in _central_records(buf) if r[2] == name]
    if len(matches) != 1:
        raise ValueError(f"{name!r}: {len(matches)} central records")
    cd, _, _, local = matches[0]
    assert buf[local : local + 4] == LOCAL_HEADER
    if flags_or:
        for pos in (cd + 8, local + 6):
            (flags,) = struct.unpack_from("<H", buf, pos)
            struct.pack_into("<H", buf, pos, flags | flags_or)
    if crc is not None:
        struct.pack_into("<I", buf, cd + 16, crc)
        struct.pack_into("<I", buf, local + 14, crc)
    if file_size is not None:
        struct.pack_into("<I", buf, cd + 24, file_size)
        struct.pack_into("<I", buf, local + 22, file_size)
    for new, where in ((local_name, (local + 30,)), (both_names, (local + 30, cd + 46))):
        if new is None:
            continue
        if len(new) != len(name):
            raise ValueError("a patched name must keep its length")
        for pos in where:
            buf[pos : pos + len(name)] = new
    return bytes(buf)


def add_central_aliases(data: bytes, name: bytes, aliases: Sequence[bytes]) -> bytes:
    """Append central records that copy `name`'s record (same local header) under new names."""
    buf = bytearray(data)
    [(cd, length, _, _)] = [r for r in _central_records(buf) if r[2] == name]
    record = bytes(buf[cd : cd + length])
    tail = record[46 + len(name) :]
    added = bytearray()
    for alias in aliases:
        header = bytearray(record[:46])
        struct.pack_into("<H", header, 28, len(alias))
        added += header + alias + tail
    eocd = _eocd_position(buf)
    n_disk, n_total, size, offset = struct.unpack_from("<HHII", buf, eocd + 8)
    struct.pack_into(
        "<HHII",
        buf,
        eocd + 8,
        n_disk + len(aliases),
        n_total + len(aliases),
        size + len(added),
        offset,
    )
    return bytes(buf[:eocd] + added + buf[eocd:])


# --- the case registry ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    file: str
    expect: str | None
    what: str
    make: Callable[[], bytes]
    also_acceptable: tuple[str, ...] = ()

    def entry(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "expect": self.expect,
            "also_acceptable": list(self.also_acceptable),
            "what": self.what,
        }


CASES: list[Case] = []


def case(
    file: str, expect: str | None, what: str, *, also: Sequence[str] = ()
) -> Callable[[Callable[[], bytes]], Callable[[], bytes]]:
    """Register a function that returns the bytes of one corpus file."""

    def register(make: Callable[[], bytes]) -> Callable[[], bytes]:
        if any(c.file == file for c in CASES):
            raise ValueError(f"duplicate case {file}")
        CASES.append(Case(file, expect, what, make, tuple(also)))
        return make

    return register


# --- positive controls ---------------------------------------------------------------------


@case(
    "baseline-hello.wapt",
    None,
    "Positive control: acme-hello re-signed by this script with codesign.key and nothing else"
    " changed; it MUST verify, proving the re-signing used by every other case is sound.",
)
def baseline_hello() -> bytes:
    return valid_zip()


@case(
    "baseline-toolbox.wapt",
    None,
    "Positive control: the control-only group package acme-toolbox re-signed with plain.key"
    " (no codeSigning, allowed without setup.py); it MUST verify.",
)
def baseline_toolbox() -> bytes:
    return valid_zip(toolbox(), plain())


# --- member names --------------------------------------------------------------------------


@case(
    "traversal-dotdot.wapt",
    "UnsafePathError",
    "Member `../evil.txt`, listed in the re-signed manifest, would be extracted outside the"
    " destination.",
)
def traversal_dotdot() -> bytes:
    return with_payload(Member("../evil.txt", EVIL_TEXT))


@case(
    "traversal-nested.wapt",
    "UnsafePathError",
    "Member `files/../../evil.txt` climbs out of the destination through a subdirectory.",
)
def traversal_nested() -> bytes:
    return with_payload(Member("files/../../evil.txt", EVIL_TEXT))


@case(
    "traversal-absolute.wapt",
    "UnsafePathError",
    "Member `/etc/evil` is an absolute path (a naive os.path.join drops the destination).",
)
def traversal_absolute() -> bytes:
    return with_payload(Member("/etc/evil", EVIL_TEXT))


@case(
    "traversal-drive.wapt",
    "UnsafePathError",
    "Member `C:/Windows/evil.dll` names a Windows drive root.",
)
def traversal_drive() -> bytes:
    return with_payload(Member("C:/Windows/evil.dll", EVIL_TEXT))


@case(
    "traversal-drive-relative.wapt",
    "UnsafePathError",
    "Member `C:evil` is drive-relative: on Windows it lands in the current directory of drive C.",
)
def traversal_drive_relative() -> bytes:
    return with_payload(Member("C:evil", EVIL_TEXT))


@case(
    "traversal-backslash.wapt",
    "UnsafePathError",
    "Member `..\\evil.txt` uses a backslash, a path separator on Windows, to climb out.",
)
def traversal_backslash() -> bytes:
    return with_payload(Member("..\\evil.txt", EVIL_TEXT))


@case(
    "traversal-backslash-separator.wapt",
    "UnsafePathError",
    "Member `files\\x.txt` holds a backslash: one file name on Linux, a subdirectory on Windows,"
    " so what is verified is not what is extracted.",
)
def traversal_backslash_separator() -> bytes:
    return with_payload(Member("files\\x.txt", EVIL_TEXT))


@case(
    "name-nul-byte.wapt",
    "UnsafePathError",
    "Member named `files/evil\\x00.txt` (byte-patched): Python's zipfile truncates"
    " ZipInfo.filename at the NUL (orig_filename keeps it) and the manifest lists the truncated"
    " `files/evil`, so only an explicit NUL check catches it.",
)
def name_nul_byte() -> bytes:
    """zipfile cuts names at NUL, so the member is written as `files/evil_.txt` and both its
    local and central names are patched to `files/evil\\x00.txt` afterwards."""

    def list_truncated(entries: list[list[str]]) -> object:
        return [["files/evil" if p == "files/evil_.txt" else p, h] for p, h in entries]

    draft = hello()
    draft.payload.append(Member("files/evil_.txt", EVIL_TEXT))
    data = write_zip(package(draft, edit_manifest=list_truncated))
    return patch_member(data, b"files/evil_.txt", both_names=b"files/evil\x00.txt")


@case(
    "name-very-long.wapt",
    "UnsafePathError",
    "Member name of 4,106 characters (`files/AAAA...A.txt`): longer than any file system or"
    " Windows path allows, extraction fails half-way after verification passed.",
)
def name_very_long() -> bytes:
    return with_payload(Member("files/" + "A" * 4096 + ".txt", EVIL_TEXT))


@case(
    "name-long-component.wapt",
    "UnsafePathError",
    "Member `files/` + a 304-character file name: the whole name is short (310 characters) but"
    " the component exceeds the 255 limit of ext4, NTFS and APFS, so only a per-component check"
    " catches it before extraction fails.",
)
def name_long_component() -> bytes:
    return with_payload(Member("files/" + "A" * 300 + ".txt", EVIL_TEXT))


@case(
    "name-windows-reserved.wapt",
    "UnsafePathError",
    "Member `files/CON`: a reserved device name on Windows (like NUL, AUX, PRN, COM1, LPT1),"
    " writing it opens the console device instead of a file.",
)
def name_windows_reserved() -> bytes:
    return with_payload(Member("files/CON", EVIL_TEXT))


@case(
    "name-unicode-path-extra.wapt",
    "UnsafePathError",
    "Member `files/readme.txt` carries an Info-ZIP Unicode Path extra field (0x7075, valid CRC)"
    " naming `../../evil.txt`: Python's zipfile ignores it, but unzip, 7-Zip and libarchive"
    " extract to that name; reject a 0x7075 name that differs from the header name.",
)
def name_unicode_path_extra() -> bytes:
    header_name = b"files/readme.txt"
    unicode_name = b"../../evil.txt"
    body = struct.pack("<BI", 1, zlib.crc32(header_name)) + unicode_name
    extra = struct.pack("<HH", 0x7075, len(body)) + body
    return with_payload(Member(header_name.decode(), EVIL_TEXT, extra=extra))


@case(
    "local-header-name-mismatch.wapt",
    "NotAZipError",
    "The central directory says `files/hello.txt` but that member's local header says"
    " `../../../ev.txt` (byte-patched): a streaming extractor writes outside the destination;"
    " Python's zipfile raises BadZipFile on reading it.",
    also=("UnsafePathError", "CorruptedFileError"),
)
def local_header_name_mismatch() -> bytes:
    """Only the local header's name field of `files/hello.txt` is rewritten (same length)."""
    return patch_member(valid_zip(), b"files/hello.txt", local_name=b"../../../ev.txt")


# --- member types --------------------------------------------------------------------------


@case(
    "symlink-member.wapt",
    "SymlinkMemberError",
    "Member `files/passwd` is a symbolic link to `/etc/passwd` (S_IFLNK in external_attr,"
    " create_system Unix), listed in the re-signed manifest.",
)
def symlink_member() -> bytes:
    link = Member(
        "files/passwd", b"/etc/passwd", stat.S_IFLNK | 0o777, compress_type=zipfile.ZIP_STORED
    )
    return with_payload(link)


@case(
    "fifo-member.wapt",
    "SymlinkMemberError",
    "Member `files/pipe` is a named pipe (S_IFIFO in external_attr): not a regular file, opening"
    " it on extraction can block forever.",
)
def fifo_member() -> bytes:
    return with_payload(
        Member("files/pipe", b"", stat.S_IFIFO | 0o644, compress_type=zipfile.ZIP_STORED)
    )


@case(
    "directory-entry.wapt",
    "ExtraFileError",
    "A `files/` directory entry, not in the (re-signed) manifest: WAPT never writes one and breaks"
    " on it (spec §1.1, §2.6); Comptoir treats an unlisted directory entry as an extra file"
    " (a verifier that refuses every non-regular member reports SymlinkMemberError).",
    also=("SymlinkMemberError",),
)
def directory_entry() -> bytes:
    draft = hello()
    directory = Member(
        "files/", b"", stat.S_IFDIR | 0o755, compress_type=zipfile.ZIP_STORED, dos_attr=0x10
    )
    draft.payload.insert(0, directory)
    return valid_zip(draft, edit_manifest=lambda es: [e for e in es if e[0] != "files/"])


# --- duplicates ----------------------------------------------------------------------------


def _last_entry_wins(entries: list[list[str]]) -> object:
    """One manifest entry per path, with the hash of the LAST member of that name: the one
    Python's zipfile returns for `read(name)`."""
    latest = dict((p, h) for p, h in entries)
    seen: set[str] = set()
    out = []
    for path, _ in entries:
        if path not in seen:
            seen.add(path)
            out.append([path, latest[path]])
    return out


@case(
    "duplicate-member.wapt",
    "DuplicateMemberError",
    "Two `files/hello.txt` members, the first hostile; the manifest holds the hash of the second,"
    " the one zipfile.read() returns, while extractors that keep the first write the hostile one.",
)
def duplicate_member() -> bytes:
    draft = hello()
    draft.payload.insert(0, Member("files/hello.txt", EVIL_TEXT))
    return valid_zip(draft, edit_manifest=_last_entry_wins)


@case(
    "duplicate-control.wapt",
    "DuplicateMemberError",
    "Two `WAPT/control` members: first an unsigned one adding `depends: acme-evil`, then the"
    " signed one (the one zipfile.read() returns and the manifest hashes); first-wins readers see"
    " the hostile control.",
)
def duplicate_control() -> bytes:
    members = package()
    evil = Control.parse(next(m.data for m in members if m.name == CONTROL).decode())
    evil["depends"] = "acme-evil"
    at = next(i for i, m in enumerate(members) if m.name == CONTROL)
    members.insert(at, Member(CONTROL, evil.render().encode(), WAPT_MODE))
    # inserted after sealing: the manifest lists WAPT/control once, with the signed one's hash
    return write_zip(members)


@case(
    "duplicate-casefold.wapt",
    "DuplicateMemberError",
    "Members `files/Hello.txt` and `files/hello.txt`, both listed: they are one file on Windows"
    " (NTFS, FAT) and macOS, so which one survives extraction depends on the order.",
)
def duplicate_casefold() -> bytes:
    return with_payload(Member("files/Hello.txt", EVIL_TEXT))


@case(
    "duplicate-unicode-normalisation.wapt",
    "DuplicateMemberError",
    "Members `files/café.txt` in NFC and in NFD, both listed: different bytes, one file once"
    " normalised (macOS file systems, most Unicode-aware tools).",
)
def duplicate_unicode_normalisation() -> bytes:
    nfc = unicodedata.normalize("NFC", "files/café.txt")
    nfd = unicodedata.normalize("NFD", "files/café.txt")
    assert nfc != nfd
    return with_payload(Member(nfc, b"benign\n"), Member(nfd, EVIL_TEXT))


@case(
    "duplicate-dot-segment.wapt",
    "DuplicateMemberError",
    "Members `files/hello.txt` and `files/./hello.txt`, both listed: the same path once"
    " normalised (a verifier may instead refuse the `.` segment as an unsafe name).",
    also=("UnsafePathError",),
)
def duplicate_dot_segment() -> bytes:
    return with_payload(Member("files/./hello.txt", EVIL_TEXT))


# --- zip bombs -----------------------------------------------------------------------------


@case(
    "zipbomb-ratio.wapt",
    "ZipBombError",
    "One member `files/zeros.bin` of 50 MiB of zeros deflated to about 50 KiB (ratio about"
    " 1000), correctly listed and signed.",
)
def zipbomb_ratio() -> bytes:
    bomb = Member("files/zeros.bin", bytes(50 * MiB), compresslevel=9)
    return with_payload(bomb)


@case(
    "zipbomb-count.wapt",
    "ZipBombError",
    "20,000 empty members `c/0000`..`c/4e1f`, all listed and signed: exhausts inodes and time"
    " (a member-count cap must be below 20,000).",
)
def zipbomb_count() -> bytes:
    many = [Member(f"c/{i:04x}", b"", compress_type=zipfile.ZIP_STORED) for i in range(20_000)]
    return with_payload(*many)


LYING_REAL_SIZE = 20 * MiB
LYING_DECLARED_SIZE = 1024


@case(
    "zipbomb-lying-size.wapt",
    "ZipBombError",
    "Member `files/zeros.bin` declares file_size 1 KiB (byte-patched) but its deflate stream"
    " inflates to 20 MiB; CRC and manifest hash are those of the 20 MiB. A verifier bounding"
    " inflation by the declared size reports ZipBombError; one that stops at the declared size"
    " like zipfile (which then fails the CRC) and reports the member as corrupt is also safe.",
    also=("CorruptedFileError",),
)
def zipbomb_lying_size() -> bytes:
    """file_size patched to 1024 in the local header and the central record; CRC untouched."""
    bomb = Member("files/zeros.bin", bytes(LYING_REAL_SIZE), compresslevel=9)
    data = with_payload(bomb)
    return patch_member(data, b"files/zeros.bin", file_size=LYING_DECLARED_SIZE)


@case(
    "zipbomb-lying-size-crc.wapt",
    "ZipBombError",
    "Like zipbomb-lying-size but the CRC and the manifest hash are those of the declared first"
    " 1 KiB, so Python's zipfile reads 1 KiB without any error; only a check that the deflate"
    " stream ends exactly at the declared size catches the 20 MiB it really holds.",
    also=("CorruptedFileError",),
)
def zipbomb_lying_size_crc() -> bytes:
    """file_size patched to 1024 and CRC-32 to that of 1024 zeros, in both headers."""
    declared = bytes(LYING_DECLARED_SIZE)

    def hash_declared(entries: list[list[str]]) -> object:
        return [[p, sha256_hex(declared) if p == "files/zeros.bin" else h] for p, h in entries]

    draft = hello()
    draft.payload.append(Member("files/zeros.bin", bytes(LYING_REAL_SIZE), compresslevel=9))
    data = valid_zip(draft, edit_manifest=hash_declared)
    return patch_member(
        data, b"files/zeros.bin", file_size=LYING_DECLARED_SIZE, crc=zlib.crc32(declared)
    )


OVERLAP_ALIASES = 1024


def _overlap_kernel() -> bytes:
    """1 MiB that deflates about 40:1, so the per-member ratio alone looks harmless."""
    data = bytearray(MiB)
    sprinkle = noise("overlap-kernel", MiB // 97 + 1)
    data[::97] = sprinkle[: len(data[::97])]
    return bytes(data)


@case(
    "zipbomb-overlap.wapt",
    "ZipBombError",
    "1,025 central directory records (`files/o0000.bin`..) all point at ONE local member of"
    " 1 MiB (records added by byte surgery): 1 GiB declared from a small file, each member's"
    " ratio innocent; Python 3.11.7's zipfile has no overlap check and only fails on the local"
    " header name of the aliases.",
    also=("NotAZipError", "CorruptedFileError"),
)
def zipbomb_overlap() -> bytes:
    """Extra central records copy `files/o0000.bin`'s record with another name; the end of
    central directory record's counts and size are updated."""
    kernel = _overlap_kernel()
    aliases = [f"files/o{i:04d}.bin" for i in range(1, OVERLAP_ALIASES + 1)]
    digest = sha256_hex(kernel)

    def list_aliases(entries: list[list[str]]) -> object:
        return entries + [[a, digest] for a in aliases]

    draft = hello()
    draft.payload.append(Member("files/o0000.bin", kernel, compresslevel=9))
    data = valid_zip(draft, edit_manifest=list_aliases)
    return add_central_aliases(data, b"files/o0000.bin", [a.encode() for a in aliases])


# --- zip container -------------------------------------------------------------------------


@case(
    "encrypted-member.wapt",
    "EncryptedMemberError",
    "General-purpose flag bit 0 (encrypted) set on `files/hello.txt` (byte-patched; the data"
    " itself is the plain deflate stream): packages are never encrypted.",
)
def encrypted_member() -> bytes:
    """Flag bit 0 set in both the local header and the central record of files/hello.txt."""
    return patch_member(valid_zip(), b"files/hello.txt", flags_or=0x1)


@case("not-a-zip.wapt", "NotAZipError", "4 KiB of pseudo-random bytes.")
def not_a_zip() -> bytes:
    return noise("not-a-zip", 4096)


@case("not-a-zip-empty.wapt", "NotAZipError", "An empty file.")
def not_a_zip_empty() -> bytes:
    return b""


@case(
    "truncated-zip.wapt",
    "NotAZipError",
    "The baseline package cut in half: no central directory, no end record.",
)
def truncated_zip() -> bytes:
    data = valid_zip()
    return data[: len(data) // 2]


@case(
    "zip-prepended-data.wapt",
    "NotAZipError",
    "The baseline package preceded by 1 KiB starting with `MZ` (a polyglot, like a"
    " self-extractor): Python's zipfile silently shifts every offset and reads it, other readers"
    " do not; a package starts with its first local header at offset 0.",
)
def zip_prepended_data() -> bytes:
    return b"MZ" + noise("prepended", 1022) + valid_zip()


# --- control file --------------------------------------------------------------------------


@case(
    "control-crlf.wapt",
    "ControlEncodingError",
    "WAPT/control with CRLF line endings; the values read back are unchanged, so its signature"
    " and the re-signed manifest verify.",
)
def control_crlf() -> bytes:
    return valid_zip(encode=lambda text: text.replace("\n", "\r\n").encode("utf-8"))


@case(
    "control-cr.wapt",
    "ControlEncodingError",
    "WAPT/control with bare CR line endings (old Mac style): a split on LF sees one line,"
    " str.splitlines sees all of them.",
)
def control_cr() -> bytes:
    return valid_zip(encode=lambda text: text.replace("\n", "\r").encode("utf-8"))


@case(
    "control-latin1.wapt",
    "ControlEncodingError",
    "WAPT/control encoded in Latin-1 (é is byte 0xE9, invalid UTF-8), signed over the same"
    " values, manifest re-signed: a Latin-1 fallback would accept it.",
)
def control_latin1() -> bytes:
    draft = hello()
    for pair in draft.control.fields:  # two characters Latin-1 cannot encode
        pair[1] = pair[1].replace("–", "-").replace("€", "EUR")
    return valid_zip(draft, encode=lambda text: text.encode("latin-1"))


@case(
    "control-bom.wapt",
    "ControlEncodingError",
    "WAPT/control starting with a UTF-8 byte-order mark; otherwise validly signed.",
)
def control_bom() -> bytes:
    return valid_zip(encode=lambda text: b"\xef\xbb\xbf" + text.encode("utf-8"))


def _oversize_description(size: int) -> str:
    """About `size` characters of pseudo-random words that deflate about 17:1 (not a bomb)."""
    words = [
        ("alpha", "bravo")[(byte >> bit) & 1]
        for byte in noise("oversize", size // 40 + 1)
        for bit in range(8)
    ]
    lines = [" ".join(words[i : i + 10]) for i in range(0, len(words), 10)]
    return "\n".join(lines)[:size].strip()


@case(
    "control-oversize.wapt",
    "ControlTooLargeError",
    "WAPT/control of about 2.1 MiB (a huge multi-line description), validly signed; it deflates"
    " only about 17:1 so it is not a zip bomb (the control cap must be below 2 MiB).",
)
def control_oversize() -> bytes:
    draft = hello()
    draft.control["description"] = _oversize_description(2 * MiB + 100_000)
    return valid_zip(draft)


@case(
    "control-garbage-syntax.wapt",
    "ControlSyntaxError",
    "A line without ':' inserted in the middle of WAPT/control; the signature covers the other"
    " values, so a parser that skips bad lines would accept it.",
)
def control_garbage_syntax() -> bytes:
    def insert(text: str) -> bytes:
        return text.replace("\ndepends ", "\nthis line has no colon\ndepends ", 1).encode("utf-8")

    return valid_zip(encode=insert)


@case(
    "control-duplicate-key.wapt",
    "ControlSyntaxError",
    "`depends` appears twice, empty then `acme-evil`; the signature covers the last value (WAPT's"
    " dict keeps the last), so first-wins and last-wins readers disagree on the dependencies.",
)
def control_duplicate_key() -> bytes:
    draft = hello()
    draft.control["depends"] = "acme-evil"

    def duplicate(text: str) -> bytes:
        line = f"{'depends':<18}: acme-evil\n"
        return text.replace(line, f"{'depends':<18}: \n" + line, 1).encode("utf-8")

    return valid_zip(draft, encode=duplicate)


@case(
    "control-blank-line.wapt",
    "ControlSyntaxError",
    "A blank line then a second record (`package: acme-evil`) appended to a validly signed"
    " control: WAPT stops at the blank line, but copied into a Packages index it becomes a"
    " separate entry.",
)
def control_blank_line() -> bytes:
    injected = Control([("package", "acme-evil"), ("version", "9.9.9-1"), ("section", "base")])
    return valid_zip(encode=lambda text: (text + "\n\n" + injected.render() + "\n").encode())


@case(
    "control-signature-garbage.wapt",
    "SignatureEncodingError",
    "The control's `signature` field is `!!!not base64!!!`; the manifest is re-signed over it.",
)
def control_signature_garbage() -> bytes:
    draft = hello()
    draft.control = sign_control(draft.control, codesign())
    draft.control["signature"] = "!!!not base64!!!"
    return valid_zip(draft, sign=False)


@case(
    "control-unsigned.wapt",
    "ControlSignatureError",
    "The control has no `signature` field at all (everything else, manifest included, is"
    " signed); reporting the absent signature as undecodable is also fine.",
    also=("SignatureEncodingError",),
)
def control_unsigned() -> bytes:
    draft = hello()
    draft.control = sign_control(draft.control, codesign())
    del draft.control["signature"]
    return valid_zip(draft, sign=False)


@case(
    "control-signed-attributes-narrow.wapt",
    "ControlSignatureError",
    "signed_attributes lists only `package,version,signed_attributes`, validly signed, and"
    " `depends` was then set to `acme-evil`: WAPT accepts it; Comptoir must refuse a control with"
    " fields the signature does not cover (or call it legacy).",
    also=("LegacyPackageError",),
)
def control_signed_attributes_narrow() -> bytes:
    draft = hello()
    draft.control["signed_attributes"] = "package,version,signed_attributes"
    draft.control = sign_control(draft.control, codesign())
    draft.control["depends"] = "acme-evil"
    return valid_zip(draft, sign=False)


@case(
    "tampered-control-field.wapt",
    "ControlSignatureError",
    "The description was edited after the control was signed, and the manifest re-signed over the"
    " edited control: only the control signature breaks.",
)
def tampered_control_field() -> bytes:
    draft = hello()
    draft.control = sign_control(draft.control, codesign())
    draft.control["description"] = "Acme Hello – now with a free toolbar."
    return valid_zip(draft, sign=False)


# --- required members ----------------------------------------------------------------------


@case(
    "missing-control.wapt",
    "MissingMemberError",
    "WAPT/control removed (and left out of the re-signed manifest).",
)
def missing_control() -> bytes:
    return valid_zip(omit=[CONTROL])


@case(
    "missing-certificate.wapt",
    "MissingMemberError",
    "WAPT/certificate.crt removed (and left out of the manifest).",
)
def missing_certificate() -> bytes:
    return valid_zip(omit=[CERTIFICATE])


@case(
    "missing-manifest.wapt",
    "MissingMemberError",
    "WAPT/manifest.sha256 removed; its signature is still there.",
)
def missing_manifest() -> bytes:
    return valid_zip(omit=[MANIFEST])


@case("missing-signature.wapt", "MissingMemberError", "WAPT/signature.sha256 removed.")
def missing_signature() -> bytes:
    return valid_zip(omit=[SIGNATURE])


@case(
    "missing-control-case-variant.wapt",
    "MissingMemberError",
    "The control is stored as `wapt/control` (listed under that name in the re-signed manifest):"
    " a case-insensitive lookup finds a control, an exact one does not.",
)
def missing_control_case_variant() -> bytes:
    signer = codesign()
    draft = hello()
    control = sign_control(draft.control, signer).render().encode("utf-8")
    payload = [*draft.payload, Member("wapt/control", control, WAPT_MODE)]
    return write_zip(seal(payload, control, signer, omit=[CONTROL]))


# --- signatures ----------------------------------------------------------------------------


@case(
    "signature-garbage.wapt",
    "ManifestSignatureError",
    "WAPT/signature.sha256 holds MIME base64 of 256 pseudo-random bytes.",
)
def signature_garbage() -> bytes:
    members = package()
    return write_zip(replace_data(members, SIGNATURE, base64.encodebytes(noise("sig", 256))))


@case(
    "signature-notbase64.wapt",
    "SignatureEncodingError",
    "WAPT/signature.sha256 holds `!!!not base64!!!`.",
)
def signature_notbase64() -> bytes:
    return write_zip(replace_data(package(), SIGNATURE, b"!!!not base64!!!\n"))


# --- manifest ------------------------------------------------------------------------------


@case(
    "manifest-not-json.wapt",
    "ManifestError",
    "WAPT/manifest.sha256 is not JSON (validly signed nonetheless).",
)
def manifest_not_json() -> bytes:
    return valid_zip(edit_manifest=lambda _: b"this is not json\n")


@case(
    "manifest-wrong-shape.wapt",
    "ManifestError",
    "WAPT/manifest.sha256 is a JSON object {path: sha256} instead of a list of pairs (signed).",
)
def manifest_wrong_shape() -> bytes:
    return valid_zip(edit_manifest=lambda entries: dict(entries))


@case(
    "manifest-bad-hex.wapt",
    "ManifestError",
    "One manifest pair's hash is not 64 lowercase hex digits (`zz..`), another's is too short"
    " (signed).",
)
def manifest_bad_hex() -> bytes:
    def corrupt(entries: list[list[str]]) -> object:
        bad = {"setup.py": "zz" * 32, "files/hello.txt": "cafe"}
        return [[p, bad.get(p, h)] for p, h in entries]

    return valid_zip(edit_manifest=corrupt)


@case(
    "manifest-duplicate-path.wapt",
    "ManifestError",
    "The manifest lists `setup.py` twice, the right hash and then another one (signed): which one"
    " counts depends on the reader.",
)
def manifest_duplicate_path() -> bytes:
    return valid_zip(edit_manifest=lambda es: [*es, ["setup.py", sha256_hex(EVIL_SETUP)]])


@case(
    "manifest-traversal-path.wapt",
    "ManifestError",
    "The signed manifest also lists `../../../etc/passwd`: a verifier that hashes an extracted"
    " tree by manifest paths reads outside it (refusing the path as unsafe is fine too).",
    also=("UnsafePathError",),
)
def manifest_traversal_path() -> bytes:
    return valid_zip(edit_manifest=lambda es: [*es, ["../../../etc/passwd", sha256_hex(b"x")]])


# --- file integrity ------------------------------------------------------------------------


@case(
    "tampered-payload.wapt",
    "CorruptedFileError",
    "setup.py replaced after signing; manifest and signature NOT re-signed (the manifest"
    " signature still verifies, the setup.py hash does not match).",
)
def tampered_payload() -> bytes:
    return write_zip(replace_data(package(), "setup.py", EVIL_SETUP))


@case(
    "tampered-payload-resigned.wapt",
    "CorruptedFileError",
    "The manifest is validly re-signed but its hash for setup.py is that of a hostile setup.py"
    " while the archive holds the original: only comparing each hash catches it.",
)
def tampered_payload_resigned() -> bytes:
    def wrong(entries: list[list[str]]) -> object:
        return [[p, sha256_hex(EVIL_SETUP) if p == "setup.py" else h] for p, h in entries]

    return valid_zip(edit_manifest=wrong)


@case(
    "tampered-control-hash-resigned.wapt",
    "CorruptedFileError",
    "The control is intact and validly signed, but the re-signed manifest's hash for WAPT/control"
    " is wrong: a verifier that skips hashing the control (signed on its own) misses it.",
)
def tampered_control_hash_resigned() -> bytes:
    def wrong(entries: list[list[str]]) -> object:
        return [[p, sha256_hex(b"other control") if p == CONTROL else h] for p, h in entries]

    return valid_zip(edit_manifest=wrong)


@case(
    "extra-file.wapt",
    "ExtraFileError",
    "`files/extra.txt` added after signing; manifest and signature NOT re-signed.",
)
def extra_file() -> bytes:
    members = package()
    at = next(i for i, m in enumerate(members) if m.name == CONTROL)
    members.insert(at, Member("files/extra.txt", EVIL_TEXT))
    return write_zip(members)


@case(
    "extra-file-resigned.wapt",
    "ExtraFileError",
    "`files/hello.txt` is in the archive but missing from the validly re-signed manifest.",
)
def extra_file_resigned() -> bytes:
    return valid_zip(edit_manifest=lambda es: [e for e in es if e[0] != "files/hello.txt"])


@case(
    "smuggled-pyc.wapt",
    "ExtraFileError",
    "An unlisted `setup.pyc` added to a validly signed package: WAPT's verifier ignores *.pyc"
    " (a build exclude) and Python 2 may import it instead of setup.py; nothing unlisted may pass.",
)
def smuggled_pyc() -> bytes:
    members = package()
    pyc = b"\x03\xf3\x0d\x0a" + bytes(4) + b"c" + noise("pyc", 64)  # Python 2.7 magic
    members.insert(1, Member("setup.pyc", pyc))
    return write_zip(members)


@case(
    "smuggled-legacy-signature.wapt",
    "ExtraFileError",
    "Unlisted `WAPT/manifest.sha1` and `WAPT/signature` added to a validly signed package: WAPT"
    " excludes these legacy names from its extra-file check, so they smuggle unsigned bytes.",
    also=("LegacyPackageError",),
)
def smuggled_legacy_signature() -> bytes:
    members = package()
    legacy_manifest = compact_json([["setup.py", "0" * 40]])
    members.insert(-2, Member("WAPT/manifest.sha1", legacy_manifest, WAPT_MODE))
    members.insert(-2, Member("WAPT/signature", base64.encodebytes(noise("sha1", 256)), WAPT_MODE))
    return write_zip(members)


@case(
    "missing-file.wapt",
    "MissingFileError",
    "files/hello.txt removed after signing; manifest and signature NOT re-signed.",
)
def missing_file() -> bytes:
    return write_zip([m for m in package() if m.name != "files/hello.txt"])


@case(
    "missing-file-resigned.wapt",
    "MissingFileError",
    "The validly re-signed manifest lists `files/ghost.txt`, which the archive does not hold.",
)
def missing_file_resigned() -> bytes:
    return valid_zip(edit_manifest=lambda es: [*es, ["files/ghost.txt", sha256_hex(b"ghost")]])


@case(
    "legacy-sha1-only.wapt",
    "LegacyPackageError",
    "Signed the pre-1.5 way only: WAPT/manifest.sha1 (SHA-1 hashes) and WAPT/signature (RSA"
    " SHA-1), no sha256 manifest: downgrading to SHA-1 must not be accepted.",
    also=("MissingMemberError",),
)
def legacy_sha1_only() -> bytes:
    signer = codesign()
    draft = hello()
    control = sign_control(draft.control, signer)
    members = [
        *draft.payload,
        Member(CONTROL, control.render().encode("utf-8"), WAPT_MODE),
        Member(CERTIFICATE, signer.chain_pem, WAPT_MODE),
    ]
    manifest = compact_json([[m.name, hashlib.sha1(m.data).hexdigest()] for m in members])
    signature = base64.encodebytes(signer.sign(manifest, hashes.SHA1()))
    members += [
        Member("WAPT/manifest.sha1", manifest, WAPT_MODE),
        Member("WAPT/signature", signature, WAPT_MODE),
    ]
    return write_zip(members)


# --- signer and trust ----------------------------------------------------------------------


@case(
    "untrusted-signer.wapt",
    "UntrustedCertificateError",
    "Everything signed by untrusted-codesign.key, certificate.crt = the rogue chain (Rogue"
    " Packager -> Rogue Fixture CA), which does not reach ca.crt.",
)
def untrusted_signer() -> bytes:
    return valid_zip(signer=rogue())


@case(
    "untrusted-signer-trusted-ca-appended.wapt",
    "UntrustedCertificateError",
    "Signed by the rogue leaf, with the TRUSTED ca.crt appended to certificate.crt: a verifier"
    " that only asks whether a trusted certificate appears in the chain accepts it.",
)
def untrusted_signer_trusted_ca_appended() -> bytes:
    signer = rogue()
    signer = replace(signer, chain_pem=pem_chain(signer.cert, pki_cert("ca")))
    return valid_zip(signer=signer)


@cache
def forged_leaf() -> x509.Certificate:
    """Looks issued by ca.crt (issuer name, AKI, serial and subject of codesign.crt) but signed by
    untrusted-ca.key over untrusted-codesign's public key."""
    template = pki_cert("codesign")
    rogue_key = pki_key("untrusted-codesign").public_key()
    return issue_certificate(
        template=template,
        subject=template.subject,
        public_key=rogue_key,
        issuer=pki_cert("ca").subject,
        issuer_key=pki_key("untrusted-ca"),
        serial=template.serial_number,
        not_before=template.not_valid_before_utc,
        not_after=template.not_valid_after_utc,
        replace_extensions=[x509.SubjectKeyIdentifier.from_public_key(rogue_key)],
    )


@case(
    "forged-issuer.wapt",
    "UntrustedCertificateError",
    "The leaf copies codesign.crt's subject, serial, issuer name and authority key id but is"
    " signed by the rogue CA over the rogue key: only verifying the leaf's signature with ca.crt"
    " exposes it.",
)
def forged_issuer() -> bytes:
    leaf = forged_leaf()
    signer = Signer(pki_key("untrusted-codesign"), leaf, pem_chain(leaf, pki_cert("ca")))
    return valid_zip(signer=signer)


@cache
def not_yet_valid_leaf() -> x509.Certificate:
    """codesign.crt's key and extensions, CN `Acme Packager 2099`, valid 2099-2109, by ca.key."""
    template = pki_cert("codesign")
    return issue_certificate(
        template=template,
        subject=with_cn(template.subject, "Acme Packager 2099"),
        public_key=pki_key("codesign").public_key(),
        issuer=pki_cert("ca").subject,
        issuer_key=pki_key("ca"),
        serial=0x2099_0001,
        not_before=dt.datetime(2099, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2109, 1, 1, tzinfo=dt.UTC),
    )


@case(
    "not-yet-valid-signer.wapt",
    "CertificateNotYetValidError",
    "Signed by a code-signing leaf issued by ca.key (extensions copied from codesign.crt, same"
    " key) that is valid only from 2099-01-01.",
)
def not_yet_valid_signer() -> bytes:
    leaf = not_yet_valid_leaf()
    signer = Signer(pki_key("codesign"), leaf, pem_chain(leaf, pki_cert("ca")))
    return valid_zip(signer=signer)


@case(
    "plain-cert-with-setup.wapt",
    "NotCodeSigningError",
    "acme-hello (with setup.py) signed by plain.key, whose certificate has no codeSigning EKU.",
)
def plain_cert_with_setup() -> bytes:
    return valid_zip(signer=plain())


@case(
    "plain-cert-with-setup-casefold.wapt",
    "NotCodeSigningError",
    "Signed by plain.key, the script stored as `Setup.py`: Windows imports it as setup.py, so the"
    " code-signing rule must match the name case-insensitively.",
)
def plain_cert_with_setup_casefold() -> bytes:
    draft = hello()
    draft.payload = rename(draft.payload, "setup.py", "Setup.py")
    return valid_zip(draft, plain())


@case(
    "plain-cert-with-setup-trailing-dot.wapt",
    "UnsafePathError",
    "Signed by plain.key, the script stored as `setup.py.`: Windows (and zipfile's extraction on"
    " Windows) drops the trailing dot and writes setup.py, bypassing the code-signing rule.",
    also=("NotCodeSigningError",),
)
def plain_cert_with_setup_trailing_dot() -> bytes:
    draft = hello()
    draft.payload = rename(draft.payload, "setup.py", "setup.py.")
    return valid_zip(draft, plain())


@case(
    "plain-cert-with-setup-ads.wapt",
    "UnsafePathError",
    "Signed by plain.key, the script stored as `setup.py::$DATA`: on NTFS that names setup.py's"
    " main data stream, bypassing the code-signing rule; ':' never belongs in a member name.",
    also=("NotCodeSigningError",),
)
def plain_cert_with_setup_ads() -> bytes:
    draft = hello()
    draft.payload = rename(draft.payload, "setup.py", "setup.py::$DATA")
    return valid_zip(draft, plain())


@case(
    "signer-fingerprint-mismatch.wapt",
    "SignerMismatchError",
    "The control's signer_fingerprint names plain.crt while certificate.crt's leaf (which signed"
    " everything, validly) is codesign.crt.",
)
def signer_fingerprint_mismatch() -> bytes:
    signer = codesign()
    draft = hello()
    draft.control = sign_control(draft.control, signer)
    draft.control["signer_fingerprint"] = plain().fingerprint
    draft.control = resign_control(draft.control, signer)
    return valid_zip(draft, signer, sign=False)


@case(
    "signer-name-mismatch.wapt",
    "SignerMismatchError",
    "The control's signer is `Acme Deployer` while certificate.crt's leaf (which signed"
    " everything, validly, and whose fingerprint is in the control) is `Acme Packager`.",
)
def signer_name_mismatch() -> bytes:
    signer = codesign()
    draft = hello()
    draft.control = sign_control(draft.control, signer)
    draft.control["signer"] = "Acme Deployer"
    draft.control = resign_control(draft.control, signer)
    return valid_zip(draft, signer, sign=False)


@case(
    "certificate-garbage.wapt",
    "CertificateFormatError",
    "WAPT/certificate.crt holds no PEM at all, only text and pseudo-random bytes (listed in the"
    " signed manifest).",
)
def certificate_garbage() -> bytes:
    return valid_zip(certificate=b"this is not a certificate\n" + noise("cert", 512))


@case(
    "certificate-bad-der.wapt",
    "CertificateFormatError",
    "WAPT/certificate.crt is a well-formed PEM block whose base64 decodes to garbage, not DER.",
)
def certificate_bad_der() -> bytes:
    body = base64.encodebytes(noise("bad-der", 600))
    pem = b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"
    return valid_zip(certificate=pem)


# --- self-test, catalogue, main ------------------------------------------------------------


def self_test() -> None:
    """The primitives must reproduce WAPT's own bytes for the hello fixture, or nothing here
    can be trusted."""
    members = dict((n, d) for n, d, _ in _fixture_members(HELLO))
    text = members[CONTROL].decode("utf-8")
    control = Control.parse(text)
    if control.render() != text:
        raise SystemExit("self-test: control render is not byte-identical to WAPT's")
    signer = codesign()
    resigned = sign_control(
        control, signer, uuid=control["package_uuid"], signature_date=control["signature_date"]
    )
    if resigned.render() != text:
        raise SystemExit("self-test: control signature differs from WAPT's")
    if base64.encodebytes(signer.sign(members[MANIFEST])) != members[SIGNATURE]:
        raise SystemExit("self-test: manifest signature differs from WAPT's")


def known_error_names() -> set[str] | None:
    """Class names defined in wapt/errors.py, read as text (the package is not imported)."""
    try:
        source = ERRORS_PY.read_text("utf-8")
    except FileNotFoundError:
        return None
    return set(re.findall(r"^class (\w+)\(", source, flags=re.MULTILINE))


def build() -> dict[str, bytes]:
    """Every corpus file's bytes, plus corpus.json."""
    known = known_error_names()
    out: dict[str, bytes] = {}
    for c in CASES:
        if known is not None:
            for name in filter(None, (c.expect, *c.also_acceptable)):
                if name not in known:
                    raise SystemExit(f"{c.file}: {name} is not a class of wapt/errors.py")
        out[c.file] = c.make()
    catalogue = json.dumps([c.entry() for c in CASES], indent=1, ensure_ascii=False) + "\n"
    out[CATALOGUE.name] = catalogue.encode("utf-8")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--check", action="store_true", help="compare with the files on disk, write nothing"
    )
    args = parser.parse_args(argv)
    self_test()
    files = build()
    if args.check:
        stale = [
            n
            for n, data in files.items()
            if not (HERE / n).is_file() or (HERE / n).read_bytes() != data
        ]
        stale += [p.name for p in HERE.glob("*.wapt") if p.name not in files]
        for name in stale:
            print(f"differs: {name}", file=sys.stderr)
        return 1 if stale else 0
    for old in HERE.glob("*.wapt"):
        if old.name not in files:
            old.unlink()
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    total = sum(len(d) for d in files.values())
    for c in CASES:
        print(f"{len(files[c.file]):>10,}  {c.file:<45} {c.expect}")
    print(f"{total:>10,}  total, {len(CASES)} files + {CATALOGUE.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
