"""Replies and forwards of a synced message: the thread headers and what travels with it.

A reply carries In-Reply-To (the original's Message-ID) and References (the original's
References plus its Message-ID, RFC 5322 §3.6.4), so every reader threads it, whatever the
browser sent. A forward either carries the original's attachments along (inline forward, as
Thunderbird and Roundcube do by default) or the whole original as a message/rfc822 part.
The original's bytes come from the IMAP server on demand, like any body or attachment.
"""

from __future__ import annotations

from mailcore import services
from mailcore.models import Message, Upload
from mailcore.outbox import upload_create

# Long threads would make References grow without bound; RFC 5322 allows trimming it as
# long as the first and the most recent ids stay (readers thread on those).
REFERENCES_KEPT = 20


def reply_headers(*, original: Message) -> tuple[str | None, list[str]]:
    """(In-Reply-To, References) for a reply to ``original``."""
    message_id = original.message_id or None
    references = [ref for ref in original.references if ref]
    if not references and original.in_reply_to:
        references = [original.in_reply_to]
    if message_id and message_id not in references:
        references.append(message_id)
    if len(references) > REFERENCES_KEPT:
        references = [references[0], *references[-(REFERENCES_KEPT - 1) :]]
    return message_id, references


def forward_uploads(*, owner, original: Message) -> list[Upload]:
    """The original's attachments as uploads of ``owner``, to be attached to the forward."""
    services.message_body_load(message=original)  # makes sure its attachments are known
    return [
        upload_create(
            owner=owner,
            filename=attachment.filename,
            chunks=[services.attachment_bytes(attachment=attachment)],
            content_type=attachment.content_type,
        )
        for attachment in original.attachments.all()
    ]


def forward_raw(*, original: Message) -> bytes:
    """The original message, byte for byte, to attach as message/rfc822."""
    return services.message_raw(message=original)
