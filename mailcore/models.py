"""Mail accounts and the PostgreSQL cache of what their servers hold.

Mail on an IMAP server stays there: these rows cache folders, headers, flags, structure and
snippets so lists and searches never wait on the server; bodies are fetched on demand.
"""

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower

from webapp.encrypted_fields import EncryptedTextField


class Security(models.TextChoices):
    NONE = "none", "None"
    STARTTLS = "starttls", "STARTTLS"
    TLS = "tls", "TLS"


def protocol_supported(value: str) -> None:
    """POP3 accounts are part of the API contract but not fetched yet: refuse them clearly."""
    if value == MailAccount.Protocol.POP3:
        raise ValidationError("POP3 accounts are not supported yet; use IMAP for now.")


class MailAccount(models.Model):
    class Protocol(models.TextChoices):
        IMAP = "imap", "IMAP"
        POP3 = "pop3", "POP3"

    class SyncState(models.TextChoices):
        IDLE = "idle"
        SYNCING = "syncing"
        ERROR = "error"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mail_accounts"
    )
    name = models.CharField(max_length=100)
    email_address = models.EmailField()
    display_name = models.CharField(max_length=200, blank=True)
    incoming_protocol = models.CharField(
        max_length=8, choices=Protocol, default=Protocol.IMAP, validators=[protocol_supported]
    )
    incoming_host = models.CharField(max_length=255)
    incoming_port = models.PositiveIntegerField(default=993)
    incoming_security = models.CharField(max_length=16, choices=Security, default=Security.TLS)
    username = models.CharField(max_length=255)
    password = EncryptedTextField()
    incoming_tls_fingerprint = models.CharField(max_length=95, blank=True)
    smtp_host = models.CharField(max_length=255, blank=True)
    smtp_port = models.PositiveIntegerField(default=587)
    smtp_security = models.CharField(max_length=16, choices=Security, default=Security.STARTTLS)
    smtp_username = models.CharField(max_length=255, blank=True)
    smtp_password = EncryptedTextField(blank=True)
    smtp_tls_fingerprint = models.CharField(max_length=95, blank=True)
    pop3_leave_on_server = models.BooleanField(default=True)
    sync_state = models.CharField(max_length=16, choices=SyncState, default=SyncState.IDLE)
    last_sync_at = models.DateTimeField(null=True, blank=True)
    sync_started_at = models.DateTimeField(null=True, blank=True)  # the lease of a running sync
    # Set when a sync was asked for while one ran: the running one goes round once more.
    sync_pending = models.BooleanField(default=False)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name} <{self.email_address}>"


class Mailbox(models.Model):
    class Role(models.TextChoices):
        INBOX = "inbox"
        SENT = "sent"
        DRAFTS = "drafts"
        TRASH = "trash"
        JUNK = "junk"
        ARCHIVE = "archive"

    account = models.ForeignKey(MailAccount, on_delete=models.CASCADE, related_name="mailboxes")
    path = models.CharField(max_length=1000)
    name = models.CharField(max_length=255)
    parent = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="children"
    )
    delimiter = models.CharField(max_length=4, blank=True)
    role = models.CharField(max_length=16, choices=Role, null=True, blank=True)  # noqa: DJ001 — API: role or null
    selectable = models.BooleanField(default=True)
    uidvalidity = models.BigIntegerField(null=True, blank=True)
    uidnext = models.BigIntegerField(null=True, blank=True)
    highestmodseq = models.BigIntegerField(null=True, blank=True)
    # The initial sync fills newest first: every uid >= this one is cached. None = not started.
    synced_down_to = models.BigIntegerField(null=True, blank=True)
    total = models.PositiveIntegerField(default=0)
    unread = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(fields=["account", "path"], name="mailbox_unique_path"),
        ]

    def __str__(self) -> str:
        return self.path


class Thread(models.Model):
    """A conversation: messages linked by Message-ID / In-Reply-To / References or subject."""

    account = models.ForeignKey(MailAccount, on_delete=models.CASCADE, related_name="threads")
    subject = models.TextField(blank=True)  # normalised: no Re:/Fwd: prefixes, lower case
    last_date = models.DateTimeField(null=True, blank=True)
    message_count = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["account", "subject"], name="thread_subject")]

    def __str__(self) -> str:
        return self.subject or "(no subject)"


class Message(models.Model):
    account = models.ForeignKey(MailAccount, on_delete=models.CASCADE, related_name="messages")
    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="messages")
    uid = models.BigIntegerField()
    message_id = models.CharField(max_length=998, blank=True)
    in_reply_to = models.CharField(max_length=998, blank=True)
    references = ArrayField(models.CharField(max_length=998), default=list, blank=True)
    thread = models.ForeignKey(
        Thread, on_delete=models.SET_NULL, null=True, blank=True, related_name="messages"
    )
    subject = models.TextField(blank=True)
    sender_name = models.CharField(max_length=500, blank=True)
    sender_email = models.CharField(max_length=500, blank=True)
    to = models.JSONField(default=list, blank=True)
    cc = models.JSONField(default=list, blank=True)
    date = models.DateTimeField()
    size = models.PositiveIntegerField(default=0)
    snippet = models.TextField(blank=True)
    seen = models.BooleanField(default=False)
    flagged = models.BooleanField(default=False)
    answered = models.BooleanField(default=False)
    draft = models.BooleanField(default=False)
    keywords = ArrayField(models.CharField(max_length=200), default=list, blank=True)
    has_attachments = models.BooleanField(default=False)
    bodystructure = models.JSONField(default=dict, blank=True)
    modseq = models.BigIntegerField(null=True, blank=True)
    body_text = models.TextField(blank=True)  # filled once the body is fetched, for search
    search = models.GeneratedField(
        expression=(
            SearchVector("subject", weight="A", config="simple")
            + SearchVector("sender_name", "sender_email", weight="B", config="simple")
            + SearchVector("snippet", weight="C", config="simple")
            + SearchVector("body_text", weight="D", config="simple")
        ),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "uid"], name="message_unique_uid"),
        ]
        indexes = [
            models.Index(fields=["mailbox", "-date", "-id"], name="message_mailbox_recent"),
            models.Index(
                fields=["mailbox", "-date", "-id"],
                condition=Q(seen=False),
                name="message_mailbox_unread",
            ),
            models.Index(fields=["account", "-date", "-id"], name="message_account_recent"),
            models.Index(fields=["account", "message_id"], name="message_account_msgid"),
            models.Index(fields=["account", "in_reply_to"], name="message_account_reply"),
            models.Index(fields=["thread", "date"], name="message_thread"),
            GinIndex(fields=["search"], name="message_search"),
            GinIndex(fields=["references"], name="message_references"),
        ]

    def __str__(self) -> str:
        return self.subject or "(no subject)"


class MessageBody(models.Model):
    """The parsed body of a message, fetched from the server once and kept."""

    message = models.OneToOneField(
        Message, on_delete=models.CASCADE, primary_key=True, related_name="body"
    )
    headers = models.JSONField(default=list)
    text = models.TextField(blank=True)
    html = models.TextField(blank=True)  # as sent: sanitized when shown, never stored sanitized
    fetched_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Body of message {self.message_id}"


class Attachment(models.Model):
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attachments")
    part = models.CharField(max_length=64)
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField(default=0)
    content_id = models.CharField(max_length=998, blank=True)
    inline = models.BooleanField(default=False)
    # Small inline images are kept, so an HTML body shows them without a server round trip.
    data = models.BinaryField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["message", "part"], name="attachment_unique_part"),
        ]

    def __str__(self) -> str:
        return self.filename


# Sending side: identities, people, uploads and the outbox ----------------------------------


class Identity(models.Model):
    """A From address (name, signature) of one account: many identities, one account."""

    account = models.ForeignKey(MailAccount, on_delete=models.CASCADE, related_name="identities")
    name = models.CharField(max_length=200, blank=True)
    email_address = models.CharField(max_length=320)
    signature = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["account_id", "email_address", "id"]
        verbose_name_plural = "identities"

    def __str__(self) -> str:
        return f"{self.name} <{self.email_address}>" if self.name else self.email_address


class Contact(models.Model):
    """Someone the owner writes to; sent-to addresses are collected here automatically."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mail_contacts"
    )
    name = models.CharField(max_length=200, blank=True)
    email_address = models.CharField(max_length=320)
    collected = models.BooleanField(default=False)  # added by sending, not by hand
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "email_address", "id"]
        constraints = [
            models.UniqueConstraint("owner", Lower("email_address"), name="contact_unique_email"),
        ]

    def __str__(self) -> str:
        return f"{self.name} <{self.email_address}>" if self.name else self.email_address


class ContactGroup(models.Model):
    """A named list of addresses and other groups' names; its name expands as a recipient."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mail_contact_groups"
    )
    name = models.CharField(max_length=200)
    members = models.JSONField(default=list, blank=True)  # ["a@x.org", "Other group", ...]
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint("owner", Lower("name"), name="contactgroup_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name


class Upload(models.Model):
    """A file uploaded for a message being written, stored under DATA_DIR/uploads/<owner>/."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads"
    )
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    path = models.CharField(max_length=1000, editable=False)  # absolute path on disk
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.filename


class OutgoingMessage(models.Model):
    """One message in the outbox: the final MIME bytes and the state of their delivery.

    See mailcore/outbox.py for the state machine and the exactly-once reasoning.
    """

    class State(models.TextChoices):
        SCHEDULED = "scheduled"
        QUEUED = "queued"
        SENDING = "sending"
        SENT = "sent"
        RETRYING = "retrying"
        FAILED = "failed"
        CANCELLED = "cancelled"
        UNKNOWN = "unknown"  # connection lost after the final dot: maybe delivered

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="outgoing_messages"
    )
    account = models.ForeignKey(
        MailAccount, on_delete=models.CASCADE, related_name="outgoing_messages"
    )
    identity = models.ForeignKey(
        Identity, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    state = models.CharField(max_length=16, choices=State, default=State.QUEUED)
    raw = models.BinaryField(editable=False)  # the final bytes, built once at queue time
    message_id = models.CharField(max_length=998)
    mail_from = models.CharField(max_length=320)
    recipients = models.JSONField(default=list)  # envelope addresses (To + Cc + Bcc)
    subject = models.TextField(blank=True)
    to = models.JSONField(default=list, blank=True)  # [{name, email}]
    cc = models.JSONField(default=list, blank=True)
    bcc = models.JSONField(default=list, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    send_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    first_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # The claim of the worker sending it: a lease, and a token so only that worker finishes it.
    lease_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=32, blank=True)
    # Committed right before the final dot: when true the message may have been delivered.
    body_sent = models.BooleanField(default=False)
    accepted = models.JSONField(default=list, blank=True)
    refused = models.JSONField(default=list, blank=True)  # [{address, code, reply}]
    reply = models.TextField(blank=True)  # the server's reply to the final dot
    sent_at = models.DateTimeField(null=True, blank=True)
    sent_copy_saved = models.BooleanField(default=False)
    sent_copy_error = models.TextField(blank=True)
    # The message answered or forwarded: marked \\Answered / $Forwarded once this is sent.
    reply_to_message = models.ForeignKey(
        "Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    forward_of = models.ForeignKey(
        "Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(state__in=["scheduled", "queued", "retrying"]),
                name="outgoing_due",
            ),
            models.Index(
                fields=["lease_until"], condition=Q(state="sending"), name="outgoing_lease"
            ),
            models.Index(fields=["owner", "-id"], name="outgoing_owner_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.subject or '(no subject)'} [{self.state}]"


class ForwardMode(models.TextChoices):
    INLINE = "inline"  # the original quoted in the body, its attachments along
    ATTACHMENT = "attachment"  # the whole original as a message/rfc822 part


class Draft(models.Model):
    """A message being written, saved while the user types (mailcore/drafts.py).

    The row is the truth; a copy is kept in the account's Drafts folder on the IMAP server,
    pushed after each save. ``revision`` counts saves, ``server_revision`` is the save the
    server copy holds: they differ while a push is due. Every copy carries the draft's own
    ``message_id``, so stray copies (a push that died before recording its uid) are found by
    that header and removed with the next push or the deletion.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mail_drafts"
    )
    account = models.ForeignKey(MailAccount, on_delete=models.CASCADE, related_name="drafts")
    identity = models.ForeignKey(
        Identity, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    to = models.JSONField(default=list, blank=True)  # entries as typed: "Name <a@x>", a group
    cc = models.JSONField(default=list, blank=True)
    bcc = models.JSONField(default=list, blank=True)
    subject = models.TextField(blank=True)
    text = models.TextField(blank=True)
    html = models.TextField(blank=True)  # sanitized; empty for a plain-text draft
    attachments = ArrayField(models.BigIntegerField(), default=list, blank=True)  # Upload ids
    in_reply_to = models.CharField(max_length=998, blank=True)
    # A reply or forward of a synced message remembers it, for the send (mailcore/forwarding.py).
    reply_to_message = models.ForeignKey(
        "Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    forward_of = models.ForeignKey(
        "Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    forward_mode = models.CharField(max_length=16, choices=ForwardMode, default=ForwardMode.INLINE)
    forward_attachments = models.BooleanField(default=True)  # inline: the original's travel along
    message_id = models.CharField(max_length=998, editable=False)
    revision = models.PositiveIntegerField(default=1)
    server_revision = models.PositiveIntegerField(default=0)
    server_mailbox = models.CharField(max_length=1000, blank=True)
    server_uid = models.BigIntegerField(null=True, blank=True)
    server_error = models.TextField(blank=True)
    # The claim of the worker pushing the copy (one at a time per draft).
    push_token = models.CharField(max_length=32, blank=True)
    push_lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["owner", "-updated_at"], name="draft_owner_recent")]

    def __str__(self) -> str:
        return self.subject or "(no subject)"
