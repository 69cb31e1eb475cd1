"""Live mail events for the owner's browsers: `mail.new` and `mailbox.counts`."""

from __future__ import annotations

from mailcore.models import MailAccount, Mailbox
from webapp.events.publish import event_publish


def mailbox_counts_publish(*, mailbox: Mailbox) -> None:
    event_publish(
        user_id=mailbox.account.owner_id,
        event={
            "type": "mailbox.counts",
            "account": mailbox.account_id,
            "mailbox": mailbox.pk,
            "total": mailbox.total,
            "unread": mailbox.unread,
        },
    )


def mail_new_publish(*, account: MailAccount, mailbox_id: int, message_ids: list[int]) -> None:
    event_publish(
        user_id=account.owner_id,
        event={
            "type": "mail.new",
            "account": account.pk,
            "mailbox": mailbox_id,
            "count": len(message_ids),
            "messages": message_ids[:50],
        },
    )
