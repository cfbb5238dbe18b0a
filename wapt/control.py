"""WAPT control data: `PackageEntry`, reading and writing `WAPT/control` and `Packages` records.

The text format is WAPT 1.8.2's (`control_to_dict`, `PackageEntry.ascontrol`), reimplemented from
the format reference (wapt-format.md §1.2, §1.3, §1.5, §2.1) and checked byte for byte against
files WAPT wrote:

- one ``key: value`` per line; the key is lower-cased, key and value are stripped;
- a line starting with a space continues the previous value (``"\\n" + line.strip()``);
- a blank line (or a line of whitespace) ends the record, which is also how the `Packages` index
  separates its records;
- ``size`` and ``installed_size`` are integers when they parse as one.

Comptoir reads more strictly than WAPT: everything WAPT would read differently from what was meant
(a repeated key, a continuation before any key, text after the blank line that ends a control
file, CR line endings, the other line breaks `str.splitlines` knows, NUL bytes, a BOM) is an
error rather than a silent truncation. It writes exactly what WAPT writes, except that it keeps
fields WAPT does not know (WAPT drops them), and it refuses a value that would not read back
unchanged: such a value makes the control signature fail (§2.1, "round-trip trap").
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import ClassVar, cast, overload

from wapt.errors import (
    ControlEncodingError,
    ControlSyntaxError,
    ControlTooLargeError,
    ControlValueError,
)

__all__ = [
    "DEFAULT_SIGNED_ATTRIBUTES",
    "INT_ATTRIBUTES",
    "LOCALIZED_DESCRIPTIONS",
    "LOCAL_ATTRIBUTES",
    "MAX_CONTROL_BYTES",
    "OPTIONAL_ATTRIBUTES",
    "PRE_2017_SIGNATURE_DATE",
    "PRE_2017_SIGNED_ATTRIBUTES",
    "REPO_ATTRIBUTES",
    "REQUIRED_ATTRIBUTES",
    "SIGNATURE_ATTRIBUTES",
    "PackageEntry",
    "compact_entry",
    "format_control",
    "format_records",
    "parse_control",
    "parse_records",
]

# --- attribute lists (waptpackage.py PackageEntry, 1.8.2) ----------------------------------

REQUIRED_ATTRIBUTES: tuple[str, ...] = ("package", "version", "architecture", "section", "priority")

LOCALIZED_DESCRIPTIONS: tuple[str, ...] = ("fr", "pl", "de", "es", "pt", "it", "nl", "ru")

OPTIONAL_ATTRIBUTES: tuple[str, ...] = (
    "name",
    "categories",
    "maintainer",
    "description",
    "depends",
    "conflicts",
    "maturity",
    "locale",
    "target_os",
    "min_os_version",
    "max_os_version",
    "min_wapt_version",
    "sources",
    "installed_size",
    "impacted_process",
    *(f"description_{lang}" for lang in LOCALIZED_DESCRIPTIONS),
    "audit_schedule",
    "editor",
    "keywords",
    "licence",
    "homepage",
    "package_uuid",
    "valid_from",
    "valid_until",
    "forced_install_on",
    "changelog",
)

SIGNATURE_ATTRIBUTES: tuple[str, ...] = (
    "signer",
    "signer_fingerprint",
    "signature",
    "signature_date",
    "signed_attributes",
)

REPO_ATTRIBUTES: tuple[str, ...] = ("filename", "size", "md5sum")

LOCAL_ATTRIBUTES: tuple[str, ...] = ("sourcespath", "repo", "localpath", "repo_url")

DEFAULT_SIGNED_ATTRIBUTES: tuple[str, ...] = tuple(
    name
    for name in REQUIRED_ATTRIBUTES + OPTIONAL_ATTRIBUTES + SIGNATURE_ATTRIBUTES
    if name != "signature"
)
"""What `_sign_control` signs (§2.1 step 2), in WAPT's order."""

PRE_2017_SIGNED_ATTRIBUTES: tuple[str, ...] = (
    "package",
    "version",
    "architecture",
    "section",
    "priority",
    "depends",
    "conflicts",
    "maturity",
)
"""What was signed when `signed_attributes` is empty and the signature predates 2017-06-09."""

PRE_2017_SIGNATURE_DATE = "20170609"

INT_ATTRIBUTES = frozenset({"size", "installed_size"})

MAX_CONTROL_BYTES = 1024 * 1024

_CONTROL_ORDER: tuple[str, ...] = REQUIRED_ATTRIBUTES + OPTIONAL_ATTRIBUTES + SIGNATURE_ATTRIBUTES
_KNOWN_ATTRIBUTES = frozenset(_CONTROL_ORDER + REPO_ATTRIBUTES + LOCAL_ATTRIBUTES)
# WAPT's PackageEntry starts every required and optional attribute as '' and the others as None:
# that is the value an absent attribute signs as.
_EMPTY_WHEN_ABSENT = frozenset(REQUIRED_ATTRIBUTES + OPTIONAL_ATTRIBUTES)

# Characters that end a line for WAPT's reader (`unicode.splitlines`) besides "\n", plus NUL.
# Inside a value they would make WAPT read something else than Comptoir: refuse them.
_LINE_BREAKERS = re.compile("[\x00\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")

_FILENAME_FORBIDDEN = frozenset("@|():%/,\\[]<>*?;`\n")

FieldValue = str | int


def _describe_char(char: str) -> str:
    names = {"\x00": "NUL byte", "\r": "carriage return"}
    return names.get(char, f"line separator U+{ord(char):04X}")


def _excerpt(line: str, limit: int = 80) -> str:
    """The offending line for an error message, shortened so hostile input stays readable."""
    if len(line) > limit:
        line = line[:limit] + "…"
    return repr(line)


def _int_or_text(value: str) -> FieldValue:
    """Convert like WAPT's `long(value)` under Python 2: sign, digits, no `_` separators."""
    if value.isdecimal():
        return int(value)
    if not value or "_" in value:
        return value
    try:
        return int(value)
    except ValueError:
        return value


def _normalise(name: str, value: object) -> FieldValue:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"field {name!r}: value must be str or int, not {type(value).__name__}")
    if name in INT_ATTRIBUTES:
        return _int_or_text(value) if isinstance(value, str) else value
    # A control file cannot tell 3 from "3": only the int attributes read back as int.
    return value if isinstance(value, str) else str(value)


def _split_list(value: FieldValue) -> list[str]:
    """WAPT's `ensure_list` on a comma list: items stripped, empty ones dropped."""
    if isinstance(value, int):
        return [str(value)]
    return list(_split_text(value))


@functools.lru_cache(maxsize=4096)
def _split_text(value: str) -> tuple[str, ...]:
    # Cached: an index repeats the same `signed_attributes` line in every entry.
    return tuple(item for item in (part.strip() for part in value.split(",")) if item)


# --- typed views of fields -------------------------------------------------------------------


class _TextField:
    """A field read as `str` (its value, or "" when absent); assigning sets the field."""

    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.__doc__ = doc

    @overload
    def __get__(self, entry: None, owner: type[PackageEntry]) -> _TextField: ...

    @overload
    def __get__(self, entry: PackageEntry, owner: type[PackageEntry]) -> str: ...

    def __get__(self, entry: PackageEntry | None, owner: type[PackageEntry]) -> _TextField | str:
        if entry is None:
            return self
        value = entry.fields.get(self.name, "")
        return value if isinstance(value, str) else str(value)

    def __set__(self, entry: PackageEntry, value: str) -> None:
        entry[self.name] = value


class _ListField:
    """A comma-list field read as `list[str]` (stripped, empty items dropped)."""

    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.__doc__ = doc

    @overload
    def __get__(self, entry: None, owner: type[PackageEntry]) -> _ListField: ...

    @overload
    def __get__(self, entry: PackageEntry, owner: type[PackageEntry]) -> list[str]: ...

    def __get__(
        self, entry: PackageEntry | None, owner: type[PackageEntry]
    ) -> _ListField | list[str]:
        if entry is None:
            return self
        return _split_list(entry.fields.get(self.name, ""))


class _IntField:
    """An integer field read as `int`, or None when absent or not a number."""

    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.__doc__ = doc

    @overload
    def __get__(self, entry: None, owner: type[PackageEntry]) -> _IntField: ...

    @overload
    def __get__(self, entry: PackageEntry, owner: type[PackageEntry]) -> int | None: ...

    def __get__(
        self, entry: PackageEntry | None, owner: type[PackageEntry]
    ) -> _IntField | int | None:
        if entry is None:
            return self
        value = entry.fields.get(self.name)
        return value if isinstance(value, int) else None


# --- the entry -------------------------------------------------------------------------------


class PackageEntry:
    """One package's control data: an ordered dict of field -> str | int, unknown fields kept.

    Field names are control keys (lower-case). Values are normalised as the parser would read
    them back: `size` and `installed_size` become `int` when they parse as one, any other int
    becomes `str`. The typed properties below are read-only views, except the text ones, which
    also set their field.
    """

    __slots__ = ("fields",)
    __hash__: ClassVar[None]  # type: ignore[assignment]  # mutable, compared by value

    fields: dict[str, FieldValue]

    def __init__(self, fields: Mapping[str, FieldValue] | None = None) -> None:
        """Copy `fields`, normalising values; raise TypeError for a value that is not str/int."""
        self.fields = {}
        if fields:
            for name, value in fields.items():
                self[name] = value

    @classmethod
    def _adopt(cls, fields: dict[str, FieldValue]) -> PackageEntry:
        """Wrap an already normalised dict without copying it (the parser's fast path)."""
        entry = cls.__new__(cls)
        entry.fields = fields
        return entry

    # mapping protocol

    def get(self, name: str, default: FieldValue = "") -> FieldValue:
        """Return the field's value, or `default` when absent."""
        return self.fields.get(name, default)

    def __getitem__(self, name: str) -> FieldValue:
        return self.fields[name]

    def __setitem__(self, name: str, value: FieldValue) -> None:
        self.fields[name] = _normalise(name, value)

    def __delitem__(self, name: str) -> None:
        del self.fields[name]

    def __contains__(self, name: object) -> bool:
        return name in self.fields

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PackageEntry):
            return NotImplemented
        return self.fields == other.fields

    def copy(self) -> PackageEntry:
        """Return an independent copy (values are immutable, so a shallow copy suffices)."""
        return PackageEntry._adopt(dict(self.fields))

    def __repr__(self) -> str:
        extras = "".join(
            f", {name}={value!r}"
            for name in ("architecture", "maturity", "locale")
            if (value := self.get(name)) not in ("", "all")
        )
        return f"PackageEntry({self.package!r}, {self.version!r}{extras})"

    # typed views

    package = _TextField("package", "Package name, e.g. `tis-firefox`.")
    version = _TextField("version", "`major[.minor[.patch[.subpatch]]][-packaging]` (§1.4).")
    architecture = _TextField("architecture", "`all`, `x86` or `x64`.")
    section = _TextField("section", "`base`, `group`, `host`, `unit`, `restricted`, ...")
    priority = _TextField("priority", "`optional`, `critical`, ...")
    maturity = _TextField("maturity", "`DEV`, `PREPROD`, `PROD` or empty (counts as PROD).")
    name = _TextField("name", "Display name.")
    description = _TextField("description", "Description; see `description_for`.")
    signer = _TextField("signer", "CN of the signing certificate.")
    signer_fingerprint = _TextField("signer_fingerprint", "Hex SHA-256 of the signer's DER.")
    signature = _TextField("signature", "Base64 RSA signature of `signed_content()`.")
    signature_date = _TextField("signature_date", "Local ISO time of signing, no timezone.")
    package_uuid = _TextField("package_uuid", "New UUID4 at every signing.")
    filename = _TextField("filename", "Repository attribute: the `.wapt` file name.")
    md5sum = _TextField("md5sum", "Repository attribute: MD5 of the `.wapt` file.")
    target_os = _TextField("target_os", "Comma list of `windows`, `linux`, `darwin`, ...")
    min_wapt_version = _TextField("min_wapt_version", "Oldest agent that may install it.")

    depends = _ListField("depends", "Package requests this package needs.")
    conflicts = _ListField("conflicts", "Package requests removed before install.")
    categories = _ListField("categories", "Self-service categories.")
    locales = _ListField("locale", "Two-letter locale codes (field `locale`); empty means any.")
    signed_attributes = _ListField("signed_attributes", "Names covered by `signature`.")
    impacted_processes = _ListField("impacted_process", "Process names (field `impacted_process`).")

    size = _IntField("size", "Repository attribute: size of the `.wapt` file in bytes.")
    installed_size = _IntField("installed_size", "Free space the install needs, in bytes.")

    def description_for(self, lang: str) -> str:
        """Return `description_<lang>` when non-empty, otherwise `description`."""
        localized = self.fields.get(f"description_{lang.lower()}", "")
        if localized != "":
            return str(localized)
        return self.description

    # signature

    def effective_signed_attributes(self) -> tuple[str, ...]:
        """The names `signed_content` covers.

        `signed_attributes` when set. When it is empty: the pre-2017 list if `signature_date`
        is set and older than 2017-06-09 (WAPT's migration rule), otherwise the default list.
        WAPT would sign nothing in that last case; Comptoir refuses to let an emptied
        `signed_attributes` line switch the signature off.
        """
        names = self.signed_attributes
        if names:
            return tuple(names)
        date = self.signature_date
        if date and date < PRE_2017_SIGNATURE_DATE:
            return PRE_2017_SIGNED_ATTRIBUTES
        return DEFAULT_SIGNED_ATTRIBUTES

    def signed_content(self) -> bytes:
        """Return the bytes the control signature covers (§2.1), canonical ASCII JSON.

        A dict of every effective signed attribute to its value, serialized with sorted keys,
        `(',', ':')` separators and `ensure_ascii` (non-BMP text as surrogate pairs, as Python 2
        did). Values are as parsed: `size`/`installed_size` as int when numeric. An absent
        attribute has the value WAPT's `PackageEntry` starts with: "" for a required or optional
        control attribute (it is written, and read back, as empty), null for anything else.
        Raises nothing.
        """
        fields = self.fields
        content: dict[str, FieldValue | None] = {}
        for name in self.effective_signed_attributes():
            if name in fields:
                content[name] = fields[name]
            else:
                content[name] = "" if name in _EMPTY_WHEN_ABSENT else None
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return text.encode("ascii")

    # filename

    def package_filename(self) -> str:
        """Return WAPT's standard file name for this package (`make_package_filename`, §1.5).

        `<package>.wapt` for a host package, otherwise `<package>_<version>` then the non-empty
        architecture (unless `all`), maturity and locales (joined with `-`). A name with
        characters outside alphanumerics and `-_~.` is replaced by its MD5. The result goes
        through WAPT's `sanitize_filename`.

        Raises:
            ControlValueError: `package` is empty, or `version` is empty (not host).
        """
        package = self.package
        if not package:
            raise ControlValueError("package: empty, cannot make a package filename")
        if all(char.isalnum() or char in "-_~." for char in package):
            name = package
        else:
            name = hashlib.md5(package.encode("utf-8"), usedforsecurity=False).hexdigest()
        if self.section == "host":
            parts = [name]
        else:
            version = self.version
            if not version:
                raise ControlValueError(f"{package}: version: empty, cannot make a filename")
            parts = [name, version]
            architecture = self.architecture
            if architecture and architecture != "all":
                parts.append(architecture)
            if self.maturity:
                parts.append(self.maturity)
            locales = "-".join(self.locales)
            if locales:
                parts.append(locales)
        return _sanitize_filename("_".join(parts) + ".wapt")


def _sanitize_filename(filename: str) -> str:
    """WAPT's `sanitize_filename`: `..` becomes `_`, forbidden characters go, then strip."""
    kept = "".join(char for char in filename.replace("..", "_") if char not in _FILENAME_FORBIDDEN)
    return kept.strip()


# --- reading ---------------------------------------------------------------------------------


def _check_characters(text: str, source: str, data: bytes | None = None) -> None:
    """Refuse a BOM, CR, NUL and the line breaks WAPT's `splitlines` would split on.

    `in` tests run at memchr speed; the regex only runs to locate a character once found.
    """
    if text.startswith("\ufeff"):
        raise ControlEncodingError(
            f"{source}: starts with a byte-order mark at offset 0 (must be UTF-8 without BOM)"
        )
    suspects = _ASCII_BREAKERS if text.isascii() else _ALL_BREAKERS
    if not any(char in text for char in suspects):
        return
    found = _LINE_BREAKERS.search(text)
    if found is None:  # pragma: no cover - one of the suspects is in the text
        return
    index = found.start()
    char = found.group()
    offset = len(text[:index].encode("utf-8")) if data is not None else index
    unit = "byte offset" if data is not None else "offset"
    line = text.count("\n", 0, index) + 1
    reason = "CRLF line endings: carriage return" if char == "\r" else _describe_char(char)
    raise ControlEncodingError(f"{source}: {reason} at {unit} {offset} (line {line})")


_ALL_BREAKERS = "\x00\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_ASCII_BREAKERS = "\x00\r\x0b\x0c\x1c\x1d\x1e"


class _LineError(Exception):
    """A malformed line, found before its number is known (see `_parse_text`)."""

    def __init__(self, line: str, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


def _syntax_error(source: str, number: int, reason: str, line: str) -> ControlSyntaxError:
    return ControlSyntaxError(f"{source}: line {number}: {reason}: {_excerpt(line)}")


# Raw key text (before the colon) -> normalised key. Keys repeat in every record of an index,
# so most lines cost one dict lookup here. Bounded so hostile input cannot grow it forever.
_KEY_CACHE: dict[str, str] = {}
_KEY_CACHE_LIMIT = 4096


def _normalise_key(raw: str, line: str) -> str:
    key = raw.strip().lower()
    if not key:
        raise _LineError(line, "empty key")
    if len(key.split()) != 1:
        raise _LineError(line, f"whitespace inside key {key!r}")
    if len(_KEY_CACHE) < _KEY_CACHE_LIMIT:
        _KEY_CACHE[raw] = key
    return key


def _parse_lines(lines: list[str]) -> list[dict[str, str]]:
    """Group lines into records of fields. The hot loop of index loading.

    One `partition` per line, locals only, no line counter: a malformed line raises
    `_LineError` carrying the line object itself, and `_parse_text` finds its number.
    Equal values share one string (`share`): an index repeats most of its values from record
    to record, and a copy made only to be dropped at once leaves no hole in the heap among
    the values kept.
    """
    records: list[dict[str, str]] = []
    append = records.append
    cached_key = _KEY_CACHE.get
    share = {"": ""}.setdefault
    current: dict[str, str] | None = None
    key = ""
    for line in lines:
        if not line:
            if current is not None:
                append(current)
                current = None
            continue
        if line[0] == " ":
            stripped = line.strip()
            if stripped:
                if current is None:
                    raise _LineError(line, "continuation line before any key")
                current[key] += "\n" + stripped
                continue
        else:
            raw, colon, value = line.partition(":")
            if colon:
                key = cached_key(raw) or _normalise_key(raw, line)
                if current is None:
                    current = {key: share(value := value.strip(), value)}
                elif key in current:
                    raise _LineError(line, f"repeated key {key!r}")
                else:
                    current[key] = share(value := value.strip(), value)
                continue
            if line.strip():
                raise _LineError(line, "no ':' in line")
        # a line of whitespace: a blank line
        if current is not None:
            append(current)
            current = None
    if current is not None:
        append(current)
    return records


def _line_number(lines: list[str], line: str) -> int:
    """The number of `line`, an object of `lines`, found by identity.

    `str.split` makes a distinct object of every line except the empty and one-character ones,
    which CPython shares. Those can only fail as "no ':'" or "empty key", wherever they are, so
    the first occurrence of the shared object is the failing line.
    """
    for index, candidate in enumerate(lines):
        if candidate is line:
            return index + 1
    raise AssertionError("the failing line comes from lines")  # pragma: no cover


def _parse_text(text: str, source: str) -> tuple[list[str], list[dict[str, FieldValue]]]:
    """Split `text` into lines and records; convert `size`/`installed_size` to int."""
    lines = text.split("\n")
    try:
        parsed = _parse_lines(lines)
    except _LineError as e:
        number = _line_number(lines, e.line)
        raise _syntax_error(source, number, e.reason, e.line) from None
    records = cast(list[dict[str, FieldValue]], parsed)
    for fields in records:
        size = fields.get("size")
        if isinstance(size, str):
            fields["size"] = _int_or_text(size)
        installed_size = fields.get("installed_size")
        if isinstance(installed_size, str):
            fields["installed_size"] = _int_or_text(installed_size)
    return lines, records


def _second_record_line(lines: list[str]) -> int:
    """The number of the first line of the second record (error path of `parse_control`)."""
    in_record = False
    ended = False
    for number, line in enumerate(lines, 1):
        blank = not line.strip()
        if not blank and ended:
            return number
        if not blank:
            in_record = True
        elif in_record:
            ended = True
    raise AssertionError("no second record")  # pragma: no cover - only called with two


def _decode(data: bytes, source: str) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        raise ControlEncodingError(
            f"{source}: starts with a UTF-8 byte-order mark at byte offset 0"
            " (must be UTF-8 without BOM)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = data[e.start]
        raise ControlEncodingError(
            f"{source}: not UTF-8: byte 0x{bad:02x} at byte offset {e.start} ({e.reason})"
        ) from e


def parse_control(
    data: bytes | str, *, source: str = "WAPT/control", max_bytes: int = MAX_CONTROL_BYTES
) -> PackageEntry:
    """Parse one control file (§1.2) into a `PackageEntry`.

    `source` names the file in error messages. Trailing blank lines are accepted; anything
    after the blank line that ends the record is not (WAPT would silently ignore it).

    Raises:
        ControlTooLargeError: more than `max_bytes` bytes (UTF-8).
        ControlEncodingError: not UTF-8, a byte-order mark, CR line endings, a NUL byte or
            another line break WAPT would split on (U+000B, U+000C, U+001C-E, U+0085, U+2028,
            U+2029); the message gives the offset.
        ControlSyntaxError: a line without ':' that is not a continuation, an empty key, a key
            with whitespace inside, a continuation before any key, a repeated key, text after
            a blank line, or no field at all; the message gives the line number and the line.
    """
    if isinstance(data, bytes):
        size = len(data)
    elif len(data) * 4 <= max_bytes:
        size = len(data)  # cannot exceed the cap, whatever the characters
    else:
        size = len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ControlTooLargeError(f"{source}: {size} bytes, more than the {max_bytes} allowed")
    if isinstance(data, bytes):
        text = _decode(data, source)
        _check_characters(text, source, data)
    else:
        text = data
        _check_characters(text, source)
    lines, records = _parse_text(text, source)
    if not records:
        raise ControlSyntaxError(f"{source}: no field at all")
    if len(records) > 1:
        number = _second_record_line(lines)
        reason = "text after the blank line that ends the control data"
        raise _syntax_error(source, number, reason, lines[number - 1])
    return PackageEntry._adopt(records[0])


def parse_records(text: str, *, source: str = "Packages") -> list[PackageEntry]:
    """Parse the text of a `Packages` index: records separated by blank lines (§3.1).

    Same line rules as `parse_control`; several blank lines in a row are accepted, as WAPT
    does. Line numbers in messages count from the start of `text`.

    Raises:
        ControlEncodingError: a byte-order mark, CR, NUL or another line break WAPT splits on.
        ControlSyntaxError: a malformed line, as for `parse_control`.
    """
    _check_characters(text, source)
    adopt = PackageEntry._adopt
    return [adopt(fields) for fields in _parse_text(text, source)[1]]


def compact_entry(entry: PackageEntry, shared: dict[str, str]) -> PackageEntry:
    """A copy of `entry` for a catalog held in memory: no empty fields, equal strings shared.

    An index repeats most of its values from entry to entry (`signed_attributes`, signers,
    maturities, licences, maintainers...), and a WAPT entry has a dozen always-empty fields.
    Parsed, each is its own string in an oversized dict: about 5 KiB per entry. `shared` maps
    each value to the one string kept for it; pass the same dict for every entry of a catalog
    (and drop it afterwards). An absent field reads as "" through `get` and the typed
    properties, as an empty one does; only `in`, `len` and iteration tell the difference, so
    the copy is for readers of values, not for writing or verifying control data.
    """
    fields: dict[str, FieldValue] = {}
    for name, value in entry.fields.items():
        if isinstance(value, str):
            if not value:
                continue
            value = shared.setdefault(value, value)
        fields[name] = value
    return PackageEntry._adopt(fields)


# --- writing ---------------------------------------------------------------------------------


def _check_written_key(key: str) -> None:
    if (
        not key
        or ":" in key
        or key != key.lower()
        or any(char.isspace() for char in key)
        or _LINE_BREAKERS.search(key)
    ):
        raise ControlValueError(
            f"field {key!r}: not writable as a control key"
            " (must be non-empty, lower-case, without ':' or whitespace)"
        )


def _format_value(key: str, value: FieldValue) -> str:
    """The text after `key: `, with a space after every newline; refuse what reads back changed."""
    if isinstance(value, int):
        return str(value)
    found = _LINE_BREAKERS.search(value)
    if found is not None:
        raise ControlValueError(f"field {key!r}: contains a {_describe_char(found.group())}")
    if "\n" not in value:
        if value != value.strip():
            raise ControlValueError(
                f"field {key!r}: leading or trailing whitespace would be lost: {_excerpt(value)}"
            )
        return value
    lines = value.split("\n")
    for index, line in enumerate(lines):
        if index and not line.strip():
            raise ControlValueError(
                f"field {key!r}: line {index + 1} of the value is blank"
                " (a blank line ends the record)"
            )
        if line != line.strip():
            raise ControlValueError(
                f"field {key!r}: line {index + 1} of the value has leading or trailing"
                f" whitespace that would be lost: {_excerpt(line)}"
            )
    return "\n ".join(lines)


def _format_line(key: str, value: FieldValue) -> str:
    return f"{key:<18}: {_format_value(key, value)}"


def format_control(entry: PackageEntry, *, with_repo_attributes: bool = False) -> str:
    """Write `entry` as WAPT's `PackageEntry.ascontrol` does, with no trailing newline.

    Lines are `f"{key:<18}: {value}"`. Every required, optional and signature attribute is
    written, in WAPT's order, even when absent (as empty, with the trailing space after ':').
    Then the fields WAPT does not know, in their order (WAPT drops them; Comptoir keeps them).
    Then, only with `with_repo_attributes`, the non-empty `filename`, `size`, `md5sum`. Local
    attributes (`sourcespath`, `repo`, `localpath`, `repo_url`) are never written.

    Raises:
        ControlValueError: a key that is empty, not lower-case, or holds ':' or whitespace; a
            value with a blank line inside, leading or trailing whitespace on one of its lines,
            or a NUL/CR/other line break. The message names the field.
    """
    fields = entry.fields
    lines = [_format_line(name, fields.get(name, "")) for name in _CONTROL_ORDER]
    for name, value in fields.items():
        if name not in _KNOWN_ATTRIBUTES:
            _check_written_key(name)
            lines.append(_format_line(name, value))
    if with_repo_attributes:
        for name in REPO_ATTRIBUTES:
            value = fields.get(name, "")
            if value != "":
                lines.append(_format_line(name, value))
    return "\n".join(lines)


def format_records(entries: Iterable[PackageEntry]) -> str:
    """Write the text of a `Packages` index as WAPT does.

    Each record (`format_control(..., with_repo_attributes=True)`) ends with a newline and is
    followed by one blank line, except the last: records joined by "\\n\\n", plus a final "\\n".

    Raises:
        ControlValueError: as `format_control`.
    """
    return "\n".join(f"{format_control(entry, with_repo_attributes=True)}\n" for entry in entries)
