"""Thin Celery tasks for FTP (routed to the ``ftp`` queue): take an id, call one service.

A transfer task claims its transfer; a download or upload then makes the worker its site's
runner, which drains the site's queue over one session (``transfers.transfer_run``).
Network errors are retried inside it, resuming from the bytes already transferred and
counting attempts in the row, so the task never retries on its own; a worker killed
mid-transfer is covered by acks_late and ``transfers_sweep_stale``.
"""

from celery import shared_task

from ftpcore import chunked, transfers


@shared_task
def transfer_run(transfer_id: int) -> str:
    return transfers.transfer_run(transfer_id=transfer_id)


@shared_task
def transfers_sweep_stale() -> int:
    return transfers.transfers_sweep_stale()


@shared_task
def upload_sessions_expire() -> int:
    return chunked.upload_sessions_expire()
