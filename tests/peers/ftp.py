"""pyftpdlib FTP / explicit-FTPS server in a background thread."""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import DTPHandler, FTPHandler, TLS_FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.log import logger
from pyftpdlib.servers import FTPServer as _PyFTPServer

from .certs import CertBundle, generate_cert
from .ports import HOST, free_ports

FULL_PERMS = "elradfmwMT"


class FTPServer:
    """One FTP server with its own IOLoop (pyftpdlib's default loop is a global).

    ``tls=True`` makes it explicit FTPS (AUTH TLS; TLS stays optional unless
    ``tls_required``). ``mlsd=False`` removes MLSD/MLST from the command table,
    which also drops the MLST line from FEAT, so clients must fall back to LIST.
    ``masquerade_address`` is what PASV announces instead of 127.0.0.1.
    """

    def __init__(
        self,
        *,
        tls: bool = False,
        tls_required: bool = False,
        mlsd: bool = True,
        masquerade_address: str | None = None,
        passive_port_count: int = 20,
        cert: CertBundle | None = None,
        host: str = HOST,
    ) -> None:
        self.host = host
        self.root = Path(tempfile.mkdtemp(prefix="satchel-ftp-"))
        self.homes: dict[str, Path] = {}
        self.cert = (cert or generate_cert(self.root / "tls")) if tls else None
        self.authorizer = DummyAuthorizer()
        base = TLS_FTPHandler if tls else FTPHandler
        attrs: dict[str, object] = {
            "authorizer": self.authorizer,
            "passive_ports": free_ports(passive_port_count),
            "masquerade_address": masquerade_address,
            "banner": "Satchel test FTP server ready.",
        }
        if not mlsd:
            attrs["proto_cmds"] = {
                cmd: spec for cmd, spec in base.proto_cmds.items() if cmd not in ("MLSD", "MLST")
            }
        if tls:
            assert self.cert is not None
            attrs.update(
                certfile=str(self.cert.cert_path),
                keyfile=str(self.cert.key_path),
                ssl_context=None,  # built lazily per subclass from certfile/keyfile
                tls_control_required=tls_required,
                tls_data_required=tls_required,
            )
        # Handler settings are class attributes, so every server gets a subclass.
        self.handler = type("SatchelFTPHandler", (base,), attrs)
        self._server: _PyFTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.port = 0

    @property
    def passive_ports(self) -> list[int]:
        return list(self.handler.passive_ports)

    @property
    def cert_path(self) -> Path | None:
        return self.cert.cert_path if self.cert else None

    @property
    def fingerprint(self) -> str | None:
        return self.cert.fingerprint if self.cert else None

    def add_user(
        self, name: str, password: str, home: Path | str | None = None, perm: str = FULL_PERMS
    ) -> Path:
        """Register a user with a writable home (default: a fresh dir); return the home."""
        path = Path(home) if home is not None else self.root / "homes" / name
        path.mkdir(parents=True, exist_ok=True)
        self.authorizer.add_user(name, password, str(path), perm=perm)
        self.homes[name] = path
        return path

    def clear_homes(self) -> None:
        """Empty every user's home dir (the dirs themselves stay)."""
        for home in self.homes.values():
            for entry in home.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()

    def start(self) -> FTPServer:
        # Port 0: the kernel picks the control port, so there is no race for it.
        self._server = _PyFTPServer((self.host, 0), self.handler, ioloop=IOLoop())
        self.port = self._server.address[1]
        self._thread = threading.Thread(target=self._serve, name=f"ftp-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._thread.join(timeout=10)
            self._thread = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> FTPServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        # pyftpdlib's IOLoop is not thread-safe: poll it in short non-blocking
        # rounds and close everything from this same thread.
        assert self._server is not None
        try:
            while not self._stopping.is_set():
                self._server.ioloop.loop(timeout=0.05, blocking=False)
        finally:
            self._server.close_all()


# Fault injection on the data connection: set a rule on Cut, then serve with
# `handler.dtp_handler = CuttingDTP` and `handler.use_sendfile = False`.


class Cut:
    """What the cutting server does next (consumed once)."""

    download: tuple[int, bool] | None = None  # (after bytes, silently with a 226)
    upload: int | None = None
    stall: int | None = None  # stop sending after N bytes, keeping the connection open
    stall_upload: int | None = None  # stop reading after N bytes, keeping it open


class CuttingDTP(DTPHandler):
    """Closes the data connection once after N bytes, like a dying NAT or network."""

    def send(self, data: bytes) -> int:
        if Cut.stall is not None and self.tot_bytes_sent >= Cut.stall:
            Cut.stall = None
            self.del_channel()  # silent from now on: neither data, nor EOF, nor a reply
            return 0
        rule = Cut.download
        if rule is not None and self.file_obj is not None and not self.receive:
            left = rule[0] - self.tot_bytes_sent
            if left <= 0:
                Cut.download = None
                if rule[1]:  # lie: pretend everything was sent (226)
                    self.producer_fifo.clear()
                self.handle_close()  # 426 unless the fifo is empty
                return 0
            data = data[:left]
        return super().send(data)

    def recv(self, buffer_size: int) -> bytes:
        chunk = super().recv(buffer_size)
        if Cut.stall_upload is not None and self.tot_bytes_received >= Cut.stall_upload:
            Cut.stall_upload = None
            self.del_channel()  # reads nothing more, and says nothing
        limit = Cut.upload
        if limit is not None and self.receive and self.cmd in ("STOR", "APPE"):
            left = limit - self.tot_bytes_received
            if len(chunk) >= left:
                Cut.upload = None
                self._cut_now = True
                chunk = chunk[:left]
        return chunk

    def handle_read(self) -> None:
        super().handle_read()
        if getattr(self, "_cut_now", False):
            self._cut_now = False
            self._resp = ("426 Connection cut by the test server.", logger.info)
            self.close()

    handle_read_event = handle_read  # DTPHandler binds its own handle_read here
