"""Reads. Every query starts from the user, so another user's ids simply do not exist."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from django.contrib.postgres.search import SearchQuery
from django.db.models import F, Q, QuerySet
from django.shortcuts import get_object_or_404

from mailcore.models import Attachment, MailAccount, Mailbox, Message


def account_list(*, user) -> QuerySet[MailAccount]:
    return MailAccount.objects.filter(owner=user)


def account_get(*, user, account_id: int) -> MailAccount:
    return get_object_or_404(account_list(user=user), pk=account_id)


def mailbox_list(*, user, account_id: int | None = None) -> QuerySet[Mailbox]:
    mailboxes = Mailbox.objects.filter(account__owner=user).select_related("account")
    if account_id is not None:
        mailboxes = mailboxes.filter(account_id=account_id)
    return mailboxes.order_by("account_id", "path")


def mailbox_get(*, user, mailbox_id: int) -> Mailbox:
    return get_object_or_404(mailbox_list(user=user), pk=mailbox_id)


@dataclass(frozen=True)
class MessageFilter:
    mailbox: int | None = None
    account: int | None = None
    thread: int | None = None
    query: str = ""
    unread: bool = False
    flagged: bool = False
    has_attachments: bool = False
    since: date | None = None
    before: date | None = None
    # UIDs the server's own SEARCH matched in `mailbox`: found even where our index is not.
    server_uids: tuple[int, ...] = ()


# What a message list shows; the wide columns (search vector, body text, structure) stay behind.
LIST_COLUMNS = [
    "id", "account_id", "mailbox_id", "uid", "message_id", "thread_id", "subject",
    "sender_name", "sender_email", "to", "cc", "date", "snippet", "size",
    "seen", "flagged", "answered", "has_attachments",
]  # fmt: skip


def message_list(*, user, filters: MessageFilter = MessageFilter()) -> QuerySet[Message]:
    # The owner's account ids as literals, not a join: with a join PostgreSQL misjudges how
    # many rows a folder holds and sorts them all instead of walking the date index.
    account_ids = list(account_list(user=user).values_list("id", flat=True))
    messages = (
        Message.objects.filter(account_id__in=account_ids)
        .only(*LIST_COLUMNS)
        .annotate(thread_count=F("thread__message_count"))
    )
    if filters.mailbox is not None:
        messages = messages.filter(mailbox_id=filters.mailbox)
    if filters.account is not None:
        messages = messages.filter(account_id=filters.account)
    if filters.thread is not None:
        messages = messages.filter(thread_id=filters.thread)
    if filters.unread:
        messages = messages.filter(seen=False)
    if filters.flagged:
        messages = messages.filter(flagged=True)
    if filters.has_attachments:
        messages = messages.filter(has_attachments=True)
    if filters.since:
        messages = messages.filter(date__date__gte=filters.since)
    if filters.before:
        messages = messages.filter(date__date__lt=filters.before)
    tsquery = search_query(filters.query)
    if tsquery is not None:
        matches = Q(search=tsquery)
        if filters.server_uids:
            matches |= Q(uid__in=filters.server_uids)
        messages = messages.filter(matches)
    return messages


_WORD = re.compile(r"[\w@.+-]+", re.UNICODE)


def search_words(text: str) -> list[str]:
    return [w.strip(".-+") for w in _WORD.findall(text or "") if w.strip(".-+")][:12]


def search_query(text: str) -> SearchQuery | None:
    """Every word must match, each as a prefix ("inv" finds "invoice"), in our index."""
    words = search_words(text)
    if not words:
        return None
    raw = " & ".join(f"'{w.replace(chr(39), '')}':*" for w in words)
    return SearchQuery(raw, search_type="raw", config="simple")


def message_get(*, user, message_id: int) -> Message:
    return get_object_or_404(
        Message.objects.filter(account__owner=user).select_related("mailbox", "account"),
        pk=message_id,
    )


def attachment_get(*, user, attachment_id: int) -> Attachment:
    return get_object_or_404(
        Attachment.objects.filter(message__account__owner=user).select_related(
            "message__mailbox", "message__account"
        ),
        pk=attachment_id,
    )
