"""New mail pushed end to end: Dovecot -> IDLE supervisor -> worker sync -> WebSocket."""

import asyncio
import json
import time

import pytest
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import connect

from mailcore.sync import account_sync
from tests.mailfactory import make_message

pytestmark = pytest.mark.django_db(transaction=True)


def test_new_mail_reaches_the_browser_within_five_seconds(
    live_server_url, celery_worker, idle_supervisor, alice, dovecot, mail_user, imap_account
):
    account_sync(account=imap_account)
    token = Token.objects.create(user=alice).key
    url = live_server_url.replace("http://", "ws://") + f"/ws/events/?token={token}"

    async def wait_for_new_mail() -> tuple[dict, float]:
        async with connect(url) as socket:
            await _until_idling(dovecot, mail_user)
            sent = time.monotonic()
            await asyncio.to_thread(
                dovecot.append, mail_user, "INBOX", make_message(subject="Pushed!")
            )
            while True:
                event = json.loads(await asyncio.wait_for(socket.recv(), 10))
                if event["type"] == "mail.new":
                    return event, time.monotonic() - sent

    event, latency = asyncio.run(wait_for_new_mail())
    assert event["account"] == imap_account.pk
    assert event["count"] == 1
    assert latency < 5, f"new mail took {latency:.1f} s"
    inbox = imap_account.mailboxes.get(role="inbox")
    assert inbox.messages.get(pk=event["messages"][0]).subject == "Pushed!"


async def _until_idling(dovecot, user: str, timeout: float = 45) -> None:
    """Wait until the supervisor holds an IMAP connection for this user (doveadm who)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        who = await asyncio.to_thread(dovecot.doveadm, "who", check=False)
        if user in who.stdout:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"the IDLE supervisor never connected as {user}")
