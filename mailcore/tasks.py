"""Thin Celery tasks for mail: take ids, call one service, retry only on network errors."""

from celery import shared_task

from mailcore import services
from mailcore.protocols.imap import ImapConnectionError


@shared_task(
    autoretry_for=(ImapConnectionError,),
    retry_backoff=30,
    retry_backoff_max=600,
    max_retries=5,
)
def mail_account_sync(account_id: int, job_id: int | None = None) -> None:
    services.account_sync_run(account_id=account_id, job_id=job_id)


@shared_task
def mail_sync_due() -> int:
    return services.accounts_sync_due()


# Outbox (mailcore/outbox.py): the service handles SMTP errors itself (retrying with its own
# schedule in the row), so these tasks never retry; a lost worker is the sweeper's job.
# outbox_send sends every due message of the message's account, in batches over one SMTP
# connection; a task whose message another run already took finds nothing and ends.


@shared_task
def outbox_send(message_id: int) -> str | None:
    from mailcore import outbox

    return outbox.outbox_send(message_id=message_id)


@shared_task
def outbox_dispatch_due() -> int:
    from mailcore import outbox

    return outbox.outbox_dispatch_due()


@shared_task
def outbox_sweep_stale() -> int:
    from mailcore import outbox

    return outbox.outbox_sweep_stale()


# Mail and FTP together (mailcore/ftp_bridge.py): the service claims the job and records the
# servers' refusals on it; FTP cuts are resumed inside the service, so no Celery retries.


@shared_task
def mail_attachment_save_to_ftp(job_id: int) -> None:
    from mailcore import ftp_bridge

    ftp_bridge.attachment_save_to_ftp(job_id=job_id)


# Drafts (mailcore/drafts.py): the server copy follows the row; a lost connection retries.


@shared_task(
    bind=True,
    autoretry_for=(ImapConnectionError,),
    retry_backoff=10,
    retry_backoff_max=300,
    max_retries=8,
)
def draft_push(self, draft_id: int) -> int:
    from mailcore import drafts

    try:
        return drafts.draft_push(draft_id=draft_id)
    except drafts.DraftBusy as exc:  # a pusher that died keeps its claim until its lease ends
        raise self.retry(countdown=drafts.PUSH_LEASE.total_seconds()) from exc


@shared_task(
    autoretry_for=(ImapConnectionError,), retry_backoff=10, retry_backoff_max=300, max_retries=8
)
def draft_copies_remove(account_id: int, message_id: str) -> int:
    from mailcore import drafts

    return drafts.draft_copies_remove(account_id=account_id, message_id=message_id)
