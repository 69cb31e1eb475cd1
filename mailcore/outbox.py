"""The outbox: a state machine in PostgreSQL that never loses a message or sends it twice.

States (``OutgoingMessage.State``)::

    scheduled --(due)--> queued --(claimed)--> sending --> sent
        |                  |                      |------> retrying --(due)--> sending ...
        '--- cancelled <---'                      |------> failed
                                                  '------> unknown

- ``outbox_create`` validates the recipients (group names expanded), builds the final MIME
  bytes, Message-ID and Date ONCE and stores them on the row, and only after the commit
  enqueues the row's id. A message is ``scheduled`` while its ``send_at`` or the undo window
  (``OUTBOX_UNDO_SECONDS``) is in the future, and can be cancelled until its body is handed
  over (even claimed, while it waits its turn in a batch: see ``body_sent`` below).
  A task drains every due message of its account, so messages due at once share one task:
  a Redis key per account says one is waiting (``_kick``).
- A worker claims a batch of due rows of one account (same SMTP server) with ONE
  statement: ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n)`` ->
  sending, with a lease and a claim token, attempts + 1. Only the holder of the token may
  hand a body over or finish the attempt, so a worker that outlived its lease can neither
  send a message the sweeper gave back nor overwrite the next attempt's result. A
  duplicate task, or a rerun after acks_late redelivery, finds nothing to claim and ends.
  The batch goes out over one SMTP session (one connection, re-opened only if it drops);
  if the server cannot be reached or refuses the login, the rest of the batch gets that
  outcome and the run stops.
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
- ``body_sent`` is committed BEFORE the final "." is written: the statement is sent to
  PostgreSQL as the mail transaction begins (``webapp.pending_statement``, so its round
  trip overlaps the SMTP envelope's) and the engine's ``before_dot`` hook waits for its
  answer; the same commit writes the previous message's outcome, so a message costs one
  commit. If that commit fails or the claim is gone (the sweeper took the row
  back, or the user cancelled it), the dot never goes out. So a worker killed at any
  instruction leaves either ``body_sent`` false — the server cannot have the message — or
  true — it may. ``outbox_sweep_stale`` (beat) finds rows whose lease expired: the former
  are re-queued, the latter become ``unknown`` (same reasoning as above). Never a
  duplicate. That commit does not wait for the disk (a dead worker cannot undo it; only
  a crash of PostgreSQL could), so the sweeper also takes a row claimed before
  PostgreSQL's last start for ``unknown``.
- After ``sent`` the message is appended to the account's Sent folder (\\Seen) once: the
  ``sent_copy_saved`` flag is claimed with a conditional UPDATE *before* the APPEND, so a
  rerun never appends twice; a failed APPEND gives the flag back and records
  ``sent_copy_error`` — the message stays sent. A batch's copies share one IMAP session,
  and its recipients are collected as contacts in one call.
- Every state change is published to the owner as ``outbox.state`` after commit (a
  batch's events in bulk, at most ``_AccountSender._PUBLISH_EVERY`` late; a message
  that went through several states since the last publish gets one event, its latest).
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache, partial
from pathlib import Path
from typing import NamedTuple

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from mailcore import people, services
from mailcore.models import Identity, MailAccount, Message, OutgoingMessage, Upload
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
from webapp.events.sender import event_enqueue_many, event_sender
from webapp.pending_statement import PendingStatement

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


def message_event(message: OutgoingMessage | _Claimed | _Changed) -> dict:
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


def _publish_many(messages: list[OutgoingMessage] | list[_Claimed] | list[_Changed]) -> None:
    """``_publish`` for each message, after commit, from the worker's event sender."""
    event_enqueue_many(
        [
            (m.owner_id, {"type": "outbox.state", "message": message_event(m)}, ("outbox", m.pk))
            for m in messages
        ]
    )


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
    reply_to_message: Message | None = None,
    forward_of: Message | None = None,
) -> OutgoingMessage:
    """Validate, build the final bytes once, store the row, enqueue after commit.
    ``forward_attachment`` is a whole message to attach as message/rfc822;
    ``reply_to_message`` / ``forward_of`` (the user's own messages) get \\Answered /
    $Forwarded once this one is sent.

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
        message_id=make_message_id(ascii_domain(domain)),
        date=send_at if send_at and send_at > now else now,
    )
    builder = build_utf8_message if needs_smtputf8(draft) else build_message
    raw, message_id = builder(draft, domain=ascii_domain(domain))
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
            reply_to_message=reply_to_message,
            forward_of=forward_of,
        )
        _publish(message)
        _enqueue_on_commit(message, due)
    return message


def _escape(text: str) -> str:
    from html import escape

    return escape(text)


def ascii_domain(domain: str) -> str:
    """A sender's domain as it goes into Message-IDs and EHLO: punycode, or "localhost"."""
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "localhost"


def _enqueue_on_commit(message: OutgoingMessage | _Changed, due: datetime | None) -> None:
    from mailcore.tasks import outbox_send

    delay = max(0.0, (due - timezone.now()).total_seconds()) if due else 0.0
    if delay > _COUNTDOWN_LIMIT:
        return  # the dispatcher enqueues it when it is due
    if delay:
        pk = message.pk
        transaction.on_commit(lambda: outbox_send.apply_async((pk,), countdown=delay + 0.05))
    else:
        transaction.on_commit(partial(_kick, message.account_id, message.pk))


# A send task drains every due message of its account, so while one is waiting for a
# worker, messages due now need no task of their own: the first sets this key (with a
# TTL, in case that task is lost; the dispatcher covers it too) and enqueues, the others
# see the key. The task deletes the key before each claim, so whatever is committed after
# that claim enqueues again.
_KICK_TTL = 30


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10)


def _kick_key(account_id: int) -> str:
    database = settings.DATABASES["default"]["NAME"]  # two databases may share a Redis
    return f"satchel:outbox:pending:{database}:{account_id}"


def _kick(account_id: int, message_id: int) -> None:
    """Enqueue a send task for the account unless one is already waiting."""
    from mailcore.tasks import outbox_send

    if _redis().set(_kick_key(account_id), message_id, nx=True, ex=_KICK_TTL):
        outbox_send.delay(message_id)


# --------------------------------------------------------------------------- claiming

# One claim takes at most this many due messages of an account, and at most this many bytes
# of them (the first one always, whatever its size).
_BATCH_SIZE = 100
_BATCH_BYTES = 32 * 1024 * 1024
# A task drains its account for about this long (whole batches), then hands what is left
# to a new task.
_DRAIN_SECONDS = 60.0

# Due rows of one account, locked without waiting for rows another worker is claiming,
# cut at _BATCH_BYTES, moved to ``sending`` in the same statement.
_CLAIM_SQL = """
WITH candidates AS (
    SELECT id, size, next_attempt_at FROM {table}
    WHERE account_id = %(account)s AND state = ANY(%(due)s)
      AND (next_attempt_at IS NULL OR next_attempt_at <= %(now)s)
    ORDER BY id = %(first)s DESC, next_attempt_at NULLS FIRST, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), chosen AS (
    SELECT id FROM (
        SELECT id, SUM(size) OVER (
            ORDER BY id = %(first)s DESC, next_attempt_at NULLS FIRST, id
        ) - size AS before
        FROM candidates
    ) AS ordered
    WHERE before < %(bytes)s
)
UPDATE {table} AS m
SET state = %(sending)s, claim_token = %(token)s, lease_until = %(lease)s,
    attempts = m.attempts + 1, body_sent = false,
    first_attempt_at = COALESCE(m.first_attempt_at, %(now)s), updated_at = %(now)s
FROM chosen WHERE m.id = chosen.id
RETURNING {claimed}
"""


@dataclass(slots=True)
class _Claimed:
    """A claimed row: only what sending it, recording the outcome, announcing it and
    saving its Sent copy read (a batch is ~100 of these, built per message)."""

    pk: int
    owner_id: int
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str
    first_attempt_at: datetime | None
    raw: bytes
    mail_from: str
    recipients: list[str]
    message_id: str
    addressees: list[dict]  # to + cc + bcc: [{name, email}]
    reply_to_message_id: int | None
    forward_of_id: int | None
    # Set by the outcome.
    sent_at: datetime | None = None
    refused: list[dict] | None = None
    accepted: list[str] | None = None
    reply: str | None = None


_CLAIMED_COLUMNS = (
    "m.id, m.owner_id, m.state, m.attempts, m.next_attempt_at, m.last_error, "
    "m.first_attempt_at, m.raw, m.mail_from, m.recipients, m.message_id, "
    "m.to || m.cc || m.bcc, m.reply_to_message_id, m.forward_of_id"
)


def _claimed(*values) -> _Claimed:
    *head, recipients, message_id, addressees, reply_to, forward_of = values
    # Django's connection hands jsonb over as its text.
    return _Claimed(
        *head, json.loads(recipients), message_id, json.loads(addressees), reply_to, forward_of
    )


def _claim_batch(*, account_id: int, first: int | None, token: str) -> list[_Claimed]:
    """Due scheduled/queued/retrying rows of the account -> sending, in ONE statement
    (claim token, lease, attempts + 1); ``first`` leads the batch if it is due."""
    now = timezone.now()
    params = {
        "account": account_id,
        "due": list(DUE_STATES),
        "now": now,
        "first": first,
        "limit": _BATCH_SIZE,
        "bytes": _BATCH_BYTES,
        "sending": State.SENDING,
        "token": token,
        "lease": now + timedelta(seconds=settings.OUTBOX_SENDING_LEASE),
    }
    table = OutgoingMessage._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL.format(table=table, claimed=_CLAIMED_COLUMNS), params)
        rows = [_claimed(*row) for row in cursor.fetchall()]
    rows.sort(key=lambda m: (m.pk != first, m.next_attempt_at or now, m.pk))
    return rows


@dataclass
class _Outcome:
    """How one attempt ended; None fields keep the row's value."""

    message: _Claimed
    state: str
    last_error: str = ""
    next_attempt_at: datetime | None = None
    refused: list[dict] | None = None
    accepted: list[str] | None = None
    reply: str | None = None
    sent_at: datetime | None = None

    def apply(self) -> None:
        """Onto the claimed row, for the event and the Sent copy."""
        message = self.message
        message.state, message.last_error = self.state, self.last_error
        message.next_attempt_at = self.next_attempt_at
        if self.refused is not None:
            message.refused = self.refused
        if self.accepted is not None:
            message.accepted = self.accepted
        if self.reply is not None:
            message.reply = self.reply
        if self.sent_at is not None:
            message.sent_at = self.sent_at


# The outcomes to write ($5 ...): as a rule at most one (the previous message's), given
# as plain parameters; when the connection failed there are many, given as a JSON array
# (a key left out is NULL).
_ONE_OUTCOME = """VALUES (
    $5::bigint, $6::varchar, $7::timestamptz, $8::text,
    $9::jsonb, $10::jsonb, $11::text, $12::timestamptz
)"""
_MANY_OUTCOMES = """SELECT * FROM jsonb_to_recordset($5::jsonb) AS o(
    id bigint, state varchar, next_attempt_at timestamptz, last_error text,
    refused jsonb, accepted jsonb, reply text, sent_at timestamptz
)"""
_OUTCOME_FIELDS = [
    "state",
    "next_attempt_at",
    "last_error",
    "refused",
    "accepted",
    "reply",
    "sent_at",
]
# $1 now, $2 'sending', $3 the claim token, $4 the message to mark (NULL: none).
# set_config(..., true) lasts for this statement's own (implicit) transaction only.
_RECORD_SQL = """
WITH outcome (id, state, next_attempt_at, last_error, refused, accepted, reply, sent_at) AS (
    {outcomes}
), done AS (
    UPDATE {table} AS m
    SET state = o.state, next_attempt_at = o.next_attempt_at, last_error = o.last_error,
        refused = COALESCE(o.refused, m.refused), accepted = COALESCE(o.accepted, m.accepted),
        reply = COALESCE(o.reply, m.reply), sent_at = COALESCE(o.sent_at, m.sent_at),
        lease_until = NULL, claim_token = '', updated_at = $1::timestamptz
    FROM outcome AS o
    WHERE m.id = o.id AND m.state = $2::varchar AND m.claim_token = $3::varchar
    RETURNING m.id
), marked AS (
    UPDATE {table} SET body_sent = true
    WHERE id = $4::bigint AND state = $2::varchar AND claim_token = $3::varchar
    RETURNING id
)
SELECT id, mark, set_config('synchronous_commit', 'off', true) FROM (
    SELECT id, false AS mark FROM done UNION ALL SELECT id, true AS mark FROM marked
) AS written
"""


def _outcome_params(o: _Outcome | None) -> list:
    if o is None:
        return [None] * 8
    return [
        o.message.pk,
        o.state,
        o.next_attempt_at,
        o.last_error,
        None if o.refused is None else json.dumps(o.refused),
        None if o.accepted is None else json.dumps(o.accepted),
        o.reply,
        o.sent_at,
    ]


def _outcomes_json(outcomes: list[_Outcome]) -> str:
    rows = []
    for o in outcomes:
        row = {"id": o.message.pk}
        for name in _OUTCOME_FIELDS:
            value = getattr(o, name)
            if value is not None:
                row[name] = value.isoformat() if isinstance(value, datetime) else value
        rows.append(row)
    return json.dumps(rows)


def _record_start(outcomes: list[_Outcome], *, token: str, handover: int | None):
    """ONE statement, one commit: write the finished attempts, only where this claim
    still holds the row, and with ``handover`` mark that message's body as possibly
    delivered from now on. The statement is sent now and answered later (its round trip
    overlaps the SMTP envelope's): the returned function waits for it and returns the ids
    written and whether the mark was. The usual one (a mark and at most one outcome) is
    prepared once per connection.

    The commit does not wait for the WAL to reach the disk (``synchronous_commit`` off
    for this transaction): it is visible to every other session at once and survives
    any worker death; only a crash of PostgreSQL itself could lose it, and the sweeper
    then treats every row claimed before that restart as maybe delivered. Waiting for
    the disk before every dot would cost ~0.3-3 ms per message on a busy machine."""
    if not outcomes and handover is None:
        return lambda: (set(), True)
    params = [timezone.now(), State.SENDING, token, handover]
    if len(outcomes) <= 1:
        params += _outcome_params(outcomes[0] if outcomes else None)
        statement = PendingStatement(
            _record_sql(_ONE_OUTCOME), params, prepare_as="satchel_outbox_record"
        )
    else:
        statement = PendingStatement(
            _record_sql(_MANY_OUTCOMES), [*params, _outcomes_json(outcomes)]
        )

    def answer() -> tuple[set[int], bool]:
        written: set[int] = set()
        marked = handover is None
        for pk, mark, _ in statement.rows():
            if mark == "t":
                marked = True
            else:
                written.add(int(pk))
        return written, marked

    return answer


@lru_cache(maxsize=2)
def _record_sql(outcomes: str) -> str:
    return _RECORD_SQL.format(outcomes=outcomes, table=OutgoingMessage._meta.db_table)


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


def _error_outcome(message: _Claimed, exc: SmtpError | ValueError) -> _Outcome:
    if isinstance(exc, SmtpUnknownOutcome):
        return _Outcome(
            message,
            State.UNKNOWN,
            last_error=(
                "The connection was lost after the message was handed over and before the "
                f"server confirmed it; it may have been delivered ({_said(exc)})."
            ),
        )
    if isinstance(exc, SmtpPermanentError):
        return _Outcome(message, State.FAILED, _said(exc), refused=_refused(exc.refused))
    if isinstance(exc, SmtpTransientError):
        return _retry_or_give_up(message, str(exc), refused=_refused(exc.refused))
    return _Outcome(message, State.FAILED, str(exc))  # an envelope address the engine refuses


def _retry_or_give_up(message: _Claimed, error: str, *, refused: list[dict]) -> _Outcome:
    """``message`` as claimed: attempts counts this one, first_attempt_at is set."""
    now = timezone.now()
    started = message.first_attempt_at or now
    next_at = now + timedelta(seconds=retry_delay(message.attempts))
    if (next_at - started).total_seconds() > settings.OUTBOX_GIVE_UP_AFTER:
        error = f"Gave up after {message.attempts} attempts: {error}"
        return _Outcome(message, State.FAILED, error, refused=refused)
    return _Outcome(message, State.RETRYING, error, next_attempt_at=next_at, refused=refused)


class _ClaimLost(Exception):
    """The row is no longer ours (the sweeper took it back): its dot must not go out."""


def outbox_send(*, message_id: int, session: SmtpSession | None = None) -> str | None:
    """Send the message and every other due message of its account, claimed in batches
    and sent over one SMTP session; then save their Sent copies (one IMAP session per
    batch) and collect their recipients as contacts (once per run). Returns the state
    this run left
    ``message_id`` in, or None if it did not send it (not due, or taken by another worker,
    whose run is sending it). ``session`` lets a caller lend its own connection."""
    account = MailAccount.objects.filter(outgoing_messages__pk=message_id).first()
    if account is None:
        return None
    sender = _AccountSender(account, session)
    try:
        sender.drain(first=message_id)
    finally:
        sender.close()
        event_sender().flush()
    return sender.states.get(message_id)


class _AccountSender:
    """One run over one account's due messages: claim a batch, send it message after
    message over one session, claim the next, until none is due (or _DRAIN_SECONDS).

    Per message it costs one commit, sent as the message's mail transaction begins and
    waited for right before its final dot: it marks this message's body as possibly
    delivered and writes the previous outcomes with it.
    Events go out in bulk, every _PUBLISH_EVERY seconds and after each batch, one per
    message changed since the last time (its latest state: a message that was claimed
    and sent in between only says "sent")."""

    _PUBLISH_EVERY = 0.5

    def __init__(self, account: MailAccount, session: SmtpSession | None) -> None:
        self.account = account
        self.session = session
        self.own_session = session is None
        # Why the server cannot be reached (or refused the login): the batch's remaining
        # messages get that outcome, and the run stops after the batch.
        self.unreachable: SmtpError | None = None
        self.states: dict[int, str] = {}
        self.sent: list[_Claimed] = []  # this batch's, for their Sent copies
        self.recipients: dict[str, Address] = {}  # the run's, collected as contacts at its end
        self.unpublished: dict[int, _Claimed] = {}
        self.kicked = False  # whether this run asked for a helper
        self.published_at = time.monotonic()

    def drain(self, *, first: int | None) -> None:
        try:
            self._drain(first)
        finally:
            self._collect_contacts()

    def _drain(self, first: int | None) -> None:
        started = time.monotonic()
        while self.unreachable is None:
            # Before claiming: a message committed from now on enqueues a task of its own.
            _redis().delete(_kick_key(self.account.pk))
            token = secrets.token_hex(16)
            batch = _claim_batch(account_id=self.account.pk, first=first, token=token)
            first = None
            if not batch:
                return
            if len(batch) == _BATCH_SIZE and not self.kicked:
                # More may be due: another worker may help (once: its run drains too).
                _kick(self.account.pk, batch[-1].pk)
                self.kicked = True
            self.unpublished.update((m.pk, m) for m in batch)
            self._send_batch(batch, token)
            self._publish()
            self._save_sent_copies()
            if self.unreachable is None and time.monotonic() - started >= _DRAIN_SECONDS:
                _kick(self.account.pk, batch[-1].pk)  # what is still due goes to a new task
                return

    def close(self) -> None:
        if self.own_session and self.session is not None:
            self.session.close()

    def _connect(self) -> SmtpError | None:
        try:
            if self.session is None:
                self.session = SmtpSession(smtp_config(self.account))
            elif not self.session.connected:
                self.session.reconnect()
        except SmtpError as exc:
            return exc
        except ValueError as exc:  # a setting the engine refuses
            return SmtpPermanentError(str(exc))
        return None

    def _send_batch(self, batch: list[_Claimed], token: str) -> None:
        pending: list[_Outcome] = []
        renewed = time.monotonic()
        renew_every = settings.OUTBOX_SENDING_LEASE / 3
        for index, message in enumerate(batch):
            if self.unreachable is None:
                self.unreachable = self._connect()
            if self.unreachable is not None:  # this and the rest: the same outcome
                pending.append(_error_outcome(message, self.unreachable))
                continue
            if time.monotonic() - renewed > renew_every:
                self._renew_lease(batch[index:], token)
                renewed = time.monotonic()
            outcome = self._attempt(message, token, pending)
            if outcome is not None:
                pending.append(outcome)
        self._flush(pending, token, handover=None)

    def _attempt(self, message: _Claimed, token: str, pending: list[_Outcome]) -> _Outcome | None:
        # The mark (with the previous outcomes) goes to PostgreSQL now; the dot waits for
        # its commit, which by then has usually long arrived.
        recorded = self._flush_start(pending, token, handover=message.pk)

        def before_dot() -> None:
            if not recorded():
                raise _ClaimLost

        assert self.session is not None
        try:
            result = self.session.send(
                bytes(message.raw),
                mail_from=message.mail_from,
                recipients=message.recipients,
                before_dot=before_dot,
            )
        except _ClaimLost:
            return None  # the sweeper re-queued it: not ours to send or record
        except (SmtpError, ValueError) as exc:
            return _error_outcome(message, exc)
        finally:
            recorded()  # answered before the connection is used for anything else
        return _Outcome(
            message,
            State.SENT,
            accepted=list(result.accepted),
            refused=_refused(result.refused),
            reply=f"{result.code} {result.reply}",
            sent_at=timezone.now(),
        )

    def _flush(self, pending: list[_Outcome], token: str, *, handover: int | None) -> bool:
        return self._flush_start(pending, token, handover=handover)()

    def _flush_start(self, pending: list[_Outcome], token: str, *, handover: int | None):
        """Send the outcomes (and the mark) now; the returned function waits for the
        answer once, applies what was written and says whether the mark was."""
        outcomes = list(pending)
        pending.clear()
        answer = _record_start(outcomes, token=token, handover=handover)
        marked: bool | None = None

        def recorded() -> bool:
            nonlocal marked
            if marked is None:
                marked = False  # should the answer fail, nothing is applied twice
                written, marked = answer()
                self._apply(outcomes, written)
            return marked

        return recorded

    def _apply(self, outcomes: list[_Outcome], written: set[int]) -> None:
        for outcome in outcomes:
            if outcome.message.pk in written:
                outcome.apply()
                self.states[outcome.message.pk] = outcome.state
                self.unpublished[outcome.message.pk] = outcome.message
                if outcome.state == State.SENT:
                    self.sent.append(outcome.message)
        if time.monotonic() - self.published_at >= self._PUBLISH_EVERY:
            self._publish()

    def _publish(self) -> None:
        _publish_many(list(self.unpublished.values()))
        self.unpublished = {}
        self.published_at = time.monotonic()

    def _renew_lease(self, remaining: list[_Claimed], token: str) -> None:
        OutgoingMessage.objects.filter(
            pk__in=[m.pk for m in remaining], state=State.SENDING, claim_token=token
        ).update(lease_until=timezone.now() + timedelta(seconds=settings.OUTBOX_SENDING_LEASE))

    def _save_sent_copies(self) -> None:
        sent, self.sent = self.sent, []
        for message in sent:
            for entry in message.addressees:
                self.recipients.setdefault(
                    entry["email"].lower(), Address(entry["name"], entry["email"])
                )
        if not sent:
            return
        if self.account.incoming_protocol == MailAccount.Protocol.IMAP:
            try:
                _save_sent_copies(self.account, sent)
            except Exception:  # the messages are sent whatever happens to the copies
                logger.exception("Saving the sent copies of %d outgoing messages failed", len(sent))
        _mark_originals(sent)

    def _collect_contacts(self) -> None:
        if not self.recipients:
            return
        try:
            with transaction.atomic():
                people.contacts_collect(
                    owner=self.account.owner, addresses=list(self.recipients.values())
                )
        except Exception:
            logger.exception("Collecting the recipients of sent messages failed")


# --------------------------------------------------------------------------- the Sent copy


def _find_message_id(session: imap.ImapSession, path: str, message_id: str) -> list[int]:
    session.select(path, readonly=True)
    return session.search(header=("Message-ID", message_id))


_TAKE_COPY_SQL = """
UPDATE {table} SET sent_copy_saved = true, sent_copy_error = ''
WHERE id = ANY(%s) AND state = %s AND sent_copy_saved = false
RETURNING id
"""


def _save_sent_copies(
    account: MailAccount, messages: list[OutgoingMessage] | list[_Claimed]
) -> set[int]:
    """APPEND sent messages of an IMAP account to its Sent folder (\\Seen), each at most
    once, over ONE IMAP session. Returns the ids whose copy is now there.

    The flags are taken first with one conditional UPDATE, so two runs never both append;
    before appending, the folder is searched for the Message-ID (a copy the server filed
    itself, or a run that died after its APPEND) so it is not stored twice either. A
    failure gives the flags of the copies not yet made back and records the error; the
    messages stay sent."""
    with connection.cursor() as cursor:
        cursor.execute(
            _TAKE_COPY_SQL.format(table=OutgoingMessage._meta.db_table),
            [[m.pk for m in messages], State.SENT],
        )
        taken = {pk for (pk,) in cursor.fetchall()}
    messages = [m for m in messages if m.pk in taken]
    saved: set[int] = set()
    if not messages:
        return saved
    try:
        with imap.ImapSession(imap_config(account)) as session:
            path = session.folder_with_role("sent", create="Sent")
            session.select(path, readonly=True)
            for message in messages:
                if not session.search(header=("Message-ID", message.message_id)):
                    session.append(path, bytes(message.raw), flags=["\\Seen"], when=message.sent_at)
                saved.add(message.pk)
    except (imap.ImapError, OSError, ValueError) as exc:
        OutgoingMessage.objects.filter(pk__in=[m.pk for m in messages if m.pk not in saved]).update(
            sent_copy_saved=False, sent_copy_error=str(exc)[:2000]
        )
    return saved


def _mark_originals(messages: list[OutgoingMessage] | list[_Claimed]) -> None:
    """The messages these sent ones answer or forward get \\Answered / $Forwarded (see
    services.message_reply_flags_set), all in one call. Best effort: a failure is logged
    and never touches the sent messages."""
    answered = {m.reply_to_message_id for m in messages if m.reply_to_message_id}
    forwarded = {m.forward_of_id for m in messages if m.forward_of_id}
    if not answered and not forwarded:
        return
    originals = {
        m.pk: m
        for m in Message.objects.select_related("mailbox__account").filter(
            pk__in=answered | forwarded
        )
    }
    try:
        services.message_reply_flags_set(
            answered=[originals[pk] for pk in answered if pk in originals],
            forwarded=[originals[pk] for pk in forwarded if pk in originals],
        )
    except Exception:
        logger.exception("Flagging the originals of %d sent messages failed", len(messages))


def outbox_save_sent_copy(*, message_id: int) -> bool:
    """The Sent copy of one sent message (see ``_save_sent_copies``); False if there is
    nothing to do (not sent, copy already made, no IMAP) or the APPEND failed."""
    message = OutgoingMessage.objects.select_related("account").filter(pk=message_id).first()
    if message is None or message.account.incoming_protocol != MailAccount.Protocol.IMAP:
        return False
    return message_id in _save_sent_copies(message.account, [message])


def outbox_resolve_unknown(*, message: OutgoingMessage) -> str:
    """For a row in ``unknown``: if its Message-ID is in the account's Sent folder it was
    delivered -> ``sent``; otherwise it stays ``unknown`` for the user to decide."""
    if message.state != State.UNKNOWN:
        return message.state
    account = message.account
    with imap.ImapSession(imap_config(account)) as session:
        found = _find_message_id(
            session, session.folder_with_role("sent", create="Sent"), message.message_id
        )
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
        _mark_originals([_reload_and_publish(message.pk)])
    return State.SENT


# --------------------------------------------------------------------------- user actions


def outbox_cancel(*, message: OutgoingMessage) -> OutgoingMessage:
    """Cancel until its body is handed over: also while it waits its turn in a claimed
    batch (``sending``, not ``body_sent``) — the worker's mark before the dot then finds
    the claim gone and withholds the dot. OutboxConflict once handed over, or done."""
    not_handed_over = Q(state=State.SENDING, body_sent=False)
    done = (
        OutgoingMessage.objects.filter(pk=message.pk)
        .filter(Q(state__in=CANCELLABLE) | not_handed_over)
        .update(
            state=State.CANCELLED,
            next_attempt_at=None,
            claim_token="",
            lease_until=None,
            updated_at=timezone.now(),
        )
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
        _enqueue_on_commit(message, now)
    return message


# --------------------------------------------------------------------------- beat


# What ``message_event`` reads, for statements that return many rows only to announce them.
_EVENT_FIELDS = "id, owner_id, state, attempts, next_attempt_at, last_error"


class _Changed(NamedTuple):
    """A row as such a statement returns it (a plain tuple: the dispatcher may announce
    thousands at once)."""

    pk: int
    owner_id: int
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str
    account_id: int | None = None


def _changed_rows(sql: str, params: list) -> list[_Changed]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [_Changed(*row) for row in cursor.fetchall()]


_QUEUE_DUE_SQL = """
UPDATE {table} SET state = %s, updated_at = %s
WHERE state = %s AND next_attempt_at <= %s
RETURNING {event_fields}
"""


def outbox_dispatch_due(*, limit: int = 1000) -> int:
    """Beat, every 10 s: scheduled rows that are due become queued (so the UI shows they
    are on their way), and every account with due rows gets a send task (which drains
    the account). Returns the number of tasks enqueued."""
    from mailcore.tasks import outbox_send as outbox_send_task

    now = timezone.now()
    table = OutgoingMessage._meta.db_table
    queued = _changed_rows(
        _QUEUE_DUE_SQL.format(table=table, event_fields=_EVENT_FIELDS),
        [State.QUEUED, now, State.SCHEDULED, now],
    )
    _publish_many(queued)
    firsts = list(
        OutgoingMessage.objects.filter(state__in=DUE_STATES, next_attempt_at__lte=now)
        .order_by("account_id", "next_attempt_at", "pk")
        .distinct("account_id")
        .values_list("account_id", "pk")[:limit]
    )
    for account_id, pk in firsts:
        _redis().set(_kick_key(account_id), pk, ex=_KICK_TTL)
        outbox_send_task.delay(pk)
    event_sender().flush()
    return len(firsts)


# ``maybe``: the body may have been handed over — the mark says so, or the row was claimed
# (``updated_at`` is the claim's time while a row is sending) before PostgreSQL last
# started, so a mark committed without waiting for the disk may have been lost.
_SWEEP_SQL = """
UPDATE {table} SET
    state = CASE WHEN maybe THEN %s ELSE %s END,
    next_attempt_at = CASE WHEN maybe THEN NULL ELSE %s END,
    last_error = CASE WHEN maybe THEN %s ELSE %s END,
    claim_token = '', lease_until = NULL, updated_at = %s
FROM (
    SELECT id AS stale_id, body_sent OR updated_at < pg_postmaster_start_time() AS maybe
    FROM {table} WHERE state = %s AND lease_until < %s
    FOR UPDATE
) AS stale
WHERE id = stale_id AND state = %s
RETURNING {event_fields}, account_id
"""


def outbox_sweep_stale() -> int:
    """Rows left in ``sending`` past their lease (the worker died): back to the queue if
    the attempt had not reached the final dot (``body_sent`` false: nothing can have
    been delivered), else ``unknown`` (maybe delivered). One statement for all."""
    now = timezone.now()
    params = [
        State.UNKNOWN,
        State.QUEUED,
        now,
        "The worker stopped after handing the message to the server and before its reply; "
        "it may have been delivered.",
        "The worker sending this message stopped; sending it again.",
        now,
        State.SENDING,
        now,
        State.SENDING,
    ]
    table = OutgoingMessage._meta.db_table
    sql = _SWEEP_SQL.format(table=table, event_fields=_EVENT_FIELDS)
    swept = _changed_rows(sql, params)
    with transaction.atomic():
        _publish_many(swept)
        for message in swept:
            if message.state == State.QUEUED:
                _enqueue_on_commit(message, now)
    event_sender().flush()
    return len(swept)
