"""Writes: accounts, folders and messages. Server first, then the cache, then the events."""

from __future__ import annotations

import base64
import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta

import nh3
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from mailcore.conversations import threads_refresh
from mailcore.events import mailbox_counts_publish
from mailcore.models import Attachment, MailAccount, Mailbox, Message, MessageBody
from mailcore.protocols import imap, mime, smtp
from mailcore.protocols.sanitize import SafeHtml, sanitize_html
from mailcore.sync import account_sync, imap_config
from webapp.jobs.models import Job
from webapp.jobs.services import job_claim, job_create, job_fail, job_finish, job_report_progress

logger = logging.getLogger(__name__)

SYNC_LEASE = timedelta(minutes=30)
INLINE_IMAGE_LIMIT = 1024 * 1024


# Accounts ---------------------------------------------------------------------------------


def account_create(*, owner, **fields) -> MailAccount:
    fields.setdefault("smtp_username", "")
    fields.setdefault("smtp_password", "")
    account = MailAccount(owner=owner, **fields)
    _smtp_defaults(account)
    account.save()
    return account


def account_update(*, account: MailAccount, **fields) -> MailAccount:
    for name, value in fields.items():
        setattr(account, name, value)
    _smtp_defaults(account)
    account.save()
    return account


def _smtp_defaults(account: MailAccount) -> None:
    """The SMTP login defaults to the incoming one, as most providers share them."""
    account.smtp_username = account.smtp_username or account.username
    account.smtp_password = account.smtp_password or account.password


def account_delete(*, account: MailAccount) -> None:
    """Forget the account and its cache; the mail itself stays on the server."""
    account.delete()


def account_check(*, account: MailAccount) -> dict[str, str]:
    """Log in to the incoming server, then to the SMTP server (or the site-wide relay).

    Raises the engine's error with the server's words; SMTP errors say they are SMTP's.
    """
    from mailcore.outbox import smtp_config

    imap.check_login(imap_config(account))
    if not account.smtp_host and not settings.SATCHEL_RELAY_HOST:
        return {"incoming": "ok", "smtp": "not configured"}
    smtp.check_login(smtp_config(account))
    return {"incoming": "ok", "smtp": "ok"}


def account_sync_start(*, account: MailAccount) -> Job:
    from mailcore.tasks import mail_account_sync

    with transaction.atomic():
        job = job_create(owner=account.owner, kind=Job.Kind.MAIL_SYNC, unit="messages")
        job.result = {"account": account.pk}
        job.save(update_fields=["result"])
        transaction.on_commit(lambda: mail_account_sync.delay(account.pk, job.pk))
    return job


def account_sync_claim(*, account_id: int) -> MailAccount | None:
    """Mark the account syncing unless another sync holds a fresh lease."""
    now = timezone.now()
    claimed = (
        MailAccount.objects.filter(pk=account_id)
        .filter(
            ~Q(sync_state=MailAccount.SyncState.SYNCING) | Q(sync_started_at__lt=now - SYNC_LEASE)
        )
        .update(sync_state=MailAccount.SyncState.SYNCING, sync_started_at=now)
    )
    return MailAccount.objects.filter(pk=account_id).first() if claimed else None


def account_sync_run(*, account_id: int, job_id: int | None = None) -> None:
    """The worker side of a sync: claim, sync, record the outcome on the account and job.

    Network errors are re-raised (the task retries them); a refusal (bad password, an
    untrusted certificate) is recorded with the server's words and not retried. A sync asked
    for while another runs (new mail pushed by IDLE) is not lost: the running one repeats.
    """
    job = job_claim(job_id=job_id) if job_id else None
    if job_id and job is None:
        job = Job.objects.filter(pk=job_id, state=Job.State.RUNNING).first()  # a retry
    account = account_sync_claim(account_id=account_id)
    if account is None:
        MailAccount.objects.filter(pk=account_id).update(sync_pending=True)
        if job:
            job_finish(job=job, result={"joined": "a sync of this account was already running"})
        return

    def progress(done: int, total: int) -> None:
        if job:
            job_report_progress(job=job, done=done, total=total)

    try:
        while True:
            report = account_sync(account=account, progress=progress)
            again = MailAccount.objects.filter(pk=account_id, sync_pending=True)
            if not again.update(sync_pending=False):
                break
    except imap.ImapConnectionError as exc:
        _account_sync_end(account, error=f"Could not reach the server: {exc.reply}")
        raise
    except imap.ImapError as exc:
        _account_sync_end(account, error=exc.reply)
        if job:
            job_fail(job=job, error=exc.reply)
        return
    _account_sync_end(account, error="")
    if job:
        result = {"account": account.pk, "folders": report.folders, "fetched": report.fetched}
        result |= {"new": report.new, "changed": report.changed}
        job_finish(job=job, result={**result, "removed": report.removed})


def _account_sync_end(account: MailAccount, *, error: str) -> None:
    MailAccount.objects.filter(pk=account.pk).update(
        sync_state=MailAccount.SyncState.ERROR if error else MailAccount.SyncState.IDLE,
        last_error=error,
        last_sync_at=timezone.now() if not error else account.last_sync_at,
        sync_started_at=None,
    )


def accounts_sync_due() -> int:
    """Beat: queue a sync for every IMAP account that is not syncing now."""
    from mailcore.tasks import mail_account_sync

    due = MailAccount.objects.filter(incoming_protocol=MailAccount.Protocol.IMAP).exclude(
        sync_state=MailAccount.SyncState.SYNCING
    )
    ids = list(due.values_list("pk", flat=True))
    for account_id in ids:
        mail_account_sync.delay(account_id)
    return len(ids)


# Folders ----------------------------------------------------------------------------------


@contextmanager
def _session(account: MailAccount) -> Iterator[imap.ImapSession]:
    with imap.ImapSession(imap_config(account)) as session:
        yield session


def _child_path(account: MailAccount, parent: Mailbox | None, name: str) -> str:
    if not name.strip():
        raise ValueError("A folder needs a name.")
    delimiter = (parent.delimiter if parent else None) or _delimiter(account)
    if delimiter and delimiter in name:
        raise ValueError(f"A folder name cannot contain {delimiter!r} (it separates levels).")
    return f"{parent.path}{delimiter}{name}" if parent else name


def _delimiter(account: MailAccount) -> str:
    return (
        account.mailboxes.exclude(delimiter="").values_list("delimiter", flat=True).first() or "/"
    )


def mailbox_create(*, account: MailAccount, name: str, parent: Mailbox | None = None) -> Mailbox:
    path = _child_path(account, parent, name)
    with _session(account) as session:
        session.create_folder(path)
    return Mailbox.objects.create(
        account=account,
        path=path,
        name=name,
        parent=parent,
        delimiter=(parent.delimiter if parent else "") or _delimiter(account),
    )


def mailbox_rename(*, mailbox: Mailbox, name: str) -> Mailbox:
    if mailbox.role == Mailbox.Role.INBOX:
        raise ValueError("The inbox cannot be renamed.")
    old = mailbox.path
    new = _child_path(mailbox.account, mailbox.parent, name)
    with _session(mailbox.account) as session:
        session.rename_folder(old, new)
    with transaction.atomic():
        prefix = old + mailbox.delimiter if mailbox.delimiter else None
        if prefix:
            for child in mailbox.account.mailboxes.filter(path__startswith=prefix):
                child.path = new + child.path[len(old) :]
                child.save(update_fields=["path"])
        mailbox.path, mailbox.name = new, name
        mailbox.save(update_fields=["path", "name"])
    return mailbox


def mailbox_delete(*, mailbox: Mailbox) -> None:
    if mailbox.role == Mailbox.Role.INBOX:
        raise ValueError("The inbox cannot be deleted.")
    with _session(mailbox.account) as session:
        session.delete_folder(mailbox.path)
    threads = set(
        Message.objects.filter(mailbox__in=_with_descendants(mailbox)).values_list(
            "thread_id", flat=True
        )
    )
    mailbox.delete()
    threads_refresh(thread_ids=threads - {None})


def _with_descendants(mailbox: Mailbox) -> list[Mailbox]:
    prefix = mailbox.path + mailbox.delimiter
    return [mailbox, *mailbox.account.mailboxes.filter(path__startswith=prefix)]


def mailbox_counts_refresh(*, mailbox: Mailbox) -> None:
    counts = mailbox.messages.aggregate(total=Count("id"), unread=Count("id", Q(seen=False)))
    if (counts["total"], counts["unread"]) != (mailbox.total, mailbox.unread):
        Mailbox.objects.filter(pk=mailbox.pk).update(**counts)
        mailbox.total, mailbox.unread = counts["total"], counts["unread"]
        mailbox_counts_publish(mailbox=mailbox)


# Messages ---------------------------------------------------------------------------------


def _by_mailbox(messages: Sequence[Message]) -> dict[Mailbox, list[Message]]:
    groups: dict[Mailbox, list[Message]] = defaultdict(list)
    for message in messages:
        groups[message.mailbox].append(message)
    return groups


def message_flags_set(
    *, messages: Sequence[Message], seen: bool | None = None, flagged: bool | None = None
) -> None:
    changes = {"\\Seen": seen, "\\Flagged": flagged}
    add = [flag for flag, on in changes.items() if on is True]
    remove = [flag for flag, on in changes.items() if on is False]
    if not add and not remove:
        return
    columns = {
        name: value for name, value in (("seen", seen), ("flagged", flagged)) if value is not None
    }
    for mailbox, group in _by_mailbox(messages).items():
        with _session(mailbox.account) as session:
            session.select(mailbox.path, readonly=False)
            session.set_flags([m.uid for m in group], add=add, remove=remove)
        Message.objects.filter(pk__in=[m.pk for m in group]).update(**columns)
        for message in group:
            for name, value in columns.items():
                setattr(message, name, value)
        mailbox_counts_refresh(mailbox=mailbox)


FORWARDED = "$Forwarded"  # the keyword Thunderbird, Roundcube and Apple Mail set


def message_reply_flags_set(
    *, answered: Sequence[Message] = (), forwarded: Sequence[Message] = ()
) -> None:
    """Mark the originals of sent replies \\Answered and of sent forwards $Forwarded, on
    the server, then in the cache: one IMAP session per account, one SELECT per folder.
    $Forwarded is a keyword, so it is set only where the folder keeps keywords
    (PERMANENTFLAGS lists it or \\*); elsewhere it is skipped."""
    wanted: dict[Mailbox, dict[str, list[Message]]] = defaultdict(lambda: defaultdict(list))
    for flag, messages in (("\\Answered", answered), (FORWARDED, forwarded)):
        for message in messages:
            wanted[message.mailbox][flag].append(message)
    by_account: dict[MailAccount, list[Mailbox]] = defaultdict(list)
    for mailbox in wanted:
        if mailbox.account.incoming_protocol == MailAccount.Protocol.IMAP:
            by_account[mailbox.account].append(mailbox)
    for account, mailboxes in by_account.items():
        with _session(account) as session:
            for mailbox in mailboxes:
                try:
                    selection = session.select(mailbox.path, readonly=False)
                except imap.ImapCommandError as exc:  # renamed or deleted since the sync
                    logger.warning("Cannot flag originals in %s: %s", mailbox.path, exc)
                    continue
                for flag, messages in wanted[mailbox].items():
                    if flag == FORWARDED and not selection.keeps(flag):
                        continue
                    session.set_flags([m.uid for m in messages], add=[flag])
                    _reply_flag_cache(flag, messages)


def _reply_flag_cache(flag: str, messages: Sequence[Message]) -> None:
    if flag == "\\Answered":
        Message.objects.filter(pk__in=[m.pk for m in messages]).update(answered=True)
        for message in messages:
            message.answered = True
        return
    changed = [m for m in messages if flag not in m.keywords]
    for message in changed:
        message.keywords = sorted([*message.keywords, flag])
    Message.objects.bulk_update(changed, ["keywords"])


def message_move(*, messages: Sequence[Message], target: Mailbox) -> None:
    for mailbox, group in _by_mailbox(messages).items():
        if target.account_id != mailbox.account_id:
            raise ValueError("Messages can only be moved within one account.")
        if target.pk == mailbox.pk:
            continue
        with _session(mailbox.account) as session:
            session.select(mailbox.path, readonly=False)
            new_uids = session.move([m.uid for m in group], target.path)
        with transaction.atomic():
            for message in group:
                if message.uid in new_uids:
                    message.mailbox, message.uid = target, new_uids[message.uid]
                    message.save(update_fields=["mailbox", "uid"])
                else:  # the next sync of the target folder fetches it
                    message.delete()
        mailbox_counts_refresh(mailbox=mailbox)
    mailbox_counts_refresh(mailbox=target)


def message_delete(*, messages: Sequence[Message]) -> None:
    """To Trash; from Trash (or where there is no Trash) gone for good."""
    for mailbox, group in _by_mailbox(messages).items():
        trash = mailbox.account.mailboxes.filter(role=Mailbox.Role.TRASH).first()
        if trash and trash.pk != mailbox.pk:
            message_move(messages=group, target=trash)
            continue
        with _session(mailbox.account) as session:
            session.select(mailbox.path, readonly=False)
            session.expunge([m.uid for m in group])
        threads = {m.thread_id for m in group} - {None}
        Message.objects.filter(pk__in=[m.pk for m in group]).delete()
        threads_refresh(thread_ids=threads)
        mailbox_counts_refresh(mailbox=mailbox)


def message_body_load(*, message: Message) -> MessageBody:
    """The parsed body, fetched from the server the first time it is read."""
    existing = MessageBody.objects.filter(message=message).first()
    if existing:
        return existing
    raw = message_raw(message=message)
    parsed = mime.parse_message(raw)
    with transaction.atomic():
        body, _ = MessageBody.objects.get_or_create(
            message=message,
            defaults={
                "headers": [[name, value] for name, value in parsed.headers],
                "text": parsed.text or "",
                "html": parsed.html or "",
            },
        )
        Attachment.objects.filter(message=message).delete()
        Attachment.objects.bulk_create(
            Attachment(
                message=message,
                part=info.part,
                filename=info.filename,
                content_type=info.content_type,
                size=info.size,
                content_id=info.content_id or "",
                inline=info.inline,
                data=_inline_data(raw, info),
            )
            for info in parsed.attachments
        )
        text = parsed.text or nh3.clean(parsed.html or "", tags=set())
        Message.objects.filter(pk=message.pk).update(body_text=text[:200_000])
    return body


def message_body_html(*, message: Message, allow_remote_images: bool) -> SafeHtml | None:
    """The HTML body made safe, inline cid: images as data: URLs; None for text-only mail."""
    body = message_body_load(message=message)
    if not body.html:
        return None
    inline = {
        a.content_id: a for a in message.attachments.all() if a.content_id and a.data is not None
    }
    return sanitize_html(
        body.html,
        allow_remote_images=allow_remote_images,
        cid_url=lambda cid: _data_url(inline[cid]) if cid in inline else None,
    )


def _data_url(attachment: Attachment) -> str:
    encoded = base64.b64encode(bytes(attachment.data)).decode()
    return f"data:{attachment.content_type};base64,{encoded}"


def _inline_data(raw: bytes, info: mime.AttachmentInfo) -> bytes | None:
    small_image = info.content_type.startswith("image/") and info.size <= INLINE_IMAGE_LIMIT
    return mime.part_bytes(raw, info.part) if info.content_id and small_image else None


def mailbox_search(*, mailbox: Mailbox, text: str) -> list[int]:
    """UIDs the server's SEARCH finds in one folder (it sees bodies we never fetched)."""
    with _session(mailbox.account) as session:
        session.select(mailbox.path)
        return session.search(text=text)


def message_raw(*, message: Message) -> bytes:
    with _session(message.account) as session:
        session.select(message.mailbox.path)
        return session.fetch_raw(message.uid)


def attachment_bytes(*, attachment: Attachment) -> bytes:
    if attachment.data is not None:
        return bytes(attachment.data)
    message = attachment.message
    encoding = _part_encoding(message.bodystructure, attachment.part)
    with _session(message.account) as session:
        session.select(message.mailbox.path)
        return session.fetch_part(message.uid, attachment.part, encoding)


def _part_encoding(structure: dict, part: str) -> str:
    if structure.get("part") == part:
        return structure.get("encoding") or "7bit"
    for child in structure.get("children", []):
        found = _part_encoding(child, part)
        if found:
            return found
    return ""
