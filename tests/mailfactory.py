"""Build raw RFC 5322 messages for tests, and mail fixtures on the real Dovecot (a plugin)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import pytest

START = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def make_message(
    *,
    subject: str = "Hello",
    sender: str = "Carol Sender <carol@example.org>",
    to: str = "alice@example.org",
    body: str = "Hi there.",
    date: datetime | None = None,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: list[str] | None = None,
    attachment: tuple[str, bytes, str] | None = None,
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(date or START)
    message["Message-ID"] = message_id or make_msgid(domain="example.org")
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
    if references:
        message["References"] = " ".join(references)
    message.set_content(body)
    if attachment:
        filename, data, content_type = attachment
        maintype, subtype = content_type.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes(policy=policy.SMTP)  # CRLF, as on the wire


def numbered_messages(count: int, *, prefix: str = "Message") -> list[bytes]:
    """`count` messages, one minute apart, oldest first (UIDs follow this order)."""
    return [
        make_message(
            subject=f"{prefix} {n}", body=f"Body number {n}.", date=START + timedelta(minutes=n)
        )
        for n in range(count)
    ]


@pytest.fixture
def mail_user(dovecot) -> str:
    """A fresh, empty Dovecot user for one test (password: the name reversed)."""
    name = f"u{uuid.uuid4().hex[:10]}"
    dovecot.add_user(name, name[::-1])
    return name


@pytest.fixture
def imap_account(alice, dovecot, mail_user):
    """alice's Satchel account on the fresh Dovecot user, over plain IMAP on loopback."""
    from mailcore import services

    return services.account_create(
        owner=alice,
        name="Work",
        email_address=f"{mail_user}@example.org",
        incoming_host=dovecot.host,
        incoming_port=dovecot.imap_port,
        incoming_security="none",
        username=mail_user,
        password=mail_user[::-1],
    )


@pytest.fixture
def sending_account(imap_account, smtp):
    """``imap_account`` sending through the aiosmtpd peer (STARTTLS, AUTH as alice)."""
    imap_account.smtp_host = smtp.host
    imap_account.smtp_port = smtp.port
    imap_account.smtp_security = "starttls"
    imap_account.smtp_username = "alice"
    imap_account.smtp_password = "secret-alice"
    imap_account.smtp_tls_fingerprint = smtp.fingerprint
    imap_account.display_name = "Alice Liddell"
    imap_account.save()
    return imap_account
