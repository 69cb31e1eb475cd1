"""The outbox: a state machine in PostgreSQL that never loses a message or sends it twice.

States (``OutgoingMessage.State``)::

    scheduled --(due)--> queued --(claimed)--> sending --> sent
        |                  |                      |------> retrying --(due)--> sending ...
        '--- cancelled <---'                      |------> failed
                                                  '------> unknown

- ``outbox_create`` validates the recipients (group names expanded), builds the final MIME
  bytes, Message-ID and Date ONCE and stores them on the row, and only after the commit
  enqueues the row's id. A message is ``scheduled`` while its ``send_at`` or the undo window
  (``OUTBOX_UNDO_SECONDS``) is in the future, and can be cancelled until a worker claims it.
- A worker claims a due row with one conditional UPDATE (state in scheduled/queued/retrying,
  next_attempt_at <= now -> sending, with a lease and a claim token). Only the holder of the
  token may finish the attempt, so a worker that outlived its lease cannot overwrite the
  next attempt's result. A duplicate task, or a rerun after acks_late redelivery, finds
  nothing to claim and does nothing.
- Outcomes: accepted (some recipients may be refused: they are listed with the server's code
  and text) -> ``sent``; a 4xx reply or a network error before the final "." ->
  ``retrying`` after ``OUTBOX_RETRY_DELAYS`` (the last delay repeats; +-10% jitter) until
  ``OUTBOX_GIVE_UP_AFTER`` from the first attempt -> ``failed`` with the last server text;
  a 5xx (or bad credentials, an untrusted certificate) -> ``failed`` at once, with the
  server's reply.
- ``unknown``: the connection broke after the final "." went out and before the server's
  reply (RFC 1047). The server may have accepted the message. Such a row is NEVER resent
  automatically. ``outbox_resolve_unknown`` looks for its Message-ID in the account's Sent
  folder (IMAP ``SEARCH HEADER Message-ID``) — where a provider that files submitted mail
  itself, or an earlier partial run, would have put it — and marks the row ``sent`` if it is
  there; otherwise the row stays ``unknown`` and the user decides (``outbox_retry`` sends it
  again on purpose).
- A worker killed mid-attempt leaves the row in ``sending``; ``outbox_sweep_stale`` (beat)
  finds rows whose lease expired. If the attempt had not yet handed the whole body over
  (``body_sent`` false) nothing can have been delivered and the row is re-queued; otherwise
  it becomes ``unknown`` (same reasoning as above).
- After ``sent`` the message is appended to the account's Sent folder (\\Seen) once: the
  ``sent_copy_saved`` flag is claimed with a conditional UPDATE *before* the APPEND, so a
  rerun never appends twice; a failed APPEND gives the flag back and records
  ``sent_copy_error`` — the message stays sent.
- Every state change is published to the owner as ``outbox.state`` after commit.
"""

from __future__ import annotations

import logging
import random
import secrets
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from mailcore import people
from mailcore.models import Identity, MailAccount, OutgoingMessage, Upload
from mailcore.protocols import imap
from mailcore.protocols.compose import (
    AddressError,
    Draft,
    OutgoingAttachment,
    build_message,
    build_utf8_message,
    envelope_recipients,
    make_message_id,
    needs_smtputf8,
)
from mailcore.protocols.mime import Address
from mailcore.protocols.smtp import (
    SmtpConfig,
    SmtpError,
    SmtpPermanentError,
    SmtpSession,
    SmtpTransientError,
    SmtpUnknownOutcome,
)
from mailcore.sync import imap_config
from webapp.events.publish import event_publish

logger = logging.getLogger(__name__)

State = OutgoingMessage.State
DUE_STATES = (State.SCHEDULED, State.QUEUED, State.RETRYING)
CANCELLABLE = (State.SCHEDULED, State.QUEUED, State.RETRYING, State.UNKNOWN, State.FAILED)
# How soon a message must be due for its task to be enqueued with a countdown right away
# (later ones are enqueued by the dispatcher, so no long ETAs sit in the broker).
_COUNTDOWN_LIMIT = 60


class OutboxConflict(Exception):
    """The message is not in a state that allows this (e.g. cancel while sending)."""


# --------------------------------------------------------------------------- events


def message_event(message: OutgoingMessage) -> dict:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat().replace("+00:00", "Z") if value else None

    return {
        "id": message.pk,
        "state": message.state,
        "attempts": message.attempts,
        "next_attempt_at": iso(message.next_attempt_at),
        "last_error": message.last_error,
    }


def _publish(message: OutgoingMessage) -> None:
    event_publish(
        user_id=message.owner_id, event={"type": "outbox.state", "message": message_event(message)}
    )


def _reload_and_publish(message_id: int) -> OutgoingMessage:
    message = OutgoingMessage.objects.get(pk=message_id)
    _publish(message)
    return message


# --------------------------------------------------------------------------- uploads


def upload_create(*, owner, filename: str, chunks, content_type: str = "") -> Upload:
    """Store an uploaded file under DATA_DIR/uploads/<owner id>/, streamed in chunks."""
    from mailcore.protocols.mime import safe_filename

    directory = Path(settings.DATA_DIR) / "uploads" / str(owner.pk)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / secrets.token_hex(16)
    size = 0
    with path.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)
            size += len(chunk)
    name = safe_filename(filename or "", content_type or "application/octet-stream")
    return Upload.objects.create(
        owner=owner,
        filename=name[:255],
        content_type=(content_type or "")[:255],
        size=size,
        path=str(path),
    )


# --------------------------------------------------------------------------- create


def _address_dicts(addresses: list[Address]) -> list[dict[str, str]]:
    return [{"name": a.name or "", "email": a.email} for a in addresses]


def outbox_create(
    *,
    owner,
    account: MailAccount,
    to=(),
    cc=(),
    bcc=(),
    subject: str = "",
    text: str = "",
    html: str | None = None,
    identity: Identity | None = None,
    uploads: list[Upload] = (),
    in_reply_to: str | None = None,
    references: list[str] = (),
    forward_attachment: bytes | None = None,
    send_at: datetime | None = None,
) -> OutgoingMessage:
    """Validate, build the final bytes once, store the row, enqueue after commit.
    ``forward_attachment`` is a whole message to attach as message/rfc822.

    Raises HeaderInjection (a line break in a header value), AddressError (every bad
    address, with what is wrong), ValueError (no recipients, someone else's objects)."""
    if account.owner_id != owner.pk:
        raise ValueError("account: no such account.")
    if identity is not None and identity.account.owner_id != owner.pk:
        raise ValueError("identity: no such identity.")
    errors: dict[str, str] = {}
    resolved: dict[str, list[Address]] = {}
    for field, entries in (("to", to), ("cc", cc), ("bcc", bcc)):
        try:
            resolved[field] = people.recipients_resolve(owner=owner, entries=entries or [])
        except AddressError as exc:
            errors.update(exc.errors)
    if errors:
        raise AddressError(errors)
    if not (resolved["to"] or resolved["cc"] or resolved["bcc"]):
        raise ValueError("to: give at least one recipient.")
    for upload in uploads:
        if upload.owner_id != owner.pk:
            raise ValueError("attachments: no such upload.")

    if identity is not None:
        sender = Address(identity.name or account.display_name or "", identity.email_address)
        if identity.signature:
            text = f"{text or ''}\n\n-- \n{identity.signature}"
            if html is not None:
                signature_html = "<br>".join(
                    _escape(line) for line in identity.signature.splitlines()
                )
                html = f"{html}<br><br>-- <br>{signature_html}"
    else:
        sender = Address(account.display_name or "", account.email_address)
    domain = sender.email.rpartition("@")[2] or "localhost"
    now = timezone.now()
    draft = Draft(
        sender=sender,
        to=resolved["to"],
        cc=resolved["cc"],
        bcc=resolved["bcc"],
        subject=subject or "",
        text=text if text or html is None else None,
        html=html or None,
        attachments=[
            OutgoingAttachment(
                filename=upload.filename,
                content=Path(upload.path).read_bytes(),
                content_type=upload.content_type or None,
            )
            for upload in uploads
        ],
        in_reply_to=in_reply_to or None,
        references=list(references or ([in_reply_to] if in_reply_to else [])),
        forward_as_attachment=forward_attachment,
        message_id=make_message_id(_ascii_domain(domain)),
        date=send_at if send_at and send_at > now else now,
    )
    builder = build_utf8_message if needs_smtputf8(draft) else build_message
    raw, message_id = builder(draft, domain=_ascii_domain(domain))
    recipients = envelope_recipients(draft)

    due = (
        send_at
        if send_at and send_at > now
        else now + timedelta(seconds=settings.OUTBOX_UNDO_SECONDS)
    )
    state = State.SCHEDULED if due > now else State.QUEUED
    with transaction.atomic():
        message = OutgoingMessage.objects.create(
            owner=owner,
            account=account,
            identity=identity,
            state=state,
            raw=raw,
            message_id=message_id,
            mail_from=sender.email,
            recipients=recipients,
            subject=subject or "",
            to=_address_dicts(resolved["to"]),
            cc=_address_dicts(resolved["cc"]),
            bcc=_address_dicts(resolved["bcc"]),
            size=len(raw),
            send_at=send_at,
            next_attempt_at=due,
        )
        _publish(message)
        _enqueue_on_commit(message.pk, due)
    return message


def _escape(text: str) -> str:
    from html import escape

    return escape(text)


def _ascii_domain(domain: str) -> str:
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "localhost"


def _enqueue_on_commit(message_id: int, due: datetime | None) -> None:
    from mailcore.tasks import outbox_send

    delay = max(0.0, (due - timezone.now()).total_seconds()) if due else 0.0
    if delay > _COUNTDOWN_LIMIT:
        return  # the dispatcher enqueues it when it is due
    transaction.on_commit(
        lambda: outbox_send.apply_async((message_id,), countdown=delay + 0.05 if delay else None)
    )


# --------------------------------------------------------------------------- claiming


def outbox_claim(*, message_id: int) -> tuple[OutgoingMessage, str] | None:
    """Due scheduled/queued/retrying -> sending, atomically; None if not due or taken."""
    now = timezone.now()
    token = secrets.token_hex(16)
    claimed = (
        OutgoingMessage.objects.filter(pk=message_id, state__in=DUE_STATES)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(
            state=State.SENDING,
            claim_token=token,
            lease_until=now + timedelta(seconds=settings.OUTBOX_SENDING_LEASE),
            attempts=F("attempts") + 1,
            body_sent=False,
            first_attempt_at=Coalesce(F("first_attempt_at"), now),
            updated_at=now,
        )
    )
    if not claimed:
        return None
    return _reload_and_publish(message_id), token


def _finish(message: OutgoingMessage, token: str, **fields) -> bool:
    """Write an attempt's outcome, only if this attempt still holds the claim."""
    fields.setdefault("lease_until", None)
    fields.setdefault("claim_token", "")
    fields["updated_at"] = timezone.now()
    done = OutgoingMessage.objects.filter(
        pk=message.pk, state=State.SENDING, claim_token=token
    ).update(**fields)
    if done:
        _reload_and_publish(message.pk)
    return bool(done)


# --------------------------------------------------------------------------- sending


def smtp_config(account: MailAccount) -> SmtpConfig:
    """The account's own SMTP server, else the site-wide relay (SATCHEL_RELAY_*)."""
    if account.smtp_host:
        return SmtpConfig(
            host=account.smtp_host,
            port=account.smtp_port,
            security=account.smtp_security,
            username=account.smtp_username,
            password=account.smtp_password,
            tls_fingerprint=account.smtp_tls_fingerprint,
            timeout=30.0,
        )
    if not settings.SATCHEL_RELAY_HOST:
        raise SmtpPermanentError(
            "This account has no SMTP server and no site-wide relay is configured."
        )
    return SmtpConfig(
        host=settings.SATCHEL_RELAY_HOST,
        port=settings.SATCHEL_RELAY_PORT,
        security=settings.SATCHEL_RELAY_SECURITY or "starttls",
        username=settings.SATCHEL_RELAY_USERNAME or "",
        password=settings.SATCHEL_RELAY_PASSWORD or "",
        timeout=30.0,
    )


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones, with +-10% jitter."""
    delays = list(settings.OUTBOX_RETRY_DELAYS) or [3600]
    base = delays[min(max(attempts, 1), len(delays)) - 1]
    return max(0.0, base * random.uniform(0.9, 1.1))  # noqa: S311 — jitter


def _said(exc: SmtpError) -> str:
    return f"{exc.code} {exc.reply}" if exc.code is not None else exc.reply


def _refused(results) -> list[dict]:
    return [{"address": r.address, "code": r.code, "reply": r.reply} for r in results]


def outbox_send(*, message_id: int, session: SmtpSession | None = None) -> str | None:
    """One attempt: claim, send, record the outcome; then save the Sent copy and collect
    the recipients as contacts. Returns the new state, or None if there was nothing to do.
    ``session`` lets a caller reuse one connection for a batch to the same relay."""
    claim = outbox_claim(message_id=message_id)
    if claim is None:
        return None
    message, token = claim

    def progress(sent: int, total: int) -> None:
        if sent >= total:
            OutgoingMessage.objects.filter(pk=message.pk, claim_token=token).update(body_sent=True)

    try:
        raw = bytes(message.raw)
        if session is None:
            with SmtpSession(smtp_config(message.account)) as own:
                result = own.send(
                    raw,
                    mail_from=message.mail_from,
                    recipients=message.recipients,
                    on_progress=progress,
                )
        else:
            result = session.send(
                raw, mail_from=message.mail_from, recipients=message.recipients,
                on_progress=progress,
            )  # fmt: skip
    except SmtpUnknownOutcome as exc:
        _finish(
            message,
            token,
            state=State.UNKNOWN,
            next_attempt_at=None,
            last_error=(
                "The connection was lost after the message was handed over and before the "
                f"server confirmed it; it may have been delivered ({_said(exc)})."
            ),
        )
        return State.UNKNOWN
    except SmtpPermanentError as exc:
        _finish(
            message,
            token,
            state=State.FAILED,
            next_attempt_at=None,
            last_error=_said(exc),
            refused=_refused(exc.refused),
        )
        return State.FAILED
    except SmtpTransientError as exc:
        return _retry_or_give_up(message, token, str(exc), refused=_refused(exc.refused))
    except ValueError as exc:  # an envelope address the engine refuses
        _finish(message, token, state=State.FAILED, next_attempt_at=None, last_error=str(exc))
        return State.FAILED

    now = timezone.now()
    _finish(
        message,
        token,
        state=State.SENT,
        sent_at=now,
        next_attempt_at=None,
        last_error="",
        accepted=list(result.accepted),
        refused=_refused(result.refused),
        reply=f"{result.code} {result.reply}",
    )
    try:
        outbox_save_sent_copy(message_id=message.pk)
    except Exception:  # the message is sent whatever happens to the copy
        logger.exception("Saving the sent copy of outgoing message %s failed", message.pk)
    try:
        people.contacts_collect(
            owner=message.owner,
            addresses=[
                Address(a["name"], a["email"]) for a in [*message.to, *message.cc, *message.bcc]
            ],
        )
    except Exception:
        logger.exception("Collecting the recipients of outgoing message %s failed", message.pk)
    return State.SENT


def _retry_or_give_up(message: OutgoingMessage, token: str, error: str, **fields) -> str:
    message.refresh_from_db(fields=["attempts", "first_attempt_at"])
    now = timezone.now()
    started = message.first_attempt_at or now
    next_at = now + timedelta(seconds=retry_delay(message.attempts))
    if (next_at - started).total_seconds() > settings.OUTBOX_GIVE_UP_AFTER:
        _finish(
            message,
            token,
            state=State.FAILED,
            next_attempt_at=None,
            last_error=f"Gave up after {message.attempts} attempts: {error}",
            **fields,
        )
        return State.FAILED
    _finish(
        message, token, state=State.RETRYING, next_attempt_at=next_at, last_error=error, **fields
    )
    return State.RETRYING


# --------------------------------------------------------------------------- the Sent copy


def _sent_folder(session: imap.ImapSession) -> str:
    folders = session.list_folders()
    for folder in folders:
        if folder.role == "sent" and folder.selectable:
            return folder.path
    session.create_folder("Sent")
    return "Sent"


def _find_message_id(session: imap.ImapSession, path: str, message_id: str) -> list[int]:
    session.select(path, readonly=True)
    return session.search(header=("Message-ID", message_id))


def outbox_save_sent_copy(*, message_id: int) -> bool:
    """APPEND the sent message to the account's Sent folder (\\Seen), at most once.

    The flag is taken first with a conditional UPDATE, so two runs never both append; before
    appending, the folder is searched for the Message-ID (a copy the server filed itself, or
    a run that died after its APPEND) so it is not stored twice either. A failure gives the
    flag back and records the error; the message stays sent."""
    claimed = OutgoingMessage.objects.filter(
        pk=message_id, state=State.SENT, sent_copy_saved=False
    ).update(sent_copy_saved=True, sent_copy_error="")
    if not claimed:
        return False
    message = OutgoingMessage.objects.select_related("account").get(pk=message_id)
    account = message.account
    if account.incoming_protocol != MailAccount.Protocol.IMAP:
        return False
    try:
        with imap.ImapSession(imap_config(account)) as session:
            path = _sent_folder(session)
            if not _find_message_id(session, path, message.message_id):
                session.append(path, bytes(message.raw), flags=["\\Seen"], when=message.sent_at)
    except (imap.ImapError, OSError, ValueError) as exc:
        OutgoingMessage.objects.filter(pk=message_id).update(
            sent_copy_saved=False, sent_copy_error=str(exc)[:2000]
        )
        return False
    return True


def outbox_resolve_unknown(*, message: OutgoingMessage) -> str:
    """For a row in ``unknown``: if its Message-ID is in the account's Sent folder it was
    delivered -> ``sent``; otherwise it stays ``unknown`` for the user to decide."""
    if message.state != State.UNKNOWN:
        return message.state
    account = message.account
    with imap.ImapSession(imap_config(account)) as session:
        found = _find_message_id(session, _sent_folder(session), message.message_id)
    if not found:
        return State.UNKNOWN
    done = OutgoingMessage.objects.filter(pk=message.pk, state=State.UNKNOWN).update(
        state=State.SENT,
        sent_at=timezone.now(),
        sent_copy_saved=True,
        last_error="Found in the Sent folder after an unknown outcome.",
        updated_at=timezone.now(),
    )
    if done:
        _reload_and_publish(message.pk)
    return State.SENT


# --------------------------------------------------------------------------- user actions


def outbox_cancel(*, message: OutgoingMessage) -> OutgoingMessage:
    """Cancel before a worker has it; OutboxConflict once it is sending or done."""
    done = OutgoingMessage.objects.filter(pk=message.pk, state__in=CANCELLABLE).update(
        state=State.CANCELLED, next_attempt_at=None, updated_at=timezone.now()
    )
    if not done:
        message.refresh_from_db()
        if message.state == State.SENDING:
            raise OutboxConflict(
                "The message is being sent right now and can no longer be cancelled."
            )
        raise OutboxConflict(f"The message is already {message.state} and cannot be cancelled.")
    return _reload_and_publish(message.pk)


def outbox_retry(*, message: OutgoingMessage) -> OutgoingMessage:
    """Send a failed, cancelled or unknown message again, on the user's say-so."""
    now = timezone.now()
    done = OutgoingMessage.objects.filter(
        pk=message.pk, state__in=(State.FAILED, State.UNKNOWN, State.CANCELLED)
    ).update(
        state=State.QUEUED,
        next_attempt_at=now,
        first_attempt_at=None,
        last_error="",
        updated_at=now,
    )
    if not done:
        raise OutboxConflict(
            f"The message is {message.state}; only failed, cancelled or "
            "unknown messages can be sent again."
        )
    with transaction.atomic():
        message = _reload_and_publish(message.pk)
        _enqueue_on_commit(message.pk, now)
    return message


# --------------------------------------------------------------------------- beat


def outbox_dispatch_due(*, limit: int = 1000) -> int:
    """Enqueue a send task for every due scheduled/queued/retrying row (beat, every 10 s).
    Scheduled rows are moved to queued first, so the UI shows they are on their way."""
    from mailcore.tasks import outbox_send as outbox_send_task

    now = timezone.now()
    due = OutgoingMessage.objects.filter(state__in=DUE_STATES, next_attempt_at__lte=now)
    ids = list(due.order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    for pk in ids:
        moved = OutgoingMessage.objects.filter(pk=pk, state=State.SCHEDULED).update(
            state=State.QUEUED, updated_at=now
        )
        if moved:
            _reload_and_publish(pk)
        outbox_send_task.delay(pk)
    return len(ids)


def outbox_sweep_stale() -> int:
    """Rows left in ``sending`` past their lease (the worker died): back to the queue if
    the body had not been handed over, else ``unknown`` (maybe delivered)."""
    now = timezone.now()
    stale = OutgoingMessage.objects.filter(state=State.SENDING, lease_until__lt=now)
    count = 0
    for pk, body_sent in stale.values_list("pk", "body_sent"):
        if body_sent:
            fields = {
                "state": State.UNKNOWN,
                "next_attempt_at": None,
                "last_error": "The worker stopped after handing the message to the server and "
                "before its reply; it may have been delivered.",
            }
        else:
            fields = {
                "state": State.QUEUED,
                "next_attempt_at": now,
                "last_error": "The worker sending this message stopped; sending it again.",
            }
        done = OutgoingMessage.objects.filter(
            pk=pk, state=State.SENDING, lease_until__lt=now
        ).update(claim_token="", lease_until=None, updated_at=now, **fields)
        if done:
            count += 1
            with transaction.atomic():
                _reload_and_publish(pk)
                if not body_sent:
                    _enqueue_on_commit(pk, now)
    return count
