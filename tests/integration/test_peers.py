"""Smoke tests: the real test peers accept real logins and behave as promised."""

# ruff: noqa: S321 -- plain FTP is the protocol under test here.

from __future__ import annotations

import ftplib
import hashlib
import imaplib
import io
import os
import poplib
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from email.message import EmailMessage

import pytest

from tests.peers.certs import CertBundle
from tests.peers.dovecot import DovecotServer
from tests.peers.faultproxy import FaultProxy
from tests.peers.fixtures import USERS
from tests.peers.ftp import FTPServer
from tests.peers.smtp import SMTPServer

ALICE, BOB = "alice", "bob"
ProxyFactory = Callable[[str, int], FaultProxy]


def tls_context(cert: CertBundle) -> ssl.SSLContext:
    """A verifying client context that trusts only the peers' self-signed cert."""
    return ssl.create_default_context(cafile=str(cert.cert_path))


def fingerprint_of(sock: ssl.SSLSocket) -> str:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def make_message(subject: str, body: str = "Hello from the seed.\r\n") -> bytes:
    return (
        f"From: Bob <bob@example.org>\r\nTo: Alice <alice@example.org>\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{uuid.uuid4()}@example.org>\r\n\r\n{body}"
    ).encode()


# --- IMAP / POP3 (Dovecot) ------------------------------------------------------------------


def test_imap_plain_login_capabilities_and_special_use(dovecot: DovecotServer) -> None:
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port) as imap:
        assert "STARTTLS" in imap.capabilities
        imap.login(ALICE, USERS[ALICE])
        typ, data = imap.capability()
        assert typ == "OK"
        caps = set(data[0].decode().split())
        assert {"CONDSTORE", "QRESYNC", "IDLE", "SPECIAL-USE", "UIDPLUS", "MOVE"} <= caps
        typ, listing = imap.list()
        assert typ == "OK"
        lines = [line.decode() for line in listing if isinstance(line, bytes)]
        for name, flag in [
            ("Sent", "\\Sent"),
            ("Drafts", "\\Drafts"),
            ("Trash", "\\Trash"),
            ("Junk", "\\Junk"),
            ("Archive", "\\Archive"),
        ]:
            assert any(flag in line and line.endswith(f'"/" {name}') for line in lines), lines


def test_imap_starttls_verifies_the_generated_cert(
    dovecot: DovecotServer, peer_cert: CertBundle
) -> None:
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port) as imap:
        imap.starttls(ssl_context=tls_context(peer_cert))
        assert fingerprint_of(imap.sock) == dovecot.fingerprint
        assert imap.login(BOB, USERS[BOB])[0] == "OK"


def test_imaps_login(dovecot: DovecotServer, peer_cert: CertBundle) -> None:
    with imaplib.IMAP4_SSL(
        "localhost", dovecot.imaps_port, ssl_context=tls_context(peer_cert)
    ) as imap:
        assert fingerprint_of(imap.sock) == peer_cert.fingerprint
        assert imap.login(ALICE, USERS[ALICE])[0] == "OK"


def test_imap_wrong_password_fails_fast(dovecot: DovecotServer) -> None:
    for _ in range(3):  # repeated failures must not trigger Dovecot's auth penalty
        started = time.monotonic()
        with (
            imaplib.IMAP4(dovecot.host, dovecot.imap_port) as imap,
            pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"),
        ):
            imap.login(ALICE, "not-the-password")
        assert time.monotonic() - started < 1.0
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port) as imap:
        started = time.monotonic()
        assert imap.login(ALICE, USERS[ALICE])[0] == "OK"
        assert time.monotonic() - started < 1.0


def test_seeded_messages_are_visible_over_imap(dovecot: DovecotServer) -> None:
    folder = f"Projects/{uuid.uuid4().hex[:8]}"
    subjects = [f"seed {i}" for i in range(3)]
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port) as imap:
        imap.login(ALICE, USERS[ALICE])
        inbox_before = int(imap.select("INBOX")[1][0])

        assert dovecot.seed_messages(ALICE, "INBOX", [make_message(s) for s in subjects]) == 3
        dovecot.seed_messages(
            ALICE, folder, [make_message(s) for s in subjects], flags=["\\Seen", "\\Flagged"]
        )

        typ, data = imap.select("INBOX")
        assert int(data[0]) == inbox_before + 3
        typ, data = imap.uid("SEARCH", "ALL")
        assert len(data[0].split()) == inbox_before + 3

        typ, data = imap.select(f'"{folder}"', readonly=True)
        assert typ == "OK" and int(data[0]) == 3
        typ, data = imap.uid("SEARCH", "FLAGGED SEEN")
        uids = data[0].split()
        assert len(uids) == 3
        _, fetched = imap.uid("FETCH", b",".join(uids).decode(), "(BODY[HEADER.FIELDS (SUBJECT)])")
        got = sorted(part[1].decode().strip() for part in fetched if isinstance(part, tuple))
        assert got == [f"Subject: {s}" for s in subjects]


def test_seeding_is_fast_and_keeps_order(dovecot: DovecotServer) -> None:
    folder = f"Bulk/{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    dovecot.seed_messages(BOB, folder, (make_message(f"bulk {i:04d}") for i in range(2000)))
    assert time.monotonic() - started < 3.0
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port) as imap:
        imap.login(BOB, USERS[BOB])
        assert int(imap.select(f'"{folder}"', readonly=True)[1][0]) == 2000
        _, fetched = imap.uid("FETCH", "1,2000", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        got = [part[1].decode().strip() for part in fetched if isinstance(part, tuple)]
        assert got == ["Subject: bulk 0000", "Subject: bulk 1999"]


def test_append_goes_through_dovecot(dovecot: DovecotServer) -> None:
    folder = f"Appended/{uuid.uuid4().hex[:8]}"
    dovecot.append(BOB, folder, make_message("appended"))
    assert dovecot.message_count(BOB, folder) == 1


def test_pop3_login_and_stat(dovecot: DovecotServer, peer_cert: CertBundle) -> None:
    dovecot.seed_messages(BOB, "INBOX", [make_message("for pop3")])
    expected = dovecot.message_count(BOB, "INBOX")
    pop = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=5)
    try:
        pop.stls(tls_context(peer_cert))
        pop.user(BOB)
        pop.pass_(USERS[BOB])
        count, size = pop.stat()
        assert count == expected >= 1 and size > 0
    finally:
        pop.quit()
    pop = poplib.POP3_SSL(dovecot.host, dovecot.pop3s_port, context=tls_context(peer_cert))
    try:
        with pytest.raises(poplib.error_proto):
            pop.user(BOB)
            pop.pass_("wrong")
    finally:
        pop.close()


# --- FTP / FTPS (pyftpdlib) ----------------------------------------------------------------


def ftp_login(server: FTPServer, user: str = ALICE) -> ftplib.FTP:
    ftp = ftplib.FTP()
    ftp.connect(server.host, server.port, timeout=5)
    ftp.login(user, USERS[user])
    return ftp


def test_ftp_store_and_retrieve_round_trip(ftp: FTPServer) -> None:
    payload = os.urandom(300_000)
    with ftp_login(ftp) as client:
        client.storbinary("STOR blob.bin", io.BytesIO(payload))
        received = io.BytesIO()
        client.retrbinary("RETR blob.bin", received.write)
        assert received.getvalue() == payload
        assert "MLST" in client.sendcmd("FEAT")
        assert dict(client.mlsd())["blob.bin"]["size"] == str(len(payload))
    assert (ftp.homes[ALICE] / "blob.bin").read_bytes() == payload
    assert not (ftp.homes[BOB] / "blob.bin").exists()


def test_ftp_without_mlsd_forces_list() -> None:
    with FTPServer(mlsd=False) as server:
        server.add_user(ALICE, USERS[ALICE])
        (server.homes[ALICE] / "report.txt").write_text("x")
        with ftp_login(server) as client:
            assert "MLST" not in client.sendcmd("FEAT")
            with pytest.raises(ftplib.error_perm, match="500"):
                list(client.mlsd())
            lines: list[str] = []
            client.retrlines("LIST", lines.append)
            assert any(line.endswith(" report.txt") for line in lines)


def test_ftps_explicit_tls_with_protected_data(ftps: FTPServer, peer_cert: CertBundle) -> None:
    client = ftplib.FTP_TLS(context=tls_context(peer_cert))
    client.connect(ftps.host, ftps.port, timeout=5)
    try:
        client.auth()
        assert fingerprint_of(client.sock) == ftps.fingerprint
        client.login(BOB, USERS[BOB])
        client.prot_p()
        client.storbinary("STOR secret.txt", io.BytesIO(b"over TLS\r\n" * 1000))
        received = io.BytesIO()
        client.retrbinary("RETR secret.txt", received.write)
        assert received.getvalue() == b"over TLS\r\n" * 1000
    finally:
        client.quit()


def test_pasv_masquerade_address_is_announced_but_not_needed() -> None:
    with FTPServer(masquerade_address="10.0.0.1") as server:
        server.add_user(ALICE, USERS[ALICE])
        with ftp_login(server) as client:
            reply = client.sendcmd("PASV")
            assert reply.startswith("227") and ftplib.parse227(reply)[0] == "10.0.0.1"
            # ftplib ignores the PASV host by default and dials the control host,
            # so this listing never touches 10.0.0.1.
            assert client.trust_server_pasv_ipv4_address is False
            assert client.nlst() == []


# --- SMTP (aiosmtpd) -----------------------------------------------------------------------


def smtp_login(server: SMTPServer, cert: CertBundle, port: int | None = None) -> smtplib.SMTP:
    client = smtplib.SMTP(server.host, port or server.port, timeout=5)
    client.starttls(context=tls_context(cert))
    client.login(ALICE, USERS[ALICE])
    return client


def test_smtp_starttls_auth_and_exact_capture(smtp: SMTPServer, peer_cert: CertBundle) -> None:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = "bob@example.org, carol@example.org"
    msg["Subject"] = "Grüße"
    msg.set_content("Line one\n.leading dot\n")
    raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    with smtp_login(smtp, peer_cert) as client:
        refused = client.sendmail(
            "alice@example.org", ["bob@example.org", "carol@example.org"], raw
        )
    assert refused == {}
    [captured] = smtp.messages
    assert captured.mail_from == "alice@example.org"
    assert captured.rcpt_tos == ("bob@example.org", "carol@example.org")
    assert captured.data == raw
    assert captured.login == ALICE and captured.tls


def test_smtp_requires_auth_and_rejects_bad_password(
    smtp: SMTPServer, peer_cert: CertBundle
) -> None:
    with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as client:
        client.ehlo()
        assert not client.has_extn("auth")  # only offered after STARTTLS
        with pytest.raises(smtplib.SMTPSenderRefused) as excinfo:
            client.sendmail("alice@example.org", ["bob@example.org"], b"Subject: x\r\n\r\nx\r\n")
        assert excinfo.value.smtp_code == 530
        client.starttls(context=tls_context(peer_cert))
        with pytest.raises(smtplib.SMTPAuthenticationError) as auth_error:
            client.login(ALICE, "wrong")
        assert auth_error.value.smtp_code == 535
    assert smtp.messages == []


def test_smtp_scripted_451_then_success(smtp: SMTPServer, peer_cert: CertBundle) -> None:
    smtp.fail_next(stage="DATA", code=451, text="Try again later", times=1)
    raw = b"Subject: retry\r\n\r\nbody\r\n"
    with smtp_login(smtp, peer_cert) as client:
        with pytest.raises(smtplib.SMTPDataError) as excinfo:
            client.sendmail("alice@example.org", ["bob@example.org"], raw)
        assert (excinfo.value.smtp_code, excinfo.value.smtp_error) == (451, b"Try again later")
        assert client.sendmail("alice@example.org", ["bob@example.org"], raw) == {}
    assert [m.data for m in smtp.wait_for_messages(1)] == [raw]


def test_smtp_refused_recipient(smtp: SMTPServer, peer_cert: CertBundle) -> None:
    smtp.refuse_recipient("bad@example.org", code=550, text="No such user")
    with smtp_login(smtp, peer_cert) as client:
        refused = client.sendmail(
            "alice@example.org",
            ["bob@example.org", "bad@example.org"],
            b"Subject: x\r\n\r\nbody\r\n",
        )
    assert refused == {"bad@example.org": (550, b"No such user")}
    [captured] = smtp.messages
    assert captured.rcpt_tos == ("bob@example.org",)


def test_smtp_implicit_tls_variant(peer_cert: CertBundle) -> None:
    server = SMTPServer(
        users={ALICE: USERS[ALICE]}, require_auth=True, implicit_tls=True, cert=peer_cert
    )
    context = tls_context(peer_cert)
    with server, smtplib.SMTP_SSL(server.host, server.port, timeout=5, context=context) as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        client.login(ALICE, USERS[ALICE])
        client.sendmail("alice@example.org", ["bob@example.org"], b"Subject: s\r\n\r\nx\r\n")
        assert server.messages[0].tls


# --- Fault proxy ---------------------------------------------------------------------------


def test_fault_proxy_cuts_smtp_once_then_passes(
    smtp: SMTPServer, peer_cert: CertBundle, fault_proxy_factory: ProxyFactory
) -> None:
    proxy = fault_proxy_factory(smtp.host, smtp.port)
    proxy.cut_after(0, direction="down", once=True)  # not even the greeting gets through
    with pytest.raises(smtplib.SMTPServerDisconnected):
        smtplib.SMTP(proxy.host, proxy.port, timeout=5)
    assert proxy.bytes_down == 0

    with smtp_login(smtp, peer_cert, port=proxy.port) as client:
        client.sendmail("alice@example.org", ["bob@example.org"], b"Subject: p\r\n\r\nx\r\n")
    assert proxy.connections == 2
    assert len(smtp.messages) == 1


def test_fault_proxy_cuts_ftp_control_then_recovers(
    ftp: FTPServer, fault_proxy_factory: ProxyFactory
) -> None:
    proxy = fault_proxy_factory(ftp.host, ftp.port)
    proxy.cut_after(20, direction="up")  # "USER alice\r\n" passes, "PASS ..." is cut
    client = ftplib.FTP()
    client.connect(proxy.host, proxy.port, timeout=5)
    with pytest.raises(EOFError):
        client.login(ALICE, USERS[ALICE])
    assert proxy.bytes_up == 20
    client.close()

    proxy.reset()
    with ftplib.FTP() as client:
        client.connect(proxy.host, proxy.port, timeout=5)
        client.login(ALICE, USERS[ALICE])
        client.storbinary("STOR ok.txt", io.BytesIO(b"fine"))
    assert (ftp.homes[ALICE] / "ok.txt").read_bytes() == b"fine"
    assert proxy.connections == 2


def test_fault_proxy_stall_and_sever(smtp: SMTPServer, fault_proxy_factory: ProxyFactory) -> None:
    proxy = fault_proxy_factory(smtp.host, smtp.port)
    proxy.stall_after(0, seconds=0.4, direction="down", once=True)
    started = time.monotonic()
    with smtplib.SMTP(proxy.host, proxy.port, timeout=5) as client:
        assert time.monotonic() - started >= 0.4
        assert client.noop()[0] == 250
        proxy.close_connections()
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        assert sock.recv(3) == b"220"  # the stall was for one connection only
