"""Threading: which conversation each new message belongs to, decided incrementally.

A message joins the thread of a message it refers to (In-Reply-To, References), of a
message already cached that refers to it (the parent arriving after its replies, as in a
newest-first sync), or — when its subject says it is a reply — of the latest thread with
the same normalised subject. Only the new messages and the rows they touch are read;
nothing is ever rebuilt account-wide.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from django.db import connection
from django.db.models import Q

from mailcore.models import MailAccount, Message, Thread

_REPLY_PREFIX = re.compile(
    # The full-width colon (U+FF1A) is how CJK mail clients write "Re:".
    r"^\s*((re|fw|fwd|aw|wg|sv|vs|antw|rif|tr|odp|r|enc)(\[\d+\])?\s*[:\uff1a]\s*|\[[^\]]{1,40}\]\s*)+",
    re.IGNORECASE,
)
SUBJECT_WINDOW = timedelta(days=90)


def normalize_subject(subject: str) -> str:
    return " ".join(_REPLY_PREFIX.sub("", subject or "").split()).casefold()


def is_reply_subject(subject: str) -> bool:
    return bool(_REPLY_PREFIX.match(subject or "")) and normalize_subject(subject) != ""


def _parents(message: Any) -> list[str]:
    """Nearest first: In-Reply-To, then References from the end."""
    ids = [message.in_reply_to] if message.in_reply_to else []
    ids += [ref for ref in reversed(message.references) if ref not in ids]
    return ids


class _Groups:
    """Union-find over the batch, so replies within one batch share a thread."""

    def __init__(self, items: Iterable[int]) -> None:
        self.parent = {item: item for item in items}

    def find(self, item: int) -> int:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def threads_assign(*, account: MailAccount, messages: Sequence[Any]) -> set[int]:
    """Set `thread_id` on each (not yet saved) message; returns the threads touched.

    A message is anything with message_id, in_reply_to, references, subject and date.

    Call threads_refresh() with the result once the messages are saved.
    """
    if not messages:
        return set()
    groups = _Groups(range(len(messages)))
    own_ids: dict[str, int] = {}
    for index, message in enumerate(messages):
        if message.message_id:
            if message.message_id in own_ids:
                groups.union(index, own_ids[message.message_id])
            own_ids.setdefault(message.message_id, index)
    for index, message in enumerate(messages):
        for ref in _parents(message):
            if ref in own_ids:
                groups.union(index, own_ids[ref])

    known = _threads_of_referenced(account, messages)
    adopted = _threads_of_children(account, list(own_ids))
    found: dict[int, int] = {}  # group root -> thread id
    for index, message in enumerate(messages):
        thread_id = next((known[ref] for ref in _parents(message) if ref in known), None)
        if thread_id is None and message.message_id:
            thread_id = adopted.get(message.message_id)
        if thread_id is not None:
            found.setdefault(groups.find(index), thread_id)

    by_subject = _threads_by_subject(account, [m for m in messages if is_reply_subject(m.subject)])
    for index, message in enumerate(messages):
        root = groups.find(index)
        if root not in found and is_reply_subject(message.subject):
            thread_id = by_subject.get(normalize_subject(message.subject))
            if thread_id is not None:
                found[root] = thread_id

    new_roots = sorted({groups.find(i) for i in range(len(messages))} - set(found))
    subjects = [normalize_subject(messages[root].subject) for root in new_roots]
    created = _threads_create(account, subjects)
    found.update(zip(new_roots, created, strict=True))
    for index, message in enumerate(messages):
        message.thread_id = found[groups.find(index)]
    return set(found.values())


def _threads_create(account: MailAccount, subjects: list[str]) -> list[int]:
    """Insert one thread per subject in a single statement; returns their ids in order."""
    if not subjects:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {Thread._meta.db_table} (account_id, subject, message_count)
            SELECT %s, subject, 0 FROM unnest(%s::text[]) WITH ORDINALITY AS s(subject, n)
            ORDER BY n RETURNING id
            """,  # noqa: S608 — the table name comes from the model
            [account.pk, subjects],
        )
        return sorted(row[0] for row in cursor.fetchall())  # ids grow in insertion order


def _threads_of_referenced(account: MailAccount, messages: Sequence[Any]) -> dict[str, int]:
    refs = {ref for message in messages for ref in _parents(message)}
    if not refs:
        return {}
    rows = Message.objects.filter(account=account, message_id__in=refs, thread__isnull=False)
    return dict(rows.values_list("message_id", "thread_id"))


def _threads_of_children(account: MailAccount, message_ids: list[str]) -> dict[str, int]:
    """message id -> thread of an already-threaded message that refers to it."""
    if not message_ids:
        return {}
    wanted = set(message_ids)
    rows = Message.objects.filter(
        Q(in_reply_to__in=message_ids) | Q(references__overlap=message_ids),
        account=account,
        thread__isnull=False,
    ).values_list("in_reply_to", "references", "thread_id")
    adopted: dict[str, int] = {}
    for in_reply_to, references, thread_id in rows:
        for ref in [in_reply_to, *references]:
            if ref in wanted:
                adopted.setdefault(ref, thread_id)
    return adopted


def _threads_by_subject(account: MailAccount, replies: Sequence[Any]) -> dict[str, int]:
    subjects = {normalize_subject(m.subject) for m in replies}
    if not subjects:
        return {}
    oldest = min(m.date for m in replies) - SUBJECT_WINDOW
    rows = (
        Thread.objects.filter(account=account, subject__in=subjects, last_date__gte=oldest)
        .order_by("subject", "-last_date")
        .distinct("subject")
        .values_list("subject", "id")
    )
    return dict(rows)


def threads_refresh(*, thread_ids: Iterable[int]) -> None:
    """Recount messages and the latest date of the given threads, in one statement."""
    ids = list(thread_ids)
    if not ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {Thread._meta.db_table} AS t
               SET message_count = COALESCE(s.n, 0), last_date = s.last_date
              FROM (SELECT id, (SELECT count(*) FROM {Message._meta.db_table} m
                                 WHERE m.thread_id = th.id) AS n,
                               (SELECT max(date) FROM {Message._meta.db_table} m
                                 WHERE m.thread_id = th.id) AS last_date
                      FROM {Thread._meta.db_table} th WHERE th.id = ANY(%s)) AS s
             WHERE t.id = s.id
            """,  # noqa: S608 — table names come from the models, values are parameters
            [ids],
        )
