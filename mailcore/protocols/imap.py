"""IMAP4rev1 client engine: one logged-in connection, typed results, no Django.

Why not IMAPClient on the wire? Parsing is the cost of a sync, not the server: Dovecot
answers the 10,000-message FLAGS/INTERNALDATE/ENVELOPE/BODYSTRUCTURE/PREVIEW fetch in
~0.2-0.4 s, while IMAPClient's character-by-character lexer needs ~2.5 s to parse it
(and imaplib caps a response line at 1 MB, which a UID SEARCH of a big mailbox
exceeds). So this module owns the socket and tokenises responses with one compiled
regex (``_TOKEN``, ~0.3 s for those 10,000); building the MessageSummary objects takes
another ~0.35 s. The tokenizer knows only what IMAP sends back (atoms, quoted strings,
literals, parenthesised lists); commands are built from validated, quoted or literal
arguments. IMAPClient is still used for modified UTF-7 folder names.

Errors: every network problem (timeout, reset, TLS failure, EOF, BYE) becomes
``ImapConnectionError`` and closes the session (later calls raise it too); NO/BAD
become ``ImapCommandError`` carrying the server's own words. Bad user input (CR/LF/NUL
in names or search text, non-positive uids, malformed flags) raises ValueError before
anything is sent.
"""

from __future__ import annotations

import binascii
import codecs
import functools
import html
import itertools
import re
import socket
import ssl
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from enum import StrEnum
from types import TracebackType

from imapclient import imap_utf7

from mailcore.protocols import tls
from mailcore.protocols.mime import Address

__all__ = [
    "Address",
    "Changes",
    "FlagChange",
    "Folder",
    "FolderStatus",
    "ImapAuthError",
    "ImapCertificateError",
    "ImapCommandError",
    "ImapConfig",
    "ImapConnectionError",
    "ImapError",
    "ImapSession",
    "MessageSummary",
    "Security",
    "SelectResult",
    "check_login",
]


# --------------------------------------------------------------------------- public types


class Security(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


@dataclass(frozen=True)
class ImapConfig:
    host: str
    port: int
    security: str
    username: str
    password: str = field(repr=False)
    # SHA-256 of the server certificate as "AA:BB:...": trusted even when no CA vouches.
    tls_fingerprint: str = ""
    timeout: float = 30.0
    ca_file: str | None = None  # extra CA bundle


class ImapError(Exception):
    """Base class; ``reply`` is the server's own words (or a plain explanation)."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class ImapConnectionError(ImapError):
    """Network error, timeout, BYE or unexpected EOF: transient, retry later."""


class ImapAuthError(ImapError):
    """The server refused the login."""


class ImapCertificateError(ImapError):
    """The server's certificate is not trusted; ``fingerprint`` is the one it presented."""

    def __init__(self, reply: str, fingerprint: str) -> None:
        super().__init__(reply)
        self.fingerprint = fingerprint


class ImapCommandError(ImapError):
    """NO or BAD to a command (folder exists, no such folder, message gone...)."""


@dataclass(frozen=True)
class Folder:
    path: str
    name: str
    parent: str | None
    delimiter: str | None
    flags: tuple[str, ...]
    role: str | None
    selectable: bool


@dataclass(frozen=True)
class FolderStatus:
    uidvalidity: int
    uidnext: int
    messages: int
    unseen: int
    highestmodseq: int | None


@dataclass(frozen=True)
class MessageSummary:
    uid: int
    flags: frozenset[str]
    internaldate: datetime
    size: int
    modseq: int | None
    date: datetime | None
    subject: str
    message_id: str
    in_reply_to: str
    references: tuple[str, ...]
    sender: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    has_attachments: bool
    bodystructure: dict
    snippet: str


@dataclass(frozen=True)
class FlagChange:
    uid: int
    flags: frozenset[str]
    modseq: int | None


@dataclass(frozen=True)
class SelectResult:
    uidvalidity: int
    uidnext: int
    exists: int
    highestmodseq: int | None
    flags: frozenset[str] = frozenset()  # the FLAGS response: flags defined in the folder
    # PERMANENTFLAGS; None when the server did not send it (RFC 3501 7.1: then every flag
    # of ``flags`` can be stored permanently). "\\*" means new keywords can be too.
    permanent_flags: frozenset[str] | None = None

    def keeps(self, flag: str) -> bool:
        """Whether ``flag`` (a system flag or keyword) can be stored permanently here."""
        if self.permanent_flags is None:
            return flag in self.flags
        return flag in self.permanent_flags or (
            not flag.startswith("\\") and "\\*" in self.permanent_flags
        )


@dataclass(frozen=True)
class Changes:
    flags: list[FlagChange]
    vanished: list[int] | None  # None: the server cannot say (no QRESYNC); diff uid lists


# --------------------------------------------------------------------------- wire format

_MAX_LINE = 64 * 1024 * 1024  # one response line (a UID SEARCH of a huge mailbox is long)
_MAX_COMMAND_SET = 16_000  # bytes of uid set per command; servers accept >= 64 KB lines
_SNIPPET_CHARS = 200
_SNIPPET_FETCH = 2048
_MAX_UID = 0xFFFFFFFF

# One token of a response: paren, quoted string, or atom (an atom may carry a section
# like BODY[HEADER.FIELDS (REFERENCES)]<0>). Literals are cut out while reading.
_TOKEN = re.compile(rb'[()]|"[^"\\]*(?:\\.[^"\\]*)*"|[^\s()"\[\]{]+(?:\[[^\]]*\][^\s()"\[\]{]*)?')
_UNESCAPE = re.compile(rb"\\(.)", re.S)
_LITERAL_END = re.compile(rb"~?\{(\d+)\+?\}\r\n\Z")
_STATUS = re.compile(
    rb"(OK|NO|BAD|BYE|PREAUTH)(?=[ \r\n]|\Z) ?(?:\[([^\]\r\n]*)\] ?)?([^\r\n]*)", re.I
)
_CODE = re.compile(r"([^\s]+) ?(.*)", re.S)


class _Literal(bytes):
    """A command argument sent as an IMAP literal ({n}\\r\\n + bytes)."""


@dataclass
class _Reply:
    """Everything a command got back."""

    data: list[list] = field(default_factory=list)  # parsed untagged data, minus "*"
    codes: list[tuple[str, str]] = field(default_factory=list)  # (NAME, rest) of [..] codes
    text: str = ""  # tagged OK text


def _tokenize(parts: list[bytes]) -> list:
    """Parse one response (text/literal segments alternating) into nested lists.

    Atoms and strings stay bytes, NIL becomes None, lists become lists. This loop is
    the hot path of a sync, hence the terse style.
    """
    top: list = []
    cur = top
    stack: list[list] = []
    findall = _TOKEN.findall
    for index, segment in enumerate(parts):
        if index & 1:
            cur.append(segment)
            continue
        for tok in findall(segment):
            first = tok[0]
            if first == 40:  # (
                new: list = []
                cur.append(new)
                stack.append(cur)
                cur = new
            elif first == 41:  # )
                if stack:
                    cur = stack.pop()
            elif first == 34:  # "
                tok = tok[1:-1]
                cur.append(_UNESCAPE.sub(rb"\1", tok) if b"\\" in tok else tok)
            elif tok == b"NIL":
                cur.append(None)
            else:
                cur.append(tok)
    return top


def _quote(value: bytes) -> bytes:
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _astring(value: str) -> bytes:
    """A string argument: quoted when 7-bit, else a literal (UTF-8)."""
    raw = value.encode("utf-8")
    return _quote(raw) if raw.isascii() else _Literal(raw)


def _no_ctl(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {type(value).__name__}")
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"{what} must not contain CR, LF or NUL characters")
    return value


def _mailbox(path: str) -> bytes:
    """Validate a folder path and encode it as a quoted modified-UTF-7 mailbox name."""
    _no_ctl(path, "folder name")
    if not path:
        raise ValueError("folder name must not be empty")
    if path.upper() == "INBOX":
        path = "INBOX"
    return _quote(imap_utf7.encode(path))


_FLAG = re.compile(r"\\?[^\x00-\x20\x7f-\uffff(){%*\"\\\]]+\Z")


def _flag_list(flags: Iterable[str]) -> list[bytes]:
    out = []
    for flag in flags:
        if not isinstance(flag, str) or not _FLAG.match(flag):
            raise ValueError(f"not a valid IMAP flag or keyword: {flag!r}")
        out.append(flag.encode("ascii"))
    return out


def _checked_uids(uids: Iterable[int]) -> list[int]:
    """Validate uids (positive ints) and return them sorted and unique."""
    if isinstance(uids, (str, bytes)):
        raise ValueError("uids must be a sequence of positive integers")
    result = set()
    for uid in uids:
        if isinstance(uid, bool) or not isinstance(uid, int) or not 0 < uid <= _MAX_UID:
            raise ValueError(f"uid must be a positive integer, not {uid!r}")
        result.add(uid)
    return sorted(result)


def _uid_sets(uids: list[int], limit: int = _MAX_COMMAND_SET) -> Iterator[bytes]:
    """Compress sorted uids into sequence sets ("1:5,7"), each at most ``limit`` bytes."""
    pieces: list[bytes] = []
    size = 0
    index = 0
    while index < len(uids):
        start = end = uids[index]
        index += 1
        while index < len(uids) and uids[index] == end + 1:
            end = uids[index]
            index += 1
        piece = b"%d" % start if start == end else b"%d:%d" % (start, end)
        if pieces and size + len(piece) + 1 > limit:
            yield b",".join(pieces)
            pieces, size = [], 0
        pieces.append(piece)
        size += len(piece) + 1
    if pieces:
        yield b",".join(pieces)


def _expand_set(
    value: bytes | None, star: int | None = None, ceiling: int | None = None
) -> list[int]:
    """Expand a sequence set ("1:3,7"); ``*`` means ``star`` (ranges with it are skipped
    when unknown); numbers above ``ceiling`` are dropped (a server may name never-used
    uids up to 2^32). Garbage yields what could be read, never an exception."""
    result: list[int] = []
    if not value:
        return result
    for piece in value.split(b","):
        low, _, high = piece.partition(b":")
        try:
            first = star if low == b"*" else int(low)
            last = first if not high else (star if high == b"*" else int(high))
        except ValueError:
            continue
        if first is None or last is None:
            continue
        if first > last:
            first, last = last, first
        if ceiling is not None:
            last = min(last, ceiling)
        result.extend(range(first, last + 1))
    return result


# --------------------------------------------------------------------------- transport


class _Transport:
    """A socket with a buffered reader; maps every OS/TLS error to ImapConnectionError."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb", buffering=65536)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise _connection_error(exc) from exc

    def readline(self) -> bytes:
        try:
            line = self.file.readline(_MAX_LINE)
        except OSError as exc:
            raise _connection_error(exc) from exc
        if not line.endswith(b"\n"):
            if len(line) >= _MAX_LINE:
                raise ImapConnectionError("The server sent an overlong response line.")
            raise ImapConnectionError("The server closed the connection unexpectedly.")
        return line

    def read(self, size: int) -> bytes:
        try:
            data = self.file.read(size)
        except OSError as exc:
            raise _connection_error(exc) from exc
        if len(data) < size:
            raise ImapConnectionError("The server closed the connection unexpectedly.")
        return data

    def read_response(self) -> list[bytes]:
        """One response: [line] or [text, literal, text, ..., text] for literals."""
        line = self.readline()
        if not line.endswith(b"}\r\n"):
            return [line]
        parts = []
        while True:
            match = _LITERAL_END.search(line)
            if match is None:
                parts.append(line)
                return parts
            parts.append(line[: match.start()])
            parts.append(self.read(int(match.group(1))))
            line = self.readline()

    def start_tls(self, context: ssl.SSLContext, host: str) -> None:
        # A fresh reader: anything the server pipelined before the handshake is dropped.
        try:
            self.sock = context.wrap_socket(self.sock, server_hostname=host)
        except OSError as exc:
            raise _connection_error(exc) from exc
        self.file = self.sock.makefile("rb", buffering=65536)

    def peer_certificate(self) -> bytes:
        if not isinstance(self.sock, ssl.SSLSocket):
            return b""
        return self.sock.getpeercert(binary_form=True) or b""

    def close(self) -> None:
        for closer in (self.file.close, self.sock.close):
            try:
                closer()
            except OSError:
                continue


def _connection_error(exc: OSError) -> ImapError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ImapCertificateError(f"Certificate not trusted: {exc.verify_message}", "")
    if isinstance(exc, TimeoutError):
        return ImapConnectionError("The server did not answer in time.")
    if isinstance(exc, ssl.SSLError):
        return ImapConnectionError(f"TLS error: {exc.reason or exc}")
    return ImapConnectionError(f"Network error: {exc.strerror or exc}")


def _tls_context(config: ImapConfig, verify: bool) -> ssl.SSLContext:
    try:
        return tls.client_context(verify=verify, ca_file=config.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ImapError(f"Cannot use the CA file {config.ca_file}: {exc}") from exc


def _open_transport(config: ImapConfig, context: ssl.SSLContext | None) -> tuple[_Transport, bytes]:
    """Connect, do TLS or STARTTLS with ``context``, return (transport, greeting line)."""
    try:
        sock = socket.create_connection((config.host, config.port), timeout=config.timeout)
    except OSError as exc:
        raise _connection_error(exc) from exc
    transport = _Transport(sock)
    try:
        if config.security == Security.TLS:
            assert context is not None
            transport.start_tls(context, config.host)
        greeting = transport.readline()
        status = _STATUS.match(greeting, 2) if greeting.startswith(b"* ") else None
        if status is None or status.group(1).upper() == b"BYE":
            raise ImapConnectionError(_text(greeting[2:]).strip() or "No IMAP greeting.")
        if config.security == Security.STARTTLS:
            assert context is not None
            if status.group(1).upper() == b"PREAUTH":
                raise ImapError("The server pre-authenticated the connection; STARTTLS impossible.")
            transport.send(b"T0 STARTTLS\r\n")
            while True:
                line = transport.readline()
                if line.startswith(b"T0 "):
                    break
            answer = _STATUS.match(line, 3)
            if answer is None or answer.group(1).upper() != b"OK":
                raise ImapError(f"The server refused STARTTLS: {_text(line[3:]).strip()}")
            transport.start_tls(context, config.host)
    except BaseException:
        transport.close()
        raise
    return transport, greeting


def _presented_fingerprint(config: ImapConfig) -> str:
    """Fingerprint of the server's certificate via a non-verifying handshake (no login)."""
    try:
        transport, _ = _open_transport(config, _tls_context(config, verify=False))
    except ImapError:
        return ""
    try:
        return tls.fingerprint(transport.peer_certificate())
    finally:
        transport.close()


# --------------------------------------------------------------------------- decoding


def _text(value: bytes | None) -> str:
    """Bytes from the wire as str: UTF-8, else latin-1 (never raises)."""
    if value is None:
        return ""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "iso-8859-8-i": "iso-8859-8",
    "x-sjis": "shift_jis",
    "unicode-1-1-utf-7": "utf-7",
    "ascii": "utf-8",  # "us-ascii" text with 8-bit bytes is almost always UTF-8
    "us-ascii": "utf-8",
}


@functools.lru_cache(maxsize=256)
def _codec(charset: str | None) -> str | None:
    """A Python text codec name for a MIME charset, or None if unknown."""
    if not charset:
        return None
    name = charset.strip().strip('"').lower()
    name = _CHARSET_ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _decode_charset(data: bytes, charset: str | None) -> str:
    """Decode with a MIME charset; unknown charsets fall back to UTF-8, then latin-1."""
    codec = _codec(charset)
    if codec is not None:
        with suppress(LookupError, UnicodeError, ValueError):  # e.g. a stateful codec
            return data.decode(codec, "replace")
    return _text(data)


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?]*?)\?=")


def _decode_words(value: str) -> str:
    """RFC 2047 decoding; adjacent words of one charset are joined before decoding
    (senders split multi-byte characters across words). Never raises."""
    if "=?" not in value:
        return value
    out: list[str] = []
    pending = b""
    pending_charset: str | None = None
    position = 0
    for match in _ENCODED_WORD.finditer(value):
        gap = value[position : match.start()]
        if gap and (not gap.isspace() or position == 0):
            if pending:
                out.append(_decode_charset(pending, pending_charset))
                pending = b""
            out.append(gap)
        charset = match.group(1).split("*", 1)[0]
        payload = match.group(3).encode("ascii", "replace")
        if match.group(2) in "Bb":
            payload = payload.rstrip(b"=")
            if len(payload) % 4 == 1:  # a stray character; drop it rather than fail
                payload = payload[:-1]
            payload += b"=" * (-len(payload) % 4)
            try:
                raw = binascii.a2b_base64(payload)
            except binascii.Error:
                raw = b""
        else:
            raw = binascii.a2b_qp(payload, header=True)
        if pending and charset.lower() != (pending_charset or "").lower():
            out.append(_decode_charset(pending, pending_charset))
            pending = b""
        pending += raw
        pending_charset = charset
        position = match.end()
    if pending:
        out.append(_decode_charset(pending, pending_charset))
    out.append(value[position:])
    return "".join(out)


def _header_text(value: bytes | None) -> str:
    """An unstructured header value from ENVELOPE: unfolded and RFC 2047 decoded."""
    if not value:
        return ""
    text = _text(value)
    if "\n" in text or "\r" in text:
        text = re.sub(r"\r?\n[ \t]?", " ", text)
    return _decode_words(text).strip()


_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
)}  # fmt: skip
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@functools.lru_cache(maxsize=128)
def _tz(sign: bytes, hours: bytes, minutes: bytes) -> timezone:
    offset = timedelta(hours=int(hours), minutes=int(minutes))
    return timezone(-offset if sign == b"-" else offset)


_INTERNALDATE = re.compile(rb" ?(\d{1,2})-(\w{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _internaldate(value: object) -> datetime:
    match = _INTERNALDATE.match(value) if isinstance(value, bytes) else None
    if match is None:
        return _EPOCH
    day, month, year, hh, mm, ss, sign, tzh, tzm = match.groups()
    try:
        return datetime(
            int(year), _MONTHS[month.decode().lower()], int(day), int(hh), int(mm), int(ss),
            tzinfo=_tz(sign, tzh, tzm),
        )  # fmt: skip
    except (KeyError, ValueError):
        return _EPOCH


_HEADER_DATE = re.compile(
    rb"(?:[A-Za-z]{3},\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+(\d\d):(\d\d)(?::(\d\d))?"
    rb"\s+([+-])(\d\d)(\d\d)(?:\s*\(.*\))?\s*\Z"
)


def _header_date(value: bytes | None) -> datetime | None:
    """The Date header as an aware datetime (naive or -0000 means UTC); None if unusable."""
    if not value:
        return None
    match = _HEADER_DATE.match(value.strip())
    if match is not None:
        day, month, year, hh, mm, ss, sign, tzh, tzm = match.groups()
        try:
            return datetime(
                int(year), _MONTHS[month.decode().lower()], int(day), int(hh), int(mm),
                int(ss or 0), tzinfo=_tz(sign, tzh, tzm),
            )  # fmt: skip
        except (KeyError, ValueError):
            return None
    try:
        parsed = parsedate_to_datetime(_text(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


_MISSING_HOSTS = {b"MISSING_DOMAIN", b".MISSING-HOST-NAME."}


@functools.lru_cache(maxsize=4096)
def _address(name: bytes | None, mailbox: bytes | None, host: bytes | None) -> Address:
    local = _text(mailbox)
    email = f"{local}@{_text(host)}" if host and host not in _MISSING_HOSTS else local
    return Address(name=_header_text(name), email=email)


def _addresses(value: object) -> tuple[Address, ...]:
    """ENVELOPE address list -> Addresses; group markers (RFC 3501 7.4.2) are dropped."""
    if not isinstance(value, list):
        return ()
    out = []
    for item in value:
        if not isinstance(item, list) or len(item) < 4:
            continue
        name, _, mailbox, host = item[:4]
        if mailbox is None or host is None:  # group start (host NIL) or end (mailbox NIL)
            continue
        if isinstance(mailbox, bytes) and isinstance(host, bytes):
            out.append(_address(name if isinstance(name, bytes) else None, mailbox, host))
    return tuple(out)


_MSG_ID = re.compile(r"<[^<>]*>")


def _message_ids(text: str) -> list[str]:
    return ["".join(m.split()) for m in _MSG_ID.findall(text)]


def _collapse(text: str, limit: int = _SNIPPET_CHARS) -> str:
    return " ".join(text.split())[:limit].rstrip()


_HTML_DROP = re.compile(
    r"<(script|style|head|title)\b.*?(?:</\1\s*>|\Z)|<!--.*?(?:-->|\Z)", re.I | re.S
)
_HTML_INLINE = re.compile(
    r"</?(?:a|abbr|b|big|code|em|font|i|mark|s|small|span|strike|strong|sub|sup|u)\b[^>]*>", re.I
)
_HTML_TAG = re.compile(r"<[^>]*>?")


def _html_to_text(markup: str) -> str:
    """Visible text of (possibly truncated) HTML: inline tags vanish, others separate."""
    text = _HTML_TAG.sub(" ", _HTML_INLINE.sub("", _HTML_DROP.sub(" ", markup)))
    return html.unescape(text)


def _decode_transfer(data: bytes, encoding: str | None) -> bytes:
    """Undo base64 / quoted-printable (lenient: truncated input decodes as far as it goes)."""
    encoding = (encoding or "").lower()
    if encoding == "base64":
        try:
            return binascii.a2b_base64(data)  # skips line breaks and other junk
        except binascii.Error:  # truncated (a snippet's first 2 KB): decode what is whole
            compact = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
            return binascii.a2b_base64(compact[: len(compact) - len(compact) % 4])
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data)
    return data


# --------------------------------------------------------------------------- BODYSTRUCTURE


def _pairs(value: object) -> list[tuple[str, bytes]]:
    if not isinstance(value, list):
        return []
    out = []
    for key, item in zip(value[0::2], value[1::2], strict=False):
        if isinstance(key, bytes) and isinstance(item, bytes):
            out.append((_text(key).lower(), item))
    return out


_RFC2231_KEY = re.compile(r"(.+?)\*(?:(\d+)(\*)?)?\Z")


def _params(value: object) -> dict[str, str]:
    """Body parameters as a fresh dict (the same few lists recur in every message, so
    decoding is cached)."""
    if not isinstance(value, list) or not value:
        return {}
    try:
        return dict(_params_cached(tuple(value)))
    except TypeError:  # a nested list where a string belongs: unhashable
        return _decode_params(value)


@functools.lru_cache(maxsize=1024)
def _params_cached(value: tuple) -> dict[str, str]:
    return _decode_params(list(value))


def _decode_params(value: list) -> dict[str, str]:
    """RFC 2231 (charset'lang'%XX, continuations) and, as mailers do it, RFC 2047 in
    quoted values are decoded."""
    plain: dict[str, str] = {}
    extended: dict[str, list[tuple[int, bool, bytes]]] = {}
    for key, raw in _pairs(value):
        match = _RFC2231_KEY.match(key)
        if match is None:
            plain[key] = _header_text(raw)
            continue
        name, number, star = match.groups()
        encoded = number is None or star is not None
        extended.setdefault(name, []).append((int(number or 0), encoded, raw))
    for name, pieces in extended.items():
        pieces.sort(key=lambda piece: piece[0])
        charset = None
        data = b""
        for position, (_, encoded, raw) in enumerate(pieces):
            if encoded:
                if position == 0 and raw.count(b"'") >= 2:
                    prefix, _, rest = raw.partition(b"'")
                    _, _, raw = rest.partition(b"'")
                    charset = _text(prefix) or None
                raw = _percent_decode(raw)
            data += raw
        plain[name] = _decode_charset(data, charset)
    return plain


def _percent_decode(raw: bytes) -> bytes:
    def replace(match: re.Match[bytes]) -> bytes:
        return bytes([int(match.group(1), 16)])

    return re.sub(rb"%([0-9A-Fa-f]{2})", replace, raw)


def _lower(value: object, default: str) -> str:
    return _lower_cached(value) if isinstance(value, bytes) else default


@functools.lru_cache(maxsize=512)
def _lower_cached(value: bytes) -> str:
    return _text(value).lower()


def _int(value: object, default: int = 0) -> int:
    try:
        return int(value) if isinstance(value, (bytes, int)) else default
    except ValueError:
        return default


def _disposition(value: object) -> tuple[str | None, dict[str, str]]:
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return _text(value[0]).lower(), _params(value[1] if len(value) > 1 else None)
    return None, {}


def _body_node(body: list, part: str) -> dict:
    """One BODYSTRUCTURE level as the JSON tree of MessageSummary.bodystructure."""
    if body and isinstance(body[0], list):  # multipart: children..., subtype, extensions
        children_raw = []
        index = 0
        while index < len(body) and isinstance(body[index], list):
            children_raw.append(body[index])
            index += 1
        ext = body[index:]
        prefix = f"{part}." if part else ""
        children = [_body_node(child, f"{prefix}{n}") for n, child in enumerate(children_raw, 1)]
        disposition, disp_params = _disposition(ext[2] if len(ext) > 2 else None)
        return {
            "part": part,
            "type": "multipart",
            "subtype": _lower(ext[0] if ext else None, "mixed"),
            "params": _params(ext[1] if len(ext) > 1 else None),
            "id": None,
            "encoding": None,
            "size": sum(child["size"] for child in children),
            "disposition": disposition,
            "filename": disp_params.get("filename"),
            "children": children,
        }
    body = list(body) + [None] * max(0, 7 - len(body))
    kind = _lower(body[0], "text")
    subtype = _lower(body[1], "plain")
    params = _params(body[2])
    children: list[dict] = []
    ext_start = 7
    if kind == "text":
        ext_start = 8  # + lines
    elif kind == "message" and len(body) > 9 and isinstance(body[8], list):
        inner = body[8]  # envelope at 7, body at 8, lines at 9
        if inner and isinstance(inner[0], list):
            child = _body_node(inner, part)
            child["part"] = f"{part}.TEXT"  # the encapsulated message's body
            children.append(child)
        elif inner:
            children.append(_body_node(inner, f"{part}.1"))
        ext_start = 10
    ext = body[ext_start:]
    disposition, disp_params = _disposition(ext[1] if len(ext) > 1 else None)
    content_id = body[3]
    return {
        "part": part,
        "type": kind,
        "subtype": subtype,
        "params": params,
        "id": _text(content_id) if isinstance(content_id, bytes) else None,
        "encoding": _lower(body[5], "7bit"),
        "size": _int(body[6]),
        "disposition": disposition,
        "filename": disp_params.get("filename") or params.get("name"),
        "children": children,
    }


def _bodystructure(value: object) -> dict:
    if not isinstance(value, list) or not value:
        return _body_node([b"text", b"plain"], "1")
    return _body_node(value, "" if isinstance(value[0], list) else "1")


def _walk(node: dict, parent: dict | None = None) -> Iterator[tuple[dict, dict | None]]:
    yield node, parent
    for child in node["children"]:
        yield from _walk(child, node)


def _has_attachments(tree: dict) -> bool:
    """Attachment disposition, an attached message, or a non-text leaf with a file name
    (except inline images of an HTML body: Content-ID inside multipart/related)."""
    for node, parent in _walk(tree):
        kind = node["type"]
        if node["disposition"] == "attachment":
            return True
        if kind == "message" and node["subtype"] in ("rfc822", "global") and node["part"]:
            return True
        if kind in ("text", "multipart", "message") or not node["filename"]:
            continue
        related = parent is not None and parent["subtype"] == "related"
        if not (related and node["id"] and node["disposition"] != "attachment"):
            return True
    return False


def _text_part(tree: dict) -> dict | None:
    """The part a preview is made from: first text/plain, else first text/html (not
    attachments, not inside attached messages)."""
    best = None
    stack = [tree]
    while stack:
        node = stack.pop(0)
        if node["type"] == "message":
            continue
        if node["type"] == "text" and node["disposition"] != "attachment":
            if node["subtype"] == "plain":
                return node
            if node["subtype"] == "html" and best is None:
                best = node
        stack[0:0] = node["children"]
    return best


def _analyse_body(value: object) -> tuple[dict, bool, dict | None]:
    """(tree, has_attachments, text part) of a BODYSTRUCTURE; odd ones never raise."""
    try:
        tree = _bodystructure(value)
        return tree, _has_attachments(tree), _text_part(tree)
    except (TypeError, ValueError, IndexError, AttributeError, RecursionError):
        tree = _bodystructure(None)
        return tree, False, None


def _snippet_from_part(data: bytes, node: dict) -> str:
    text = _decode_charset(_decode_transfer(data, node["encoding"]), node["params"].get("charset"))
    if node["subtype"] == "html":
        text = _html_to_text(text)
    return _collapse(text)


# --------------------------------------------------------------------------- folders

_ROLE_FLAGS = {
    "\\sent": "sent",
    "\\drafts": "drafts",
    "\\trash": "trash",
    "\\junk": "junk",
    "\\archive": "archive",
}
_ROLE_NAMES = {
    "sent": ("sent", "sent items", "sent messages", "sent mail", "gesendet",
             "gesendete objekte", "gesendete elemente", "envoyés", "enviados"),
    "drafts": ("drafts", "draft", "entwürfe", "brouillons", "borradores"),
    "trash": ("trash", "deleted items", "deleted messages", "bin", "papierkorb",
              "gelöschte elemente", "gelöschte objekte", "corbeille", "papelera"),
    "junk": ("junk", "spam", "junk e-mail", "junk email", "junk-e-mail", "bulk mail",
             "spamverdacht", "courrier indésirable"),
    "archive": ("archive", "archives", "archiv"),
}  # fmt: skip
_NAME_ROLE = {name: role for role, names in _ROLE_NAMES.items() for name in names}


def _decode_mailbox(raw: bytes) -> str:
    if raw.upper() == b"INBOX":
        return "INBOX"
    if b"&" not in raw:
        return _text(raw)
    try:
        return imap_utf7.decode(raw)
    except (UnicodeError, ValueError, binascii.Error):
        return _text(raw)


def _folder(attributes: list, delimiter: bytes | None, raw_name: bytes) -> Folder:
    flags = tuple(_text(a) for a in attributes if isinstance(a, bytes))
    lowered = {flag.lower() for flag in flags}
    path = _decode_mailbox(raw_name)
    delim = _text(delimiter) if delimiter else None
    parent: str | None = None
    name = path
    if delim and delim in path:
        parent, _, name = path.rpartition(delim)
    role = "inbox" if path == "INBOX" else next(
        (_ROLE_FLAGS[flag.lower()] for flag in flags if flag.lower() in _ROLE_FLAGS), None
    )  # fmt: skip
    selectable = not ({"\\noselect", "\\nonexistent"} & lowered)
    return Folder(path, name, parent or None, delim, flags, role, selectable)


def _assign_name_roles(folders: list[Folder]) -> list[Folder]:
    """Give well-known names a role, for roles that no folder got via SPECIAL-USE;
    top-level names win over ones under INBOX, the first match wins."""
    taken = {folder.role for folder in folders if folder.role}
    chosen: dict[str, int] = {}
    for under_inbox in (False, True):
        for index, folder in enumerate(folders):
            if folder.role or not folder.selectable:
                continue
            if folder.parent != ("INBOX" if under_inbox else None):
                continue
            role = _NAME_ROLE.get(folder.name.casefold())
            if role and role not in taken and role not in chosen:
                chosen[role] = index
    result = list(folders)
    for role, index in chosen.items():
        result[index] = replace(result[index], role=role)
    return result


def _status_values(items: object) -> dict[str, int]:
    return {key.upper(): _int(value) for key, value in _pairs(items)}


def _folder_status(values: dict[str, int], condstore: bool) -> FolderStatus:
    modseq = values.get("HIGHESTMODSEQ") if condstore else None
    return FolderStatus(
        uidvalidity=values.get("UIDVALIDITY", 0),
        uidnext=values.get("UIDNEXT", 0),
        messages=values.get("MESSAGES", 0),
        unseen=values.get("UNSEEN", 0),
        highestmodseq=modseq or None,
    )


# --------------------------------------------------------------------------- FETCH data


def _kw(response: list, index: int = 0) -> bytes:
    """The upper-cased atom at ``index`` of a response, b"" if there is none."""
    if len(response) > index and isinstance(response[index], bytes):
        return response[index].upper()
    return b""


def _fetch_items(response: list) -> tuple[int, dict[bytes, object]] | None:
    """(uid, items) of an untagged FETCH response, or None for anything else."""
    if len(response) < 3 or not isinstance(response[2], list) or _kw(response, 1) != b"FETCH":
        return None
    raw = response[2]
    items = {
        key.upper(): value
        for key, value in zip(raw[0::2], raw[1::2], strict=False)
        if isinstance(key, bytes)
    }
    uid = items.get(b"UID")
    if not isinstance(uid, bytes) or not uid.isdigit():
        return None  # an unsolicited FETCH (another session changed flags)
    return int(uid), items


def _flags(value: object) -> frozenset[str]:
    if not isinstance(value, list):
        return frozenset()
    # \Recent is per-session noise (and gone in IMAP4rev2).
    return frozenset(_text(flag) for flag in value if isinstance(flag, bytes)) - {"\\Recent"}


def _modseq(value: object) -> int | None:
    if isinstance(value, list) and value:
        return _int(value[0]) or None
    return None


def _section(items: dict[bytes, object], prefix: bytes) -> object:
    """The value of the first item whose (upper-case) name starts with ``prefix``."""
    for key, value in items.items():
        if key.startswith(prefix):
            return value
    return None


_REFERENCES_ITEM = b"BODY[HEADER.FIELDS (REFERENCES)]"  # as requested, and as Dovecot echoes it


def _summary(uid: int, items: dict[bytes, object]) -> tuple[MessageSummary, dict | None]:
    """Build a MessageSummary; also return the text part if the snippet still needs it."""
    envelope = items.get(b"ENVELOPE")
    if not isinstance(envelope, list) or len(envelope) < 10:
        envelope = [None] * 10
    tree, has_attachments, text_part = _analyse_body(items.get(b"BODYSTRUCTURE"))
    references_raw = items.get(_REFERENCES_ITEM) or _section(items, b"BODY[HEADER.FIELDS")
    references = _message_ids(_text(references_raw)) if isinstance(references_raw, bytes) else []
    message_id = _text(envelope[9]).strip() if isinstance(envelope[9], bytes) else ""
    in_reply_to = _text(envelope[8]) if isinstance(envelope[8], bytes) else ""
    reply_ids = _message_ids(in_reply_to)
    senders = _addresses(envelope[2])
    need_part = None
    preview = items.get(b"PREVIEW")
    if isinstance(preview, bytes):
        snippet = _collapse(_text(preview))
    else:  # not offered (or NIL): the caller fetches the start of the text part
        snippet = ""
        need_part = text_part
    date_raw = envelope[0]
    subject_raw = envelope[1]
    summary = MessageSummary(
        uid=uid,
        flags=_flags(items.get(b"FLAGS")),
        internaldate=_internaldate(items.get(b"INTERNALDATE")),
        size=_int(items.get(b"RFC822.SIZE")),
        modseq=_modseq(items.get(b"MODSEQ")),
        date=_header_date(date_raw if isinstance(date_raw, bytes) else None),
        subject=_header_text(subject_raw if isinstance(subject_raw, bytes) else None),
        message_id=message_id,
        in_reply_to=reply_ids[0] if reply_ids else in_reply_to.strip(),
        references=tuple(references),
        sender=senders[0] if senders else None,
        to=_addresses(envelope[5]),
        cc=_addresses(envelope[6]),
        reply_to=_addresses(envelope[4]),
        has_attachments=has_attachments,
        bodystructure=tree,
        snippet=snippet,
    )
    return summary, need_part


def _imap_date(day: date) -> bytes:
    if isinstance(day, datetime):
        day = day.date()
    if not isinstance(day, date):
        raise ValueError(f"expected a date, not {day!r}")
    return f"{day.day}-{_MONTH_NAMES[day.month - 1]}-{day.year:04d}".encode("ascii")


def _imap_datetime(when: datetime) -> bytes:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    offset = when.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    zone = f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    text = f"{when.day:02d}-{_MONTH_NAMES[when.month - 1]}-{when:%Y %H:%M:%S} {zone}"
    return b'"' + text.encode("ascii") + b'"'


_SECTION_PART = re.compile(r"(?:[1-9]\d*(?:\.[1-9]\d*)*)?")
_SECTION = re.compile(r"(?:[1-9]\d*(?:\.[1-9]\d*)*\.)?(?:TEXT|HEADER|MIME)", re.I)


def _section_spec(part: str) -> str:
    if not isinstance(part, str) or not (_SECTION_PART.fullmatch(part) or _SECTION.fullmatch(part)):
        raise ValueError(f"not an IMAP body part number: {part!r}")
    return part.upper()


# --------------------------------------------------------------------------- session


class ImapSession:
    """One logged-in IMAP connection (connects in the constructor); a context manager.

    Not thread-safe. Mutating calls (flags, move, expunge) re-open a folder selected
    read-only in read-write mode first.
    """

    capabilities: frozenset[str]

    def __init__(self, config: ImapConfig) -> None:
        self.config = _checked_config(config)
        self.capabilities = frozenset()
        self._enabled: frozenset[str] = frozenset()
        self._transport: _Transport | None = None
        self._tag = 0
        self._selected: str | None = None
        self._readonly = True
        self._selection: SelectResult | None = None
        self._connect()
        try:
            self._login()
            self._enable()
        except BaseException:
            self._drop()
            raise

    # -- lifecycle

    def __enter__(self) -> ImapSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """LOGOUT quietly and close the socket (idempotent)."""
        if self._transport is None:
            return
        try:
            with suppress(ImapError):  # the connection is going away anyway
                self._transport.send(self._next_tag() + b" LOGOUT\r\n")
                for _ in range(8):  # "* BYE" then the tagged OK; don't wait for a dawdler
                    if not self._transport.readline().startswith(b"*"):
                        break
        finally:
            self._drop()

    def _drop(self) -> None:
        transport, self._transport = self._transport, None
        self._selected = None
        self._selection = None
        if transport is not None:
            transport.close()

    # -- connection and login

    def _connect(self) -> None:
        config = self.config
        if config.security == Security.NONE:
            self._transport, greeting = _open_transport(config, None)
        elif config.tls_fingerprint:
            self._transport, greeting = _open_transport(config, _tls_context(config, False))
            presented = tls.fingerprint(self._transport.peer_certificate())
            if not tls.same_fingerprint(presented, config.tls_fingerprint):
                self._drop()
                raise ImapCertificateError(
                    "The server presented a different certificate than the trusted one.",
                    presented,
                )
        else:
            try:
                self._transport, greeting = _open_transport(config, _tls_context(config, True))
            except ImapCertificateError as exc:
                raise ImapCertificateError(exc.reply, _presented_fingerprint(config)) from None
        status = _STATUS.match(greeting, 2)
        self._preauth = bool(status and status.group(1).upper() == b"PREAUTH")
        if config.security != Security.STARTTLS and status and status.group(2):
            self._absorb_code(status.group(2))

    def _login(self) -> None:
        if self._preauth:
            self._refresh_capabilities()
            return
        if not self.capabilities:
            self._refresh_capabilities()
        user, password = self.config.username, self.config.password
        try:
            if "LOGINDISABLED" in self.capabilities:
                if "AUTH=PLAIN" not in self.capabilities:
                    raise ImapAuthError(
                        "The server disables LOGIN and offers no AUTHENTICATE PLAIN."
                    )
                reply = self._authenticate_plain(user, password)
            else:
                reply = self._command(b"LOGIN", _astring(user), _astring(password))
        except ImapCommandError as exc:
            if "[UNAVAILABLE]" in exc.reply.upper():
                raise ImapConnectionError(exc.reply) from None
            raise ImapAuthError(exc.reply) from None
        self.capabilities = frozenset()
        for name, rest in reply.codes:
            if name == "CAPABILITY":
                self.capabilities = frozenset(rest.upper().split())
        self._capabilities_from(reply)
        if not self.capabilities:
            self._refresh_capabilities()

    def _authenticate_plain(self, user: str, password: str) -> _Reply:
        token = binascii.b2a_base64(
            b"\0" + user.encode("utf-8") + b"\0" + password.encode("utf-8"), newline=False
        )
        if "SASL-IR" in self.capabilities:
            return self._command(b"AUTHENTICATE", b"PLAIN", token)
        tag = self._next_tag()
        self._send(tag + b" AUTHENTICATE PLAIN\r\n")
        pending: list[list] = []
        self._await_continuation(tag, pending)
        self._send(token + b"\r\n")
        return self._collect(tag, pending)

    def _refresh_capabilities(self) -> None:
        self._capabilities_from(self._command(b"CAPABILITY"))

    def _capabilities_from(self, reply: _Reply) -> None:
        for response in reply.data:
            if _kw(response) == b"CAPABILITY":
                names = (_text(c).upper() for c in response[1:] if isinstance(c, bytes))
                self.capabilities = frozenset(names)

    def _enable(self) -> None:
        wanted = [c for c in ("CONDSTORE", "QRESYNC") if c in self.capabilities]
        if not wanted or "ENABLE" not in self.capabilities:
            return
        reply = self._command(b"ENABLE", *(c.encode() for c in wanted))
        enabled = set()
        for response in reply.data:
            if _kw(response) == b"ENABLED":
                enabled.update(_text(c).upper() for c in response[1:] if isinstance(c, bytes))
        self._enabled = frozenset(enabled)

    def _absorb_code(self, code: bytes) -> None:
        name, _, rest = _text(code).partition(" ")
        if name.upper() == "CAPABILITY":
            self.capabilities = frozenset(rest.upper().split())

    # -- command plumbing

    def _next_tag(self) -> bytes:
        self._tag += 1
        return b"S%d" % self._tag

    def _send(self, data: bytes) -> None:
        if self._transport is None:
            raise ImapConnectionError("Not connected (the connection was closed earlier).")
        try:
            self._transport.send(data)
        except ImapError:
            self._drop()
            raise

    def _read(self) -> list[bytes]:
        if self._transport is None:
            raise ImapConnectionError("Not connected (the connection was closed earlier).")
        try:
            return self._transport.read_response()
        except ImapError:
            self._drop()
            raise

    def _command(self, *args: bytes) -> _Reply:
        """Send one command (``_Literal`` args become literals) and collect its reply."""
        tag = self._next_tag()
        pending: list[list] = []
        try:
            line = tag
            for arg in args:
                if isinstance(arg, _Literal):
                    if self._nonsync_literal(len(arg)):
                        line += b" {%d+}\r\n" % len(arg) + arg
                        continue
                    self._send(line + b" {%d}\r\n" % len(arg))
                    self._await_continuation(tag, pending)
                    line = bytes(arg)
                else:
                    line += b" " + arg
            self._send(line + b"\r\n")
            return self._collect(tag, pending)
        except ImapCommandError:
            raise
        except BaseException:
            # Anything else (timeout, ^C, a bug) leaves the stream out of step.
            self._drop()
            raise

    def _nonsync_literal(self, size: int) -> bool:
        caps = self.capabilities
        return "LITERAL+" in caps or ("LITERAL-" in caps and size <= 4096)

    def _await_continuation(self, tag: bytes, pending: list[list]) -> None:
        while True:
            parts = self._read()
            first = parts[0]
            if first.startswith(b"+"):
                return
            if first.startswith(tag + b" "):
                self._finish(first, len(tag) + 1)
                raise ImapCommandError("The server refused the command.")
            if first.startswith(b"* "):
                self._untagged(parts, _Reply(data=pending))

    def _collect(self, tag: bytes, pending: list[list]) -> _Reply:
        reply = _Reply(data=pending)
        prefix = tag + b" "
        while True:
            parts = self._read()
            first = parts[0]
            if first.startswith(b"* "):
                self._untagged(parts, reply)
            elif first.startswith(prefix):
                reply.text = self._finish(first, len(prefix), reply)
                return reply
            # continuation requests or stray lines for other tags: ignore

    def _untagged(self, parts: list[bytes], reply: _Reply) -> None:
        first = parts[0]
        status = _STATUS.match(first, 2)
        if status is None:
            response = _tokenize(parts)
            if len(response) > 1:
                reply.data.append(response[1:])
            return
        kind = status.group(1).upper()
        if kind == b"BYE":
            self._drop()
            raise ImapConnectionError(_text(first[2:]).strip())
        if status.group(2):
            reply.codes.append(_split_code(status.group(2)))

    def _finish(self, line: bytes, start: int, reply: _Reply | None = None) -> str:
        status = _STATUS.match(line, start)
        text = _text(line[start:]).strip()
        if status is None:
            raise ImapCommandError(text or "Malformed server response.")
        if status.group(1).upper() != b"OK":
            raise ImapCommandError(text[len(status.group(1)) :].strip() or text)
        if reply is not None and status.group(2):
            reply.codes.append(_split_code(status.group(2)))
        return text[2:].strip()

    def _pipeline(self, commands: list[bytes]) -> tuple[_Reply, list[ImapCommandError | None]]:
        """Send literal-free commands at once, then read all replies (one round trip).
        Untagged data of all of them is merged; per command: None or its error."""
        tags = [self._next_tag() for _ in commands]
        merged = _Reply()
        results: list[ImapCommandError | None] = []
        try:
            self._send(
                b"".join(
                    tag + b" " + cmd + b"\r\n" for tag, cmd in zip(tags, commands, strict=True)
                )
            )
            for tag in tags:
                try:
                    self._collect(tag, merged.data)
                    results.append(None)
                except ImapCommandError as exc:
                    results.append(exc)
        except BaseException:
            self._drop()
            raise
        return merged, results

    # -- folders

    def list_folders(self) -> list[Folder]:
        """All folders (LIST "" "*"), INBOX first, then by path; roles filled in."""
        return self._list(status=False)[0]

    def _list(self, status: bool) -> tuple[list[Folder], dict[str, FolderStatus]]:
        args = [b"LIST", b'""', b'"*"']
        returns = []
        if "SPECIAL-USE" in self.capabilities and "LIST-EXTENDED" in self.capabilities:
            returns.append(b"SPECIAL-USE")
        if status:
            returns.append(b"STATUS " + self._status_items())
        if returns:
            args.append(b"RETURN (" + b" ".join(returns) + b")")
        reply = self._command(*args)
        folders: dict[str, Folder] = {}
        statuses: dict[str, FolderStatus] = {}
        condstore = "CONDSTORE" in self.capabilities
        for response in reply.data:
            keyword = _kw(response)
            if keyword == b"LIST" and len(response) >= 4 and isinstance(response[3], bytes):
                attributes = response[1] if isinstance(response[1], list) else []
                delimiter = response[2] if isinstance(response[2], bytes) else None
                folder = _folder(attributes, delimiter, response[3])
                folders.setdefault(folder.path, folder)
            elif keyword == b"STATUS" and len(response) >= 3 and isinstance(response[1], bytes):
                path = _decode_mailbox(response[1])
                statuses[path] = _folder_status(_status_values(response[2]), condstore)
        ordered = sorted(folders.values(), key=lambda f: (f.path != "INBOX", f.path.casefold()))
        return _assign_name_roles(ordered), statuses

    def _status_items(self) -> bytes:
        items = b"MESSAGES UIDNEXT UIDVALIDITY UNSEEN"
        if "CONDSTORE" in self.capabilities:
            items += b" HIGHESTMODSEQ"
        return b"(" + items + b")"

    def folder_statuses(self) -> dict[str, FolderStatus]:
        """Status of every selectable folder: LIST-STATUS (one round trip) when offered,
        else LIST plus pipelined STATUS commands (also one round trip)."""
        if "LIST-STATUS" in self.capabilities:
            folders, statuses = self._list(status=True)
            selectable = {f.path for f in folders if f.selectable}
            return {path: s for path, s in statuses.items() if path in selectable}
        folders = [f for f in self.list_folders() if f.selectable]
        if not folders:
            return {}
        items = self._status_items()
        merged, errors = self._pipeline(
            [b"STATUS " + _mailbox(f.path) + b" " + items for f in folders]
        )
        condstore = "CONDSTORE" in self.capabilities
        statuses = {}
        for response in merged.data:
            if _kw(response) == b"STATUS" and len(response) >= 3 and isinstance(response[1], bytes):
                path = _decode_mailbox(response[1])
                statuses[path] = _folder_status(_status_values(response[2]), condstore)
        return {
            folder.path: statuses[folder.path]
            for folder, error in zip(folders, errors, strict=True)
            if error is None and folder.path in statuses
        }

    def folder_status(self, path: str) -> FolderStatus:
        reply = self._command(b"STATUS", _mailbox(path), self._status_items())
        condstore = "CONDSTORE" in self.capabilities
        for response in reply.data:
            if _kw(response) == b"STATUS" and len(response) >= 3:
                return _folder_status(_status_values(response[2]), condstore)
        raise ImapCommandError(f"The server sent no STATUS for {path!r}.")

    def folder_with_role(self, role: str, *, create: str) -> str:
        """The path of the selectable folder with this role ("sent", "drafts"...), or of
        ``create``, made now, when the account has none."""
        for folder in self.list_folders():
            if folder.role == role and folder.selectable:
                return folder.path
        self.create_folder(create)
        return create

    def create_folder(self, path: str) -> None:
        """CREATE + SUBSCRIBE; missing parents are created by the server."""
        mailbox = _mailbox(path)
        self._command(b"CREATE", mailbox)
        self._command(b"SUBSCRIBE", mailbox)

    def rename_folder(self, old: str, new: str) -> None:
        """RENAME (children move along), then move the subscriptions of the folder and its
        children: RFC 3501 leaves subscriptions alone, and so does Dovecot."""
        old_mailbox, new_mailbox = _mailbox(old), _mailbox(new)
        old, new = _canonical(old), _canonical(new)
        subscribed = self._subscribed_within(old)
        if self._selected is not None and self._selected == old:
            self._deselect()
        self._command(b"RENAME", old_mailbox, new_mailbox)
        if old != "INBOX":  # renaming INBOX moves its messages; INBOX itself stays
            subscribed.add(old)
            for path in sorted(subscribed):
                self._quietly(b"UNSUBSCRIBE", _mailbox(path))
        for path in sorted(subscribed):
            self._quietly(b"SUBSCRIBE", _mailbox(new + path[len(old) :]))
        # The rename happened; a \Noselect parent just cannot be subscribed (Dovecot).
        self._quietly(b"SUBSCRIBE", new_mailbox)

    def _subscribed_within(self, path: str) -> set[str]:
        """Subscribed folders below ``path`` (LSUB "" "path*", filtered by delimiter)."""
        reply = self._command(b"LSUB", b'""', _quote(imap_utf7.encode(path) + b"*"))
        found = set()
        for response in reply.data:
            if _kw(response) != b"LSUB" or len(response) < 4:
                continue
            delimiter, raw_name = response[2], response[3]
            if isinstance(delimiter, bytes) and isinstance(raw_name, bytes):
                name = _decode_mailbox(raw_name)
                if name.startswith(path + _text(delimiter)):
                    found.add(name)
        return found

    def delete_folder(self, path: str) -> None:
        mailbox = _mailbox(path)
        if self._selected is not None and self._selected == _canonical(path):
            self._deselect()
        self._command(b"DELETE", mailbox)
        self._quietly(b"UNSUBSCRIBE", mailbox)

    def _quietly(self, *args: bytes) -> None:
        try:
            self._command(*args)
        except ImapCommandError:
            return

    def _deselect(self) -> None:
        """Leave the selected folder without expunging anything."""
        if "UNSELECT" in self.capabilities:
            self._command(b"UNSELECT")
        else:
            if not self._readonly:
                self._command(b"EXAMINE", _mailbox(self._selected or "INBOX"))
            self._command(b"CLOSE")
        self._selected = None
        self._selection = None

    def noop(self) -> None:
        self._command(b"NOOP")

    # -- selection

    def select(self, path: str, *, readonly: bool = True) -> SelectResult:
        """SELECT (or EXAMINE when ``readonly``), with CONDSTORE when offered."""
        mailbox = _mailbox(path)
        args = [b"EXAMINE" if readonly else b"SELECT", mailbox]
        if "CONDSTORE" in self.capabilities:
            args.append(b"(CONDSTORE)")
        self._selected = None  # a failed SELECT leaves nothing selected
        self._selection = None
        reply = self._command(*args)
        codes = dict(reply.codes)
        exists = 0
        flags: frozenset[str] = frozenset()
        for response in reply.data:
            if _kw(response, 1) == b"EXISTS":
                exists = _int(response[0])
            elif _kw(response) == b"FLAGS" and len(response) > 1:
                flags = _flags(response[1])
        uidnext = _code_int(codes, "UIDNEXT") or self._guess_uidnext(exists)
        modseq = 0 if "NOMODSEQ" in codes else _code_int(codes, "HIGHESTMODSEQ")
        self._selected = _canonical(path)
        self._readonly = readonly
        self._selection = SelectResult(
            uidvalidity=_code_int(codes, "UIDVALIDITY"),
            uidnext=uidnext,
            exists=exists,
            highestmodseq=modseq or None,
            flags=flags,
            permanent_flags=_permanent_flags(codes),
        )
        return self._selection

    def _guess_uidnext(self, exists: int) -> int:
        """UIDNEXT for servers that omit it: highest uid + 1."""
        if not exists:
            return 1
        reply = self._command(b"UID", b"FETCH", b"*", b"(UID)")
        uids = [parsed[0] for r in reply.data if (parsed := _fetch_items(r))]
        return max(uids, default=0) + 1

    def _require_selected(self) -> None:
        if self._selected is None:
            raise RuntimeError("select() a folder first")

    def _require_writable(self) -> None:
        self._require_selected()
        if self._readonly:
            self.select(self._selected or "INBOX", readonly=False)

    # -- reading messages

    def uids(self, *, min_uid: int = 1) -> list[int]:
        """All uids >= min_uid, ascending ("n:*" also matches the highest uid below n,
        which is filtered out)."""
        _checked_uids([min_uid])
        self._require_selected()
        found = self._search([b"UID", b"%d:*" % min_uid], utf8=False)
        return [uid for uid in found if uid >= min_uid]

    def _search(self, criteria: list[bytes], utf8: bool) -> list[int]:
        args = [b"UID", b"SEARCH"]
        esearch = "ESEARCH" in self.capabilities
        if esearch:
            args.append(b"RETURN (ALL)")
        if utf8:
            args += [b"CHARSET", b"UTF-8"]
        reply = self._command(*args, *criteria)
        result: list[int] = []
        star = self._selection.uidnext - 1 if self._selection else None
        for response in reply.data:
            keyword = _kw(response)
            if keyword == b"SEARCH":
                result.extend(_int(n) for n in response[1:] if isinstance(n, bytes) and n.isdigit())
            elif keyword == b"ESEARCH":  # ESEARCH (TAG "S5") UID ALL 1:5,7
                for key, value in itertools.pairwise(response):
                    if _kw([key]) == b"ALL" and isinstance(value, bytes):
                        result.extend(_expand_set(value, star))
        return sorted(set(result))

    def fetch_summaries(self, uids: Sequence[int]) -> list[MessageSummary]:
        """Summaries of the given uids (those that still exist), in the order asked.

        One UID FETCH carries everything; the snippet comes from PREVIEW when offered,
        else from one extra FETCH per distinct text part number (BODY.PEEK[n]<0.2048>).
        """
        wanted = _checked_uids(uids)
        self._require_selected()
        if not wanted:
            return []
        items = [b"UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE"]
        items.append(b"BODY.PEEK" + _REFERENCES_ITEM[4:])
        if self._selection is not None and self._selection.highestmodseq is not None:
            items.append(b"MODSEQ")
        if "PREVIEW" in self.capabilities:
            items.append(b"PREVIEW")
        request = b"(" + b" ".join(items) + b")"
        found: dict[int, MessageSummary] = {}
        needs: dict[str, list[tuple[int, dict]]] = {}
        wanted_set = set(wanted)
        for uid_set in _uid_sets(wanted):
            reply = self._command(b"UID", b"FETCH", uid_set, request)
            for response in reply.data:
                parsed = _fetch_items(response)
                if parsed is None or parsed[0] not in wanted_set or b"ENVELOPE" not in parsed[1]:
                    continue
                summary, part = _summary(*parsed)
                found[summary.uid] = summary
                if part is not None:
                    needs.setdefault(part["part"] or "1", []).append((summary.uid, part))
        if needs:
            self._fill_snippets(found, needs)
        order = uids if isinstance(uids, Sequence) else wanted
        return [found[uid] for uid in dict.fromkeys(order) if uid in found]

    def _fill_snippets(
        self, found: dict[int, MessageSummary], needs: dict[str, list[tuple[int, dict]]]
    ) -> None:
        """Snippets without PREVIEW: the first 2 KB of each message's text part."""
        for part, entries in needs.items():
            nodes = dict(entries)
            section = b"BODY[" + part.encode("ascii") + b"]"
            request = b"(BODY.PEEK[" + part.encode("ascii") + b"]<0.%d>)" % _SNIPPET_FETCH
            for uid_set in _uid_sets(sorted(nodes)):
                reply = self._command(b"UID", b"FETCH", uid_set, request)
                for response in reply.data:
                    parsed = _fetch_items(response)
                    if parsed is None or parsed[0] not in nodes:
                        continue
                    data = _section(parsed[1], section)
                    if isinstance(data, bytes):
                        snippet = _snippet_from_part(data, nodes[parsed[0]])
                        found[parsed[0]] = replace(found[parsed[0]], snippet=snippet)

    def changes_since(self, modseq: int) -> Changes:
        """Flags changed after ``modseq`` (CONDSTORE) and, with QRESYNC, uids expunged
        since then. Without CONDSTORE every message's flags come back, vanished=None."""
        if isinstance(modseq, bool) or not isinstance(modseq, int) or modseq < 0:
            raise ValueError(f"modseq must be a non-negative integer, not {modseq!r}")
        self._require_selected()
        if self._selection is None or self._selection.highestmodseq is None:
            return Changes(flags=self.all_flags(), vanished=None)
        qresync = "QRESYNC" in self._enabled and "QRESYNC" in self.capabilities
        modifier = b"(CHANGEDSINCE %d%s)" % (modseq, b" VANISHED" if qresync else b"")
        reply = self._command(b"UID", b"FETCH", b"1:*", b"(UID FLAGS MODSEQ)", modifier)
        if not qresync:
            return Changes(flags=_flag_changes(reply.data), vanished=None)
        vanished: set[int] = set()
        known = self._selection.uidnext - 1  # uids above it were never seen by the caller
        for response in reply.data:
            if _kw(response) == b"VANISHED" and isinstance(response[-1], bytes):
                vanished.update(_expand_set(response[-1], known, ceiling=known))
        return Changes(flags=_flag_changes(reply.data), vanished=sorted(vanished))

    def all_flags(self) -> list[FlagChange]:
        """Every message's flags (UID FETCH 1:* FLAGS): the no-CONDSTORE fallback."""
        self._require_selected()
        modseq = self._selection is not None and self._selection.highestmodseq is not None
        items = b"(UID FLAGS MODSEQ)" if modseq else b"(UID FLAGS)"
        reply = self._command(b"UID", b"FETCH", b"1:*", items)
        return _flag_changes(reply.data)

    def fetch_raw(self, uid: int) -> bytes:
        """The whole message, byte for byte (BODY.PEEK[], does not set \\Seen)."""
        value = self._fetch_one(uid, b"(BODY.PEEK[])", b"BODY[]")
        if not isinstance(value, bytes):
            raise ImapCommandError(f"Message uid {uid} has no body.")
        return value

    def fetch_part(self, uid: int, part: str, encoding: str) -> bytes:
        """Decoded bytes of one body part: BINARY.PEEK when offered (and the server knows
        the encoding), else BODY.PEEK plus our own base64/quoted-printable decoding."""
        section = _section_spec(part)
        if "BINARY" in self.capabilities and _SECTION_PART.fullmatch(section):
            try:
                value = self._fetch_one(uid, b"(BINARY.PEEK[%s])" % section.encode(), b"BINARY[")
            except ImapCommandError as exc:
                if "UNKNOWN-CTE" not in exc.reply.upper():
                    raise
            else:
                return value if isinstance(value, bytes) else b""
        value = self._fetch_one(uid, b"(BODY.PEEK[%s])" % section.encode(), b"BODY[")
        return _decode_transfer(value if isinstance(value, bytes) else b"", encoding)

    def _fetch_one(self, uid: int, request: bytes, key: bytes) -> object:
        (uid,) = _checked_uids([uid])
        self._require_selected()
        reply = self._command(b"UID", b"FETCH", b"%d" % uid, request)
        for response in reply.data:
            parsed = _fetch_items(response)
            if parsed is not None and parsed[0] == uid:
                for name, value in parsed[1].items():
                    if name.startswith(key):
                        return value
        raise ImapCommandError(f"Message uid {uid} does not exist (any more).")

    def search(
        self,
        *,
        text: str | None = None,
        unseen: bool = False,
        flagged: bool = False,
        since: date | None = None,
        before: date | None = None,
        header: tuple[str, str] | None = None,
    ) -> list[int]:
        """UID SEARCH, ascending uids; non-ASCII text goes as a UTF-8 literal.

        `header` is (name, value), e.g. ("Message-ID", "<id@host>") to find a sent copy.
        """
        self._require_selected()
        criteria: list[bytes] = []
        if header is not None:
            name, value = header
            _no_ctl(name, "header name")
            _no_ctl(value, "header value")
            if not name.isascii() or not value.isascii():
                raise ValueError("header search takes ASCII names and values")
            criteria += [b"HEADER", _astring(name), _astring(value)]
        if unseen:
            criteria.append(b"UNSEEN")
        if flagged:
            criteria.append(b"FLAGGED")
        if since is not None:
            criteria += [b"SINCE", _imap_date(since)]
        if before is not None:
            criteria += [b"BEFORE", _imap_date(before)]
        utf8 = False
        if text is not None:
            _no_ctl(text, "search text")
            if text:
                criteria += [b"TEXT", _astring(text)]
                utf8 = not text.isascii()
        return self._search(criteria or [b"ALL"], utf8=utf8)

    # -- changing messages

    def set_flags(
        self, uids: Sequence[int], *, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> None:
        """UID STORE +FLAGS.SILENT / -FLAGS.SILENT."""
        wanted = _checked_uids(uids)
        to_add, to_remove = _flag_list(add), _flag_list(remove)
        if not wanted or not (to_add or to_remove):
            return
        self._require_writable()
        for uid_set in _uid_sets(wanted):
            for operation, flags in ((b"+FLAGS.SILENT", to_add), (b"-FLAGS.SILENT", to_remove)):
                if flags:
                    self._command(b"UID", b"STORE", uid_set, operation, b"(%s)" % b" ".join(flags))

    def move(self, uids: Sequence[int], target: str) -> dict[int, int]:
        """Move messages; returns {old uid: new uid} from COPYUID (UIDPLUS), else {}.

        Without MOVE: UID COPY, \\Deleted, and UID EXPUNGE (plain EXPUNGE without UIDPLUS).
        """
        wanted = _checked_uids(uids)
        mailbox = _mailbox(target)
        if not wanted:
            return {}
        self._require_writable()
        mapping: dict[int, int] = {}
        for uid_set in _uid_sets(wanted):
            if "MOVE" in self.capabilities:
                reply = self._command(b"UID", b"MOVE", uid_set, mailbox)
            else:
                reply = self._command(b"UID", b"COPY", uid_set, mailbox)
                self._command(b"UID", b"STORE", uid_set, b"+FLAGS.SILENT", b"(\\Deleted)")
                self._expunge_set(uid_set)
            mapping.update(_copyuid(reply.codes))
        return mapping

    def expunge(self, uids: Sequence[int]) -> None:
        """Delete exactly these messages (\\Deleted + UID EXPUNGE). Without UIDPLUS the
        server only has plain EXPUNGE, which also removes other \\Deleted messages."""
        wanted = _checked_uids(uids)
        if not wanted:
            return
        self._require_writable()
        for uid_set in _uid_sets(wanted):
            self._command(b"UID", b"STORE", uid_set, b"+FLAGS.SILENT", b"(\\Deleted)")
            self._expunge_set(uid_set)

    def _expunge_set(self, uid_set: bytes) -> None:
        if "UIDPLUS" in self.capabilities:
            self._command(b"UID", b"EXPUNGE", uid_set)
        else:
            self._command(b"EXPUNGE")

    def append(
        self,
        path: str,
        raw: bytes,
        *,
        flags: Iterable[str] = (),
        when: datetime | None = None,
    ) -> int | None:
        """APPEND; returns the new uid from APPENDUID (UIDPLUS), else None."""
        if not isinstance(raw, (bytes, bytearray)) or not raw:
            raise ValueError("raw must be non-empty bytes")
        if when is not None and not isinstance(when, datetime):
            raise ValueError(f"when must be a datetime, not {when!r}")
        args = [b"APPEND", _mailbox(path)]
        flag_list = _flag_list(flags)
        if flag_list:
            args.append(b"(" + b" ".join(flag_list) + b")")
        if when is not None:
            args.append(_imap_datetime(when))
        args.append(_Literal(bytes(raw)))
        reply = self._command(*args)
        for name, rest in reply.codes:
            if name == "APPENDUID":
                values = rest.split()
                if len(values) >= 2 and values[1].isdigit():
                    return int(values[1])
        return None


def _split_code(code: bytes) -> tuple[str, str]:
    match = _CODE.match(_text(code))
    if match is None:
        return "", ""
    return match.group(1).upper(), match.group(2).strip()


def _copyuid(codes: list[tuple[str, str]]) -> dict[int, int]:
    mapping: dict[int, int] = {}
    for name, rest in codes:
        if name != "COPYUID":
            continue
        values = rest.split()
        if len(values) >= 3:
            sources = _expand_set(values[1].encode())
            targets = _expand_set(values[2].encode())
            if len(sources) == len(targets):
                mapping.update(zip(sources, targets, strict=True))
    return mapping


def _flag_changes(data: list[list]) -> list[FlagChange]:
    changes = []
    for response in data:
        parsed = _fetch_items(response)
        if parsed is None or b"FLAGS" not in parsed[1]:
            continue
        uid, items = parsed
        changes.append(FlagChange(uid, _flags(items[b"FLAGS"]), _modseq(items.get(b"MODSEQ"))))
    return changes


def _code_int(codes: dict[str, str], name: str) -> int:
    value = codes.get(name, "").split(" ", 1)[0]
    return int(value) if value.isdigit() else 0


def _permanent_flags(codes: dict[str, str]) -> frozenset[str] | None:
    if "PERMANENTFLAGS" not in codes:
        return None
    return frozenset(codes["PERMANENTFLAGS"].strip().strip("()").split())


def _canonical(path: str) -> str:
    return "INBOX" if path.upper() == "INBOX" else path


def _checked_config(config: ImapConfig) -> ImapConfig:
    try:
        Security(config.security)
    except ValueError:
        raise ValueError(f"security must be one of {[s.value for s in Security]}") from None
    if not isinstance(config.port, int) or not 0 < config.port < 65536:
        raise ValueError(f"port must be 1-65535, not {config.port!r}")
    _no_ctl(config.host, "host")
    _no_ctl(config.username, "username")
    _no_ctl(config.password, "password")
    if not config.host:
        raise ValueError("host must not be empty")
    return config


def check_login(config: ImapConfig) -> frozenset[str]:
    """Connect, log in and out; returns the capabilities (for "test connection")."""
    with ImapSession(config) as session:
        return session.capabilities
