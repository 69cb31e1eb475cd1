"""pytest plugin: real IMAP/POP3, FTP(S), SMTP peers and a fault proxy.

Load with ``pytest_plugins = ["tests.peers.fixtures"]`` (or ``-p tests.peers.fixtures``).
The servers are session-scoped because starting them costs time; the
function-scoped wrappers (``smtp``, ``ftp``, ``ftps``) reset per-test state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .certs import CertBundle, generate_cert
from .dovecot import DovecotServer
from .faultproxy import FaultProxy
from .ftp import FTPServer
from .smtp import SMTPServer

USERS = {"alice": "secret-alice", "bob": "secret-bob"}


@pytest.fixture(scope="session")
def peer_cert(tmp_path_factory: pytest.TempPathFactory) -> CertBundle:
    """One self-signed cert (localhost + 127.0.0.1) shared by all TLS peers."""
    return generate_cert(tmp_path_factory.mktemp("peer-tls"))


@pytest.fixture(scope="session")
def dovecot(peer_cert: CertBundle) -> Iterator[DovecotServer]:
    server = DovecotServer(cert=peer_cert)
    for name, password in USERS.items():
        server.add_user(name, password)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def ftp_peer(
    peer_cert: CertBundle, customize: Callable[[FTPServer], None] | None = None, **options: bool
) -> Iterator[FTPServer]:
    """A pyftpdlib server with USERS, started (``customize`` changes its handler before)
    and stopped when the generator ends: ``yield from ftp_peer(...)`` in a fixture."""
    server = FTPServer(cert=peer_cert, **options)
    if customize is not None:
        customize(server)
    for name, password in USERS.items():
        server.add_user(name, password)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ftp_server(peer_cert: CertBundle) -> Iterator[FTPServer]:
    """Plain FTP with MLSD; users alice and bob with their own home dirs."""
    yield from ftp_peer(peer_cert)


@pytest.fixture(scope="session")
def ftps_server(peer_cert: CertBundle) -> Iterator[FTPServer]:
    """Explicit FTPS (AUTH TLS offered, not required); same users as ``ftp_server``."""
    yield from ftp_peer(peer_cert, tls=True)


@pytest.fixture
def ftp(ftp_server: FTPServer) -> FTPServer:
    """``ftp_server`` with empty home dirs."""
    ftp_server.clear_homes()
    return ftp_server


@pytest.fixture
def ftps(ftps_server: FTPServer) -> FTPServer:
    """``ftps_server`` with empty home dirs."""
    ftps_server.clear_homes()
    return ftps_server


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Callable[[FTPServer], list[str]]:
    """recorder(server) -> the list of command lines that server receives from now on."""

    def attach(server: FTPServer) -> list[str]:
        seen: list[str] = []
        original = server.handler.pre_process_command

        def record(self, line: str, cmd: str, arg: str) -> None:
            seen.append(line)
            return original(self, line, cmd, arg)

        monkeypatch.setattr(server.handler, "pre_process_command", record)
        return seen

    return attach


@pytest.fixture(scope="session")
def smtp_server(peer_cert: CertBundle) -> Iterator[SMTPServer]:
    """SMTP requiring AUTH (offered after STARTTLS) for alice/secret-alice."""
    server = SMTPServer(users={"alice": USERS["alice"]}, require_auth=True, cert=peer_cert)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp(smtp_server: SMTPServer) -> SMTPServer:
    """``smtp_server`` with no captured messages, scripted failures or refusals."""
    smtp_server.reset()
    return smtp_server


@pytest.fixture
def fault_proxy_factory() -> Iterator[Callable[[str, int], FaultProxy]]:
    """``make(host, port)`` starts a FaultProxy in front of that server; all stop after the test."""
    proxies: list[FaultProxy] = []

    def make(target_host: str, target_port: int) -> FaultProxy:
        proxy = FaultProxy(target_host, target_port)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()
