"""aiosmtpd-based SMTP server that records every message and can be scripted to fail."""

from __future__ import annotations

import shutil
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from .certs import CertBundle, generate_cert
from .ports import HOST, free_port

STAGES = ("MAIL", "RCPT", "DATA")


@dataclass(frozen=True)
class CapturedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # exactly what arrived after DATA, dot-unstuffed, CRLF line ends kept
    mail_options: tuple[str, ...]
    login: str | None  # the AUTH user, if any
    tls: bool


@dataclass
class _ScriptedReply:
    stage: str
    reply: str
    times: int


class SMTPServer:
    """SMTP server on a free loopback port, run by aiosmtpd's threaded Controller.

    ``starttls`` offers STARTTLS; ``implicit_tls`` wraps the whole connection
    (SMTPS) instead, and then STARTTLS is never offered. AUTH PLAIN/LOGIN checks
    ``users``; as in aiosmtpd, AUTH is only offered over TLS unless
    ``auth_require_tls=False``.
    """

    def __init__(
        self,
        *,
        users: dict[str, str] | None = None,
        require_auth: bool = False,
        auth_require_tls: bool = True,
        starttls: bool = True,
        require_starttls: bool = False,
        implicit_tls: bool = False,
        size_limit: int = 33_554_432,
        cert: CertBundle | None = None,
        host: str = HOST,
    ) -> None:
        if implicit_tls and require_starttls:
            raise ValueError("require_starttls makes no sense with implicit_tls")
        starttls = (starttls or require_starttls) and not implicit_tls
        self.host = host
        self.port = free_port()
        self.users = dict(users or {})
        self.implicit_tls = implicit_tls
        self._tempdir: Path | None = None
        if cert is None and (starttls or implicit_tls):
            self._tempdir = Path(tempfile.mkdtemp(prefix="satchel-smtp-"))
            cert = generate_cert(self._tempdir)
        self.cert = cert
        tls_context = None
        if cert is not None:
            tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls_context.load_cert_chain(cert.cert_path, cert.key_path)
        self._lock = threading.Condition()
        self._messages: list[CapturedMessage] = []
        self._scripts: list[_ScriptedReply] = []
        self._refused: dict[str, str] = {}
        self._running = False
        self._controller = _Controller(
            _Handler(self),
            hostname=host,
            port=self.port,
            ssl_context=tls_context if implicit_tls else None,
            server_hostname="localhost",
            tls_context=tls_context if starttls else None,
            require_starttls=require_starttls,
            auth_required=require_auth,
            auth_require_tls=auth_require_tls,
            authenticator=self._authenticate,
            data_size_limit=size_limit,
            enable_SMTPUTF8=True,
        )

    @property
    def cert_path(self) -> Path | None:
        return self.cert.cert_path if self.cert else None

    @property
    def fingerprint(self) -> str | None:
        return self.cert.fingerprint if self.cert else None

    @property
    def messages(self) -> list[CapturedMessage]:
        """A snapshot of the accepted messages, oldest first."""
        with self._lock:
            return list(self._messages)

    def start(self) -> SMTPServer:
        self._controller.start()
        self._running = True
        return self

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._controller.stop()
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)

    def __enter__(self) -> SMTPServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def add_user(self, name: str, password: str) -> None:
        with self._lock:
            self.users[name] = password

    def fail_next(
        self, stage: str = "DATA", code: int = 451, text: str = "Try again later", times: int = 1
    ) -> None:
        """Answer the next ``times`` MAIL/RCPT/DATA commands with ``code text``."""
        stage = stage.upper()
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}")
        with self._lock:
            self._scripts.append(_ScriptedReply(stage, f"{code} {text}", times))

    def refuse_recipient(self, address: str, code: int = 550, text: str = "No such user") -> None:
        """Reject RCPT TO for ``address`` (case-insensitive) until ``reset()``."""
        with self._lock:
            self._refused[address.lower()] = f"{code} {text}"

    def reset(self) -> None:
        """Forget captured messages, scripted failures and refused recipients."""
        with self._lock:
            self._messages.clear()
            self._scripts.clear()
            self._refused.clear()

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[CapturedMessage]:
        """Block until at least ``count`` messages were accepted; return them all."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self._messages)} of {count} messages arrived")
                self._lock.wait(remaining)
            return list(self._messages)

    def _scripted(self, stage: str) -> str | None:
        with self._lock:
            for script in self._scripts:
                if script.stage == stage:
                    script.times -= 1
                    if script.times <= 0:
                        self._scripts.remove(script)
                    return script.reply
        return None

    def _refusal(self, address: str) -> str | None:
        with self._lock:
            return self._refused.get(address.lower())

    def _capture(self, message: CapturedMessage) -> None:
        with self._lock:
            self._messages.append(message)
            self._lock.notify_all()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
            password = auth_data.password.decode("utf-8", "replace")
            with self._lock:
                if login in self.users and self.users[login] == password:
                    return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)


class _Session(Session):
    # aiosmtpd 1.4 sets the deprecated ``login_data`` property on every
    # successful AUTH, warning each time; a plain attribute keeps test output clean.
    login_data = None


class _SMTP(SMTP):
    def _create_session(self) -> Session:
        return _Session(self.loop)


class _Controller(Controller):
    def __init__(self, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.implicit_tls = kwargs.get("ssl_context") is not None

    def factory(self) -> SMTP:
        smtp = _SMTP(self.handler, **self.SMTP_kwargs)
        if self.implicit_tls:
            # aiosmtpd only counts STARTTLS as TLS and would never offer AUTH on
            # an SMTPS connection (pinned aiosmtpd 1.4.6 attribute).
            smtp._auth_require_tls = False
        return smtp


class _Handler:
    """aiosmtpd hooks; they run on the Controller's event-loop thread."""

    def __init__(self, owner: SMTPServer) -> None:
        self.owner = owner

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if reply := self.owner._scripted("MAIL"):
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if reply := self.owner._scripted("RCPT") or self.owner._refusal(address):
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if reply := self.owner._scripted("DATA"):
            return reply
        assert envelope.mail_from is not None and envelope.original_content is not None
        self.owner._capture(
            CapturedMessage(
                mail_from=envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=envelope.original_content,
                mail_options=tuple(envelope.mail_options),
                login=session.auth_data if isinstance(session.auth_data, str) else None,
                tls=session.ssl is not None or self.owner.implicit_tls,
            )
        )
        return "250 OK: queued"
