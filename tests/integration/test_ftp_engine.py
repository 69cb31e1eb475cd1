"""The FTP/FTPS engine against real pyftpdlib servers (plain, explicit and implicit FTPS,
MLSD on and off, and servers that misbehave on purpose: 452 on STOR, data connections cut
at 60%, PASV naming 10.0.0.1, FTPS that insists on TLS session reuse like vsftpd)."""

# ruff: noqa: S321 — plain ftplib is the reference peer these tests compare against.
from __future__ import annotations

import ftplib
import hashlib
import io
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from OpenSSL._util import lib as openssl_lib
from pyftpdlib.handlers import DTPHandler, ThrottledDTPHandler, TLS_DTPHandler
from pyftpdlib.log import logger

from ftpcore.protocols.ftp import (
    DIRECT_STORE_MAX,
    LISTING_CHECK_MIN,
    LISTING_CHECK_RATIO,
    PART_SUFFIX,
    FtpAuthError,
    FtpCertificateError,
    FtpCommandError,
    FtpConfig,
    FtpConnectionError,
    FtpSession,
    FtpTransferError,
    Security,
    check_login,
    partial_path,
    transfer_with_resume,
)
from tests.peers.certs import CertBundle
from tests.peers.fixtures import USERS
from tests.peers.ftp import Cut, CuttingDTP, FTPServer
from tests.unit.test_ftp_listing import CASES as CORPUS

REPO = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


def config(server: FTPServer, user: str = "alice", **options: object) -> FtpConfig:
    options.setdefault("timeout", 10.0)
    return FtpConfig(
        host=server.host, port=server.port, username=user, password=USERS[user], **options
    )


def tls_config(server: FTPServer, **options: object) -> FtpConfig:
    options.setdefault("security", Security.EXPLICIT_TLS)
    options.setdefault("ca_file", str(server.cert_path))
    return config(server, **options)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(size: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB, not compressible
    return (block * (size // len(block) + 1))[:size]


def round_trip(session: FtpSession, home: Path, name: str, data: bytes) -> None:
    assert session.upload(name, io.BytesIO(data)) == len(data)
    assert sha((home / name.lstrip("/")).read_bytes()) == sha(data)
    sink = io.BytesIO()
    assert session.download(name, sink) == len(data)
    assert sha(sink.getvalue()) == sha(data)


# --------------------------------------------------------------------------- special servers


class ReuseRequiredDTP(TLS_DTPHandler):
    """vsftpd's require_ssl_reuse: a data-channel handshake that does not resume the
    control connection's TLS session gets 522 and is closed."""

    def handle_ssl_established(self) -> None:
        if not openssl_lib.SSL_session_reused(self.socket._ssl):
            self.cmd_channel.respond("522 SSL connection failed: session reuse required")
            self.close()
            return
        super().handle_ssl_established()


def _implicit_tls(server: FTPServer) -> None:
    base = server.handler

    class ImplicitTLSHandler(base):  # type: ignore[misc, valid-type]
        def handle(self) -> None:  # TLS from the first byte, greeting after the handshake
            self.secure_connection(self.ssl_context)

        def handle_ssl_established(self) -> None:
            if not getattr(self, "_greeted", False):
                self._greeted = True
                base.handle(self)

    server.handler = ImplicitTLSHandler


def _refuse_stor(server: FTPServer) -> None:
    def ftp_STOR(self, file: str, mode: str = "w") -> None:
        if mode == "w":
            self.respond("452 Insufficient storage space on the test server.")
            return
        return type(self).__mro__[1].ftp_STOR(self, file, mode)

    server.handler.ftp_STOR = ftp_STOR


def _scripted_list(listing: bytes) -> Callable[[FTPServer], None]:
    """A server whose LIST replays canned lines (DOS/IIS, odd Unix...), whatever the dir."""

    def customize(server: FTPServer) -> None:
        def ftp_LIST(self, path: str) -> str:
            self.push_dtp_data(listing, isproducer=False, cmd="LIST")
            return path

        server.handler.ftp_LIST = ftp_LIST

    return customize


def _without_size_announcing_150(server: FTPServer) -> None:
    """No SIZE command, but the size in the 150 reply, as vsftpd words it; data cuttable."""
    base = server.handler

    class Vsftpdish(base):  # type: ignore[misc, valid-type]
        proto_cmds = {k: v for k, v in base.proto_cmds.items() if k != "SIZE"}
        dtp_handler = CuttingDTP
        use_sendfile = False

        def ftp_RETR(self, file: str) -> str | None:
            self._announce = os.path.getsize(file)
            return base.ftp_RETR(self, file)

        def respond(self, resp: str, logfun: Callable[..., None] = logger.debug) -> None:
            if resp[:4] in ("125 ", "150 ") and getattr(self, "_announce", None) is not None:
                resp = f"150 Opening BINARY mode data connection ({self._announce} bytes)."
                self._announce = None
            base.respond(self, resp, logfun)

    server.handler = Vsftpdish


def _no_epsv(server: FTPServer) -> None:
    cmds = server.handler.proto_cmds
    server.handler.proto_cmds = {k: v for k, v in cmds.items() if k != "EPSV"}


@pytest.fixture(scope="module")
def make_server(peer_cert: CertBundle) -> Iterator[Callable[..., FTPServer]]:
    started: list[FTPServer] = []

    def make(customize: Callable[[FTPServer], None] | None = None, **options: object) -> FTPServer:
        server = FTPServer(cert=peer_cert, **options)  # type: ignore[arg-type]
        if customize is not None:
            customize(server)
        for name, password in USERS.items():
            server.add_user(name, password)
        started.append(server.start())
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def list_server(make_server) -> FTPServer:
    return make_server(mlsd=False)


@pytest.fixture(scope="module")
def cutting_server(make_server) -> FTPServer:
    def customize(server: FTPServer) -> None:
        server.handler.dtp_handler = CuttingDTP
        server.handler.use_sendfile = False  # so every byte goes through CuttingDTP.send

    return make_server(customize)


@pytest.fixture
def cutting(cutting_server: FTPServer) -> Iterator[FTPServer]:
    cutting_server.clear_homes()
    yield cutting_server
    Cut.download = None
    Cut.upload = None
    Cut.stall = None
    Cut.stall_upload = None


@pytest.fixture(scope="module")
def reuse_server(make_server) -> FTPServer:
    def customize(server: FTPServer) -> None:
        server.handler.dtp_handler = ReuseRequiredDTP

    return make_server(customize, tls=True, tls_required=True)


# --------------------------------------------------------------------------- login


def test_login_welcome_and_features(ftp: FTPServer, recorder) -> None:
    seen = recorder(ftp)
    welcome, features = check_login(config(ftp))
    assert welcome == "Satchel test FTP server ready."
    assert {"UTF8", "EPSV", "SIZE", "MDTM", "REST STREAM"} <= features
    assert any(f.startswith("MLST ") for f in features)
    commands = [line.split(" ")[0] for line in seen]
    assert commands.index("FEAT") < commands.index("USER") < commands.index("PASS")
    assert "OPTS" in commands and seen[commands.index("OPTS")] == "OPTS UTF8 ON"
    assert commands[-1] == "QUIT"


def test_bad_login(ftp: FTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ftp.handler, "auth_failed_timeout", 0)
    bad = FtpConfig(host=ftp.host, port=ftp.port, username="alice", password="wrong")
    with pytest.raises(FtpAuthError) as caught:
        FtpSession(bad)
    assert caught.value.code == 530
    assert caught.value.reply == "Authentication failed."  # the server's own words
    assert "login refused" in caught.value.explanation.lower()
    assert str(caught.value) == "530 Authentication failed."


def test_config_is_checked_before_connecting() -> None:
    for bad in (
        {"username": "alice\r\nDELE x"},
        {"password": "pw\n"},
        {"port": 0},
        {"security": "ssl"},
        {"encoding": "utf-16"},
        {"encoding": "no-such-codec"},
        {"encoding": "latin-1", "username": "東京"},
    ):
        with pytest.raises(ValueError):
            FtpSession(FtpConfig(**{"host": "127.0.0.1", **bad}))  # type: ignore[arg-type]


def test_dropped_control_connection_is_a_typed_error(ftp: FTPServer, fault_proxy_factory) -> None:
    proxy = fault_proxy_factory(ftp.host, ftp.port)
    session = FtpSession(FtpConfig(host=proxy.host, port=proxy.port, username="alice",
                                   password=USERS["alice"], timeout=5))  # fmt: skip
    assert session.list("/") == []  # data goes straight to the server's passive port
    proxy.close_connections()
    with pytest.raises(FtpConnectionError) as caught:
        session.noop()
    assert caught.value.code is None and caught.value.explanation
    assert not session.alive
    with pytest.raises(FtpConnectionError):
        session.list("/")
    session.close()


def test_stalled_server_times_out(ftp: FTPServer, fault_proxy_factory) -> None:
    proxy = fault_proxy_factory(ftp.host, ftp.port)
    proxy.stall_after(0, seconds=3, direction="down", once=True)  # even the greeting
    started = time.monotonic()
    with pytest.raises(FtpConnectionError) as caught:
        FtpSession(FtpConfig(host=proxy.host, port=proxy.port, timeout=0.5))
    assert time.monotonic() - started < 2.5
    assert "in time" in caught.value.reply


# --------------------------------------------------------------------------- keep-alive, phases


def _idle_timeout(seconds: float, *, during_transfers: bool = False) -> Callable[[FTPServer], None]:
    """A server that hangs up on a control connection silent for ``seconds`` (421), like
    vsftpd's idle_session_timeout. ``during_transfers``: its timer runs on while a transfer
    goes (pyftpdlib stops it; NAT boxes and some servers do not), and downloads are sent at
    300 KiB/s (pyftpdlib's throttle sends bursts up to ~2 s apart)."""

    def customize(server: FTPServer) -> None:
        base = server.handler
        attrs: dict[str, object] = {"timeout": seconds}
        if during_transfers:

            def _on_dtp_connection(self) -> None:
                base._on_dtp_connection(self)
                self._idler = self.ioloop.call_later(
                    self.timeout, self.handle_timeout, _errback=self.handle_error
                )

            attrs["_on_dtp_connection"] = _on_dtp_connection
            attrs["dtp_handler"] = type(
                "SlowDTP", (ThrottledDTPHandler,), {"write_limit": 300 * 1024}
            )
            attrs["use_sendfile"] = False  # it would bypass the throttle
        server.handler = type("IdleTimeoutHandler", (base,), attrs)

    return customize


def _slow_replies(server: FTPServer) -> None:
    """Every reply comes 0.3 s late (a login then takes ~2.5 s, each reply well in time)."""
    base = server.handler

    def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
        self.ioloop.call_later(0.3, base.pre_process_command, self, line, cmd, arg)

    server.handler = type(
        "SlowRepliesHandler", (base,), {"pre_process_command": pre_process_command}
    )


def test_keepalive_holds_an_idle_session_the_server_would_drop(make_server, recorder) -> None:
    server = make_server(_idle_timeout(1.0))
    seen = recorder(server)
    # (One session at a time: pyftpdlib's timer heap misorders timers that were reset.)
    left = FtpSession(config(server, keepalive=0.3))
    time.sleep(1.6)
    with pytest.raises(FtpConnectionError) as caught:
        left.list("/")  # idle without keep-alive: the server hung up
    assert caught.value.code in (421, None) and not left.alive

    with FtpSession(config(server, keepalive=0.3)) as kept:
        assert kept.keepalive() is False  # just used: nothing to do
        sent = 0
        deadline = time.monotonic() + 2.2
        while time.monotonic() < deadline:
            sent += kept.keepalive()
            time.sleep(0.05)
        assert sent >= 4 and seen.count("NOOP") == sent
        assert kept.list("/") == []  # idle for twice the server's limit, still logged in


def test_noop_keeps_the_control_connection_alive_during_a_long_download(
    make_server, recorder
) -> None:
    server = make_server(_idle_timeout(3.0, during_transfers=True))
    data = payload(3 * MB // 2, seed=31)  # ~5 s at 300 KiB/s, in bursts ~2 s apart
    (server.homes["alice"] / "slow.bin").write_bytes(data)
    seen = recorder(server)
    with FtpSession(config(server, keepalive=0.3)) as session:
        sink = io.BytesIO()
        assert session.download("/slow.bin", sink) == len(data)
        assert sha(sink.getvalue()) == sha(data)
        noops = seen.count("NOOP")
        assert noops >= 2
        # Every NOOP reply was matched: the session is in step.
        assert [e.name for e in session.list("/")] == ["slow.bin"]
        session.noop()
    assert seen.count("NOOP") == noops + 1
    # Without keep-alive the server's idle timer cuts the same download.
    with (
        FtpSession(config(server, keepalive=0)) as session,
        pytest.raises((FtpConnectionError, FtpTransferError)),
    ):
        session.download("/slow.bin", io.BytesIO())


def _noop_answered_after_the_transfer(server: FTPServer) -> None:
    """Like ``_idle_timeout(3.0, during_transfers=True)``, but NOOPs that arrive during a
    transfer are answered only after its 226 (servers that queue commands meanwhile)."""
    _idle_timeout(3.0, during_transfers=True)(server)
    base = server.handler

    def ftp_NOOP(self, line: str) -> None:
        if self.data_channel is None:
            base.ftp_NOOP(self, line)
        else:
            self.held_noops = getattr(self, "held_noops", 0) + 1
            self._idler.reset()  # the server did see a command

    def _on_dtp_close(self) -> None:
        base._on_dtp_close(self)
        for _ in range(getattr(self, "held_noops", 0)):
            self.respond("200 NOOP, answered after the transfer.")
        self.held_noops = 0

    server.handler = type(
        "HoldingHandler", (base,), {"ftp_NOOP": ftp_NOOP, "_on_dtp_close": _on_dtp_close}
    )


def test_noop_replies_after_the_transfers_reply_are_matched(make_server, recorder) -> None:
    server = make_server(_noop_answered_after_the_transfer)
    data = payload(3 * MB // 2, seed=32)
    (server.homes["alice"] / "slow.bin").write_bytes(data)
    seen = recorder(server)
    with FtpSession(config(server, keepalive=0.3)) as session:
        sink = io.BytesIO()
        assert session.download("/slow.bin", sink) == len(data)
        assert sha(sink.getvalue()) == sha(data)
        assert seen.count("NOOP") >= 2
        assert session.size("/slow.bin") == len(data)  # the next reply is SIZE's, in step
        assert session.alive


def test_login_timeout_bounds_the_whole_login(make_server) -> None:
    server = make_server(_slow_replies)
    started = time.monotonic()
    with pytest.raises(FtpConnectionError) as caught:
        FtpSession(config(server, timeout=5, login_timeout=1.0))
    assert time.monotonic() - started < 2.5  # not 8 commands x 0.3 s, nor x 5 s
    assert "logging in took longer" in caught.value.reply.lower()
    with FtpSession(config(server, timeout=5, login_timeout=10)) as session:
        session.noop()  # each reply in time, the whole login too


def test_connect_timeout_bounds_the_greeting(ftp: FTPServer, fault_proxy_factory) -> None:
    proxy = fault_proxy_factory(ftp.host, ftp.port)
    proxy.stall_after(0, seconds=3, direction="down", once=True)
    started = time.monotonic()
    with pytest.raises(FtpConnectionError):
        FtpSession(FtpConfig(host=proxy.host, port=proxy.port, timeout=10, connect_timeout=0.5))
    assert time.monotonic() - started < 2.5


def test_phase_timeouts_and_keepalive_are_checked() -> None:
    for bad in (
        {"connect_timeout": 0},
        {"login_timeout": -1},
        {"data_timeout": 0},
        {"keepalive": -1},
    ):
        with pytest.raises(ValueError):
            FtpSession(FtpConfig(**{"host": "127.0.0.1", **bad}))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- browsing


def _tree(home: Path) -> None:
    (home / "docs" / "deep").mkdir(parents=True)
    (home / "docs" / "deep" / "x.bin").write_bytes(b"x" * 5)
    (home / "report 2024.pdf").write_bytes(b"%PDF" * 1000)
    (home / "empty.txt").write_bytes(b"")
    (home / "naïve café.txt").write_bytes(b"cafe")
    (home / "script.sh").write_bytes(b"#!/bin/sh\n")
    (home / "script.sh").chmod(0o750)


def test_browse_with_mlsd_and_with_list_gives_the_same_entries(
    ftp: FTPServer, list_server: FTPServer
) -> None:
    list_server.clear_homes()
    _tree(ftp.homes["alice"])
    _tree(list_server.homes["alice"])
    with FtpSession(config(ftp)) as mlsd, FtpSession(config(list_server)) as plain:
        assert any(f.startswith("MLST") for f in mlsd.features)
        assert not any(f.startswith("MLST") for f in plain.features)
        for path in ("/", "/docs", "docs/deep"):
            by_mlsd = sorted(mlsd.list(path), key=lambda e: e.name)
            by_list = sorted(plain.list(path), key=lambda e: e.name)
            assert [(e.name, e.type, e.size, e.permissions) for e in by_mlsd] == [
                (e.name, e.type, e.size, e.permissions) for e in by_list
            ]
            for a, b in zip(by_mlsd, by_list, strict=True):
                # LIST shows minutes only (or only the day for old files).
                assert a.modified is not None and b.modified is not None
                assert abs((a.modified - b.modified).total_seconds()) < 60
        top = {e.name: e for e in mlsd.list("/")}
        assert top["docs"].type == "dir" and top["docs"].size is None
        assert top["report 2024.pdf"].size == 4000
        assert top["script.sh"].permissions == "rwxr-x---"
        # The server's working directory moved for LIST; relative paths did not.
        assert plain.pwd() == "/"


def test_scripted_server_replaying_real_world_listings(make_server) -> None:
    cases = [c for c in CORPUS if c.kind == "L"]
    listing = b"\r\n".join(c.line.encode("utf-8") for c in cases)
    listing += b"\r\n-rw-r--r--   1 ftp ftp 3 Jan 12 14:02 caf\xe9.txt\r\n"  # not UTF-8
    server = make_server(_scripted_list(listing), mlsd=False)
    with FtpSession(config(server)) as session:
        entries = session.list("/")
    expected = [c.expected for c in cases if c.expected is not None]
    assert [e.name for e in entries] == [x["name"] for x in expected] + ["caf\udce9.txt"]
    for entry, want in zip(entries, expected, strict=False):
        for key in ("type", "size", "target", "permissions"):
            if key in want:
                assert getattr(entry, key) == want[key], (entry, want)
    assert entries[-1].raw_name == b"caf\xe9.txt"
    assert {e.type for e in entries} == {"file", "dir", "link"}


def test_list_shows_symlinks_with_targets(list_server: FTPServer) -> None:
    list_server.clear_homes()
    home = list_server.homes["alice"]
    (home / "real.txt").write_bytes(b"1")
    (home / "link to real").symlink_to("real.txt")
    with FtpSession(config(list_server)) as session:
        entries = {e.name: e for e in session.list("/")}
    assert entries["link to real"].type == "link"
    assert entries["link to real"].target == "real.txt"


def test_size_mdtm_cwd_and_path_normalisation(ftp: FTPServer) -> None:
    home = ftp.homes["alice"]
    (home / "sub" / "inner").mkdir(parents=True)
    (home / "sub" / "f.txt").write_bytes(b"12345")
    os.utime(home / "sub" / "f.txt", (1_600_000_000, 1_600_000_000))
    with FtpSession(config(ftp)) as session:
        session.cwd("sub")
        assert session.pwd() == "/sub"
        assert session.size("f.txt") == 5
        assert session.size("inner/../f.txt") == 5
        assert session.size("//sub/./f.txt") == 5
        assert session.mdtm("/sub/f.txt").timestamp() == 1_600_000_000
        assert sorted(e.name for e in session.list(".")) == ["f.txt", "inner"]
        session.cwd("..")
        assert session.pwd() == "/"
        session.cwd("../../sub/inner")  # ".." above the root stays at the root
        assert session.pwd() == "/sub/inner"


def test_missing_file_is_550_with_an_explanation(ftp: FTPServer) -> None:
    with FtpSession(config(ftp)) as session:
        with pytest.raises(FtpCommandError) as caught:
            session.download("/nope.txt", io.BytesIO())
        assert caught.value.code == 550
        assert caught.value.reply  # the server's words
        assert "does not exist" in caught.value.explanation
        with pytest.raises(FtpCommandError) as caught:
            session.delete("/nope.txt")
        assert caught.value.code == 550
        with pytest.raises(FtpCommandError):
            session.list("/no such dir")
        session.noop()  # still in step
        assert session.alive


# --------------------------------------------------------------------------- file operations


def test_upload_download_round_trip(ftp: FTPServer, recorder) -> None:
    home = ftp.homes["alice"]
    data = payload(3 * MB + 17)
    seen_progress: list[int] = []
    with FtpSession(config(ftp)) as session:
        seen = recorder(ftp)
        assert session.upload("/big.bin", io.BytesIO(data), progress=seen_progress.append) == len(
            data
        )
        # Written to a temporary name, checked, then renamed.
        stor = [line for line in seen if line.startswith(("STOR", "RNFR", "RNTO", "SIZE"))]
        assert stor[0] == f"STOR /.big.bin{PART_SUFFIX}"
        assert stor[-2:] == [f"RNFR /.big.bin{PART_SUFFIX}", "RNTO /big.bin"]
        assert sorted(p.name for p in home.iterdir()) == ["big.bin"]
        assert sha((home / "big.bin").read_bytes()) == sha(data)
        assert seen_progress[0] == 0 and seen_progress[-1] == len(data)
        assert seen_progress == sorted(seen_progress)

        sink = io.BytesIO()
        seen_progress.clear()
        assert session.download("big.bin", sink, progress=seen_progress.append) == len(data)
        assert sha(sink.getvalue()) == sha(data)
        assert seen_progress[-1] == len(data)

        # From a real file (os.sendfile), from where it stands, with progress all along.
        local = home.parent / "local-upload.bin"
        local.write_bytes(b"skipped" + data)
        seen_progress.clear()
        with local.open("rb") as source:
            source.seek(len(b"skipped"))
            assert session.upload("/from-file.bin", source, progress=seen_progress.append) == len(
                data
            )
            assert source.tell() == len(b"skipped") + len(data)
        assert sha((home / "from-file.bin").read_bytes()) == sha(data)
        assert seen_progress[0] == 0 and seen_progress[-1] == len(data)
        assert seen_progress == sorted(seen_progress)
        stream = session.iter_download("/from-file.bin")
        assert stream.size == len(data)
        assert sha(b"".join(stream)) == sha(data)
        local.unlink()


def test_store_writes_small_files_straight_and_returns_their_entries(ftp: FTPServer, recorder):
    home = ftp.homes["alice"]
    small, large = payload(DIRECT_STORE_MAX, seed=2), payload(DIRECT_STORE_MAX + 1, seed=3)
    with FtpSession(config(ftp)) as session:
        session.mkdir("/in dir")
        seen = recorder(ftp)
        entry = session.store("/in dir/ small é.txt", io.BytesIO(small), size=len(small))
        # Nothing there (MLST), so STOR to the name itself, then MLST: the size check and
        # the entry in one command.
        assert [line.split(" ")[0] for line in seen] == ["MLST", "EPSV", "STOR", "MLST"]
        assert seen[2] == "STOR /in dir/ small é.txt"
        assert entry is not None
        assert (entry.name, entry.type, entry.size) == (" small é.txt", "file", len(small))
        assert entry.modified is not None and entry.permissions
        assert sha((home / "in dir" / " small é.txt").read_bytes()) == sha(small)

        seen.clear()
        entry = session.store("/in dir/large.bin", io.BytesIO(large), size=len(large))
        assert f"RNFR /in dir/.large.bin{PART_SUFFIX}" in seen  # larger: a temporary name
        assert entry is not None and entry.size == len(large)
        assert sha((home / "in dir" / "large.bin").read_bytes()) == sha(large)
        assert sorted(p.name for p in (home / "in dir").iterdir()) == [" small é.txt", "large.bin"]

        seen.clear()  # a small file replacing one: the temporary name, the old copy safe
        entry = session.store("/in dir/ small é.txt", io.BytesIO(b"new"), size=3)
        assert f"RNFR /in dir/. small é.txt{PART_SUFFIX}" in seen
        assert entry is not None and entry.size == 3
        assert (home / "in dir" / " small é.txt").read_bytes() == b"new"


def test_store_without_mlst_checks_the_size_with_size(list_server: FTPServer, recorder) -> None:
    list_server.clear_homes()
    data = payload(5000)
    with FtpSession(config(list_server)) as session:
        seen = recorder(list_server)
        assert session.store("/f.txt", io.BytesIO(data), size=len(data)) is None
        assert [line.split(" ")[0] for line in seen] == ["SIZE", "EPSV", "STOR", "SIZE"]
    assert sha((list_server.homes["alice"] / "f.txt").read_bytes()) == sha(data)


def test_store_cut_short_deletes_what_arrived(cutting: FTPServer) -> None:
    data = payload(DIRECT_STORE_MAX, seed=5)
    Cut.upload = len(data) * 6 // 10
    with FtpSession(config(cutting)) as session:
        with pytest.raises(FtpTransferError) as caught:
            session.store("/cut.bin", io.BytesIO(data), size=len(data))
        assert caught.value.code == 426
        session.noop()
    assert not (cutting.homes["alice"] / "cut.bin").exists()  # no half file left behind


def test_store_cut_short_over_an_existing_file_keeps_it(cutting: FTPServer) -> None:
    old, data = payload(1000, seed=6), payload(DIRECT_STORE_MAX, seed=7)
    (cutting.homes["alice"] / "keep.bin").write_bytes(old)
    Cut.upload = len(data) * 6 // 10
    with FtpSession(config(cutting)) as session:
        with pytest.raises(FtpTransferError):
            session.store("/keep.bin", io.BytesIO(data), size=len(data))
        assert session.upload_offset("/keep.bin") > 0  # what arrived waits to be resumed
    assert (cutting.homes["alice"] / "keep.bin").read_bytes() == old


def _short_and_refusing(server: FTPServer) -> None:
    """Says 226 but keeps one byte less of files named "short*"; refuses "refuse*" (452)."""
    base = server.handler

    class Odd(base):  # type: ignore[misc, valid-type]
        def ftp_STOR(self, file: str, mode: str = "w") -> str | None:
            if os.path.basename(file).startswith("refuse"):
                self.respond("452 Insufficient storage space on the test server.")
                return None
            return base.ftp_STOR(self, file, mode)

        def on_file_received(self, file: str) -> None:
            if os.path.basename(file).startswith("short"):
                with open(file, "r+b") as stored:
                    stored.truncate(os.path.getsize(file) - 1)

    server.handler = Odd


def test_store_all_checks_many_small_files_with_one_listing(ftp: FTPServer, recorder) -> None:
    home = ftp.homes["alice"]
    files = {f"f{i:02d} é.txt": payload(100 + i, seed=i) for i in range(LISTING_CHECK_MIN)}
    files["big.bin"] = payload(DIRECT_STORE_MAX + 1)
    with FtpSession(config(ftp)) as session:
        session.mkdir("/many")
        seen = recorder(ftp)
        sources = [(name, io.BytesIO(data), len(data)) for name, data in files.items()]
        entries = session.store_all("/many", sources)
    verbs = [line.split(" ")[0] for line in seen]
    # The folder's names (NLST) tell what is there already; one listing checks the sizes.
    assert verbs.count("STOR") == len(files) and verbs.count("MLSD") == 1
    assert verbs.count("NLST") == 1
    assert "MLST" not in verbs and verbs.count("SIZE") == 1  # big.bin's own check
    assert verbs.count("RNFR") == 1  # big.bin's temporary name
    assert {name: entries[name].size for name in files} == {n: len(d) for n, d in files.items()}
    assert all((home / "many" / name).read_bytes() == data for name, data in files.items())

    with FtpSession(config(ftp)) as session:  # again: each small file replaces one
        seen.clear()
        sources = [(name, io.BytesIO(b"again"), 5) for name in files]
        session.store_all("/many", sources)
    assert [line.split(" ")[0] for line in seen].count("RNFR") == len(files)
    assert all((home / "many" / name).read_bytes() == b"again" for name in files)


def test_store_all_into_a_big_folder_checks_each_file_by_mlst(ftp: FTPServer, recorder) -> None:
    folder = ftp.homes["alice"] / "big"
    folder.mkdir()
    for i in range(LISTING_CHECK_RATIO * LISTING_CHECK_MIN + 1):
        (folder / f"old{i:04d}").write_bytes(b"")
    files = {f"new{i:02d}": payload(50 + i, seed=i) for i in range(LISTING_CHECK_MIN)}
    with FtpSession(config(ftp)) as session:
        seen = recorder(ftp)
        entries = session.store_all("/big", [(n, io.BytesIO(d), len(d)) for n, d in files.items()])
    verbs = [line.split(" ")[0] for line in seen]
    assert verbs.count("NLST") == 1 and "MLSD" not in verbs  # the folder is not listed whole
    assert verbs.count("MLST") == len(files)  # the size check, per file
    assert {name: entries[name].size for name in files} == {n: len(d) for n, d in files.items()}
    assert all((folder / name).read_bytes() == data for name, data in files.items())


def test_store_all_deletes_a_short_file_and_checks_those_before_a_refusal(make_server) -> None:
    server = make_server(_short_and_refusing)
    home = server.homes["alice"]

    def many() -> list[tuple[str, io.BytesIO, int]]:
        return [(f"ok{i:02d}", io.BytesIO(b"x" * 10), 10) for i in range(LISTING_CHECK_MIN)]

    with FtpSession(config(server)) as session:
        with pytest.raises(FtpTransferError, match=r"short\.txt: the server stored 9 bytes"):
            session.store_all("/", [*many(), ("short.txt", io.BytesIO(b"y" * 10), 10)])
        assert not (home / "short.txt").exists()
        assert (home / "ok00").read_bytes() == b"x" * 10

        with pytest.raises(FtpCommandError) as caught:
            session.store_all(
                "/",
                [
                    ("short2.txt", io.BytesIO(b"z" * 10), 10),
                    *many(),
                    ("refuse", io.BytesIO(b""), 0),
                ],
            )
        assert caught.value.code == 452  # the refusal is what is raised...
        assert not (home / "short2.txt").exists()  # ...after the files before it were checked
        session.noop()


def test_store_all_without_mlsd_checks_each_and_lists_once(list_server, recorder) -> None:
    list_server.clear_homes()
    files = [(f"n{i}", io.BytesIO(b"n" * i), i) for i in range(LISTING_CHECK_MIN)]
    with FtpSession(config(list_server)) as session:
        seen = recorder(list_server)
        entries = session.store_all("/", files)
    verbs = [line.split(" ")[0] for line in seen]
    # SIZE twice a file: is one there already, then the size check; one LIST for entries.
    assert verbs.count("SIZE") == 2 * len(files) and verbs.count("LIST") == 1
    assert [entries[f"n{i}"].size for i in range(LISTING_CHECK_MIN)] == list(range(16))


def test_streamed_download_closed_early_keeps_the_session(ftp: FTPServer) -> None:
    (ftp.homes["alice"] / "f.bin").write_bytes(payload(4 * MB))
    with FtpSession(config(ftp)) as session:
        stream = session.iter_download("/f.bin")
        first = next(iter(stream))
        assert first
        stream.close()
        session.noop()
        assert session.size("/f.bin") == 4 * MB


def test_progress_callback_can_cancel(ftp: FTPServer) -> None:
    (ftp.homes["alice"] / "f.bin").write_bytes(payload(4 * MB))

    class Cancelled(Exception):
        pass

    def cancel(done: int) -> None:
        if done > 0:
            raise Cancelled

    with FtpSession(config(ftp)) as session:
        with pytest.raises(Cancelled):
            session.download("/f.bin", io.BytesIO(), progress=cancel)
        assert session.alive
        session.noop()


class _SlowReader(DTPHandler):
    """Takes uploads in smoothly at under 64 MiB/s (pyftpdlib's throttle pauses for
    seconds at a time)."""

    def recv(self, buffer_size: int) -> bytes:
        time.sleep(0.001)
        return super().recv(buffer_size)


def _reading_slowly(server: FTPServer) -> None:
    server.handler.dtp_handler = _SlowReader


def test_progress_callback_cancels_an_upload_sent_from_a_file(make_server, tmp_path) -> None:
    server = make_server(_reading_slowly)
    local = tmp_path / "f.bin"
    local.write_bytes(payload(48 * MB))  # far more than the socket buffers hold
    seen: list[int] = []

    class Cancelled(Exception):
        pass

    def cancel(done: int) -> None:
        seen.append(done)
        if done > 0:
            raise Cancelled

    with FtpSession(config(server)) as session:
        with local.open("rb", buffering=0) as source, pytest.raises(Cancelled):
            session.upload("/up.bin", source, progress=cancel)  # os.sendfile
        assert 0 < seen[-1] < 48 * MB
        assert session.alive
        session.noop()
    assert not (server.homes["alice"] / "up.bin").exists()


def test_rename_move_mkdir_chmod_delete_tree(ftp: FTPServer) -> None:
    home = ftp.homes["alice"]
    with FtpSession(config(ftp)) as session:
        session.mkdir("/a")
        session.mkdir("/a/b/c/d", parents=True)
        session.mkdir("/a/b", parents=True)  # exists already: fine
        assert (home / "a" / "b" / "c" / "d").is_dir()
        with pytest.raises(FtpCommandError):
            session.mkdir("/a")  # exists, without parents=True
        session.upload("/a/file.txt", io.BytesIO(b"hello"))
        session.rename("/a/file.txt", "/a/renamed.txt")
        session.rename("/a/renamed.txt", "/a/b/c/moved.txt")  # move to another directory
        assert (home / "a" / "b" / "c" / "moved.txt").read_bytes() == b"hello"
        assert not (home / "a" / "renamed.txt").exists()
        session.chmod("/a/b/c/moved.txt", 0o640)
        assert (home / "a" / "b" / "c" / "moved.txt").stat().st_mode & 0o7777 == 0o640
        session.chmod("/a/b", 0o700)
        assert (home / "a" / "b").stat().st_mode & 0o777 == 0o700
        with pytest.raises(ValueError):
            session.chmod("/a", 0o10000)
        # A symlink to a directory outside the tree: removed, never followed.
        outside = home / "keep"
        outside.mkdir()
        (outside / "precious.txt").write_bytes(b"keep me")
        (home / "a" / "b" / "link-out").symlink_to(outside)
        session.upload("/a/b/c/d/deep.txt", io.BytesIO(b"deep"))
        session.delete_tree("/a")
        assert not (home / "a").exists()
        assert (outside / "precious.txt").read_bytes() == b"keep me"
        session.delete_tree("/keep/precious.txt")  # a plain file
        session.rmdir("/keep")
        assert list(home.iterdir()) == []
        with pytest.raises(ValueError):
            session.delete_tree("/")


def test_ascii_mode(ftp: FTPServer) -> None:
    home = ftp.homes["alice"]
    with FtpSession(config(ftp)) as session:
        session.upload("/notes.txt", io.BytesIO(b"one\ntwo\r\nthree\n"), ascii=True)
        assert (home / "notes.txt").read_bytes() == b"one\ntwo\nthree\n"
        sink = io.BytesIO()
        session.download("/notes.txt", sink, ascii=True)
        assert sink.getvalue() == b"one\ntwo\nthree\n"
        with pytest.raises(ValueError):
            session.download("/notes.txt", io.BytesIO(), offset=3, ascii=True)
        # Binary afterwards again: SIZE works (pyftpdlib refuses SIZE in ASCII mode).
        assert session.size("/notes.txt") == 14


def test_452_on_stor_is_a_clear_error(make_server) -> None:
    server = make_server(_refuse_stor)
    with FtpSession(config(server)) as session:
        with pytest.raises(FtpCommandError) as caught:
            session.upload("/f.bin", io.BytesIO(b"data"))
        assert caught.value.code == 452
        assert caught.value.reply == "Insufficient storage space on the test server."
        assert "out of space" in caught.value.explanation
        session.noop()


def test_control_characters_in_paths_are_refused_before_sending(ftp: FTPServer, recorder) -> None:
    (ftp.homes["alice"] / "x").write_bytes(b"x")
    with FtpSession(config(ftp)) as session:
        seen = recorder(ftp)
        attempts: list[Callable[[], object]] = [
            lambda: session.download("x\r\nDELE x", io.BytesIO()),
            lambda: session.upload("y\nDELE x", io.BytesIO(b"")),
            lambda: session.list("/\rDELE x"),
            lambda: session.mkdir("a\0b"),
            lambda: session.rename("x", "z\r\nDELE x"),
            lambda: session.delete("x\n"),
            lambda: session.delete_tree("x\r"),
            lambda: session.cwd("\n"),
            lambda: session.chmod("x\r\n", 0o644),
            lambda: session.size(b"x\r\nDELE x"),
        ]
        for attempt in attempts:
            with pytest.raises(ValueError):
                attempt()
        assert seen == []
        session.noop()
    assert (ftp.homes["alice"] / "x").exists()


# --------------------------------------------------------------------------- cut and resumed


def test_download_cut_at_60_percent_resumes_identically(cutting: FTPServer) -> None:
    data = payload(3 * MB + 5, seed=2)
    (cutting.homes["alice"] / "f.bin").write_bytes(data)
    cut_at = len(data) * 6 // 10
    Cut.download = (cut_at, False)
    sink = io.BytesIO()
    with FtpSession(config(cutting)) as session:
        with pytest.raises(FtpTransferError) as caught:
            session.download("/f.bin", sink)
        assert caught.value.code == 426
        assert caught.value.bytes_done == cut_at == len(sink.getvalue())
        assert "aborted" in caught.value.explanation
        assert session.alive  # the control connection is still in step
        done = session.download("/f.bin", sink, offset=caught.value.bytes_done)
    assert done == len(data)
    assert sha(sink.getvalue()) == sha(data)


def test_short_download_reported_as_226_is_caught_by_the_size_check(cutting: FTPServer) -> None:
    data = payload(2 * MB, seed=3)
    (cutting.homes["alice"] / "f.bin").write_bytes(data)
    Cut.download = (MB, True)  # the server lies: 226 after 1 MiB
    sink = io.BytesIO()
    with FtpSession(config(cutting)) as session:
        with pytest.raises(FtpTransferError) as caught:
            session.download("/f.bin", sink)
        assert caught.value.bytes_done == MB
        assert f"{MB} of {2 * MB}" in caught.value.reply
        session.download("/f.bin", sink, offset=MB)
    assert sha(sink.getvalue()) == sha(data)


def test_without_size_the_150_reply_still_allows_the_check(make_server) -> None:
    server = make_server(_without_size_announcing_150)
    data = payload(2 * MB, seed=14)
    (server.homes["alice"] / "f.bin").write_bytes(data)
    try:
        with FtpSession(config(server)) as session:
            assert session.size("/f.bin") is None  # 500: not implemented
            sink = io.BytesIO()
            assert session.download("/f.bin", sink) == len(data)
            Cut.download = (MB, True)  # a lying 226 after 1 MiB
            with pytest.raises(FtpTransferError) as caught:
                session.download("/f.bin", io.BytesIO())
            assert caught.value.bytes_done == MB
            assert session.upload("/up.bin", io.BytesIO(data)) == len(data)  # no SIZE check
        assert sha((server.homes["alice"] / "up.bin").read_bytes()) == sha(data)
    finally:
        Cut.download = None


def _upload_source(kind: str, data: bytes, tmp_path: Path) -> BinaryIO:
    """A stream goes through the session's buffer; a regular file by ``os.sendfile``."""
    if kind == "stream":
        return io.BytesIO(data)
    local = tmp_path / "source.bin"
    local.write_bytes(data)
    return local.open("rb", buffering=0)


@pytest.mark.parametrize("kind", ["stream", "file"])
def test_upload_cut_at_60_percent_resumes_identically(
    cutting: FTPServer, tmp_path: Path, kind: str
) -> None:
    home = cutting.homes["alice"]
    data = payload(3 * MB + 11, seed=4)
    Cut.upload = len(data) * 6 // 10
    with _upload_source(kind, data, tmp_path) as source:
        with FtpSession(config(cutting)) as session, pytest.raises(FtpTransferError):
            session.upload("/up.bin", source)
        assert not (home / "up.bin").exists()  # never under the final name while partial
        with FtpSession(config(cutting)) as session:
            offset = session.upload_offset("/up.bin")
            assert offset == len(data) * 6 // 10
            assert (home / f".up.bin{PART_SUFFIX}").stat().st_size == offset
            source.seek(offset)
            assert session.upload("/up.bin", source, offset=offset, size=len(data)) == len(data)
    assert sha((home / "up.bin").read_bytes()) == sha(data)
    assert not (home / f".up.bin{PART_SUFFIX}").exists()
    assert partial_path("/d/up.bin") == f"/d/.up.bin{PART_SUFFIX}"


@pytest.mark.parametrize("kind", ["stream", "file"])
def test_stalled_upload_times_out_and_resumes(
    cutting: FTPServer, tmp_path: Path, kind: str
) -> None:
    # Big enough that the socket buffers fill up behind the stalled server.
    data = payload(48 * MB, seed=15)
    Cut.stall_upload = MB
    started = time.monotonic()
    with _upload_source(kind, data, tmp_path) as source:
        with FtpSession(config(cutting, timeout=0.5)) as session:
            with pytest.raises(FtpTransferError) as caught:
                session.upload("/up.bin", source)
            assert "stalled" in caught.value.reply
            assert not session.alive  # the server never answered: the session was dropped
        assert time.monotonic() - started < 5
        with FtpSession(config(cutting)) as session:
            offset = session.upload_offset("/up.bin")
            assert MB <= offset < len(data)
            source.seek(offset)
            assert session.upload("/up.bin", source, offset=offset, size=len(data)) == len(data)
    assert sha((cutting.homes["alice"] / "up.bin").read_bytes()) == sha(data)


def test_stalled_data_connection_times_out_and_resumes(cutting: FTPServer) -> None:
    data = payload(2 * MB, seed=13)
    (cutting.homes["alice"] / "f.bin").write_bytes(data)
    Cut.stall = MB
    sink = io.BytesIO()
    started = time.monotonic()
    with FtpSession(config(cutting, timeout=0.5)) as session:
        with pytest.raises(FtpTransferError) as caught:
            session.download("/f.bin", sink)
        assert "stalled" in caught.value.reply
        assert caught.value.bytes_done == len(sink.getvalue()) >= MB
        assert not session.alive  # the server never answered: the session was dropped
    assert time.monotonic() - started < 3
    with FtpSession(config(cutting)) as session:
        session.download("/f.bin", sink, offset=caught.value.bytes_done)
    assert sha(sink.getvalue()) == sha(data)


def test_transfer_with_resume_retries_by_itself(cutting: FTPServer) -> None:
    home = cutting.homes["alice"]
    data = payload(2 * MB + 3, seed=5)
    (home / "f.bin").write_bytes(data)
    sessions: list[FtpSession] = []
    sleeps: list[float] = []

    def open_session() -> FtpSession:
        sessions.append(FtpSession(config(cutting)))
        return sessions[-1]

    Cut.download = (len(data) * 6 // 10, False)
    sink = io.BytesIO()
    total = transfer_with_resume(
        open_session, "/f.bin", sink, direction="download", sleep=sleeps.append
    )
    assert total == len(data) and sha(sink.getvalue()) == sha(data)
    assert len(sessions) == 2 and sleeps == [1.0]
    assert not any(s.alive for s in sessions)

    Cut.upload = len(data) // 2
    total = transfer_with_resume(
        open_session, "/up.bin", io.BytesIO(data), direction="upload", size=len(data),
        sleep=sleeps.append,
    )  # fmt: skip
    assert total == len(data)
    assert sha((home / "up.bin").read_bytes()) == sha(data)


# --------------------------------------------------------------------------- data connections


def test_pasv_naming_another_host_is_never_dialled(make_server) -> None:
    server = make_server(_no_epsv, masquerade_address="10.0.0.1")
    raw = ftplib.FTP()
    raw.connect(server.host, server.port, timeout=5)
    raw.login("alice", USERS["alice"])
    assert "(10,0,0,1," in raw.sendcmd("PASV")  # the server really names 10.0.0.1
    raw.close()
    home = server.homes["alice"]
    with FtpSession(config(server, timeout=3)) as session:
        round_trip(session, home, "/via-pasv.bin", payload(MB, seed=6))
        assert session.data_address is not None
        assert session.data_address[0] == "127.0.0.1"
        assert session.data_address[1] in server.passive_ports
        assert [e.name for e in session.list("/")] == ["via-pasv.bin"]


def test_active_mode(ftp: FTPServer, recorder) -> None:
    seen = recorder(ftp)
    with FtpSession(config(ftp, passive=False)) as session:
        round_trip(session, ftp.homes["alice"], "/active.bin", payload(MB, seed=7))
        assert [e.name for e in session.list("/")] == ["active.bin"]
        assert session.data_address is not None and session.data_address[0] == "127.0.0.1"
    assert any(line.startswith("EPRT |1|127.0.0.1|") for line in seen)
    assert not any(line.startswith(("PASV", "EPSV")) for line in seen)


# --------------------------------------------------------------------------- FTPS


def test_explicit_ftps_with_ca_file(ftps: FTPServer, recorder) -> None:
    seen = recorder(ftps)
    with FtpSession(tls_config(ftps)) as session:
        assert session.certificate_fingerprint == ftps.fingerprint
        assert "AUTH TLS" in session.features
        round_trip(session, ftps.homes["alice"], "/secret.bin", payload(2 * MB, seed=8))
        assert [e.name for e in session.list("/")] == ["secret.bin"]
    commands = [line.split(" ")[0] for line in seen]
    assert commands[0] == "AUTH"
    assert commands.index("PBSZ") < commands.index("PROT")
    assert "PROT P" in seen


def test_explicit_ftps_with_pinned_fingerprint(ftps: FTPServer) -> None:
    pinned = ftps.fingerprint.replace(":", "").lower()  # any spelling
    with FtpSession(config(ftps, security="explicit_tls", tls_fingerprint=pinned)) as session:
        round_trip(session, ftps.homes["alice"], "/pinned.bin", payload(MB, seed=9))


def test_untrusted_certificate_reports_fingerprint_and_keeps_the_password(
    ftps: FTPServer, recorder
) -> None:
    seen = recorder(ftps)
    with pytest.raises(FtpCertificateError) as caught:
        FtpSession(config(ftps, security="explicit_tls"))
    assert caught.value.fingerprint == ftps.fingerprint
    assert "not trusted" in caught.value.reply
    assert not any(line.startswith(("USER", "PASS")) for line in seen)

    seen.clear()
    wrong = "AA:" * 31 + "AA"
    with pytest.raises(FtpCertificateError) as caught:
        FtpSession(config(ftps, security="explicit_tls", tls_fingerprint=wrong))
    assert caught.value.fingerprint == ftps.fingerprint
    assert "different certificate" in caught.value.reply
    assert not any(line.startswith(("USER", "PASS")) for line in seen)


def test_ftps_refused_by_a_plain_server_and_plain_refused_by_a_tls_server(
    ftp: FTPServer, reuse_server: FTPServer, recorder
) -> None:
    seen = recorder(ftp)
    with pytest.raises(FtpCommandError) as caught:
        FtpSession(config(ftp, security="explicit_tls"))  # never falls back to plain
    assert caught.value.code == 500
    assert "does not offer FTPS" in caught.value.explanation
    assert not any(line.startswith(("USER", "PASS")) for line in seen)
    with pytest.raises(FtpAuthError) as caught:
        FtpSession(config(reuse_server))  # plain FTP to a server that requires TLS
    assert caught.value.reply == "SSL/TLS required on the control channel."
    assert "require FTPS" in caught.value.explanation


def test_tls_session_reuse_required_works_where_ftplib_fails(reuse_server: FTPServer) -> None:
    home = reuse_server.homes["alice"]
    (home / "listed.txt").write_bytes(b"1")
    with FtpSession(tls_config(reuse_server)) as session:
        assert [e.name for e in session.list("/")] == ["listed.txt"]
        round_trip(session, home, "/reused.bin", payload(MB, seed=10))

    # Unpatched ftplib.FTP_TLS makes a fresh TLS session per data connection: 522.
    context = ssl.create_default_context(cafile=str(reuse_server.cert_path))
    plain = ftplib.FTP_TLS(context=context, timeout=5)
    plain.connect(reuse_server.host, reuse_server.port)
    plain.login("alice", USERS["alice"])
    plain.prot_p()
    with pytest.raises(ftplib.error_perm, match="522 SSL connection failed: session reuse"):
        plain.retrbinary("RETR reused.bin", lambda _chunk: None)
    plain.close()


def test_implicit_ftps(make_server) -> None:
    server = make_server(_implicit_tls, tls=True)
    cfg = tls_config(server, security=Security.IMPLICIT_TLS)
    welcome, features = check_login(cfg)
    assert welcome == "Satchel test FTP server ready."
    assert "PROT" in features
    with FtpSession(cfg) as session:
        assert session.certificate_fingerprint == server.fingerprint
        round_trip(session, server.homes["alice"], "/implicit.bin", payload(MB, seed=11))


# --------------------------------------------------------------------------- names


NAMES = [" leading space.txt", "naïve café.txt", "東京.txt", "with  two spaces.txt", "Ünï cödé ☃"]


def test_unicode_and_space_laden_names_round_trip(ftp: FTPServer) -> None:
    home = ftp.homes["alice"]
    with FtpSession(config(ftp)) as session:
        session.mkdir("/dir with spaces")
        for number, name in enumerate(NAMES):
            data = payload(1000 + number, seed=number)
            session.upload(f"/dir with spaces/{name}", io.BytesIO(data))
            assert (home / "dir with spaces" / name).read_bytes() == data
        entries = session.list("/dir with spaces")
        assert sorted(e.name for e in entries) == sorted(NAMES)
        assert session.names("/dir with spaces") == set(NAMES)
        for entry in entries:
            assert entry.raw_name == entry.name.encode("utf-8")
            sink = io.BytesIO()
            session.download(f"/dir with spaces/{entry.name}", sink)
            assert sink.getvalue() == (home / "dir with spaces" / entry.name).read_bytes()
        sink = io.BytesIO()
        session.download(b"/dir with spaces/" + "東京.txt".encode(), sink)  # bytes paths too
        assert len(sink.getvalue()) == 1002


def test_latin1_site_encoding_round_trips(make_server) -> None:
    def byte_transparent(server: FTPServer) -> None:
        # Like vsftpd or proftpd: names are bytes on disk and on the wire.
        server.handler.unicode_errors = "surrogateescape"

    server = make_server(byte_transparent)
    home = server.homes["alice"]
    on_disk = os.fsdecode(b"caf\xe9.txt")
    (home / on_disk).write_bytes(b"latin-1 content")
    with FtpSession(config(server, encoding="latin-1")) as session:
        [entry] = session.list("/")
        assert entry.name == "café.txt"
        assert session.names("/") == {"café.txt"}
        assert entry.raw_name == b"caf\xe9.txt"
        sink = io.BytesIO()
        session.download("/café.txt", sink)
        assert sink.getvalue() == b"latin-1 content"
        session.upload("/naïve.txt", io.BytesIO(b"up"))
        with pytest.raises(ValueError):
            session.upload("/東京.txt", io.BytesIO(b"x"))  # not representable in latin-1
    assert sorted(os.listdir(os.fsencode(home))) == [b"caf\xe9.txt", b"na\xefve.txt"]

    # The same server with the default UTF-8: undecodable names still round-trip.
    with FtpSession(config(server)) as session:
        entries = {e.raw_name: e for e in session.list("/")}
        entry = entries[b"caf\xe9.txt"]
        assert entry.name == "caf\udce9.txt"
        for path in ("/" + entry.name, b"/" + entry.raw_name):
            sink = io.BytesIO()
            session.download(path, sink)
            assert sink.getvalue() == b"latin-1 content"
        session.rename("/" + entry.name, "/cafe.txt")
    assert (home / "cafe.txt").exists()


# --------------------------------------------------------------------------- throughput


_SERVER_SCRIPT = """
import sys
from tests.peers.ftp import FTPServer
from tests.unit.test_ftp_listing import CASES as CORPUS
server = FTPServer()
server.add_user("alice", "secret-alice", home=sys.argv[1])
server.start()
print(server.port, flush=True)
sys.stdin.readline()
server.stop()
"""


def test_throughput_against_curl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not a timed assertion: prints MB/s for 200 MB down and up, engine vs curl, same
    server (in its own process so it does not share our GIL), same run, best of 3."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is not installed: apt-get install -y curl")
    home = tmp_path / "home"
    home.mkdir()
    size = 200 * MB
    with (home / "big.bin").open("wb") as out:
        block = payload(8 * MB, seed=12)
        for _ in range(size // len(block)):
            out.write(block)
    local = tmp_path / "local.bin"
    os.link(home / "big.bin", local)
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER_SCRIPT, str(home)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        url = f"ftp://alice:secret-alice@127.0.0.1:{port}"
        cfg = FtpConfig(host="127.0.0.1", port=port, username="alice", password="secret-alice")
        timings: dict[str, list[float]] = {
            k: [] for k in ("curl down", "ours down", "curl up", "ours up")
        }

        def timed(key: str, action: Callable[[], object]) -> None:
            started = time.perf_counter()
            action()
            timings[key].append(time.perf_counter() - started)

        with FtpSession(cfg) as session:
            for _ in range(3):
                timed("curl down", lambda: subprocess.run(
                    [curl, "-s", "-o", "/dev/null", f"{url}/big.bin"], check=True))  # fmt: skip
                with open(os.devnull, "wb", buffering=0) as sink:
                    timed("ours down", lambda: session.download("/big.bin", sink))
                timed("curl up", lambda: subprocess.run(
                    [curl, "-s", "-T", str(local), f"{url}/curl-up.bin"], check=True))  # fmt: skip
                with local.open("rb") as source:
                    timed("ours up", lambda: session.upload("/ours-up.bin", source))
        assert (home / "ours-up.bin").stat().st_size == size
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(timeout=10)
        shutil.rmtree(home, ignore_errors=True)  # pytest keeps tmp dirs: no 800 MB left over
        local.unlink(missing_ok=True)

    def rate(key: str) -> float:
        return size / MB / min(timings[key])

    down, up = rate("ours down") / rate("curl down"), rate("ours up") / rate("curl up")
    with capsys.disabled():
        print(
            "\n[ftp throughput, 200 MB loopback, best of 3]"
            f" download: ours {rate('ours down'):.0f} MB/s vs curl {rate('curl down'):.0f} MB/s"
            f" ({down:.2f}x); upload: ours {rate('ours up'):.0f} MB/s"
            f" vs curl {rate('curl up'):.0f} MB/s ({up:.2f}x)"
        )
