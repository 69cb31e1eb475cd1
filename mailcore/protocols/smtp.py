"""SMTP submission client: one persistent connection for a batch of messages. No Django.

Built on smtplib for connecting, TLS, EHLO and STARTTLS; the mail transaction itself
(MAIL, RCPT, DATA, the body, the final reply) is driven here, because smtplib cannot
tell *where* a connection died, and that decides whether a message may be sent again:

- Before the terminating "." has been handed to the kernel, the server cannot have taken
  the message: ``SmtpTransientError``, safe to retry. ``send(before_dot=...)`` is called
  right before that write: a caller records there that the message may be delivered from
  now on, so even a process killed at any instruction leaves a record that tells
  "certainly not delivered" from "maybe delivered". If it raises, the dot is never
  written and the connection is dropped, so the server discards the unfinished message.
- After that and before the final reply: ``SmtpUnknownOutcome`` (RFC 1047). The server
  may have accepted the message; the caller must not blindly resend it (look for the
  Message-ID in Sent first).

A big body sits in kernel buffers long before it reaches the server, so for bodies of
64 KiB or more the dot is only sent once the server's TCP has acknowledged the whole
body (Linux ``SIOCOUTQ``); a connection cut mid-body is then reliably "not delivered"
instead of "unknown". Small bodies go out with the dot in one write (nothing to gain,
and waiting for an ACK would cost a delayed-ACK round per message).

Every failure is classified: ``SmtpTransientError`` (4xx replies, timeouts, refused or
reset connections, TLS errors) or ``SmtpPermanentError`` (5xx replies, a failed AUTH,
a message over the server's SIZE, a missing extension the message needs), always with
the server's own text in ``reply`` and its code in ``code`` (None when the decision was
made here). ``SmtpCertificateError`` (an untrusted or unexpected certificate, with the
fingerprint the server presented) is permanent: only the user can decide to trust it.

Certificates are checked with ``tls.client_context``; a pinned SHA-256 fingerprint
replaces CA verification (compared right after the handshake, before any credentials are
sent). When verification fails, the presented fingerprint is read on a separate
non-verifying handshake that sends nothing else.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import re
import select
import smtplib
import socket
import ssl
import struct
import termios
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import TracebackType

from mailcore.protocols import tls
from mailcore.protocols.compose import AddressError, envelope_address

__all__ = [
    "RecipientResult",
    "SendResult",
    "SmtpAuthError",
    "SmtpCertificateError",
    "SmtpConfig",
    "SmtpError",
    "SmtpPermanentError",
    "SmtpSession",
    "SmtpTransientError",
    "SmtpUnknownOutcome",
    "check_login",
]

SECURITY_CHOICES = ("none", "starttls", "tls")
_MAXLINE = 8192
_DRAIN_THRESHOLD = 64 * 1024
_CHUNK = 1024 * 1024
_PIPELINE_BATCH = 100


# --------------------------------------------------------------------------- public types


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: str  # "none" | "starttls" | "tls"
    username: str = ""
    password: str = field(default="", repr=False)
    # SHA-256 of the server certificate as "AA:BB:...": trusted even when no CA vouches.
    tls_fingerprint: str = ""
    ca_file: str | None = None  # extra CA bundle
    timeout: float = 60.0  # connect and every command
    local_hostname: str | None = None  # for EHLO; this machine's name when None
    # Waiting for the reply to the final "." (RFC 5321 4.5.3.2.6 suggests 10 minutes):
    # running out of it means an unknown outcome, so it is generous.
    data_timeout: float = 600.0


class SmtpError(Exception):
    """Base class: ``reply`` is the server's text (or a plain explanation when the
    decision was made here), ``code`` its reply code or None."""

    def __init__(
        self,
        reply: str,
        code: int | None = None,
        *,
        context: str = "",
        refused: Sequence[RecipientResult] = (),
    ) -> None:
        self.reply = reply
        self.code = code
        self.refused: tuple[RecipientResult, ...] = tuple(refused)
        said = f"{code} {reply}" if code is not None else reply
        super().__init__(f"{context}: {said}" if context else said)


class SmtpTransientError(SmtpError):
    """4xx, timeouts, connection and TLS failures: retry later."""


class SmtpPermanentError(SmtpError):
    """5xx and local refusals (size, missing extension): do not retry."""


class SmtpAuthError(SmtpPermanentError):
    """The server refused the credentials (or offers no usable AUTH)."""


class SmtpCertificateError(SmtpPermanentError):
    """The certificate is not trusted; ``fingerprint`` is the one the server presented."""

    def __init__(self, reply: str, fingerprint: str) -> None:
        super().__init__(reply)
        self.fingerprint = fingerprint


class SmtpUnknownOutcome(SmtpTransientError):
    """The connection was lost after the final "." and before the reply: the message may
    or may not have been accepted. Do not resend without checking (RFC 1047)."""


@dataclass(frozen=True)
class RecipientResult:
    address: str
    code: int
    reply: str
    accepted: bool


@dataclass(frozen=True)
class SendResult:
    accepted: list[str]
    refused: list[RecipientResult]  # with the server's code and text (4xx: try later)
    reply: str  # the server's reply to the final "."
    code: int


# --------------------------------------------------------------------------- helpers


class _Lost(Exception):
    """The connection broke (EOF, reset, timeout, garbage where a reply should be)."""


class _EarlyReply(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class _Stale(Exception):
    """A reused connection was found closed (or closing, 421) at the first command."""


@lru_cache(maxsize=1)
def _default_local_hostname() -> str:
    fqdn = socket.getfqdn()
    if "." in fqdn and fqdn.isascii():
        return fqdn
    return "[127.0.0.1]"


def _classify(code: int, text: str, context: str, **extra) -> SmtpError:
    kind = SmtpPermanentError if 500 <= code < 600 else SmtpTransientError
    return kind(text, code, context=context, **extra)


def _network_error(exc: BaseException, context: str) -> SmtpTransientError:
    if isinstance(exc, TimeoutError):
        reason = "the server did not answer in time"
    elif isinstance(exc, ssl.SSLError):
        reason = f"TLS error: {exc.reason or exc}"
    elif isinstance(exc, smtplib.SMTPServerDisconnected):
        reason = "the server closed the connection"
    elif isinstance(exc, _Lost):
        reason = str(exc)
    elif isinstance(exc, OSError):
        reason = f"network error: {exc.strerror or exc}"
    else:
        reason = str(exc) or type(exc).__name__
    return SmtpTransientError(reason, context=context)


@contextlib.contextmanager
def _translated(context: str) -> Iterator[None]:
    """smtplib and socket exceptions as SmtpErrors."""
    try:
        yield
    except SmtpError:
        raise
    except ssl.SSLCertVerificationError:
        raise  # the caller reports it with the presented fingerprint
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if exc.smtp_code < 400:  # smtplib's -1 for "no usable reply"
            raise SmtpTransientError(str(text), context=context) from None
        raise _classify(exc.smtp_code, str(text), context) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise SmtpPermanentError(str(exc), context=context) from None
    except (OSError, smtplib.SMTPException, _Lost) as exc:
        raise _network_error(exc, context) from None


def _unacknowledged(sock: socket.socket) -> int | None:
    """Bytes sent but not yet acknowledged by the peer's TCP (Linux), None if unknown."""
    request = getattr(termios, "TIOCOUTQ", None)  # == SIOCOUTQ
    if request is None:
        return None
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0"))[0]
    except OSError:
        return None


_EOL_RE = re.compile(rb"\r\n|\r|\n")
_DOT_RE = re.compile(rb"(?m)^\.")


def _wire_data(raw: bytes) -> bytes:
    """CRLF line ends, dot-stuffed (RFC 5321 4.5.2), ending in CRLF."""
    data = bytes(raw)
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
        data = _EOL_RE.sub(b"\r\n", data)
    if data.startswith(b".") or b"\n." in data:
        data = _DOT_RE.sub(b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


@lru_cache(maxsize=4096)  # a batch repeats its sender and often its recipients
def _envelope(address: str, what: str) -> str:
    if any(ch in address for ch in "\r\n\x00<>"):
        raise ValueError(f"Invalid {what} address {address!r}")
    try:
        return envelope_address(address)
    except AddressError as exc:
        raise ValueError(f"Invalid {what} address {address!r}: {exc}") from None


# --------------------------------------------------------------------------- the session


class SmtpSession:
    """One authenticated connection; ``send`` any number of messages over it.

    Connects in the constructor. A connection the server dropped between messages is
    re-opened by the next ``send`` (and a reused connection found closed at the MAIL
    command is re-opened and the message sent once more: nothing had been sent yet).
    Not thread-safe.
    """

    def __init__(self, config: SmtpConfig) -> None:
        if config.security not in SECURITY_CHOICES:
            raise ValueError(f"security must be one of {SECURITY_CHOICES}")
        self.config = config
        self.extensions: dict[str, str] = {}
        self.connections = 0  # opened by this session
        self._smtp: smtplib.SMTP | None = None
        self._reused = False
        self._connect()

    def __enter__(self) -> SmtpSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- connecting

    def _context(self, verify: bool) -> ssl.SSLContext:
        try:
            return tls.client_context(verify=verify, ca_file=self.config.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise SmtpPermanentError(
                f"Cannot use the CA file {self.config.ca_file}: {exc}"
            ) from exc

    def _open(self, context: ssl.SSLContext | None) -> smtplib.SMTP:
        """Connect, EHLO, and TLS or STARTTLS with ``context`` (then EHLO again)."""
        config = self.config
        local = config.local_hostname or _default_local_hostname()
        if config.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                local_hostname=local, timeout=config.timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(local_hostname=local, timeout=config.timeout)
        # smtplib names the TLS server (SNI, hostname check) after ``_host``, which only
        # its constructor sets; connecting here keeps every failure in one place.
        smtp._host = config.host
        try:
            with _translated("Connecting to the SMTP server"):
                smtp.connect(config.host, config.port)
                self._hello(smtp)
                if config.security == "starttls":
                    if not smtp.has_extn("starttls"):
                        raise SmtpPermanentError(
                            "The server does not offer STARTTLS; choose another security "
                            "setting or port."
                        )
                    smtp.starttls(context=context)
                    self._hello(smtp)
        except BaseException:
            smtp.close()
            raise
        return smtp

    @staticmethod
    def _hello(smtp: smtplib.SMTP) -> None:
        code, text = smtp.ehlo()
        if code != 250:
            code, text = smtp.helo()
            if code != 250:
                raise _classify(code, text.decode("utf-8", "replace"), "EHLO/HELO refused")

    def _presented_fingerprint(self) -> str:
        """The certificate the server presents, read on a non-verifying handshake."""
        try:
            smtp = self._open(self._context(verify=False))
        except (SmtpError, OSError, ssl.SSLError):
            return ""
        try:
            return tls.fingerprint(smtp.sock.getpeercert(binary_form=True) or b"")
        finally:
            with contextlib.suppress(Exception):
                smtp.close()

    def _connect(self) -> None:
        config = self.config
        pinned = bool(config.tls_fingerprint) and config.security != "none"
        context = None
        if config.security != "none":
            context = self._context(verify=not pinned)
        try:
            smtp = self._open(context)
        except ssl.SSLCertVerificationError as exc:
            raise SmtpCertificateError(
                f"The server's certificate is not trusted: {exc.verify_message or exc}",
                self._presented_fingerprint(),
            ) from None
        if pinned:
            presented = tls.fingerprint(smtp.sock.getpeercert(binary_form=True) or b"")
            if not tls.same_fingerprint(presented, config.tls_fingerprint):
                smtp.close()
                raise SmtpCertificateError(
                    "The server presented a different certificate than the trusted one.",
                    presented,
                )
        self._smtp = smtp
        try:
            self._login()
        except BaseException:
            self._drop()
            raise
        self.connections += 1
        self._reused = False
        self.extensions = {name.upper(): value for name, value in smtp.esmtp_features.items()}

    def _login(self) -> None:
        config = self.config
        smtp = self._smtp
        assert smtp is not None
        if not config.username and not config.password:
            return
        if not smtp.has_extn("auth"):
            hint = " (it may need STARTTLS or TLS first)" if config.security == "none" else ""
            raise SmtpAuthError(f"The server offers no authentication on this connection{hint}.")
        mechanisms = smtp.esmtp_features.get("auth", "").upper().split()
        user, password = config.username.encode(), config.password.encode()
        try:
            if "PLAIN" in mechanisms:
                token = base64.b64encode(b"\0" + user + b"\0" + password).decode()
                code, text = self._command(f"AUTH PLAIN {token}")
            elif "LOGIN" in mechanisms:
                code, text = self._command("AUTH LOGIN")
                if code == 334:
                    code, text = self._command(base64.b64encode(user).decode())
                if code == 334:
                    code, text = self._command(base64.b64encode(password).decode())
            else:
                raise SmtpAuthError(
                    "The server offers no AUTH mechanism this client speaks (PLAIN, LOGIN): "
                    + " ".join(mechanisms)
                )
        except (_Lost, OSError) as exc:
            raise _network_error(exc, "Authentication") from None
        if code == 235:
            return
        if 400 <= code < 500:
            raise SmtpTransientError(text, code, context="Authentication failed")
        raise SmtpAuthError(text, code, context="Authentication failed")

    @property
    def connected(self) -> bool:
        """False once the connection was dropped (the next ``send`` reconnects)."""
        return self._smtp is not None

    def reconnect(self) -> None:
        """Open a new connection if the last one was dropped (SmtpError if that fails)."""
        self._ensure_connected()

    def _ensure_connected(self) -> smtplib.SMTP:
        if self._smtp is None:
            self._connect()
        assert self._smtp is not None
        return self._smtp

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            with contextlib.suppress(Exception):
                smtp.close()

    # -- the wire

    def _write(self, data: bytes) -> None:
        assert self._smtp is not None and self._smtp.sock is not None
        self._smtp.sock.sendall(data)

    def _reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply; _Lost unless it is complete and well-formed."""
        smtp = self._smtp
        assert smtp is not None and smtp.sock is not None
        if smtp.file is None:
            smtp.file = smtp.sock.makefile("rb")
        lines: list[bytes] = []
        while True:
            try:
                line = smtp.file.readline(_MAXLINE + 1)
            except OSError as exc:
                raise _Lost(_network_error(exc, "").reply) from None
            if not line.endswith(b"\n"):
                if len(line) > _MAXLINE:
                    raise _Lost("the server sent a reply line that is too long")
                raise _Lost("the server closed the connection")
            code, separator = line[:3], line[3:4]
            if not code.isdigit() or separator not in (b" ", b"-", b"\r", b"\n"):
                raise _Lost(f"the server sent something that is not an SMTP reply: {line[:80]!r}")
            lines.append(line[4:].strip(b" \t\r\n"))
            if separator != b"-":
                text = b"\n".join(lines).decode("utf-8", "replace")
                return int(code), text

    def _command(self, line: str, *, utf8: bool = False) -> tuple[int, str]:
        self._write(line.encode("utf-8" if utf8 else "ascii") + b"\r\n")
        return self._reply()

    # -- sending

    def send(
        self,
        raw: bytes,
        *,
        mail_from: str,
        recipients: Sequence[str],
        on_progress: Callable[[int, int], None] | None = None,
        before_dot: Callable[[], None] | None = None,
    ) -> SendResult:
        """One transaction: MAIL FROM, RCPT TO each recipient, DATA.

        Refused recipients are reported in ``SendResult.refused`` and the others still
        get the message; if all are refused, SmtpPermanentError (SmtpTransientError when
        every refusal was 4xx) with ``refused`` set. ``on_progress(sent, total)`` follows
        the body's bytes; ``before_dot()`` runs once, just before the terminating "." (and,
        for a small body, the body with it) is written.
        """
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise TypeError("raw must be bytes")
        sender = _envelope(mail_from, "sender") if mail_from else ""
        targets: list[str] = []
        seen: set[str] = set()
        for recipient in recipients:
            address = _envelope(recipient, "recipient")
            if not address:
                raise ValueError("Empty recipient address")
            if address.lower() not in seen:
                seen.add(address.lower())
                targets.append(address)
        if not targets:
            raise ValueError("No recipients")
        data = _wire_data(bytes(raw))
        self._ensure_connected()
        try:
            return self._transaction(data, len(raw), sender, targets, on_progress, before_dot)
        except _Stale:
            # The server had closed the idle connection; nothing of this message was
            # sent, so it goes out once, on a new connection.
            self._drop()
            self._connect()
            return self._transaction(data, len(raw), sender, targets, on_progress, before_dot)

    def _options(self, data: bytes, size: int, sender: str, targets: list[str]) -> list[str]:
        extensions = self.extensions
        limit = extensions.get("SIZE", "").strip()
        if limit.isdigit() and int(limit) > 0 and size > int(limit):
            raise SmtpPermanentError(
                f"The message is {size:,} bytes; the server accepts at most {int(limit):,}."
            )
        options: list[str] = []
        if "SIZE" in extensions:
            options.append(f"SIZE={size}")
        header_end = data.find(b"\r\n\r\n")
        head = data if header_end == -1 else data[:header_end]
        utf8 = not (sender.isascii() and all(t.isascii() for t in targets) and head.isascii())
        eight_bit = utf8 or not data.isascii()
        if utf8 and "SMTPUTF8" not in extensions:
            raise SmtpPermanentError(
                "The message has non-ASCII addresses or headers and the server does not "
                "offer SMTPUTF8."
            )
        if eight_bit and "8BITMIME" in extensions:
            options.append("BODY=8BITMIME")
        elif not data.isascii():
            raise SmtpPermanentError(
                "The message has 8-bit content and the server does not offer 8BITMIME."
            )
        if utf8:
            options.append("SMTPUTF8")
        return options

    def _transaction(
        self,
        data: bytes,
        size: int,
        sender: str,
        targets: list[str],
        on_progress: Callable[[int, int], None] | None,
        before_dot: Callable[[], None] | None,
    ) -> SendResult:
        options = self._options(data, size, sender, targets)
        utf8 = "SMTPUTF8" in options
        mail = f"MAIL FROM:<{sender}>" + "".join(f" {option}" for option in options)
        rcpts = [f"RCPT TO:<{target}>" for target in targets]
        reused, self._reused = self._reused, True
        stage = "MAIL FROM"
        try:
            if "PIPELINING" in self.extensions:
                replies = self._pipelined(mail, rcpts, utf8)
            else:
                replies = [self._command(mail, utf8=utf8)]
                if replies[0][0] == 250:
                    replies += [self._command(rcpt, utf8=utf8) for rcpt in rcpts]
            code, text = replies[0]
            if code != 250:
                error = _classify(code, text, "The server refused the sender (MAIL FROM)")
                if code == 421:
                    self._drop()
                    if reused:
                        raise _Stale
                    raise error
                self._reset()
                raise error
            stage = "RCPT TO"
            results = [
                RecipientResult(target, rcode, rtext, rcode in (250, 251))
                for target, (rcode, rtext) in zip(targets, replies[1:], strict=True)
            ]
            accepted = [result.address for result in results if result.accepted]
            refused = [result for result in results if not result.accepted]
            if not accepted:
                self._reset()
                summary = "; ".join(f"{r.address}: {r.code} {r.reply}" for r in refused)
                codes = {r.code for r in refused}
                kind = (
                    SmtpTransientError if all(400 <= c < 500 for c in codes) else SmtpPermanentError
                )
                raise kind(
                    summary,
                    codes.pop() if len(codes) == 1 else None,
                    context="The server refused every recipient",
                    refused=refused,
                )
            stage = "DATA"
            code, text = self._command("DATA")
            if code != 354:
                error = _classify(code, text, "The server refused the message (DATA)")
                self._reset()
                raise error
        except (_Lost, OSError) as exc:
            self._drop()
            error = _network_error(exc, f"Connection lost at {stage}")
            if reused and stage == "MAIL FROM":
                raise _Stale from None
            raise error from None

        self._send_body(data, on_progress, before_dot)
        try:
            code, text = self._final_reply()
        except (_Lost, OSError) as exc:
            self._drop()
            raise SmtpUnknownOutcome(
                _network_error(exc, "").reply,
                context=(
                    "Connection lost after the message was sent and before the server "
                    "confirmed it; it may or may not have been accepted"
                ),
            ) from None
        if code != 250:
            if code == 421:
                self._drop()
            raise _classify(code, text, "The server refused the message")
        return SendResult(accepted=accepted, refused=refused, reply=text, code=code)

    def _pipelined(self, mail: str, rcpts: list[str], utf8: bool) -> list[tuple[int, str]]:
        """MAIL and RCPTs in batches (RFC 2920), replies read in order."""
        encoding = "utf-8" if utf8 else "ascii"
        commands = [mail, *rcpts]
        replies: list[tuple[int, str]] = []
        for start in range(0, len(commands), _PIPELINE_BATCH):
            batch = commands[start : start + _PIPELINE_BATCH]
            self._write("".join(f"{command}\r\n" for command in batch).encode(encoding))
            replies += [self._reply() for _ in batch]
        return replies

    def _send_body(
        self,
        data: bytes,
        on_progress: Callable[[int, int], None] | None,
        before_dot: Callable[[], None] | None,
    ) -> None:
        """The body and the terminating dot. Raises SmtpTransientError (never unknown
        outcome) when the connection fails before the dot is handed to the kernel."""
        total = len(data)
        try:
            if total < _DRAIN_THRESHOLD:
                self._before_dot(before_dot)
                self._write(data + b".\r\n")
                if on_progress:
                    on_progress(total, total)
                return
            view = memoryview(data)
            for start in range(0, total, _CHUNK):
                self._write(view[start : start + _CHUNK])
                if on_progress:
                    on_progress(min(start + _CHUNK, total), total)
            self._wait_acknowledged()
            self._before_dot(before_dot)
            self._write(b".\r\n")
        except _EarlyReply as early:
            self._drop()
            raise _classify(early.code, early.text, "The server stopped the message") from None
        except (_Lost, OSError) as exc:
            self._drop()
            raise _network_error(exc, "Connection lost while sending the message") from None

    def _before_dot(self, callback: Callable[[], None] | None) -> None:
        """Run the caller's hook; if it fails, the dot never goes out (the connection is
        dropped mid-DATA, so the server discards the message) and its error propagates."""
        if callback is None:
            return
        try:
            callback()
        except BaseException:
            self._drop()
            raise

    def _wait_acknowledged(self) -> None:
        """Until the peer's TCP has acknowledged everything sent; raises _Lost or
        _EarlyReply when the server closes or speaks meanwhile (it never got the dot)."""
        assert self._smtp is not None
        sock = self._smtp.sock
        deadline = time.monotonic() + self.config.data_timeout
        pause = 0.001
        while True:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                self._check_early_reply(sock)
            pending = _unacknowledged(sock)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise _Lost("the server stopped accepting the message data")
            select.select([sock], [], [], pause)
            pause = min(pause * 2, 0.05)

    def _check_early_reply(self, sock: socket.socket) -> None:
        previous = sock.gettimeout()
        sock.settimeout(0)
        try:
            first = sock.recv(1)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return  # only TLS housekeeping (session tickets): nothing for us
        except OSError as exc:
            raise _Lost(_network_error(exc, "").reply) from None
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(previous)
        if not first:
            raise _Lost("the server closed the connection")
        assert self._smtp is not None and self._smtp.file is not None
        try:
            line = first + self._smtp.file.readline(_MAXLINE)
        except OSError:
            line = first
        match = re.match(rb"(\d{3})[ -]?(.*)", line.strip())
        if match is None:
            raise _Lost("the server sent something unexpected during the message data")
        raise _EarlyReply(int(match.group(1)), match.group(2).decode("utf-8", "replace"))

    def _final_reply(self) -> tuple[int, str]:
        assert self._smtp is not None and self._smtp.sock is not None
        sock = self._smtp.sock
        sock.settimeout(max(self.config.data_timeout, 0.001))
        try:
            return self._reply()
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(self.config.timeout)

    def _reset(self) -> None:
        """RSET after a failed transaction; a connection that cannot is dropped."""
        try:
            code, _ = self._command("RSET")
        except (_Lost, OSError):
            code = 0
        if code != 250:
            self._drop()

    def noop(self) -> None:
        """NOOP: keeps the connection alive; raises SmtpTransientError if it is gone."""
        self._ensure_connected()
        try:
            code, text = self._command("NOOP")
        except (_Lost, OSError) as exc:
            self._drop()
            raise _network_error(exc, "NOOP") from None
        if code != 250:
            if code == 421:
                self._drop()
            raise _classify(code, text, "NOOP")

    def close(self) -> None:
        """QUIT quietly and close; safe to call twice."""
        if self._smtp is None:
            return
        try:
            if self._smtp.sock is not None:
                self._smtp.sock.settimeout(min(self.config.timeout, 5.0))
                self._command("QUIT")
        except (_Lost, OSError, ValueError):
            pass
        finally:
            self._drop()


def check_login(config: SmtpConfig) -> frozenset[str]:
    """For "test connection": connect, TLS, AUTH, QUIT; the EHLO keywords."""
    with SmtpSession(config) as session:
        return frozenset(session.extensions)
