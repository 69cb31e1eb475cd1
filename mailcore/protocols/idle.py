"""IMAP IDLE supervisor: one asyncio process watching one folder of many mail accounts.

``IdleSupervisor`` keeps one IMAP connection per account, SELECTs the folder (INBOX by
default) and sits in IDLE (RFC 2177). Untagged ``EXISTS`` / ``EXPUNGE`` (or ``VANISHED``) /
``FETCH`` pushed by the server become ``on_change(key, "exists" | "expunge" | "flags")``;
after a connection had to be re-established it reports ``"reconnected"`` because mail may
have arrived meanwhile. It only *reports*: fetching what changed is the caller's job.

Per account
    One asyncio task and one socket, no thread. The task connects (TLS or STARTTLS with
    certificate verification; ``tls_fingerprint`` pins one certificate that no CA vouches
    for; ``ca_file`` adds a CA), LOGINs, SELECTs, then IDLEs, re-issuing IDLE every
    ``renew_seconds`` (servers may drop an IDLE after 30 min). A server without IDLE is
    polled with NOOP every ``poll_seconds`` instead (status ``"polling"``).

Failures
    Network errors, timeouts, TLS errors and BYE: reconnect after 1, 2, 4 ... s (capped
    at ``max_backoff``, each delay randomised to 50-100 % so accounts on a server that
    just restarted do not come back in lockstep); the delay starts over at 1 s once a
    connection reached IDLE again. A rejected LOGIN (``NO`` without a transient code such
    as ``[UNAVAILABLE]``/``[LIMIT]``) is not hammered: status ``"auth failed: <server
    text>"`` and the next attempt only after ``max_backoff``. Every account lives in its
    own task and every exception stays in it, so one broken account never disturbs the
    others; an exception raised by ``on_change`` is logged and swallowed.

Events
    Events are coalesced per account: the first one opens a 0.3 s window, and when it
    closes each distinct reason seen in it is reported once (so 50 messages arriving
    together give one ``"exists"``; an expunge plus a new message give ``"expunge"``
    and ``"exists"``). At most one ``on_change`` runs per account at a time; events that
    arrive meanwhile are coalesced into the next call. ``on_change`` may be a plain
    function or a coroutine function; a plain one runs on the event loop and must be
    quick (enqueue a job, do not sync mail in it).

Scaling (measured against a local Dovecot 2.3, Python 3.11, 2 CPUs)
    An idling account costs one socket (one file descriptor), three small asyncio tasks
    (the account's loop, the pending IDLE command, the push-queue reader) and the
    aioimaplib protocol object: ~20 KiB of RSS per plain connection and ~70 KiB with TLS
    (OpenSSL's per-connection state plus a 16 KiB read buffer: asyncio's default would be
    256 KiB, see ``_LeanSSLProtocol``; the SSLContext with its CA store is shared by all
    accounts with the same trust settings). So 1,000 accounts are ~20-70 MB and 1,000 fds.
    Nothing is polled while idling: 1,000 idle connections used no measurable CPU. Setup
    ran at ~125 logins/s, bound by the server (Dovecot forks per login); new connections
    are opened at most ``connect_concurrency`` at a time so a restart does not storm the
    servers. The supervisor raises the RLIMIT_NOFILE soft limit to the hard limit at start
    (``raise_fd_limit``) and warns when the accounts do not fit; asyncio uses epoll, so
    there is no FD_SETSIZE (1024) ceiling. Beyond a few thousand accounts per process, or
    to use more than one core, run N processes and give process i ``shard(keys, i, N)``
    (account key modulo N).

    The *server* usually limits first. Dovecot runs one ``imap`` process per connection
    (``service imap { process_limit = 1024 }``), with TLS also one ``imap-login`` proxy
    process per connection (``default_process_limit``, 100), refuses more than
    ``mail_max_userip_connections`` (default 10) logins per user and client IP with
    ``NO [LIMIT]`` (treated as transient: backoff, not "auth failed"), and watches an
    IDLEd mailbox with one inotify instance per process (``fs.inotify.max_user_instances``,
    default 128 per uid); beyond that it notices new mail only every 30 s.

Passwords are never logged: accounts print without them, the LOGIN line is scrubbed in
aioimaplib's debug log, and every error text is scrubbed before it reaches a log or status.
This module must not import Django.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import re
import resource
import socket
import ssl
from asyncio import sslproto
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aioimaplib

from mailcore.protocols import tls

log = logging.getLogger(__name__)

SECURITY_CHOICES = ("none", "starttls", "tls")
COALESCE_SECONDS = 0.3
LOGOUT_TIMEOUT = 2.0
# NO on LOGIN with one of these RFC 5530 codes is the server's trouble, not a bad password.
_TRANSIENT_CODES = frozenset({"UNAVAILABLE", "LIMIT", "INUSE", "SERVERBUG", "OVERQUOTA"})
_RESP_CODE = re.compile(r"^\[([A-Za-z-]+)")
_CAPABILITY = re.compile(rb"(?:^|\[)CAPABILITY ([^\]]*)", re.IGNORECASE)
_MESSAGE_DATA = re.compile(rb"^\d+ (EXISTS|EXPUNGE|FETCH)\b", re.IGNORECASE)
_REASON_BY_KEYWORD = {b"EXISTS": "exists", b"EXPUNGE": "expunge", b"FETCH": "flags"}

OnChange = Callable[[int, str], Awaitable[None] | None]
T = TypeVar("T")


@dataclass(frozen=True)
class IdleAccount:
    """What the supervisor needs to watch one account; equal accounts are left alone."""

    key: int  # the account id
    host: str
    port: int
    security: str  # "none" | "starttls" | "tls"
    username: str
    password: str = field(repr=False)
    tls_fingerprint: str = ""  # "AA:BB:..": SHA-256 of the server cert to trust when no CA vouches
    ca_file: str | None = None  # extra CA (tests, private CAs)
    folder: str = "INBOX"  # mailbox name as the server spells it (modified UTF-7)

    def __post_init__(self) -> None:
        if self.security not in SECURITY_CHOICES:
            raise ValueError(f"security must be one of {SECURITY_CHOICES}, not {self.security!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"invalid port {self.port}")

    @property
    def label(self) -> str:
        return f"account {self.key} ({self.username}@{self.host}:{self.port})"


def shard(keys: Iterable[int], index: int, count: int) -> list[int]:
    """The keys process ``index`` of ``count`` should watch (key modulo count)."""
    if not 0 <= index < count:
        raise ValueError(f"index must be in 0..{count - 1}")
    return [key for key in keys if key % count == index]


def raise_fd_limit() -> int:
    """Raise the RLIMIT_NOFILE soft limit to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


class _AuthFailed(Exception):
    """The server rejected the credentials: do not retry before max_backoff."""


class _SessionError(Exception):
    """A transient failure with a text fit for the status (no password in it)."""


class _PinMismatch(Exception):
    """The server's certificate is not the pinned one (a CA may still vouch for it)."""


def _scrub(text: str, account: IdleAccount) -> str:
    if account.password:
        text = text.replace(aioimaplib.quoted(account.password), '"***"')
        text = text.replace(account.password, "***")
    return text


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _SessionError | _PinMismatch):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message or exc.reason or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Protocol(aioimaplib.IMAP4ClientProtocol):
    """aioimaplib's protocol, remembering the server's BYE text (it only logs it)."""

    bye: str | None = None

    def _handle_line(self, line: bytes, current_cmd: Any) -> Any:
        if line[:6].upper() == b"* BYE ":
            self.bye = line[6:].decode("utf-8", "replace").strip()
        return super()._handle_line(line, current_cmd)


class _Link:
    """One IMAP connection: aioimaplib's protocol plus what it lacks for a long-lived
    watcher (STARTTLS, fingerprint pinning, noticing a dropped connection mid-command)."""

    __slots__ = ("account", "lost", "proto", "timeout", "transport")

    def __init__(self, account: IdleAccount, timeout: float) -> None:
        self.account = account
        self.timeout = timeout
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.proto = _Protocol(asyncio.get_running_loop(), self._on_lost)
        self.transport: asyncio.BaseTransport | None = None

    def _on_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def lost_error(self) -> _SessionError:
        exc = self.lost.result() if self.lost.done() else None
        if self.proto.bye:
            return _SessionError(f"server said BYE: {self.proto.bye}")
        if exc is not None:
            return _SessionError(f"connection lost: {_describe(exc)}")
        return _SessionError("connection closed by server")

    async def call(self, aw: Awaitable[T], timeout: float | None = None) -> T:
        """Await ``aw``; fail fast if the connection drops, time out after ``timeout``."""
        task = asyncio.ensure_future(aw)
        limit = self.timeout if timeout is None else timeout
        try:
            done, _ = await asyncio.wait(
                (task, self.lost), timeout=limit, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:
            task.cancel()
            raise
        if task in done:
            return task.result()
        task.cancel()
        if self.lost.done():
            raise self.lost_error()
        raise _SessionError(f"no answer from the server within {limit:g} s")

    async def connect(self, tls: ssl.SSLContext | None, pinned: bool) -> None:
        """TCP (+ TLS for "tls", + STARTTLS for "starttls") and the server greeting."""
        acc = self.account
        loop = asyncio.get_running_loop()
        if acc.security == "tls":
            assert tls is not None
            self.transport = await self.call(
                _open_tls(self.proto, tls, acc.host, acc.port, self.timeout)
            )
            self._check_pin(pinned)
        else:
            self.transport, _ = await self.call(
                loop.create_connection(lambda: self.proto, acc.host, acc.port)
            )
        _keepalive(self.transport)
        await self.call(self.proto.wait("AUTH|NONAUTH"))
        if acc.security == "starttls":
            assert tls is not None
            if "STARTTLS" not in self.proto.capabilities:
                raise _SessionError("server does not offer STARTTLS")
            command = aioimaplib.Command("STARTTLS", self.proto.new_tag(), loop=loop)
            response = await self.call(self.proto.execute(command))
            if response.result != "OK":
                raise _SessionError(f"STARTTLS refused: {_last_text(response)}")
            self.transport = await self.call(
                _start_tls(self.transport, self.proto, tls, acc.host, self.timeout)
            )
            self.proto.transport = self.transport
            self._check_pin(pinned)
            await self.call(self.proto.capability())  # RFC 3501: forget pre-TLS capabilities

    def _check_pin(self, pinned: bool) -> None:
        if not pinned or self.transport is None:
            return
        tls_object = self.transport.get_extra_info("ssl_object")
        der = tls_object.getpeercert(binary_form=True) if tls_object else None
        got = tls.fingerprint(der) if der else ""
        if not tls.same_fingerprint(got, self.account.tls_fingerprint):
            raise _PinMismatch(f"its SHA-256 {got or '(none)'} is not the pinned fingerprint")

    async def login(self) -> None:
        acc, proto = self.account, self.proto
        if "LOGINDISABLED" in proto.capabilities:
            raise _AuthFailed("server refuses LOGIN on this connection (LOGINDISABLED); use TLS")
        secret = aioimaplib.quoted(acc.password)
        try:
            command = aioimaplib.Command(
                "LOGIN", proto.new_tag(), aioimaplib.quoted(acc.username), secret, loop=proto.loop
            )
        except ValueError:
            raise _AuthFailed("user name or password contains CR, LF or NUL") from None
        response = await self.call(proto.execute(command, scrub=secret))
        text = _scrub(_last_text(response), acc)
        if response.result != "OK":
            match = _RESP_CODE.match(text)
            if match and match.group(1).upper() in _TRANSIENT_CODES:
                raise _SessionError(f"login refused for now: {text}")
            raise _AuthFailed(text or f"LOGIN answered {response.result}")
        proto.state = aioimaplib.AUTH
        caps = next(
            (m.group(1) for line in response.lines if (m := _CAPABILITY.search(_bytes(line)))),
            None,
        )
        if caps is not None:
            proto.capabilities = set(caps.decode("ascii", "replace").upper().split())
        else:
            await self.call(proto.capability())

    async def select(self) -> None:
        proto, folder = self.proto, self.account.folder
        command = aioimaplib.Command(
            "SELECT", proto.new_tag(), aioimaplib.quoted(folder), loop=proto.loop
        )
        response = await self.call(proto.execute(command))
        if response.result != "OK":
            raise _SessionError(f"SELECT {folder} failed: {_last_text(response)}")
        proto.state = aioimaplib.SELECTED

    def has_idle(self) -> bool:
        return "IDLE" in {cap.upper() for cap in self.proto.capabilities}

    async def logout(self) -> None:
        with contextlib.suppress(Exception):
            await self.call(self.proto.logout(), timeout=LOGOUT_TIMEOUT)

    def close(self, abort: bool = False) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        for task in list(self.proto.tasks):  # aioimaplib's greeting task, if still around
            task.cancel()
            if task.done() and not task.cancelled():
                task.exception()  # a failed greeting was reported already; mark it retrieved


class _LeanSSLProtocol(sslproto.SSLProtocol):
    """asyncio's TLS layer reading into a 16 KiB buffer instead of 256 KiB.

    CPython allocates (and zero-fills) ``max_size`` bytes per TLS connection up front:
    256 KiB x 1,000 idle connections would be 250 MB for nothing, as an idling IMAP
    connection receives a few short lines; 16 KiB is one full TLS record.
    """

    max_size = 16 * 1024


# _LeanSSLProtocol relies on asyncio.sslproto as rewritten in Python 3.11; should a later
# Python change it, fall back to loop.start_tls (same behaviour, 256 KiB per connection).
_LEAN_TLS = "call_connection_made" in inspect.signature(sslproto.SSLProtocol).parameters


async def _open_tls(
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    host: str,
    port: int,
    timeout: float,
) -> asyncio.BaseTransport:
    """``loop.create_connection(ssl=context)`` using ``_LeanSSLProtocol``."""
    loop = asyncio.get_running_loop()
    if not _LEAN_TLS:
        transport, _ = await loop.create_connection(
            lambda: protocol,  # type: ignore[return-value]
            host,
            port,
            ssl=context,
            server_hostname=host,
            ssl_handshake_timeout=timeout,
        )
        return transport
    waiter = loop.create_future()
    # call_connection_made: the server greets right after the handshake, and the IMAP
    # protocol must have its TLS transport by then (it answers the greeting at once).
    tls = _LeanSSLProtocol(
        loop,
        protocol,
        context,
        waiter,
        server_side=False,
        server_hostname=host,
        call_connection_made=True,
        ssl_handshake_timeout=timeout,
        ssl_shutdown_timeout=LOGOUT_TIMEOUT,
    )
    raw, _ = await loop.create_connection(lambda: tls, host, port)
    try:
        await waiter
    except BaseException:
        raw.close()
        raise
    return tls._app_transport


async def _start_tls(
    transport: asyncio.BaseTransport,
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    server_hostname: str,
    timeout: float,
) -> asyncio.BaseTransport:
    """``loop.start_tls`` (same steps, client side) using ``_LeanSSLProtocol``.

    Only for STARTTLS: the server says nothing until the client's next command, so the
    caller can switch the IMAP protocol over to the returned transport afterwards.
    """
    loop = asyncio.get_running_loop()
    if not _LEAN_TLS or not getattr(transport, "_start_tls_compatible", False):
        return await loop.start_tls(
            transport,  # type: ignore[arg-type]
            protocol,
            context,
            server_hostname=server_hostname,
            ssl_handshake_timeout=timeout,
        )
    waiter = loop.create_future()
    tls = _LeanSSLProtocol(
        loop,
        protocol,
        context,
        waiter,
        server_side=False,
        server_hostname=server_hostname,
        call_connection_made=False,
        ssl_handshake_timeout=timeout,
        ssl_shutdown_timeout=LOGOUT_TIMEOUT,
    )
    assert isinstance(transport, asyncio.Transport)
    transport.pause_reading()  # no data for the TLS layer before its connection_made
    transport.set_protocol(tls)
    made = loop.call_soon(tls.connection_made, transport)
    resumed = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException:
        transport.close()
        made.cancel()
        resumed.cancel()
        raise
    return tls._app_transport


def _keepalive(transport: asyncio.BaseTransport) -> None:
    """TCP keepalive: notice a silently dead peer within ~4 min instead of at IDLE renewal."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 120)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 30)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)


def _bytes(line: Any) -> bytes:
    return line if isinstance(line, bytes) else bytes(line) if line is not None else b""


def _last_text(response: Any) -> str:
    lines = response.lines or [b""]
    return _bytes(lines[-1]).decode("utf-8", "replace").strip()


class _Watcher:
    """The task (and state) of one account."""

    __slots__ = (
        "account",
        "delivering",
        "flush_handle",
        "graceful",
        "link",
        "pending",
        "status",
        "stopping",
        "sup",
        "task",
    )

    def __init__(self, sup: IdleSupervisor, account: IdleAccount) -> None:
        loop = asyncio.get_running_loop()
        self.sup = sup
        self.account = account
        self.status = "connecting"
        self.stopping: asyncio.Future[None] = loop.create_future()
        self.graceful = False  # logged in: stop() may end it with DONE + LOGOUT
        self.link: _Link | None = None
        self.pending: dict[str, None] = {}  # reasons of the current burst, in order
        self.flush_handle: asyncio.TimerHandle | None = None
        self.delivering = False
        self.task = loop.create_task(self._run(), name=f"imap-idle-{account.key}")

    # -- lifecycle ---------------------------------------------------------------------------

    async def stop(self) -> None:
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        self.pending.clear()
        if not self.stopping.done():
            self.stopping.set_result(None)
        if not self.graceful:
            self.task.cancel()
        await asyncio.wait({self.task}, timeout=2 * LOGOUT_TIMEOUT + 1)
        if not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task})

    async def _run(self) -> None:
        acc, sup = self.account, self.sup
        failures = 0
        attempts = 0
        while not self.stopping.done():
            attempts += 1
            self.status = "connecting"
            established = False
            try:
                async with sup._connect_slots:
                    link = await self._open()
                self.graceful = True
                established = True
                failures = 0
                if attempts > 1:
                    self._notify("reconnected")
                if link.has_idle():
                    await self._idle(link)
                else:
                    await self._poll(link)
                await link.logout()  # stop() asked for it (after DONE when idling)
                link.close()
                return
            except asyncio.CancelledError:
                self._drop_link()
                raise
            except _AuthFailed as exc:
                self._drop_link()
                text = _scrub(str(exc), acc)
                self.status = f"auth failed: {text}"
                log.warning("%s: authentication failed: %s", acc.label, text)
                delay = sup.max_backoff * random.uniform(1.0, 1.1)  # noqa: S311 -- jitter
            except Exception as exc:
                self._drop_link()
                text = _scrub(_describe(exc), acc)
                failures = 1 if established else failures + 1
                delay = min(sup.max_backoff, 2.0 ** (failures - 1))
                delay *= random.uniform(0.5, 1.0)  # noqa: S311 -- jitter, not crypto
                self.status = f"backoff: {text}"
                expected = (OSError, _SessionError, _PinMismatch, aioimaplib.AioImapException)
                log.warning(
                    "%s: %s; reconnecting in %.1f s",
                    acc.label,
                    text,
                    delay,
                    exc_info=not isinstance(exc, expected),
                )
            finally:
                self.graceful = False
            await asyncio.sleep(delay)

    def _drop_link(self) -> None:
        if self.link is not None:
            self.link.close(abort=True)
            self.link = None

    def _new_link(self) -> _Link:
        self._drop_link()
        self.link = _Link(self.account, self.sup.timeout)
        return self.link

    async def _open(self) -> _Link:
        """Connect (pinned certificate first, then CA verification), LOGIN, SELECT."""
        acc, sup = self.account, self.sup
        link = self._new_link()
        if acc.security != "none" and acc.tls_fingerprint:
            try:
                await link.connect(sup._tls_context(acc, pinned=True), pinned=True)
            except _PinMismatch as mismatch:
                log.info("%s: %s; trying CA verification", acc.label, mismatch)
                link = self._new_link()
                try:
                    await link.connect(sup._tls_context(acc, pinned=False), pinned=False)
                except ssl.SSLCertVerificationError as exc:
                    raise _SessionError(f"{_describe(exc)}; {mismatch}") from exc
        else:
            tls = sup._tls_context(acc, pinned=False) if acc.security != "none" else None
            await link.connect(tls, pinned=False)
        await link.login()
        await link.select()
        return link

    async def _idle(self, link: _Link) -> None:
        """IDLE until stop(); re-issue it every renew_seconds. Returns after DONE."""
        proto, loop, sup = link.proto, asyncio.get_running_loop(), self.sup
        queue = proto.idle_queue
        getter: asyncio.Future[Any] | None = None
        idle: asyncio.Future[Any] | None = None
        try:
            while not self.stopping.done():
                idle = asyncio.ensure_future(proto.idle())
                ack = asyncio.ensure_future(proto.wait_for_idle_response())
                try:
                    await link.call(asyncio.wait({idle, ack}, return_when=asyncio.FIRST_COMPLETED))
                finally:
                    ack.cancel()
                if idle.done():  # a tagged answer instead of "+ idling"
                    raise _SessionError(f"IDLE refused: {_last_text(idle.result())}")
                self.status = "idling"
                deadline = loop.time() + sup.renew_seconds
                while True:
                    if getter is None:
                        getter = asyncio.ensure_future(queue.get())
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    done, _ = await asyncio.wait(
                        (getter, idle, link.lost, self.stopping),
                        timeout=remaining,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if getter in done:
                        batch, getter = getter.result(), None
                        self._handle(batch)
                        continue
                    if link.lost.done():
                        raise link.lost_error()
                    if idle.done():
                        raise _SessionError(f"server ended IDLE: {_last_text(idle.result())}")
                    break  # stop() or time to renew
                proto.idle_done()
                limit = LOGOUT_TIMEOUT if self.stopping.done() else None
                response = await link.call(idle, timeout=limit)
                while not queue.empty():
                    self._handle(queue.get_nowait())
                if response.result != "OK":
                    raise _SessionError(f"IDLE ended with {_last_text(response)}")
        finally:
            for future in (getter, idle):
                if future is not None and not future.done():
                    future.cancel()

    async def _poll(self, link: _Link) -> None:
        """No IDLE on this server: NOOP every poll_seconds until stop()."""
        self.status = "polling"
        while True:
            await asyncio.wait(
                (link.lost, self.stopping),
                timeout=self.sup.poll_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if self.stopping.done():
                return
            if link.lost.done():
                raise link.lost_error()
            response = await link.call(link.proto.simple_command("NOOP"))
            if response.result != "OK":
                raise _SessionError(f"NOOP failed: {_last_text(response)}")
            self._handle(response.lines[:-1])

    # -- events ------------------------------------------------------------------------------

    def _handle(self, lines: Sequence[Any]) -> None:
        if lines is aioimaplib.STOP_WAIT_SERVER_PUSH:
            return
        for raw in lines:
            line = _bytes(raw)
            if line.startswith(b"* "):
                line = line[2:]
            match = _MESSAGE_DATA.match(line)
            if match:
                self._notify(_REASON_BY_KEYWORD[match.group(1).upper()])
            elif line[:9].upper() == b"VANISHED ":  # QRESYNC's EXPUNGE
                self._notify("expunge")
            elif line[:4].upper() == b"BYE ":
                raise _SessionError(f"server said BYE: {line[4:].decode('utf-8', 'replace')}")

    def _notify(self, reason: str) -> None:
        if self.stopping.done():
            return
        self.pending[reason] = None
        if self.flush_handle is None and not self.delivering:
            loop = asyncio.get_running_loop()
            self.flush_handle = loop.call_later(COALESCE_SECONDS, self._flush)

    def _flush(self) -> None:
        self.flush_handle = None
        if not self.pending or self.stopping.done():
            return
        reasons = list(self.pending)
        self.pending.clear()
        self.delivering = True
        task = asyncio.get_running_loop().create_task(self._deliver(reasons))
        self.sup._deliveries.add(task)
        task.add_done_callback(self.sup._deliveries.discard)

    async def _deliver(self, reasons: list[str]) -> None:
        try:
            for reason in reasons:
                try:
                    result = self.sup.on_change(self.account.key, reason)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("on_change(%d, %r) failed", self.account.key, reason)
        finally:
            self.delivering = False
            if self.pending and self.flush_handle is None and not self.stopping.done():
                loop = asyncio.get_running_loop()
                self.flush_handle = loop.call_later(COALESCE_SECONDS, self._flush)


class IdleSupervisor:
    """Watch the folder of many accounts in one asyncio loop; see the module docstring."""

    def __init__(
        self,
        on_change: OnChange,
        *,
        renew_seconds: float = 25 * 60,
        max_backoff: float = 300.0,
        timeout: float = 30.0,
        poll_seconds: float = 60.0,
        connect_concurrency: int = 50,
    ) -> None:
        self.on_change = on_change
        self.renew_seconds = renew_seconds
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.poll_seconds = poll_seconds
        self.fd_limit = raise_fd_limit()
        self._connect_slots = asyncio.Semaphore(connect_concurrency)
        self._watchers: dict[int, _Watcher] = {}
        self._deliveries: set[asyncio.Task[None]] = set()
        self._tls_contexts: dict[tuple[str | None, bool], ssl.SSLContext] = {}
        self._reconcile = asyncio.Lock()
        self._stopped = asyncio.Event()

    async def set_accounts(self, accounts: Iterable[IdleAccount]) -> None:
        """Start new accounts, stop removed ones, restart changed ones (dataclass equality)."""
        wanted: dict[int, IdleAccount] = {}
        for account in accounts:
            if account.key in wanted:
                raise ValueError(f"account key {account.key} given twice")
            wanted[account.key] = account
        if self._stopped.is_set():
            raise RuntimeError("the supervisor was stopped")
        if len(wanted) + 64 > self.fd_limit:
            log.warning(
                "%d accounts but only %d file descriptors: shard them across processes",
                len(wanted),
                self.fd_limit,
            )
        async with self._reconcile:
            stale = [w for key, w in self._watchers.items() if wanted.get(key) != w.account]
            for watcher in stale:
                del self._watchers[watcher.account.key]
            await asyncio.gather(*(watcher.stop() for watcher in stale))
            for key, account in wanted.items():
                if key not in self._watchers:
                    self._watchers[key] = _Watcher(self, account)

    async def run_forever(self) -> None:
        """Run until stop(); cancelling it stops the supervisor too."""
        try:
            await self._stopped.wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """DONE + LOGOUT on every connection (briefly), close them all, end pending callbacks."""
        self._stopped.set()
        async with self._reconcile:
            watchers = list(self._watchers.values())
            self._watchers.clear()
            await asyncio.gather(*(watcher.stop() for watcher in watchers))
        if self._deliveries:
            await asyncio.wait(set(self._deliveries), timeout=LOGOUT_TIMEOUT)
            for task in set(self._deliveries):
                task.cancel()

    def status(self) -> dict[int, str]:
        """key -> "connecting" | "idling" | "polling" | "backoff: ..." | "auth failed: ..."."""
        return {key: watcher.status for key, watcher in self._watchers.items()}

    def _tls_context(self, account: IdleAccount, pinned: bool) -> ssl.SSLContext:
        """Shared per trust setting: one SSLContext holds the CA store, ~100s of KB."""
        cache_key = (None if pinned else account.ca_file, pinned)
        context = self._tls_contexts.get(cache_key)
        if context is None:
            # Pinned: the fingerprint check after the handshake replaces CA and name checks.
            context = tls.client_context(verify=not pinned, ca_file=account.ca_file)
            self._tls_contexts[cache_key] = context
        return context
