"""IMAP → PostgreSQL: folders first, then each folder's messages, newest first.

The cache is rebuilt from the server's truth and never the other way round:
- the initial fill goes newest first in committed batches, so the newest messages are
  listed within seconds and an interrupted sync resumes where it stopped (Mailbox.synced_down_to);
- an incremental sync asks only for what changed: new UIDs above the stored UIDNEXT, flags
  changed since the stored HIGHESTMODSEQ (CONDSTORE) and vanished UIDs (QRESYNC), else a
  flag and UID comparison;
- a folder whose STATUS shows the same UIDNEXT and HIGHESTMODSEQ is not even selected;
- a changed UIDVALIDITY drops that folder's cache before anything else, so UIDs never mix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace

from django.db import transaction
from django.db.models import Count, Q

from mailcore.conversations import threads_assign, threads_refresh
from mailcore.events import mail_new_publish, mailbox_counts_publish
from mailcore.models import MailAccount, Mailbox, Message
from mailcore.protocols import imap
from webapp.bulk import copy_upsert

BATCH_SIZE = 500
Progress = Callable[[int, int], None]  # messages done, messages to do

_SYSTEM_FLAGS = {"\\Seen", "\\Flagged", "\\Answered", "\\Draft", "\\Deleted", "\\Recent"}
_FUTURE_DATE_SLACK = timedelta(days=1)


@dataclass
class SyncReport:
    folders: int = 0
    fetched: int = 0  # messages cached by this sync
    new: int = 0  # of those, new mail (not the initial fill)
    changed: int = 0
    removed: int = 0
    new_by_mailbox: dict[int, list[int]] = field(default_factory=dict)


def imap_config(account: MailAccount) -> imap.ImapConfig:
    return imap.ImapConfig(
        host=account.incoming_host,
        port=account.incoming_port,
        security=account.incoming_security,
        username=account.username,
        password=account.password,
        tls_fingerprint=account.incoming_tls_fingerprint,
    )


def account_sync(*, account: MailAccount, progress: Progress | None = None) -> SyncReport:
    report = SyncReport()
    with imap.ImapSession(imap_config(account)) as session:
        mailboxes = mailboxes_reconcile(account=account, folders=session.list_folders())
        statuses = session.folder_statuses()
        todo = [m for m in mailboxes if m.selectable and m.path in statuses]
        report.folders = len(todo)
        tracker = _Tracker(progress, _estimate(todo, statuses), report)
        for mailbox in todo:
            _mailbox_sync(session, mailbox, statuses[mailbox.path], report, tracker)
    for mailbox_id, message_ids in report.new_by_mailbox.items():
        mail_new_publish(account=account, mailbox_id=mailbox_id, message_ids=message_ids)
    return report


class _Tracker:
    def __init__(self, progress: Progress | None, total: int, report: SyncReport) -> None:
        self.progress, self.total, self.done, self.report = progress, total, 0, report

    def advance(self, count: int) -> None:
        self.done += count
        if self.progress:
            self.progress(self.done, max(self.total, self.done))


def _estimate(mailboxes: Sequence[Mailbox], statuses: dict[str, imap.FolderStatus]) -> int:
    """Messages still to fetch: what the server holds minus what is cached already."""
    cached = dict(
        Message.objects.filter(mailbox__in=mailboxes)
        .values("mailbox")
        .annotate(n=Count("id"))
        .values_list("mailbox", "n")
    )
    return sum(max(0, statuses[m.path].messages - cached.get(m.pk, 0)) for m in mailboxes)


def mailboxes_reconcile(*, account: MailAccount, folders: Sequence[imap.Folder]) -> list[Mailbox]:
    """Make the Mailbox rows match the server's folders (created, renamed or deleted elsewhere)."""
    rows = Mailbox.objects.filter(account=account).select_related("account")
    existing = {m.path: m for m in rows}
    seen: dict[str, Mailbox] = {}
    with transaction.atomic():
        for folder in sorted(folders, key=lambda f: f.path.count(f.delimiter or "\0")):
            mailbox = existing.get(folder.path) or Mailbox(account=account, path=folder.path)
            mailbox.name = folder.name
            mailbox.delimiter = folder.delimiter or ""
            mailbox.role = folder.role
            mailbox.selectable = folder.selectable
            mailbox.parent = seen.get(folder.parent) if folder.parent else None
            mailbox.save()
            seen[folder.path] = mailbox
        gone = [m.pk for path, m in existing.items() if path not in seen]
        if gone:
            Mailbox.objects.filter(pk__in=gone).delete()
    return sorted(seen.values(), key=lambda m: (m.role != Mailbox.Role.INBOX, m.path))


def _mailbox_sync(
    session: imap.ImapSession,
    mailbox: Mailbox,
    status: imap.FolderStatus,
    report: SyncReport,
    tracker: _Tracker,
) -> None:
    if mailbox.uidvalidity is not None and mailbox.uidvalidity != status.uidvalidity:
        mailbox_reset(mailbox=mailbox)
    complete = mailbox.synced_down_to == 0
    unchanged = (
        complete
        and status.uidnext == mailbox.uidnext
        and status.highestmodseq is not None
        and status.highestmodseq == mailbox.highestmodseq
    )
    if unchanged:
        _counts_refresh(mailbox, server=status)
        return
    selected = session.select(mailbox.path)
    if mailbox.uidvalidity is not None and selected.uidvalidity != mailbox.uidvalidity:
        mailbox_reset(mailbox=mailbox)
        complete = False
    if complete:
        new_uids = session.uids(min_uid=mailbox.uidnext or 1)
        new_ids = _fetch_and_store(session, mailbox, new_uids, tracker, initial=False)
        if new_ids:
            report.new += len(new_ids)
            report.new_by_mailbox[mailbox.pk] = new_ids
        _changes_apply(session, mailbox, selected, report)
    else:
        server_uids = session.uids()
        cached = set(Message.objects.filter(mailbox=mailbox).values_list("uid", flat=True))
        pending = [uid for uid in server_uids if uid not in cached]
        _counts_refresh(mailbox, server=status)
        _fetch_and_store(session, mailbox, pending, tracker, initial=True)
        if cached:  # resumed: what was cached before may have changed meanwhile
            report.changed += _flags_apply(mailbox, session.all_flags())
            report.removed += _remove_missing(mailbox, server_uids)
    Mailbox.objects.filter(pk=mailbox.pk).update(
        uidvalidity=selected.uidvalidity,
        uidnext=selected.uidnext,
        highestmodseq=selected.highestmodseq,
        synced_down_to=0,
    )
    mailbox.uidvalidity, mailbox.uidnext = selected.uidvalidity, selected.uidnext
    mailbox.highestmodseq, mailbox.synced_down_to = selected.highestmodseq, 0
    _counts_refresh(mailbox)


def mailbox_reset(*, mailbox: Mailbox) -> None:
    """Forget a folder's cache (its UIDVALIDITY changed: old UIDs mean nothing now)."""
    with transaction.atomic():
        threads = set(mailbox.messages.values_list("thread_id", flat=True))
        mailbox.messages.all().delete()
        threads_refresh(thread_ids=threads - {None})
        Mailbox.objects.filter(pk=mailbox.pk).update(
            uidvalidity=None, uidnext=None, highestmodseq=None, synced_down_to=None
        )
    mailbox.uidvalidity = mailbox.uidnext = mailbox.highestmodseq = mailbox.synced_down_to = None


def _fetch_and_store(
    session: imap.ImapSession,
    mailbox: Mailbox,
    uids: Iterable[int],
    tracker: _Tracker,
    *,
    initial: bool,
) -> list[int]:
    """Fetch and cache `uids`, newest first, one committed batch at a time; returns new ids."""
    ordered = sorted(uids, reverse=True)
    batches = [ordered[start : start + BATCH_SIZE] for start in range(0, len(ordered), BATCH_SIZE)]
    created: list[int] = []
    for batch in batches:
        summaries = session.fetch_summaries(batch)
        with transaction.atomic():
            created += _messages_store(mailbox, summaries)
            if initial:
                Mailbox.objects.filter(pk=mailbox.pk).update(synced_down_to=min(batch))
        tracker.advance(len(batch))
        tracker.report.fetched += len(batch)
    return created


def _flag_columns(flags: Iterable[str]) -> dict:
    flags = set(flags)
    return {
        "seen": "\\Seen" in flags,
        "flagged": "\\Flagged" in flags,
        "answered": "\\Answered" in flags,
        "draft": "\\Draft" in flags,
        "keywords": sorted(f for f in flags if f not in _SYSTEM_FLAGS),
    }


def _display_date(summary: imap.MessageSummary):
    """The Date header, unless missing or implausibly far ahead of arrival (spam does that)."""
    if summary.date and summary.date <= summary.internaldate + _FUTURE_DATE_SLACK:
        return summary.date
    return summary.internaldate


def _address_list(addresses: Iterable[imap.Address]) -> list[dict[str, str]]:
    return [{"name": a.name, "email": a.email} for a in addresses]


_STORED_COLUMNS = [
    "account_id", "mailbox_id", "uid", "message_id", "in_reply_to", "references", "thread_id",
    "subject", "sender_name", "sender_email", "to", "cc", "date", "size", "snippet",
    "seen", "flagged", "answered", "draft", "keywords", "has_attachments", "bodystructure",
    "modseq", "body_text",
]  # fmt: skip
_FLAG_COLUMNS = ["seen", "flagged", "answered", "draft", "keywords", "modseq"]


def _messages_store(mailbox: Mailbox, summaries: Sequence[imap.MessageSummary]) -> list[int]:
    """Cache one batch, threads included; returns the ids of the rows written."""
    rows = [
        SimpleNamespace(
            account_id=mailbox.account_id,
            mailbox_id=mailbox.pk,
            uid=s.uid,
            message_id=s.message_id[:998],
            in_reply_to=s.in_reply_to[:998],
            references=[ref[:998] for ref in s.references],
            thread_id=None,
            subject=s.subject,
            sender_name=s.sender.name[:500] if s.sender else "",
            sender_email=s.sender.email[:500] if s.sender else "",
            to=_address_list(s.to),
            cc=_address_list(s.cc),
            date=_display_date(s),
            size=s.size,
            snippet=s.snippet,
            has_attachments=s.has_attachments,
            bodystructure=s.bodystructure,
            modseq=s.modseq,
            body_text="",
            **_flag_columns(s.flags),
        )
        for s in summaries
    ]
    threads = threads_assign(account=mailbox.account, messages=rows)
    # A resumed batch may meet rows stored before an interruption: one row per UID stays.
    written = copy_upsert(
        Message,
        _STORED_COLUMNS,
        ([getattr(row, column) for column in _STORED_COLUMNS] for row in rows),
        conflict=["mailbox_id", "uid"],
        update=_FLAG_COLUMNS,
    )
    threads_refresh(thread_ids=threads)
    return [row[0] for row in written]


def _changes_apply(
    session: imap.ImapSession, mailbox: Mailbox, selected: imap.SelectResult, report: SyncReport
) -> None:
    previous = Mailbox.objects.values_list("highestmodseq", flat=True).get(pk=mailbox.pk)
    if previous and selected.highestmodseq:
        if selected.highestmodseq == previous:
            return
        changes = session.changes_since(previous)
        report.changed += _flags_apply(mailbox, changes.flags)
        if changes.vanished is not None:
            report.removed += _remove(mailbox, changes.vanished)
            return
    else:
        report.changed += _flags_apply(mailbox, session.all_flags())
    if mailbox.messages.count() != selected.exists:
        report.removed += _remove_missing(mailbox, session.uids())


def _flags_apply(mailbox: Mailbox, changes: Sequence[imap.FlagChange]) -> int:
    if not changes:
        return 0
    wanted = {change.uid: change for change in changes}
    rows = list(mailbox.messages.filter(uid__in=wanted))
    changed = []
    for row in rows:
        change = wanted[row.uid]
        columns = _flag_columns(change.flags)
        if any(getattr(row, name) != value for name, value in columns.items()):
            for name, value in columns.items():
                setattr(row, name, value)
            row.modseq = change.modseq
            changed.append(row)
    Message.objects.bulk_update(
        changed, ["seen", "flagged", "answered", "draft", "keywords", "modseq"], batch_size=1000
    )
    return len(changed)


def _remove(mailbox: Mailbox, uids: Iterable[int]) -> int:
    uids = list(uids)
    if not uids:
        return 0
    doomed = mailbox.messages.filter(uid__in=uids)
    threads = set(doomed.values_list("thread_id", flat=True))
    count, _ = doomed.delete()
    threads_refresh(thread_ids=threads - {None})
    return count


def _remove_missing(mailbox: Mailbox, server_uids: Iterable[int]) -> int:
    present = set(server_uids)
    cached = mailbox.messages.values_list("uid", flat=True)
    return _remove(mailbox, [uid for uid in cached if uid not in present])


def _counts_refresh(mailbox: Mailbox, *, server: imap.FolderStatus | None = None) -> None:
    """Counts from the cache once it is complete; from the server's STATUS while filling."""
    if server is not None and mailbox.synced_down_to != 0:
        total, unread = server.messages, server.unseen
    else:
        counts = mailbox.messages.aggregate(total=Count("id"), unread=Count("id", Q(seen=False)))
        total, unread = counts["total"], counts["unread"]
    if (total, unread) != (mailbox.total, mailbox.unread):
        Mailbox.objects.filter(pk=mailbox.pk).update(total=total, unread=unread)
        mailbox.total, mailbox.unread = total, unread
        mailbox_counts_publish(mailbox=mailbox)
