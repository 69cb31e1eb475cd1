"""The SMTP engine against a real aiosmtpd peer (STARTTLS, AUTH) and a fault proxy."""

from __future__ import annotations

import hashlib
import os
import socket
import time

import pytest

from mailcore.protocols import tls
from mailcore.protocols.compose import (
    Address,
    Draft,
    OutgoingAttachment,
    build_message,
    build_utf8_message,
    envelope_recipients,
    needs_smtputf8,
)
from mailcore.protocols.mime import parse_message, part_bytes
from mailcore.protocols.smtp import (
    SmtpAuthError,
    SmtpCertificateError,
    SmtpConfig,
    SmtpPermanentError,
    SmtpSession,
    SmtpTransientError,
    SmtpUnknownOutcome,
    check_login,
)
from tests.peers.ports import HOST, free_port
from tests.peers.smtp import SMTPServer

SENDER = "alice@example.org"


def tls_config(server: SMTPServer, **options) -> SmtpConfig:
    values = {
        "host": HOST,
        "port": server.port,
        "security": "starttls",
        "username": "alice",
        "password": "secret-alice",
        "ca_file": str(server.cert_path),
        "timeout": 5.0,
        "local_hostname": "client.test",
    }
    values.update(options)
    return SmtpConfig(**values)


def plain_config(port: int, **options) -> SmtpConfig:
    values = {
        "host": HOST,
        "port": port,
        "security": "none",
        "timeout": 5.0,
        "local_hostname": "client.test",
    }
    values.update(options)
    return SmtpConfig(**values)


def message(subject: str = "Hello", text: str = "Hi there.\n", **fields) -> bytes:
    draft = Draft(
        sender=Address("Alice", SENDER),
        to=[Address("Bob", "bob@example.org")],
        subject=subject,
        text=text,
        **fields,
    )
    return build_message(draft, domain="example.org")[0]


def big_message(size: int) -> bytes:
    line = b"x" * 76 + b"\r\n"
    return b"Subject: big\r\nFrom: alice@example.org\r\n\r\n" + line * (size // len(line))


@pytest.fixture(scope="module")
def plain_server():
    """No TLS, no AUTH: byte counts through a fault proxy are the SMTP dialogue itself."""
    with SMTPServer(starttls=False) as server:
        yield server


@pytest.fixture
def plain(plain_server: SMTPServer) -> SMTPServer:
    plain_server.reset()
    return plain_server


@pytest.fixture(scope="module")
def pipelining_server():
    server = SMTPServer(starttls=False)

    async def handle_EHLO(smtp, session, envelope, hostname, responses):
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    # aiosmtpd does not offer PIPELINING (it reads pipelined commands fine); its EHLO
    # hook adds the keyword. A hook on the handler instance is what aiosmtpd looks for.
    server._controller.handler.handle_EHLO = handle_EHLO
    with server:
        yield server


@pytest.fixture(scope="module")
def login_only_server(peer_cert):
    server = SMTPServer(users={"alice": "secret-alice"}, require_auth=True, cert=peer_cert)
    # The peer offers PLAIN and LOGIN; leave only LOGIN to exercise that path.
    server._controller.SMTP_kwargs["auth_exclude_mechanism"] = ["PLAIN"]
    with server:
        yield server


@pytest.fixture(scope="module")
def smtps_server(peer_cert):
    server = SMTPServer(
        users={"alice": "secret-alice"}, require_auth=True, implicit_tls=True, cert=peer_cert
    )
    with server:
        yield server


def reply_bytes_through_354(port: int, recipients: int = 1) -> int:
    """How many bytes the server sends up to and including its 354 to DATA, talking to
    it directly exactly as the engine does (EHLO, MAIL, RCPT..., DATA)."""
    total = 0
    with socket.create_connection((HOST, port), timeout=5) as sock:
        reader = sock.makefile("rb")

        def reply() -> None:
            nonlocal total
            while True:
                line = reader.readline()
                total += len(line)
                assert line[3:4] in (b" ", b"-"), line
                if line[3:4] == b" ":
                    return

        reply()
        sock.sendall(b"EHLO client.test\r\n")
        reply()
        sock.sendall(b"MAIL FROM:<alice@example.org> SIZE=100\r\n")
        reply()
        for index in range(recipients):
            sock.sendall(f"RCPT TO:<r{index}@example.org>\r\n".encode())
            reply()
        sock.sendall(b"DATA\r\n")
        reply()
    return total


# --------------------------------------------------------------------------- TLS and AUTH


def test_starttls_auth_with_ca_file_delivers(smtp):
    raw = message()
    with SmtpSession(tls_config(smtp)) as session:
        assert {"SIZE", "8BITMIME", "SMTPUTF8", "AUTH"} <= set(session.extensions)
        result = session.send(raw, mail_from=SENDER, recipients=["bob@example.org"])
    assert result.code == 250
    assert result.reply == "OK: queued"
    assert result.accepted == ["bob@example.org"]
    assert result.refused == []
    [captured] = smtp.wait_for_messages(1)
    assert captured.data == raw
    assert captured.login == "alice"
    assert captured.tls
    assert captured.mail_from == SENDER
    assert captured.rcpt_tos == ("bob@example.org",)
    assert f"SIZE={len(raw)}" in captured.mail_options
    assert "BODY=8BITMIME" not in captured.mail_options  # a 7-bit message says nothing


def test_pinned_fingerprint_without_ca_file(smtp):
    config = tls_config(smtp, ca_file=None, tls_fingerprint=smtp.fingerprint.lower())
    with SmtpSession(config) as session:
        session.send(message(), mail_from=SENDER, recipients=["bob@example.org"])
    assert len(smtp.wait_for_messages(1)) == 1


def test_untrusted_certificate_reports_the_presented_fingerprint(smtp):
    with pytest.raises(SmtpCertificateError) as caught:
        SmtpSession(tls_config(smtp, ca_file=None))
    assert tls.same_fingerprint(caught.value.fingerprint, smtp.fingerprint)
    assert "not trusted" in caught.value.reply
    assert isinstance(caught.value, SmtpPermanentError)


def test_a_different_pinned_certificate_is_refused(smtp):
    config = tls_config(smtp, ca_file=None, tls_fingerprint="AB:" * 31 + "CD")
    with pytest.raises(SmtpCertificateError) as caught:
        SmtpSession(config)
    assert tls.same_fingerprint(caught.value.fingerprint, smtp.fingerprint)


def test_wrong_password_is_an_auth_error_with_the_servers_text(smtp):
    with pytest.raises(SmtpAuthError) as caught:
        SmtpSession(tls_config(smtp, password="wrong"))
    assert caught.value.code == 535
    assert "Authentication credentials invalid" in caught.value.reply
    assert isinstance(caught.value, SmtpPermanentError)


def test_credentials_without_tls_where_auth_needs_it(smtp):
    with pytest.raises(SmtpAuthError, match="offers no authentication"):
        SmtpSession(tls_config(smtp, security="none"))


def test_no_credentials_where_auth_is_required(smtp):
    with (
        SmtpSession(tls_config(smtp, username="", password="")) as session,
        pytest.raises(SmtpPermanentError) as caught,
    ):
        session.send(message(), mail_from=SENDER, recipients=["bob@example.org"])
    assert caught.value.code == 530
    assert "Authentication required" in caught.value.reply


def test_auth_login_mechanism(login_only_server):
    with SmtpSession(tls_config(login_only_server)) as session:
        assert session.extensions["AUTH"].split() == ["LOGIN"]
        session.send(message(), mail_from=SENDER, recipients=["bob@example.org"])
    [captured] = login_only_server.wait_for_messages(1)
    assert captured.login == "alice"


def test_implicit_tls(smtps_server):
    with SmtpSession(tls_config(smtps_server, security="tls")) as session:
        session.send(message(), mail_from=SENDER, recipients=["bob@example.org"])
    [captured] = smtps_server.wait_for_messages(1)
    assert captured.tls and captured.login == "alice"
    with pytest.raises(SmtpCertificateError) as caught:
        SmtpSession(tls_config(smtps_server, security="tls", ca_file=None))
    assert tls.same_fingerprint(caught.value.fingerprint, smtps_server.fingerprint)


def test_check_login_returns_the_ehlo_keywords(smtp):
    keywords = check_login(tls_config(smtp))
    assert {"AUTH", "SIZE", "8BITMIME", "SMTPUTF8"} <= keywords
    with pytest.raises(SmtpAuthError):
        check_login(tls_config(smtp, password="nope"))


def test_starttls_not_offered_is_permanent(plain):
    with pytest.raises(SmtpPermanentError, match="STARTTLS"):
        SmtpSession(plain_config(plain.port, security="starttls"))


def test_connection_refused_is_transient():
    with pytest.raises(SmtpTransientError) as caught:
        SmtpSession(plain_config(free_port(), timeout=2.0))
    assert caught.value.code is None
    assert "network error" in str(caught.value)


# --------------------------------------------------------------------------- recipients


def test_one_hundred_recipients_in_one_transaction(smtp):
    recipients = [f"user{index}@example.org" for index in range(100)]
    with SmtpSession(tls_config(smtp)) as session:
        result = session.send(message(), mail_from=SENDER, recipients=recipients)
    assert result.accepted == recipients
    [captured] = smtp.wait_for_messages(1)
    assert captured.rcpt_tos == tuple(recipients)


def test_refused_recipients_are_listed_and_the_others_delivered(smtp):
    smtp.refuse_recipient("carol@example.org", 550, "5.1.1 No such user here")
    smtp.refuse_recipient("dave@example.org", 450, "4.2.1 Mailbox busy")
    recipients = ["bob@example.org", "carol@example.org", "dave@example.org", "erin@example.org"]
    with SmtpSession(tls_config(smtp)) as session:
        result = session.send(message(), mail_from=SENDER, recipients=recipients)
    assert result.accepted == ["bob@example.org", "erin@example.org"]
    assert [(r.address, r.code, r.reply, r.accepted) for r in result.refused] == [
        ("carol@example.org", 550, "5.1.1 No such user here", False),
        ("dave@example.org", 450, "4.2.1 Mailbox busy", False),
    ]
    [captured] = smtp.wait_for_messages(1)
    assert captured.rcpt_tos == ("bob@example.org", "erin@example.org")


def test_all_recipients_refused(smtp):
    smtp.refuse_recipient("carol@example.org", 550, "No such user")
    smtp.refuse_recipient("dave@example.org", 450, "Mailbox busy")
    with SmtpSession(tls_config(smtp)) as session:
        with pytest.raises(SmtpPermanentError) as caught:
            session.send(
                message(), mail_from=SENDER, recipients=["carol@example.org", "dave@example.org"]
            )
        assert [r.code for r in caught.value.refused] == [550, 450]
        assert "No such user" in caught.value.reply and "Mailbox busy" in caught.value.reply
        with pytest.raises(SmtpTransientError) as caught:
            session.send(message(), mail_from=SENDER, recipients=["dave@example.org"])
        assert not isinstance(caught.value, SmtpPermanentError)
        assert caught.value.code == 450
        # RSET left the connection usable.
        session.send(message(), mail_from=SENDER, recipients=["bob@example.org"])
        assert session.connections == 1
    assert [m.rcpt_tos for m in smtp.wait_for_messages(1)] == [("bob@example.org",)]


def test_pipelining_server(pipelining_server):
    pipelining_server.reset()
    pipelining_server.refuse_recipient("r7@example.org", 550, "No such user")
    pipelining_server.refuse_recipient("r42@example.org", 452, "Too many recipients")
    recipients = [f"r{index}@example.org" for index in range(150)]
    with SmtpSession(plain_config(pipelining_server.port)) as session:
        assert "PIPELINING" in session.extensions
        result = session.send(message(), mail_from=SENDER, recipients=recipients)
        assert [(r.address, r.code) for r in result.refused] == [
            ("r7@example.org", 550),
            ("r42@example.org", 452),
        ]
        pipelining_server.fail_next("MAIL", 550, "Sender rejected")
        with pytest.raises(SmtpPermanentError, match="Sender rejected"):
            session.send(message(), mail_from=SENDER, recipients=recipients[:3])
        session.send(message(), mail_from=SENDER, recipients=recipients[:3])
    captured = pipelining_server.wait_for_messages(2)
    assert len(captured[0].rcpt_tos) == 148
    assert captured[1].rcpt_tos == tuple(recipients[:3])


# --------------------------------------------------------------------------- failures


def test_451_at_data_then_the_same_session_sends_the_next_message(smtp):
    smtp.fail_next("DATA", 451, "4.3.0 Try again later")
    with SmtpSession(tls_config(smtp)) as session:
        with pytest.raises(SmtpTransientError) as caught:
            session.send(message("first"), mail_from=SENDER, recipients=["bob@example.org"])
        assert caught.value.code == 451
        assert caught.value.reply == "4.3.0 Try again later"
        assert not isinstance(caught.value, SmtpUnknownOutcome)
        session.send(message("second"), mail_from=SENDER, recipients=["bob@example.org"])
        assert session.connections == 1
    [captured] = smtp.wait_for_messages(1)
    assert parse_message(captured.data).subject == "second"


def test_550_at_mail_is_permanent(smtp):
    smtp.fail_next("MAIL", 550, "5.7.1 Sender not allowed")
    with SmtpSession(tls_config(smtp)) as session:
        with pytest.raises(SmtpPermanentError) as caught:
            session.send(message(), mail_from=SENDER, recipients=["bob@example.org"])
        assert (caught.value.code, caught.value.reply) == (550, "5.7.1 Sender not allowed")
        session.send(message(), mail_from=SENDER, recipients=["bob@example.org"])
    assert len(smtp.wait_for_messages(1)) == 1


def test_a_message_over_the_servers_size_is_refused_before_sending(fault_proxy_factory):
    with SMTPServer(starttls=False, size_limit=20_000) as server:
        proxy = fault_proxy_factory(HOST, server.port)
        with SmtpSession(plain_config(proxy.port)) as session:
            assert session.extensions["SIZE"] == "20000"
            before = proxy.bytes_up
            with pytest.raises(SmtpPermanentError, match="at most 20,000") as caught:
                session.send(big_message(30_000), mail_from=SENDER, recipients=["b@example.org"])
            assert caught.value.code is None
            assert proxy.bytes_up == before  # not one byte of it went out
            session.send(message(), mail_from=SENDER, recipients=["bob@example.org"])
        assert len(server.wait_for_messages(1)) == 1


def test_persistent_session_sends_fifty_messages_over_one_connection(smtp, fault_proxy_factory):
    proxy = fault_proxy_factory(HOST, smtp.port)
    with SmtpSession(tls_config(smtp, port=proxy.port)) as session:
        for index in range(50):
            session.send(message(f"n{index}"), mail_from=SENDER, recipients=["bob@example.org"])
        session.noop()
    captured = smtp.wait_for_messages(50)
    assert [parse_message(m.data).subject for m in captured] == [f"n{i}" for i in range(50)]
    assert proxy.connections == 1


def test_a_connection_closed_between_messages_is_reopened(plain, fault_proxy_factory):
    proxy = fault_proxy_factory(HOST, plain.port)
    with SmtpSession(plain_config(proxy.port)) as session:
        session.send(message("one"), mail_from=SENDER, recipients=["bob@example.org"])
        proxy.close_connections()
        time.sleep(0.05)
        session.send(message("two"), mail_from=SENDER, recipients=["bob@example.org"])
        assert session.connections == 2
    assert len(plain.wait_for_messages(2)) == 2
    assert proxy.connections == 2


def test_connection_cut_mid_data_is_transient_and_not_delivered(plain, fault_proxy_factory):
    proxy = fault_proxy_factory(HOST, plain.port)
    raw = big_message(1_000_000)
    # Early in the body: the proxy's kernel acknowledges what its receive buffer holds
    # before the proxy reads it, and that buffer grows as the proxy reads. Cut late in a
    # body and the whole body may already be acknowledged when the cut comes, which the
    # engine then rightly reports as an unknown outcome (it had sent the dot).
    proxy.cut_after(128_000, "up", once=True)
    progress: list[tuple[int, int]] = []
    with SmtpSession(plain_config(proxy.port)) as session:
        with pytest.raises(SmtpTransientError) as caught:
            session.send(
                raw,
                mail_from=SENDER,
                recipients=["bob@example.org"],
                on_progress=lambda done, total: progress.append((done, total)),
            )
        assert not isinstance(caught.value, SmtpUnknownOutcome)
        time.sleep(0.2)
        assert plain.messages == []
        # The next send opens a new connection; the retry is delivered exactly once.
        session.send(raw, mail_from=SENDER, recipients=["bob@example.org"])
    [captured] = plain.wait_for_messages(1)
    assert captured.data == raw
    assert progress and progress[0][1] == len(raw)


def test_connection_cut_after_the_final_dot_is_an_unknown_outcome(plain, fault_proxy_factory):
    proxy = fault_proxy_factory(HOST, plain.port)
    raw = message()
    # Let the server's replies through up to its 354, then one byte of the final reply.
    proxy.cut_after(reply_bytes_through_354(plain.port) + 1, "down", once=True)
    plain.reset()
    with (
        SmtpSession(plain_config(proxy.port)) as session,
        pytest.raises(SmtpUnknownOutcome) as caught,
    ):
        session.send(raw, mail_from=SENDER, recipients=["r0@example.org"])
    assert isinstance(caught.value, SmtpTransientError)
    assert "may or may not have been accepted" in str(caught.value)
    # Indeed it was: this is why the caller must not blindly resend.
    assert [m.data for m in plain.wait_for_messages(1)] == [raw]


def test_no_reply_after_the_final_dot_is_an_unknown_outcome(plain, fault_proxy_factory):
    proxy = fault_proxy_factory(HOST, plain.port)
    proxy.stall_after(reply_bytes_through_354(plain.port), 5.0, "down", once=True)
    plain.reset()
    started = time.monotonic()
    with (
        SmtpSession(plain_config(proxy.port, data_timeout=0.3)) as session,
        pytest.raises(SmtpUnknownOutcome),
    ):
        session.send(message(), mail_from=SENDER, recipients=["r0@example.org"])
    assert time.monotonic() - started < 3
    assert len(plain.wait_for_messages(1)) == 1


@pytest.mark.parametrize("raw", [message(), big_message(300_000)], ids=["small", "big"])
def test_a_failing_before_dot_hook_keeps_the_dot_and_the_message_back(
    plain, fault_proxy_factory, raw
):
    proxy = fault_proxy_factory(HOST, plain.port)
    calls: list[str] = []

    def failing() -> None:
        calls.append("failing")
        raise RuntimeError("could not record the hand-over")

    with SmtpSession(plain_config(proxy.port)) as session:
        with pytest.raises(RuntimeError, match="could not record"):
            session.send(raw, mail_from=SENDER, recipients=["bob@example.org"], before_dot=failing)
        assert not session.connected  # dropped mid-DATA: the server discards the message
        time.sleep(0.3)
        assert plain.messages == []
        session.send(
            raw,
            mail_from=SENDER,
            recipients=["bob@example.org"],
            before_dot=lambda: calls.append(f"ok with {len(plain.messages)} delivered"),
        )
    assert calls == ["failing", "ok with 0 delivered"]
    assert [m.data for m in plain.wait_for_messages(1)] == [raw]
    assert proxy.connections == 2


# --------------------------------------------------------------------------- content


def test_dot_stuffing_round_trip(plain):
    raw = (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: dots\r\n\r\n"
        b".\r\n..\r\n.leading dot\r\nmiddle . and end.\r\n. \r\n...\r\n\r\n.\r\nlast"
    )
    lf_only = b"Subject: lf\n\n.one\n.\nend\n"
    with SmtpSession(plain_config(plain.port)) as session:
        session.send(raw, mail_from=SENDER, recipients=["bob@example.org"])
        session.send(lf_only, mail_from=SENDER, recipients=["bob@example.org"])
    first, second = plain.wait_for_messages(2)
    assert first.data == raw + b"\r\n"
    assert second.data == lf_only.replace(b"\n", b"\r\n")


def test_non_ascii_subject_name_and_filename_arrive_7bit_and_decode_exactly(smtp):
    payload = os.urandom(10 * 1024 * 1024)
    draft = Draft(
        sender=Address("Zoë Ångström", SENDER),
        to=[Address("Jürgen Groß", "juergen@bücher.example")],
        subject="Grüße — 日本語のテキスト, and a long tail to make it fold at least once",
        text="Ça va?\n",
        attachments=[OutgoingAttachment("Übersicht 2024 · résumé.bin", payload)],
    )
    raw, message_id = build_message(draft, domain="example.org")
    with SmtpSession(tls_config(smtp)) as session:
        session.send(raw, mail_from=SENDER, recipients=envelope_recipients(draft))
    [captured] = smtp.wait_for_messages(1)
    assert captured.data == raw
    assert captured.rcpt_tos == ("juergen@xn--bcher-kva.example",)
    assert all(byte < 128 for byte in set(captured.data))
    assert "BODY=8BITMIME" not in captured.mail_options
    parsed = parse_message(captured.data)
    assert parsed.subject == draft.subject
    assert parsed.sender == Address("Zoë Ångström", SENDER)
    assert parsed.to[0].name == "Jürgen Groß"
    assert parsed.message_id == message_id
    [attachment] = parsed.attachments
    assert attachment.filename == "Übersicht 2024 · résumé.bin"
    digest = hashlib.sha256(part_bytes(captured.data, attachment.part)).hexdigest()
    assert digest == hashlib.sha256(payload).hexdigest()


def test_smtputf8_message(smtp):
    draft = Draft(
        sender=Address("Alice", SENDER),
        to=[Address("Jöhn", "jöhn@bücher.example")],
        subject="Grüße",
        text="Grüße aus Köln\n",
    )
    assert needs_smtputf8(draft)
    raw, _ = build_utf8_message(draft, domain="example.org")
    with SmtpSession(tls_config(smtp)) as session:
        session.send(raw, mail_from=SENDER, recipients=envelope_recipients(draft))
    [captured] = smtp.wait_for_messages(1)
    assert captured.data == raw
    assert captured.rcpt_tos == ("jöhn@xn--bcher-kva.example",)
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(captured.mail_options)
    parsed = parse_message(captured.data)
    assert parsed.to == (Address("Jöhn", "jöhn@bücher.example"),)
    assert parsed.text == "Grüße aus Köln\n"


def test_big_message_over_tls_with_progress(smtp):
    raw = big_message(3_000_000)
    progress: list[tuple[int, int]] = []
    with SmtpSession(tls_config(smtp)) as session:
        session.send(
            raw,
            mail_from=SENDER,
            recipients=["bob@example.org"],
            on_progress=lambda done, total: progress.append((done, total)),
        )
        session.send(message(), mail_from=SENDER, recipients=["bob@example.org"])
    assert progress[-1] == (len(raw), len(raw))
    assert len(progress) == 3  # 1 MiB at a time
    first, _ = smtp.wait_for_messages(2)
    assert first.data == raw


def test_bad_envelope_addresses_are_refused_before_sending(smtp):
    with SmtpSession(tls_config(smtp)) as session:
        for bad in ["bob@example.org>\r\nRCPT TO:<x@y.org", "bob@", "b <b@x.org>"]:
            with pytest.raises(ValueError):
                session.send(message(), mail_from=SENDER, recipients=[bad])
        with pytest.raises(ValueError):
            session.send(message(), mail_from=SENDER, recipients=[])
        session.noop()
    assert smtp.messages == []
