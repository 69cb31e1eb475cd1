"""Reading RFC 5322 messages: headers, the text and HTML bodies, attachments, part numbers.

Built on the stdlib `email` package with `policy.default`; where it raises or gives up on a
header or a part, the `compat32` view of the same raw header is used instead. On top of it:

- Every byte sequence becomes text without raising: the declared charset (with the aliases
  mail clients really mean: latin-1 is windows-1252, gb2312 is gb18030, shift_jis is cp932),
  then UTF-8, then windows-1252 with latin-1 for its five holes. RFC 2047 encoded words are
  decoded here (adjacent words joined before decoding, as real mailers split multi-byte
  characters across them), and 8-bit header bytes are read as UTF-8 or windows-1252.
- Part numbers are IMAP's (RFC 3501 section 6.4.5), so an attachment's `part` works both
  with `BODY[part]` on the server and with `part_bytes` on stored raw mail.
- Malformed mail is salvaged, not refused: header lines without a colon, `Name : value`,
  missing closing boundaries, bad base64 padding or alphabet, unknown charsets, nesting so
  deep the parser recurses out (then the body is shown as text).

Message-ID, In-Reply-To and References ids keep their angle brackets ("<id@host>"), the
form they are sent in; Content-ID is given without them.

No Django imports: this is a protocol engine.
"""

from __future__ import annotations

import binascii
import codecs
import email.utils
import mimetypes
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email.message import Message
from email.parser import BytesParser
from functools import lru_cache
from html.parser import HTMLParser
from urllib.parse import unquote

from mailcore.protocols.sanitize import text_to_html

__all__ = [
    "Address",
    "AttachmentInfo",
    "ParsedMessage",
    "decode_header_value",
    "parse_message",
    "part_bytes",
    "safe_filename",
    "text_snippet",
]


@dataclass(frozen=True)
class Address:
    name: str
    email: str


@dataclass(frozen=True)
class AttachmentInfo:
    part: str  # IMAP part number: "1", "2", "1.2", ...
    filename: str  # safe to offer as a download name; never empty
    content_type: str  # lower-case "type/subtype"
    size: int  # decoded bytes
    content_id: str | None  # without angle brackets
    inline: bool  # Content-Disposition inline, or an image the HTML body shows by cid:


@dataclass(frozen=True)
class ParsedMessage:
    headers: list[tuple[str, str]]
    subject: str
    message_id: str
    in_reply_to: str
    references: tuple[str, ...]
    sender: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    date: datetime | None
    text: str | None
    html: str | None  # as sent: the caller sanitizes
    attachments: tuple[AttachmentInfo, ...]


# Bytes -> text ---------------------------------------------------------------------------------

# What a declared charset really means in mail (and on the web, per the WHATWG Encoding
# standard): mostly the Microsoft superset that produced it. None: no usable declaration.
_CHARSET_ALIASES: dict[str, str | None] = {
    **dict.fromkeys(
        ["ascii", "us-ascii", "ansi-x3.4-1968", "iso-646-us", "us", "646", "unknown",
         "unknown-8bit", "x-unknown", "x-user-defined", "default", "charset", "none"],
        None,
    ),
    **dict.fromkeys(
        ["iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "iso-ir-100", "cp819"], "cp1252"
    ),
    **dict.fromkeys(["iso-8859-9", "iso8859-9", "latin5", "l5"], "cp1254"),
    **dict.fromkeys(["iso-8859-11", "iso8859-11", "tis-620", "windows-874"], "cp874"),
    **dict.fromkeys(["iso-8859-8-i", "iso-8859-8-e", "logical", "visual"], "iso8859-8"),
    **dict.fromkeys(["iso-8859-6-i", "iso-8859-6-e"], "iso8859-6"),
    **dict.fromkeys(["utf8", "unicode-1-1-utf-8", "x-unicode20utf8"], "utf-8"),
    **dict.fromkeys(
        ["gb2312", "gbk", "x-gbk", "euc-cn", "cp936", "csgb2312", "chinese", "gb-2312"], "gb18030"
    ),
    **dict.fromkeys(
        ["shift-jis", "sjis", "x-sjis", "ms-kanji", "windows-31j", "csshiftjis", "shift-jisx0213"],
        "cp932",
    ),
    **dict.fromkeys(
        ["euc-kr", "ks-c-5601-1987", "ks-c-5601", "ksc5601", "korean", "windows-949", "uhc"],
        "cp949",
    ),
    **dict.fromkeys(["big5", "big-5", "x-x-big5", "cn-big5", "csbig5"], "big5hkscs"),
}  # fmt: skip

# Codecs that decode but are not a text's charset (or not here): never honour them.
_REFUSED_CODECS = {
    "unicode-escape", "raw-unicode-escape", "unicode-internal", "idna", "punycode",
    "undefined", "mbcs", "oem", "utf-7",
}  # fmt: skip

_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _charset_key(name: str) -> str:
    return name.strip().strip("\"'").strip().lower().replace("_", "-")


@lru_cache(maxsize=512)
def _codec(charset: str | None) -> str | None:
    """The Python codec to decode `charset` with, or None if it names nothing usable."""
    if not charset:
        return None
    key = _charset_key(charset)
    if key in _CHARSET_ALIASES:
        return _CHARSET_ALIASES[key]
    if key.startswith("shift-jis"):
        return "cp932"
    for candidate in (key, key.removeprefix("x-"), key.replace("-", "")):
        try:
            info = codecs.lookup(candidate)
        except (LookupError, ValueError, TypeError):
            continue
        canonical = _charset_key(info.name)
        if not getattr(info, "_is_text_encoding", True) or canonical in _REFUSED_CODECS:
            return None
        return _CHARSET_ALIASES.get(canonical, info.name)
    return None


# windows-1252, with the five bytes it leaves undefined read as latin-1: never fails.
_CP1252_TABLE = {
    byte: bytes([byte]).decode("cp1252")
    for byte in range(0x80, 0xA0)
    if byte not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)
}


def _decode_cp1252(data: bytes) -> str:
    return data.decode("latin-1").translate(_CP1252_TABLE)


def _cp1252_fallback(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return _decode_cp1252(error.object[error.start : error.end]), error.end


# UTF-8 where it is valid, windows-1252 for the bytes that are not (mixed 8-bit text).
codecs.register_error("satchel-cp1252-fallback", _cp1252_fallback)


def _scrub_surrogates(text: str) -> str:
    return _SURROGATE_RE.sub("\ufffd", text) if _SURROGATE_RE.search(text) else text


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Best effort, never raising: the declared charset, then UTF-8; failing both, the
    declared charset with replacement characters if it is a multi-byte one, windows-1252
    (latin-1 for its holes) if it is windows-1252, else UTF-8 with windows-1252 for each
    byte that is not UTF-8."""
    codec = _codec(charset)
    if codec and codec != "utf-8":
        try:
            return _scrub_surrogates(data.decode(codec))
        except (UnicodeError, LookupError, ValueError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if codec == "cp1252":
        return _decode_cp1252(data)
    if codec and codec != "utf-8":
        try:
            return _scrub_surrogates(data.decode(codec, "replace"))
        except (UnicodeError, LookupError, ValueError):
            pass
    return data.decode("utf-8", "satchel-cp1252-fallback")


def _unescape_8bit(text: str) -> str:
    """The email package keeps undecodable 8-bit bytes as lone surrogates: read them as
    UTF-8 (or windows-1252) text instead."""
    if not _SURROGATE_RE.search(text):
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return _scrub_surrogates(text)
    return decode_bytes(raw, None)


# Headers ---------------------------------------------------------------------------------------

_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]+?)\?([bBqQ])\?([^?]*)\?=")
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")
# Header text is one line: tabs and line breaks become spaces, other controls go.
_HEADER_CONTROLS = {**dict.fromkeys(range(32)), 9: " ", 10: " ", 13: " ", 0x7F: None}
_B64_NOISE = bytes(
    set(range(256)) - set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
)


def _b64decode(data: bytes) -> bytes:
    """Lenient base64: skips characters outside the alphabet, repairs padding, and decodes
    every padded chunk (some mailers concatenate separately encoded pieces)."""
    cleaned = data.translate(None, _B64_NOISE)
    out = []
    for chunk in cleaned.split(b"="):
        extra = len(chunk) % 4
        if extra == 1:
            chunk = chunk[:-1]  # a lone trailing character holds no whole byte
        elif extra:
            chunk += b"=" * (4 - extra)
        if chunk:
            out.append(binascii.a2b_base64(chunk))
    return b"".join(out)


def _decode_encoded_words(text: str) -> str:
    if "=?" not in text:
        return text
    out: list[str] = []
    pending: list[tuple[str, bytes]] = []  # adjacent encoded words, not yet decoded

    def flush() -> None:
        while pending:
            charset, data = pending.pop(0)
            while pending and _charset_key(pending[0][0]) == _charset_key(charset):
                data += pending.pop(0)[1]
            out.append(decode_bytes(data, charset))

    position = 0
    for match in _ENCODED_WORD_RE.finditer(text):
        between = text[position : match.start()]
        if not pending:
            out.append(between)
        elif between and not between.isspace():
            flush()
            out.append(between)
        charset = match.group(1).split("*", 1)[0]  # RFC 2231 language suffix
        payload = match.group(3).encode("utf-8", "replace")
        if match.group(2) in "bB":
            data = _b64decode(payload)
        else:
            data = binascii.a2b_qp(payload, header=True)
        pending.append((charset, data))
        position = match.end()
    flush()
    out.append(text[position:])
    return "".join(out)


def decode_header_value(value: str | bytes) -> str:
    """A header value as one line of text: unfolded, RFC 2047 decoded (unknown charsets best
    effort), 8-bit bytes read as UTF-8 or windows-1252, control characters removed."""
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        text = decode_bytes(bytes(value), None)
    else:
        text = _unescape_8bit(str(value))
    text = _FOLD_RE.sub("", text)
    text = _decode_encoded_words(text)
    return text.translate(_HEADER_CONTROLS).strip()


def _header_name(name: str) -> str:
    return _unescape_8bit(str(name)).translate(_HEADER_CONTROLS).strip()


def _first_raw(entity: Message, name: str) -> str | None:
    name = name.lower()
    for key, value in entity.raw_items():
        if str(key).lower() == name:
            return str(value)
    return None


def _compat(entity: Message) -> Message:
    """The same headers seen through compat32 (for when policy.default raises)."""
    shadow = Message(policy=email_policy.compat32)
    for key, value in entity.raw_items():
        shadow.set_raw(str(key), str(value))
    return shadow


def _content_type(entity: Message) -> str:
    try:
        return entity.get_content_type()
    except Exception:
        try:
            return _compat(entity).get_content_type()
        except Exception:
            return "text/plain"


def _disposition(entity: Message) -> str | None:
    try:
        return entity.get_content_disposition()
    except Exception:
        try:
            return _compat(entity).get_content_disposition()
        except Exception:
            return None


def _param(entity: Message, name: str, header: str = "content-type") -> str | None:
    value = None
    try:
        value = entity.get_param(name, header=header)
    except Exception:
        try:
            value = _compat(entity).get_param(name, header=header)
        except Exception:
            return None
    if isinstance(value, tuple):
        value = email.utils.collapse_rfc2231_value(value)
    return decode_header_value(value) if value else None


def _cte(entity: Message) -> str:
    raw = _first_raw(entity, "content-transfer-encoding")
    match = re.match(r"\s*([A-Za-z0-9_-]+)", decode_header_value(raw or ""))
    return match.group(1).lower() if match else ""


def _content_id(entity: Message) -> str | None:
    raw = _first_raw(entity, "content-id")
    value = decode_header_value(raw or "").strip().strip("<>").strip()
    return value or None


def _raw_filename(entity: Message) -> str | None:
    """The filename the sender gave (RFC 2231 and RFC 2047 decoded), or None."""
    name = None
    try:
        name = entity.get_filename()
    except Exception:
        name = None
    if name is None or "\ufffd" in name or _SURROGATE_RE.search(name):
        name = _compat_filename(entity) or name
    if name is None:
        return None
    return decode_header_value(name) if "=?" in name else _unescape_8bit(name)


def _compat_filename(entity: Message) -> str | None:
    """compat32 keeps RFC 2231's raw bytes and charset, so an unknown charset can still be
    decoded best effort (policy.default gives replacement characters)."""
    try:
        shadow = _compat(entity)
        for param, header in (("filename", "content-disposition"), ("name", "content-type")):
            value = shadow.get_param(param, header=header)
            if isinstance(value, tuple):
                charset, _language, text = value
                return decode_bytes(text.encode("latin-1", "surrogateescape"), charset)
            if value:
                return decode_header_value(value)
    except Exception:
        return None
    return None


# Addresses, ids, dates ---------------------------------------------------------------------------


def _clean_name(name: str) -> str:
    name = _unescape_8bit(name or "")
    if "=?" in name:
        name = _decode_encoded_words(name)
    return name.translate(_HEADER_CONTROLS).strip()


def _clean_email(addr: str) -> str:
    return _unescape_8bit(addr or "").translate(_HEADER_CONTROLS).strip().strip("<>").strip()


_ADDR_SPEC_RE = re.compile(r'(?:"[^"]*"|[^\s"<>@,;]+)@[^\s"<>@,;]+')
_ADDR_TOKEN_RE = re.compile(r"""[^\s<>"',;:()\[\]]+@[^\s<>"',;:()\[\]]+""")


def _parse_addresses(raw: str | None) -> list[Address]:
    """policy.default's RFC 5322 parse (groups, quoting, encoded words); where it raises or
    yields something that is not an address, compat32's getaddresses; failing both, every
    address-looking token. Names only compat32 sees (the old "a@b (Name)" form) fill in."""
    if not raw:
        return []
    value = "".join(str(raw).splitlines())
    modern: list[tuple[str, str]] | None
    try:
        header = email_policy.default.header_factory("to", value)
        modern = [
            (_clean_name(a.display_name), _clean_email(a.addr_spec)) for a in header.addresses
        ]
    except Exception:
        modern = None
    try:
        legacy = [
            (_clean_name(name), _clean_email(addr))
            for name, addr in email.utils.getaddresses([value])
        ]
    except Exception:
        legacy = []
    legacy = [(name, addr) for name, addr in legacy if _ADDR_SPEC_RE.fullmatch(addr)]
    if modern is not None and all(_ADDR_SPEC_RE.fullmatch(addr) for _, addr in modern):
        # compat32 leaves encoded words for our decoder, which (as RFC 2047 6.2 says) drops
        # the space between adjacent ones; policy.default keeps it ("Алекс андр").
        names = {addr.lower(): name for name, addr in legacy if name}
        chosen = [(names.get(addr.lower()) or name, addr) for name, addr in modern]
    elif legacy:
        chosen = legacy
    else:
        chosen = [("", _clean_email(token)) for token in _ADDR_TOKEN_RE.findall(value)]
    return [Address(name=name, email=addr) for name, addr in chosen if addr]


_MSGID_RE = re.compile(r"<([^<>]*)>")


def _message_ids(raw: str | None) -> list[str]:
    value = decode_header_value(raw or "")
    ids = []
    for inner in _MSGID_RE.findall(value):
        inner = "".join(inner.split())
        if inner:
            ids.append(f"<{inner}>")
    if not ids:  # ids sent without brackets
        ids = [f"<{token.strip('<>')}>" for token in value.split() if "@" in token]
    return ids


def _parse_date(raw: str | None) -> datetime | None:
    value = decode_header_value(raw or "")
    if not value:
        return None
    parsed = None
    for candidate in (value, re.sub(r"\([^)]*\)", " ", value)):
        try:
            parsed = email.utils.parsedate_to_datetime(candidate)
        except Exception:
            parsed = None
        if parsed is not None:
            break
    if parsed is None:
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


# Parsing -----------------------------------------------------------------------------------------

_MAX_DEPTH = 64  # deeper nesting is treated as opaque leaves
_HEADER_LINE_RE = re.compile(rb"[\x21-\x39\x3b-\x7e]+:|[ \t]|From ")
_SPACED_NAME_RE = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]+:")
_HEADER_END_RE = re.compile(rb"\r?\n\r?\n")


def _repair_header_block(raw: bytes) -> bytes:
    """The stdlib ends the header block at the first line that is not a header, turning the
    rest of the headers into body. Fix `Name : value` (obsolete RFC 822 syntax) and drop
    stray lines that have real header lines after them."""
    end_match = _HEADER_END_RE.search(raw)
    end = end_match.start() if end_match else len(raw)
    lines = raw[:end].split(b"\n")
    if not lines or not _HEADER_LINE_RE.match(lines[0]):
        return raw  # no header block to speak of: leave it to the parser
    if all(_HEADER_LINE_RE.match(line) for line in lines):
        return raw
    last_header = max(
        index
        for index, line in enumerate(lines)
        if _HEADER_LINE_RE.match(line) or _SPACED_NAME_RE.match(line)
    )
    fixed = []
    for index, line in enumerate(lines):
        if _HEADER_LINE_RE.match(line):
            fixed.append(line)
            continue
        spaced = _SPACED_NAME_RE.match(line)
        if spaced:
            fixed.append(spaced.group(1) + b":" + line[spaced.end() :])
        elif index < last_header:
            continue
        else:
            fixed.extend(lines[index:])  # the stdlib will make this the body's start
            break
    return b"\n".join(fixed) + raw[end:]


def _parse_bytes(raw: bytes) -> Message:
    raw = _repair_header_block(raw)
    parser = BytesParser(policy=email_policy.default)
    try:
        return parser.parsebytes(raw)
    except RecursionError:
        return parser.parsebytes(raw, headersonly=True)


def _raw_payload(entity: Message):
    """The payload as parsed. get_payload() re-decodes 8-bit text with its declared charset
    (replacement characters and all); the stdlib's own generator reads this attribute."""
    return getattr(entity, "_payload", None)


def _b(text: str) -> bytes:
    try:
        return text.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


class _Tree:
    """One parsed message with its parts numbered the way IMAP numbers them."""

    def __init__(self, raw: bytes, salvage: bool = True):
        self.salvage = salvage
        linesep = "\r\n" if b"\r\n" in raw[:65536] else "\n"
        self.generate_policy = email_policy.default.clone(
            refold_source="none", utf8=True, linesep=linesep, max_line_length=None
        )
        self.root = _parse_bytes(raw)
        self.index: dict[str, Message] = {}
        self.kind: dict[int, str] = {}  # id(entity) -> "multipart" | "message" | "leaf"
        self.embedded: dict[int, Message] = {}  # id(message/rfc822 part) -> its message
        self.nested: set[int] = set()  # ids of entities inside an attached message
        self._number_message(self.root, "", 0, nested=False)

    # Numbering (RFC 3501 6.4.5) ---------------------------------------------------------------

    def _kind(self, entity: Message, depth: int) -> str:
        payload = _raw_payload(entity)
        if depth > _MAX_DEPTH or not isinstance(payload, list):
            return "leaf"
        ctype = _content_type(entity)
        if ctype.startswith("multipart/"):
            return "multipart"
        is_message = ctype in ("message/rfc822", "message/global")
        if is_message and payload and isinstance(payload[0], Message):
            return "message"
        return "leaf"  # message/delivery-status and friends: opaque

    def _number_message(self, message: Message, prefix: str, depth: int, nested: bool) -> None:
        """A message's body: a multipart's children are prefix.1, prefix.2, ...; a single
        part body is prefix.1 ("1" at the top)."""
        if self._kind(message, depth) == "multipart":
            self.kind[id(message)] = "multipart"
            if nested:
                self.nested.add(id(message))
            for number, child in enumerate(_raw_payload(message), 1):
                self._visit(child, _join(prefix, number), depth + 1, nested)
        else:
            self._visit(message, _join(prefix, 1), depth + 1, nested)

    def _visit(self, entity: Message, number: str, depth: int, nested: bool) -> None:
        kind = self._kind(entity, depth)
        self.index[number] = entity
        self.kind[id(entity)] = kind
        if nested:
            self.nested.add(id(entity))
        if kind == "multipart":
            for index, child in enumerate(_raw_payload(entity), 1):
                self._visit(child, f"{number}.{index}", depth + 1, nested)
        elif kind == "message":
            inner = self._embedded_message(entity)
            self.embedded[id(entity)] = inner
            self._number_message(inner, number, depth + 1, nested=True)

    def _embedded_message(self, entity: Message) -> Message:
        inner = _raw_payload(entity)[0]
        if _cte(entity) in ("base64", "quoted-printable"):
            # Not allowed by RFC 2046, sent anyway: the stdlib parsed the encoded text.
            encoded = self.entity_body(inner, with_headers=True)
            if _cte(entity) == "base64":
                inner = _parse_bytes(_b64decode(encoded))
            else:
                inner = _parse_bytes(binascii.a2b_qp(encoded))
        return inner

    # Bytes ------------------------------------------------------------------------------------

    def generate(self, entity: Message) -> bytes:
        try:
            return entity.as_bytes(policy=self.generate_policy)
        except Exception:
            # The stdlib generator re-decodes some payloads (a multipart whose boundary
            # never came, holding 8-bit bytes) and then cannot write them.
            return self._serialize(entity, 0)

    def _serialize(self, entity: Message, depth: int) -> bytes:
        """A plain re-serialization from the raw headers and payloads."""
        linesep = self.generate_policy.linesep.encode()
        out = [_b(f"{key}: {value}") + linesep for key, value in entity.raw_items()]
        out.append(linesep)
        payload = _raw_payload(entity)
        if isinstance(payload, str):
            out.append(_b(payload))
        elif isinstance(payload, list) and depth <= _MAX_DEPTH:
            boundary = _param(entity, "boundary")
            if boundary is None or not _content_type(entity).startswith("multipart/"):
                out.extend(self._serialize(part, depth + 1) for part in payload)
            else:
                delimiter = b"--" + _b(boundary)
                if entity.preamble is not None:
                    out.append(_b(entity.preamble) + linesep)
                for part in payload:
                    out.append(delimiter + linesep + self._serialize(part, depth + 1) + linesep)
                out.append(delimiter + b"--" + linesep)
                if entity.epilogue is not None:
                    out.append(_b(entity.epilogue))
        return b"".join(out)

    def entity_body(self, entity: Message, with_headers: bool = False) -> bytes:
        generated = self.generate(entity)
        if with_headers:
            return generated
        if generated.startswith((b"\n", b"\r\n")):  # no headers at all
            return generated.split(b"\n", 1)[1]
        match = _HEADER_END_RE.search(generated)
        return generated[match.end() :] if match else b""

    def payload(self, entity: Message) -> bytes:
        """What IMAP's BODY[part] gives, decoded: an attached message's bytes, a leaf's
        decoded content, a multipart's raw body."""
        kind = self.kind.get(id(entity), "leaf")
        if kind == "message":
            return self.generate(self.embedded[id(entity)])
        payload = _raw_payload(entity)
        if kind == "multipart" or isinstance(payload, list):
            return self.entity_body(entity)
        if payload is None:
            return b""
        if _cte(entity) == "base64":
            return _b64decode(_b(payload))
        # Not get_payload(): without decode=True it re-decodes 8-bit text with the declared
        # charset. With it, the original bytes come back (quoted-printable and uuencode
        # decoded, anything else as is).
        try:
            decoded = entity.get_payload(decode=True)
        except Exception:
            decoded = None
        return decoded if isinstance(decoded, bytes) else _b(payload)

    def text(self, entity: Message) -> str:
        data = self.payload(entity)
        ctype = _content_type(entity)
        charset = _param(entity, "charset")
        if not charset and ctype == "text/html":
            charset = _sniff_html_charset(data)
        text = decode_bytes(data, charset)
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
        text = text.removeprefix("\ufeff")
        if ctype != "text/html" and (_param(entity, "format") or "").lower() == "flowed":
            text = _unflow(text, delsp=(_param(entity, "delsp") or "").lower() == "yes")
        return text

    # Bodies and attachments ---------------------------------------------------------------------

    def _is_body(self, entity: Message, top: bool) -> str | None:
        """The body type ("text/plain" or "text/html") if this leaf is shown as one."""
        ctype = _content_type(entity)
        if ctype.startswith("multipart/"):
            ctype = "text/plain"  # boundary never found: show what is there
        if ctype not in ("text/plain", "text/html"):
            return None
        if _disposition(entity) == "attachment":
            return None
        if not top and _raw_filename(entity):
            return None
        return ctype

    def bodies(
        self, entity: Message, consumed: set[int], top: bool = False
    ) -> tuple[str | None, str | None]:
        kind = self.kind.get(id(entity), "leaf")
        if kind == "message":
            return None, None
        if kind == "leaf":
            ctype = self._is_body(entity, top)
            if ctype is None:
                return None, None
            consumed.add(id(entity))
            if _content_type(entity).startswith("multipart/"):
                salvaged = self._salvage(entity)
                if salvaged is not None:
                    return salvaged
            content = self.text(entity)
            return (None, content) if ctype == "text/html" else (content, None)
        children = _raw_payload(entity)
        subtype = _content_type(entity).partition("/")[2]
        if subtype == "alternative":  # the last of each kind is the best (RFC 2046 5.1.4)
            text = html = None
            for child in children:
                child_text, child_html = self.bodies(child, consumed)
                text = child_text if child_text is not None else text
                html = child_html if child_html is not None else html
            return text, html
        if subtype == "related" and children:
            return self.bodies(_related_root(entity, children), consumed)
        results = [self.bodies(child, consumed) for child in children]
        texts = [text for text, _ in results if text is not None]
        text = "\n\n".join(t for t in texts if t) if texts else None
        html = None
        if any(h is not None for _, h in results):
            html = "".join(
                h if h is not None else text_to_html(t) for t, h in results if t or h is not None
            )
        return text, html

    def _salvage(self, entity: Message) -> tuple[str | None, str | None] | None:
        """A multipart whose boundary never appears: if its body is visibly cut by another
        boundary, read the bodies under that one (for display only: IMAP servers see a
        single empty part here, so no part numbers come from this)."""
        if not self.salvage:
            return None
        body = self.payload(entity)
        found = _BOUNDARY_LINE_RE.search(body[:65536])
        if found is None:
            return None
        boundary = found.group(1).decode("ascii", "replace")
        header = f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n'
        tree = _Tree(header.encode() + body, salvage=False)
        text, html = tree.bodies(tree.root, set())
        return (text, html) if text is not None or html is not None else None

    def attachments(self, consumed: set[int], cids: set[str]) -> list[AttachmentInfo]:
        found = []
        for number, entity in self.index.items():
            key = id(entity)
            if self.kind[key] == "multipart" or key in consumed or key in self.nested:
                continue
            ctype = _content_type(entity)
            if ctype.startswith("multipart/"):
                ctype = "text/plain"  # boundary never found: what IMAP servers call it
            content_id = _content_id(entity)
            if self.kind[key] == "message":
                subject = decode_header_value(_first_raw(self.embedded[key], "subject") or "")
                name = subject.replace("/", "_").replace("\\", "_") + ".eml" if subject else None
                name = name or _raw_filename(entity)
            else:
                name = _raw_filename(entity)
            referenced = content_id is not None and (
                content_id in cids or content_id.lower() in cids
            )
            found.append(
                AttachmentInfo(
                    part=number,
                    filename=safe_filename(name, ctype),
                    content_type=ctype,
                    size=len(self.payload(entity)),
                    content_id=content_id,
                    inline=_disposition(entity) == "inline"
                    or (referenced and ctype.startswith("image/")),
                )
            )
        return found


_BOUNDARY_LINE_RE = re.compile(rb"^--([0-9A-Za-z'()+_,./:=?-]{1,70})[ \t]*\r?$", re.M)


def _join(prefix: str, number: int) -> str:
    return f"{prefix}.{number}" if prefix else str(number)


def _related_root(entity: Message, children: list[Message]) -> Message:
    start = _param(entity, "start")
    if start:
        wanted = start.strip().strip("<>").strip()
        for child in children:
            if _content_id(child) == wanted:
                return child
    return children[0]


_META_CHARSET_RE = re.compile(
    rb"""<meta[^>]{0,512}?charset\s*=\s*["']?\s*([a-zA-Z0-9_:.+-]+)""", re.I
)


def _sniff_html_charset(data: bytes) -> str | None:
    match = _META_CHARSET_RE.search(data[:8192])
    return match.group(1).decode("ascii") if match else None


def _unflow(text: str, *, delsp: bool) -> str:
    """RFC 3676 format=flowed: join soft-broken lines back into paragraphs."""
    out: list[str] = []
    current: list | None = None  # [quote depth, text] of a paragraph still flowing
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]  # space-stuffing
        flowed = content.endswith(" ") and content != "-- "
        if flowed and delsp:
            content = content[:-1]
        if current is not None and current[0] == depth:
            current[1] += content
        else:
            if current is not None:
                out.append(_quoted(*current))
            current = [depth, content]
        if not flowed:
            out.append(_quoted(*current))
            current = None
    if current is not None:
        out.append(_quoted(*current))
    return "\n".join(out)


def _quoted(depth: int, text: str) -> str:
    return (">" * depth + " " + text) if depth else text


@lru_cache(maxsize=2)
def _tree(raw: bytes) -> _Tree:
    # Cached: callers parse a message and then ask for several of its parts.
    return _Tree(raw)


def _as_bytes(raw: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return bytes(raw)


_CID_RE = re.compile(r"""cid:([^\s"'<>)]+)""", re.I)


def _referenced_cids(html: str | None) -> set[str]:
    cids: set[str] = set()
    for found in _CID_RE.findall(html or ""):
        cid = unquote(found).strip("<>")
        cids.update((cid, cid.lower()))
    return cids


def parse_message(raw: bytes) -> ParsedMessage:
    """Everything the reader shows of one RFC 5322 message; never raises on bad mail."""
    tree = _tree(_as_bytes(raw))
    root = tree.root
    headers = [(_header_name(k), decode_header_value(v)) for k, v in root.raw_items()]
    first: dict[str, str] = {}
    for key, value in root.raw_items():
        first.setdefault(str(key).lower(), str(value))

    senders = _parse_addresses(first.get("from")) or _parse_addresses(first.get("sender"))
    sender = senders[0] if senders else None
    if sender is None and decode_header_value(first.get("from") or ""):
        sender = Address(name=decode_header_value(first["from"]), email="")

    consumed: set[int] = set()
    text, html = tree.bodies(root, consumed, top=True)
    in_reply_to = _message_ids(first.get("in-reply-to"))
    message_ids = _message_ids(first.get("message-id"))
    return ParsedMessage(
        headers=headers,
        subject=decode_header_value(first.get("subject") or ""),
        message_id=message_ids[0] if message_ids else "",
        in_reply_to=in_reply_to[0] if in_reply_to else "",
        references=tuple(_message_ids(first.get("references"))),
        sender=sender,
        to=tuple(_parse_addresses(first.get("to"))),
        cc=tuple(_parse_addresses(first.get("cc"))),
        reply_to=tuple(_parse_addresses(first.get("reply-to"))),
        date=_parse_date(first.get("date")),
        text=text,
        html=html,
        attachments=tuple(tree.attachments(consumed, _referenced_cids(html))),
    )


def part_bytes(raw: bytes, part: str) -> bytes:
    """The decoded content of one part by IMAP part number, as BODY[part] would give it
    (decoded): raises KeyError for a part the message does not have."""
    tree = _tree(_as_bytes(raw))
    entity = tree.index.get(str(part).strip())
    if entity is None:
        raise KeyError(part)
    return tree.payload(entity)


# Filenames ---------------------------------------------------------------------------------------

_EXTENSIONS = {
    "text/plain": ".txt",
    "text/html": ".html",
    "text/calendar": ".ics",
    "text/rfc822-headers": ".txt",
    "message/rfc822": ".eml",
    "message/global": ".eml",
    "message/delivery-status": ".txt",
    "message/disposition-notification": ".txt",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "application/pdf": ".pdf",
    "application/pgp-signature": ".asc",
    "application/pgp-encrypted": ".asc",
    "application/pkcs7-signature": ".p7s",
    "application/x-pkcs7-signature": ".p7s",
    "application/pkcs7-mime": ".p7m",
    "application/x-pkcs7-mime": ".p7m",
    "application/octet-stream": ".bin",
}
_MIMETYPES = mimetypes.MimeTypes()  # the built-in table only: same answer on every machine
_WINDOWS_RESERVED = re.compile(r"(?i)^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$")
_UNSAFE_CHARS_RE = re.compile(r'[<>:"|?*]')
_SPACES_RE = re.compile(r"\s+")
_MAX_FILENAME_BYTES = 255


def _extension(content_type: str) -> str:
    ctype = (content_type or "").strip().lower()
    return _EXTENSIONS.get(ctype) or _MIMETYPES.guess_extension(ctype) or ""


def _truncate_utf8(text: str, limit: int) -> str:
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def safe_filename(name: str | None, content_type: str) -> str:
    """A download name that cannot escape a folder or fool the eye: the last path component
    only; no control, format (bidi overrides, zero-width) or separator characters; no
    Windows-reserved characters or device names; no leading dots; at most 255 UTF-8 bytes,
    the extension kept. Empty becomes "attachment" plus an extension for the type."""
    text = name or ""
    if "=?" in text:
        text = decode_header_value(text)
    text = unicodedata.normalize("NFC", _scrub_surrogates(text))
    text = "".join(
        " " if ch.isspace() else ch
        for ch in text
        if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Zl", "Zp") or ch in "\t\n\r"
    )
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = _UNSAFE_CHARS_RE.sub("_", text)
    text = _SPACES_RE.sub(" ", text).strip(" .")
    if _WINDOWS_RESERVED.match(text):
        text = "_" + text
    if not text:
        text = "attachment" + _extension(content_type)
    if len(text.encode("utf-8")) > _MAX_FILENAME_BYTES:
        stem, dot, ext = text.rpartition(".")
        if dot and stem and 0 < len(ext.encode("utf-8")) <= 16 and " " not in ext:
            ext = "." + ext
            text = _truncate_utf8(stem, _MAX_FILENAME_BYTES - len(ext.encode())).rstrip(" .") + ext
        else:
            text = _truncate_utf8(text, _MAX_FILENAME_BYTES).rstrip(" .")
    return text


# Snippets ----------------------------------------------------------------------------------------

_INVISIBLE_RE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180e"
    "\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]"
)


class _TextExtractor(HTMLParser):
    """Visible text of HTML, block elements as line breaks; stops once it has enough."""

    _SKIP = frozenset({"script", "style", "head", "title", "template", "noscript", "svg", "math"})
    _BLOCK = frozenset(
        {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote",
         "pre", "hr", "ul", "ol", "dl", "dt", "dd", "section", "article", "header", "footer"}
    )  # fmt: skip

    def __init__(self, enough: int):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.size = 0
        self.enough = enough
        self.skipping = 0
        self.quote = 0

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self.skipping += 1
        elif tag == "blockquote":
            self.quote += 1
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self._SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag == "blockquote":
            self.quote = max(0, self.quote - 1)
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            # Quoted replies are marked like plain text quotes, so they can be skipped alike.
            self.parts.append(data.replace("\n", " ") if not self.quote else "\n> " + data)
            self.size += len(data)


def _html_text(html: str, enough: int) -> str:
    extractor = _TextExtractor(enough)
    step = 65536
    try:
        for start in range(0, len(html), step):
            extractor.feed(html[start : start + step])
            if extractor.size >= enough:
                break
        extractor.close()
    except Exception:  # noqa: S110 - a snippet from whatever was read
        pass
    return "".join(extractor.parts)


def _snippet_lines(text: str, enough: int, skip_quotes: bool) -> list[str]:
    kept: list[str] = []
    size = 0
    for line in text.splitlines():
        if line.rstrip() == "--":  # signature separator ("-- ")
            break
        stripped = line.strip()
        if skip_quotes and stripped.startswith(">"):
            continue
        stripped = stripped.lstrip("> ")
        if stripped:
            kept.append(stripped)
            size += len(stripped)
            if size >= enough:
                break
    return kept


def text_snippet(text: str | None, html: str | None, limit: int = 200) -> str:
    """One line of the new text of a message (quoted lines and signature left out), at most
    `limit` characters, ending in "…" when cut."""
    limit = max(1, limit)
    enough = limit * 4
    source = text if text and text.strip() else _html_text(html or "", enough)
    lines = _snippet_lines(source, enough, skip_quotes=True) or _snippet_lines(
        source, enough, skip_quotes=False
    )
    snippet = _SPACES_RE.sub(" ", _INVISIBLE_RE.sub("", " ".join(lines))).strip()
    if len(snippet) <= limit:
        return snippet
    cut = snippet[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"
