"""Drafts: the message being written, saved while the user types, with one copy on the server.

- ``draft_create`` / ``draft_update`` write the row (PostgreSQL is the truth), bump its
  ``revision`` and, after the commit, enqueue a push of the server copy.
- ``draft_push`` (a worker) claims the draft with a conditional UPDATE (a token and a lease;
  one pusher per draft), builds the message, APPENDs it to the account's Drafts folder
  (\\Draft \\Seen), records the new uid, and only then removes every other copy, found by the
  draft's own Message-ID (UID STORE \\Deleted + UID EXPUNGE). New copy first, old copies
  after: once saved, the server never holds zero copies. A burst of saves coalesces: a push
  that finds the claim taken leaves the work to the holder, which goes round again while
  the row's revision is ahead of the copy's.
- ``draft_delete`` (discard, or the message was sent) removes the row and, after the commit,
  every server copy.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import timedelta
from email import policy
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from pathlib import Path

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from mailcore.forwarding import reply_headers
from mailcore.models import Draft, ForwardMode, Identity, MailAccount, Message, Upload
from mailcore.outbox import ascii_domain
from mailcore.outgoing_html import outgoing_html_sanitize
from mailcore.protocols import imap
from mailcore.protocols.compose import guess_content_type, html_to_text, make_message_id
from mailcore.sync import imap_config

PUSH_LEASE = timedelta(minutes=2)
DRAFT_FLAGS = ("\\Draft", "\\Seen")
_FIELDS = (
    "identity", "to", "cc", "bcc", "subject", "text", "html", "in_reply_to",
    "reply_to_message", "forward_of", "forward_mode", "forward_attachments",
)  # fmt: skip


def _checked(
    *, owner, account: MailAccount, identity: Identity | None, attachments, originals=()
) -> list[int]:
    if account.owner_id != owner.pk:
        raise ValueError("account: no such account.")
    if identity is not None and identity.account.owner_id != owner.pk:
        raise ValueError("identity: no such identity.")
    for original in originals:
        if original is not None and original.account.owner_id != owner.pk:
            raise ValueError("reply_to_message / forward_of: no such message.")
    ids = list(dict.fromkeys(int(pk) for pk in attachments or ()))
    if Upload.objects.filter(owner=owner, pk__in=ids).count() != len(ids):
        raise ValueError("attachments: no such upload.")
    return ids


def draft_create(
    *,
    owner,
    account: MailAccount,
    identity: Identity | None = None,
    to: Sequence[str] = (),
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    subject: str = "",
    text: str = "",
    html: str | None = None,
    attachments: Sequence[int] = (),
    in_reply_to: str | None = None,
    reply_to_message: Message | None = None,
    forward_of: Message | None = None,
    forward_mode: str = ForwardMode.INLINE,
    forward_attachments: bool = True,
) -> Draft:
    """A new draft; ``reply_to_message`` / ``forward_of`` are the message answered or
    forwarded (sent along by the draft's send, see drafts_api)."""
    ids = _checked(
        owner=owner,
        account=account,
        identity=identity,
        attachments=attachments,
        originals=(reply_to_message, forward_of),
    )
    domain = account.email_address.rpartition("@")[2] or "localhost"
    with transaction.atomic():
        draft = Draft.objects.create(
            owner=owner,
            account=account,
            identity=identity,
            to=list(to),
            cc=list(cc),
            bcc=list(bcc),
            subject=subject or "",
            text=text or "",
            html=outgoing_html_sanitize(html=html) or "",
            attachments=ids,
            in_reply_to=in_reply_to or "",
            reply_to_message=reply_to_message,
            forward_of=forward_of,
            forward_mode=forward_mode,
            forward_attachments=forward_attachments,
            message_id=make_message_id(ascii_domain(domain)),
        )
        _push_on_commit(draft.pk)
    return draft


def draft_update(*, draft: Draft, account: MailAccount | None = None, **fields) -> Draft:
    """Change the given fields (those of draft_create), bump the revision, push after commit."""
    unknown = set(fields) - {*_FIELDS, "attachments"}
    if unknown:
        raise TypeError(f"draft_update: unknown fields {sorted(unknown)}")
    account = account or draft.account
    identity = fields.get("identity", draft.identity)
    ids = _checked(
        owner=draft.owner,
        account=account,
        identity=identity,
        attachments=fields.get("attachments", draft.attachments),
        originals=(fields.get("reply_to_message"), fields.get("forward_of")),
    )
    values = {**fields, "account": account, "attachments": ids}
    if "html" in fields:
        values["html"] = outgoing_html_sanitize(html=fields["html"]) or ""
    for name in ("subject", "text", "in_reply_to"):
        if name in values:
            values[name] = values[name] or ""
    with transaction.atomic():
        updated = Draft.objects.filter(pk=draft.pk).update(
            **values, revision=F("revision") + 1, updated_at=timezone.now()
        )
        if not updated:
            raise Draft.DoesNotExist("The draft was deleted meanwhile.")
        _push_on_commit(draft.pk)
    draft.refresh_from_db()
    return draft


def draft_delete(*, draft: Draft) -> None:
    """Remove the row now and every copy on the server after the commit."""
    from mailcore.tasks import draft_copies_remove

    account_id, message_id = draft.account_id, draft.message_id
    Draft.objects.filter(pk=draft.pk).delete()
    transaction.on_commit(lambda: draft_copies_remove.delay(account_id, message_id))


def _push_on_commit(draft_id: int) -> None:
    from mailcore.tasks import draft_push as draft_push_task

    transaction.on_commit(lambda: draft_push_task.delay(draft_id))


# --------------------------------------------------------------------------- the message


# Headers are written as given (no re-parsing when the message is generated): the stdlib
# address parser rejects, or crashes on, the half-typed addresses a draft may hold.
_POLICY = policy.SMTP.clone(refold_source="none")


def _one_line(value: str) -> str:
    return " ".join(str(value).split())


def _encoded(value: str) -> str:
    value = _one_line(value)
    return value if value.isascii() else Header(value, "utf-8").encode()


def _address(entry: str) -> str:
    name, email = parseaddr(_one_line(entry))
    if email and email.isascii() and name:
        return formataddr((name, email), charset="utf-8")
    return _encoded(entry)


def draft_message(draft: Draft) -> bytes:
    """The draft as a message for the Drafts folder. Unlike an outgoing message it keeps
    whatever the user typed (half an address, no recipients yet) and its Bcc, so another
    mail client can resume it."""
    account, identity = draft.account, draft.identity
    msg = EmailMessage(policy=_POLICY)
    if identity is not None:
        name, email = identity.name or account.display_name, identity.email_address
    else:
        name, email = account.display_name, account.email_address
    msg.set_raw("From", _address(formataddr((_one_line(name), email)) if name else email))
    for header, entries in (("To", draft.to), ("Cc", draft.cc), ("Bcc", draft.bcc)):
        if entries:
            msg.set_raw(header, ",\n ".join(_address(entry) for entry in entries))
    msg.set_raw("Subject", _encoded(draft.subject))
    msg.set_raw("Date", format_datetime(timezone.now()))
    msg.set_raw("Message-ID", draft.message_id)
    in_reply_to, references = draft.in_reply_to, []
    if draft.reply_to_message is not None:  # so another client resumes it as a reply too
        in_reply_to, references = reply_headers(original=draft.reply_to_message)
    if in_reply_to:
        msg.set_raw("In-Reply-To", _encoded(in_reply_to))
    if references:
        msg.set_raw("References", "\n ".join(_one_line(ref) for ref in references))
    msg.set_content(draft.text or (html_to_text(draft.html) if draft.html else ""))
    if draft.html:
        msg.add_alternative(draft.html, subtype="html")
    uploads = Upload.objects.filter(owner_id=draft.owner_id, pk__in=draft.attachments)
    for upload in sorted(uploads, key=lambda u: draft.attachments.index(u.pk)):
        path = Path(upload.path)
        if not path.exists():
            continue
        content = path.read_bytes()
        maintype, _, subtype = (
            upload.content_type or guess_content_type(upload.filename, content)
        ).partition("/")
        msg.add_attachment(
            content,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=upload.filename,
        )
    return msg.as_bytes(policy=_POLICY)


# --------------------------------------------------------------------------- the server copy


class DraftBusy(Exception):
    """Another worker holds the push claim while a push is due: try again after its lease
    (it goes round again itself; if it died, its lease runs out)."""


def _claim(draft_id: int, token: str) -> bool:
    now = timezone.now()
    return bool(
        Draft.objects.filter(pk=draft_id, server_revision__lt=F("revision"))
        .filter(Q(push_token="") | Q(push_lease_until__lt=now))
        .update(push_token=token, push_lease_until=now + PUSH_LEASE)
    )


def draft_push(*, draft_id: int) -> int:
    """Bring the server copy up to the row's latest revision; returns the pushes made.

    Nothing to do returns 0; DraftBusy when another worker holds the claim and a push is
    due. IMAP errors are recorded in ``server_error`` and raised."""
    token = secrets.token_hex(16)
    pushes = 0
    while _claim(draft_id, token):
        try:
            _push_claimed(draft_id, token)
            pushes += 1
        except (imap.ImapError, OSError) as exc:
            Draft.objects.filter(pk=draft_id).update(server_error=str(exc)[:2000])
            raise
        finally:
            Draft.objects.filter(pk=draft_id, push_token=token).update(
                push_token="", push_lease_until=None
            )
    due = Draft.objects.filter(pk=draft_id, server_revision__lt=F("revision"))
    if due.exclude(push_token="").exists():
        raise DraftBusy(f"Draft {draft_id} is being pushed by another worker.")
    return pushes


def _push_claimed(draft_id: int, token: str) -> None:
    draft = (
        Draft.objects.select_related("account", "identity", "reply_to_message")
        .filter(pk=draft_id)
        .first()
    )
    if draft is None:
        return
    revision = draft.revision
    if draft.account.incoming_protocol != MailAccount.Protocol.IMAP:
        Draft.objects.filter(pk=draft_id, push_token=token).update(server_revision=revision)
        return  # no server folders to keep a copy in
    raw = draft_message(draft)
    with imap.ImapSession(imap_config(draft.account)) as session:
        path = session.folder_with_role("drafts", create="Drafts")
        uid = session.append(path, raw, flags=DRAFT_FLAGS)
        session.select(path, readonly=False)
        found = session.search(header=("Message-ID", draft.message_id))
        uid = uid or max(found, default=None)
        recorded = Draft.objects.filter(pk=draft_id, push_token=token).update(
            server_revision=revision, server_mailbox=path, server_uid=uid, server_error=""
        )
        if recorded:
            stale = [other for other in found if other != uid]
        elif Draft.objects.filter(pk=draft_id).exists():
            stale = [uid] if uid else []  # our claim expired: the new holder's copy stays
        else:
            stale = found  # deleted (sent or discarded) while we were appending
        session.expunge(stale)


def draft_copies_remove(*, account_id: int, message_id: str) -> int:
    """Delete every copy of a draft (by its Message-ID) from the account's Drafts folder."""
    account = MailAccount.objects.filter(pk=account_id).first()
    if account is None or account.incoming_protocol != MailAccount.Protocol.IMAP:
        return 0
    with imap.ImapSession(imap_config(account)) as session:
        path = session.folder_with_role("drafts", create="Drafts")
        session.select(path, readonly=False)
        found = session.search(header=("Message-ID", message_id))
        session.expunge(found)
    return len(found)
