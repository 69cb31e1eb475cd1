"""Replies and forwards through the outbox and drafts APIs, against real Dovecot and
aiosmtpd: thread headers, what travels with a forward, and the original's \\Answered /
$Forwarded flag once (and only once) the message is sent."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from django.utils import timezone

from mailcore import drafts, outbox
from mailcore.models import Draft, Mailbox, OutgoingMessage
from mailcore.protocols import imap
from mailcore.sync import account_sync, imap_config
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


def server_flags(account, mailbox="INBOX") -> dict[int, frozenset[str]]:
    """Flags of every message in the folder, read over a fresh IMAP session."""
    with imap.ImapSession(imap_config(account)) as session:
        session.select(mailbox, readonly=True)
        return {change.uid: change.flags for change in session.all_flags()}


def test_the_original_is_answered_once_the_reply_is_sent_not_before(
    account, original, smtp, api_as
):
    message, _ = original
    client = api_as(account.owner)
    later = (timezone.now() + timedelta(hours=1)).isoformat()
    body = {"account": account.pk, "to": ["bob@example.org"], "text": "Thanks."}
    scheduled = client.post(
        "/api/v1/mail/outbox/",
        {**body, "reply_to_message": message.pk, "send_at": later},
        format="json",
    ).json()
    assert scheduled["state"] == "scheduled"
    assert "\\Answered" not in server_flags(account)[message.uid]
    client.post(f"/api/v1/mail/outbox/{scheduled['id']}/cancel/")
    assert outbox.outbox_send(message_id=scheduled["id"]) is None  # cancelled: not sent
    assert "\\Answered" not in server_flags(account)[message.uid]
    message.refresh_from_db()
    assert not message.answered

    send(client, account, smtp, reply_to_message=message.pk)
    assert "\\Answered" in server_flags(account)[message.uid]
    [listed] = client.get("/api/v1/mail/outbox/?state=sent").json()["results"]
    assert (listed["reply_to_message"], listed["forward_of"]) == (message.pk, None)
    message.refresh_from_db()
    assert message.answered
    assert OutgoingMessage.objects.filter(reply_to_message=message, state="sent").count() == 1


def test_a_forwarded_original_gets_the_forwarded_keyword(account, original, smtp, api_as):
    message, _ = original
    send(api_as(account.owner), account, smtp, forward_of=message.pk, forward_mode="attachment")
    flags = server_flags(account)[message.uid]
    assert "$Forwarded" in flags and "\\Answered" not in flags
    message.refresh_from_db()
    assert message.keywords == ["$Forwarded"] and not message.answered


def test_a_flag_failure_leaves_the_message_sent(
    account, original, smtp, api_as, dovecot, mail_user
):
    message, _ = original
    Mailbox.objects.filter(pk=message.mailbox_id).update(path="Gone")  # SELECT fails
    sent, _ = send(api_as(account.owner), account, smtp, reply_to_message=message.pk)
    assert sent["In-Reply-To"] == "<q3@example.org>"
    assert OutgoingMessage.objects.get().state == "sent"
    assert "\\Answered" not in server_flags(account)[message.uid]


def test_an_inline_forward_can_leave_the_attachments_out(account, original, smtp, api_as):
    message, _ = original
    sent, _ = send(
        api_as(account.owner), account, smtp, forward_of=message.pk, forward_attachments=False
    )
    assert list(sent.iter_attachments()) == []
    assert "$Forwarded" in server_flags(account)[message.uid]


def test_a_draft_remembers_the_reply_and_its_send_uses_it(account, original, smtp, api_as):
    message, _ = original
    client = api_as(account.owner)
    created = client.post(
        "/api/v1/mail/drafts/",
        {"account": account.pk, "subject": "Re: Quarterly figures", "reply_to_message": message.pk},
        format="json",
    )
    assert created.status_code == 201, created.content
    draft = created.json()
    assert draft["reply_to_message"] == message.pk and draft["forward_of"] is None
    copy = message_from_bytes(
        drafts.draft_message(Draft.objects.get(pk=draft["id"])), policy=policy.default
    )
    assert copy["References"].split()[-1] == "<q3@example.org>"
    response = client.post(
        f"/api/v1/mail/drafts/{draft['id']}/send/",
        {"account": account.pk, "to": ["bob@example.org"], "text": "Agreed."},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert outbox.outbox_send(message_id=response.json()["id"]) == "sent"
    [captured] = smtp.wait_for_messages(1)
    sent = message_from_bytes(captured.data, policy=policy.default)
    assert sent["In-Reply-To"] == "<q3@example.org>"
    assert "\\Answered" in server_flags(account)[message.uid]


def test_a_draft_remembers_a_forward_as_attachment(account, original, smtp, api_as):
    message, _ = original
    client = api_as(account.owner)
    draft = client.post(
        "/api/v1/mail/drafts/",
        {"account": account.pk, "forward_of": message.pk, "forward_mode": "attachment"},
        format="json",
    ).json()
    assert (draft["forward_of"], draft["forward_mode"]) == (message.pk, "attachment")
    response = client.post(
        f"/api/v1/mail/drafts/{draft['id']}/send/",
        {"account": account.pk, "to": ["bob@example.org"], "text": "FYI"},
        format="json",
    )
    assert outbox.outbox_send(message_id=response.json()["id"]) == "sent"
    [captured] = smtp.wait_for_messages(1)
    sent = message_from_bytes(captured.data, policy=policy.default)
    [attachment] = list(sent.iter_attachments())
    assert attachment.get_content_type() == "message/rfc822"


def test_a_draft_cannot_point_at_another_users_message(account, original, bob, api_as):
    message, _ = original
    bob_account = type(account).objects.get(pk=account.pk)
    bob_account.pk, bob_account.owner = None, bob
    bob_account.save()
    response = api_as(bob).post(
        "/api/v1/mail/drafts/",
        {"account": bob_account.pk, "forward_of": message.pk},
        format="json",
    )
    assert response.status_code == 400
    assert "No such message" in response.content.decode()
