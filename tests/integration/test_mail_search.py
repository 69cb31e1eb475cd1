"""Full-text search pages are the same whether the newest-messages window serves them or not."""

from datetime import UTC, datetime, timedelta

import pytest

from mailcore.api import MessagePagination
from mailcore.models import MailAccount, Mailbox, Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def inbox(alice) -> Mailbox:
    account = MailAccount.objects.create(
        owner=alice, name="A", email_address="a@example.org", incoming_host="127.0.0.1",
        username="a", password="p",
    )  # fmt: skip
    inbox = Mailbox.objects.create(account=account, path="INBOX", name="INBOX", role="inbox")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    Message.objects.bulk_create(
        Message(
            account=account,
            mailbox=inbox,
            uid=n + 1,
            subject=f"weekly report {n}" + (" quokka" if n in (3, 7) else ""),
            date=start + timedelta(hours=n),
        )
        for n in range(40)
    )
    return inbox


def _subjects(client, url: str) -> list[str]:
    subjects = []
    while url:
        page = client.get(url).json()
        subjects += [m["subject"] for m in page["results"]]
        url = page["next"]
    return subjects


@pytest.mark.parametrize("window", [5, 2000])
def test_search_pages_do_not_depend_on_the_window(alice, api_as, inbox, monkeypatch, window):
    monkeypatch.setattr(MessagePagination, "search_window", window)
    client = api_as(alice)
    common = _subjects(client, f"/api/v1/mail/messages/?mailbox={inbox.pk}&q=report&page_size=4")
    assert common == [
        f"weekly report {n}" + (" quokka" if n in (3, 7) else "") for n in range(39, -1, -1)
    ]
    rare = _subjects(client, f"/api/v1/mail/messages/?mailbox={inbox.pk}&q=quokka&page_size=4")
    assert rare == ["weekly report 7 quokka", "weekly report 3 quokka"]
