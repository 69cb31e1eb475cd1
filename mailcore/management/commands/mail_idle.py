"""Hold an IMAP IDLE connection on every IMAP account's INBOX and sync when mail arrives.

One asyncio process holds all connections (mailcore.protocols.idle.IdleSupervisor): an idle
IMAP connection costs a socket and a few KB, so one process serves thousands of accounts.
Beyond that, run several with --shard I --shards N (accounts are split by id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management.base import BaseCommand

from mailcore.models import MailAccount
from mailcore.protocols.idle import IdleAccount, IdleSupervisor
from mailcore.tasks import mail_account_sync

logger = logging.getLogger(__name__)


def idle_accounts(*, shard: int = 0, shards: int = 1) -> list[IdleAccount]:
    """This shard's IMAP accounts; one with unusable settings is skipped, not fatal."""
    accounts = MailAccount.objects.filter(incoming_protocol=MailAccount.Protocol.IMAP)
    result = []
    for account in accounts:
        if account.pk % shards != shard:
            continue
        try:
            result.append(
                IdleAccount(
                    key=account.pk,
                    host=account.incoming_host,
                    port=account.incoming_port,
                    security=account.incoming_security,
                    username=account.username,
                    password=account.password,
                    tls_fingerprint=account.incoming_tls_fingerprint,
                )
            )
        except ValueError as exc:
            logger.warning("account %s cannot idle: %s", account.pk, exc)
    return result


class Command(BaseCommand):
    help = "Push new mail: IMAP IDLE on every account's INBOX, syncing when the server says so."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--shard", type=int, default=0)
        parser.add_argument("--shards", type=int, default=1)

    def handle(self, *args, shard: int, shards: int, **options) -> None:
        asyncio.run(self.run(shard=shard, shards=shards))

    async def run(self, *, shard: int, shards: int) -> None:
        async def on_change(account_id: int, reason: str) -> None:
            logger.info("account %s changed (%s): syncing", account_id, reason)
            await asyncio.to_thread(mail_account_sync.delay, account_id)

        supervisor = IdleSupervisor(on_change)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        runner = asyncio.create_task(supervisor.run_forever())
        load = sync_to_async(idle_accounts, thread_sensitive=False)
        while not stop.is_set():
            await supervisor.set_accounts(await load(shard=shard, shards=shards))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.MAIL_IDLE_REFRESH_SECONDS)
        await supervisor.stop()
        await runner
