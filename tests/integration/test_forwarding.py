"""Replies and forwards through the outbox API, against real Dovecot and aiosmtpd."""

from __future__ import annotations

import hashlib
from email import message_from_bytes, policy

import pytest

from mailcore import outbox
from mailcore.models import Mailbox
from mailcore.sync import account_sync
from tests.mailfactory import make_message
from tests.peers.ports import HOST

pytestmark = pytest.mark.django_db

PAYLOAD = bytes(range(256)) * 300  # 75 KiB of every byte value


@pytest.fixture
def account(imap_account, smtp, settings):
    settings.OUTBOX_UNDO_SECONDS = 0
    imap_account.smtp_host, imap_account.smtp_port = HOST, smtp.port
    imap_account.smtp_security, imap_account.smtp_tls_fingerprint = "starttls", smtp.fingerprint
    imap_account.smtp_username, imap_account.smtp_password = "alice", "secret-alice"
    imap_account.save()
    return imap_account


@pytest.fixture
def original(account, dovecot, mail_user):
    """A message in the account's INBOX, one reply deep in a thread, with an attachment."""
    raw = make_message(
        subject="Quarterly figures",
        message_id="<q3@example.org>",
        in_reply_to="<q2@example.org>",
        references=["<q1@example.org>", "<q2@example.org>"],
        attachment=("figures ü.bin", PAYLOAD, "application/octet-stream"),
    )
    dovecot.seed_messages(mail_user, "INBOX", [raw])
    account_sync(account=account)
    return account.mailboxes.get(role=Mailbox.Role.INBOX).messages.get(), raw


def send(client, account, smtp, **fields):
    body = {"account": account.pk, "to": ["bob@example.org"], "text": "See below.", **fields}
    response = client.post("/api/v1/mail/outbox/", body, format="json")
    assert response.status_code == 201, response.content
    assert outbox.outbox_send(message_id=response.json()["id"]) == "sent"
    [captured] = smtp.wait_for_messages(1)
    return message_from_bytes(captured.data, policy=policy.default), captured.data


def test_a_reply_carries_the_whole_thread_in_references(account, original, smtp, api_as):
    message, _ = original
    sent, _ = send(api_as(account.owner), account, smtp, reply_to_message=message.pk)
    assert sent["In-Reply-To"] == "<q3@example.org>"
    assert sent["References"].split() == [
        "<q1@example.org>",
        "<q2@example.org>",
        "<q3@example.org>",
    ]


def test_an_inline_forward_carries_the_original_attachments(account, original, smtp, api_as):
    message, _ = original
    sent, _ = send(api_as(account.owner), account, smtp, forward_of=message.pk)
    [attachment] = list(sent.iter_attachments())
    assert attachment.get_filename() == "figures ü.bin"
    content = attachment.get_content()
    assert hashlib.sha256(content).hexdigest() == hashlib.sha256(PAYLOAD).hexdigest()


def test_a_forward_as_attachment_carries_the_original_byte_for_byte(
    account, original, smtp, api_as
):
    message, raw = original
    sent, data = send(
        api_as(account.owner), account, smtp, forward_of=message.pk, forward_mode="attachment"
    )
    assert raw in data  # the original, unchanged, as the part's body
    [attachment] = list(sent.iter_attachments())
    assert attachment.get_content_type() == "message/rfc822"
    assert attachment.get_filename() == "Quarterly figures.eml"
    inner = attachment.get_content()
    assert inner["Message-ID"] == "<q3@example.org>"
    [inner_file] = list(inner.iter_attachments())
    assert inner_file.get_content() == PAYLOAD


def test_another_users_message_cannot_be_forwarded(account, original, bob, api_as):
    message, _ = original
    bob_account = type(account).objects.get(pk=account.pk)
    bob_account.pk, bob_account.owner = None, bob
    bob_account.save()
    client = api_as(bob)
    for field in ("forward_of", "reply_to_message"):
        body = {"account": bob_account.pk, "to": ["x@example.org"], field: message.pk}
        response = client.post("/api/v1/mail/outbox/", body, format="json")
        assert response.status_code == 400
        assert "No such message" in response.content.decode()
