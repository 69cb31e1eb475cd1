"""Drafts against real Dovecot, a real Celery worker and the aiosmtpd peer: a burst of saves
leaves exactly one copy with the latest content in the Drafts folder, sending removes it,
and someone else's draft is a 404."""

from __future__ import annotations

import time
from email import message_from_bytes, policy

import pytest

from mailcore import drafts
from mailcore.models import Draft, OutgoingMessage
from mailcore.protocols import imap
from mailcore.sync import imap_config

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/mail/drafts/"


@pytest.fixture
def account(sending_account):
    return sending_account


def server_drafts(account) -> list[tuple[int, frozenset[str], object]]:
    """(uid, flags, parsed message) of every message in the account's Drafts folder."""
    with imap.ImapSession(imap_config(account)) as session:
        paths = [f.path for f in session.list_folders() if f.role == "drafts"]
        if not paths:
            return []
        session.select(paths[0], readonly=True)
        uids = session.uids()
        flags = {s.uid: s.flags for s in session.fetch_summaries(uids)} if uids else {}
        raw = {}
        for uid in uids:
            try:
                raw[uid] = session.fetch_raw(uid)
            except imap.ImapCommandError:
                continue  # expunged meanwhile by the worker
    return [
        (uid, frozenset(flags[uid]), message_from_bytes(data, policy=policy.default))
        for uid, data in raw.items()
    ]


def wait_saved(draft_id: int, timeout: float = 30) -> Draft:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        draft = Draft.objects.get(pk=draft_id)
        if draft.server_revision >= draft.revision and not draft.push_token:
            return draft
        time.sleep(0.1)
    raise AssertionError(f"draft {draft_id} never reached the server: {draft.server_error}")


def wait_for(condition, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_burst_of_saves_leaves_exactly_one_copy_with_the_latest_content(
    api_as, alice, account, celery_worker
):
    client = api_as(alice)
    created = client.post(
        URL,
        {"account": account.pk, "to": ["bob@example.org"], "subject": "Plans", "text": "v0"},
        format="json",
    )
    assert created.status_code == 201, created.content
    draft_id = created.json()["id"]
    for version in range(1, 8):
        answer = client.put(
            f"{URL}{draft_id}/",
            {
                "account": account.pk,
                "to": ["bob@example.org", "half-typed@"],
                "subject": f"Plans v{version}",
                "text": f"Text v{version}",
                "html": f"<div>Text <b>v{version}</b><script>alert(1)</script></div>",
            },
            format="json",
        )
        assert answer.status_code == 200, answer.content
    assert answer.json()["revision"] == 8
    draft = wait_saved(draft_id)
    copies = server_drafts(account)
    assert len(copies) == 1
    uid, flags, message = copies[0]
    assert uid == draft.server_uid
    assert {"\\Draft", "\\Seen"} <= flags
    assert message["Subject"] == "Plans v7"
    assert message["Message-ID"] == draft.message_id
    # Kept as typed (the stdlib's parser cannot read it, so look at the bytes).
    assert b"To: bob@example.org,\r\n half-typed@\r\n" in message.as_bytes(policy=policy.SMTP)
    assert message.get_body(("plain",)).get_content().strip() == "Text v7"
    html = message.get_body(("html",)).get_content()
    assert "<b>v7</b>" in html and "script" not in html
    assert client.get(f"{URL}{draft_id}/").json()["saved_on_server"] is True


def test_a_stray_copy_from_a_push_that_died_is_removed_by_the_next_one(
    alice, account, celery_worker
):
    draft = drafts.draft_create(owner=alice, account=account, subject="First", html="<p>one</p>")
    wait_saved(draft.pk)
    # A push that appended and died before recording its uid leaves a copy the row does not
    # know about; it carries the draft's Message-ID.
    with imap.ImapSession(imap_config(account)) as session:
        session.append("Drafts", drafts.draft_message(draft), flags=drafts.DRAFT_FLAGS)
    assert len(server_drafts(account)) == 2
    drafts.draft_update(draft=draft, subject="Second")
    wait_saved(draft.pk)
    [(_, _, message)] = server_drafts(account)
    assert message["Subject"] == "Second"
    # An html-only draft (an API client's) gets a text part derived from it.
    assert message.get_body(("plain",)).get_content().strip() == "one"
    assert drafts.draft_push(draft_id=draft.pk) == 0  # up to date: nothing to do


def test_sending_a_draft_removes_the_row_and_its_server_copy(
    api_as, alice, account, smtp, celery_worker, settings
):
    client = api_as(alice)
    draft_id = client.post(
        URL, {"account": account.pk, "subject": "Lunch", "text": "draft"}, format="json"
    ).json()["id"]
    wait_saved(draft_id)
    assert len(server_drafts(account)) == 1
    sent = client.post(
        f"{URL}{draft_id}/send/",
        {
            "account": account.pk,
            "to": ["bob@example.org"],
            "subject": "Lunch",
            "text": "",
            "html": '<div>See you at <b>noon</b><img src=x onerror="alert(1)"></div>',
        },
        format="json",
    )
    assert sent.status_code == 201, sent.content
    assert not Draft.objects.filter(pk=draft_id).exists()
    assert OutgoingMessage.objects.filter(pk=sent.json()["id"]).exists()
    wait_for(lambda: not server_drafts(account), what="the server copy to go")
    [captured] = smtp.wait_for_messages(1, timeout=40)
    parsed = message_from_bytes(captured.data, policy=policy.default)
    html = parsed.get_body(("html",)).get_content()
    assert "<b>noon</b>" in html and "onerror" not in html
    assert "See you at noon" in parsed.get_body(("plain",)).get_content()


def test_a_refused_send_keeps_the_draft(api_as, alice, account):
    client = api_as(alice)
    draft_id = client.post(URL, {"account": account.pk, "subject": "x"}, format="json").json()["id"]
    answer = client.post(
        f"{URL}{draft_id}/send/",
        {"account": account.pk, "to": ["not-an-address@@x"], "subject": "x"},
        format="json",
    )
    assert answer.status_code == 400
    assert "not-an-address@@x" in answer.json()["detail"]
    assert Draft.objects.filter(pk=draft_id).exists()


def test_deleting_a_draft_removes_its_copy(api_as, alice, account, celery_worker):
    client = api_as(alice)
    draft_id = client.post(URL, {"account": account.pk, "text": "bye"}, format="json").json()["id"]
    wait_saved(draft_id)
    assert client.delete(f"{URL}{draft_id}/").status_code == 204
    wait_for(lambda: not server_drafts(account), what="the server copy to go")
    assert client.get(f"{URL}{draft_id}/").status_code == 404


def test_another_users_draft_is_a_404(api_as, alice, bob, account):
    draft = drafts.draft_create(owner=alice, account=account, subject="Private")
    as_bob = api_as(bob)
    assert as_bob.get(f"{URL}{draft.pk}/").status_code == 404
    assert (
        as_bob.put(
            f"{URL}{draft.pk}/", {"account": account.pk, "subject": "mine"}, format="json"
        ).status_code
        == 404
    )
    assert as_bob.delete(f"{URL}{draft.pk}/").status_code == 404
    assert (
        as_bob.post(
            f"{URL}{draft.pk}/send/",
            {"account": account.pk, "to": ["x@example.org"]},
            format="json",
        ).status_code
        == 404
    )
    assert as_bob.get(URL).json()["results"] == []
    # Nor can bob file a draft under alice's account.
    assert as_bob.post(URL, {"account": account.pk}, format="json").status_code == 404
    assert Draft.objects.get(pk=draft.pk).subject == "Private"


def test_the_list_finds_a_draft_by_its_message_id(api_as, alice, account):
    first = drafts.draft_create(owner=alice, account=account, subject="One")
    drafts.draft_create(owner=alice, account=account, subject="Two")
    client = api_as(alice)
    assert [d["subject"] for d in client.get(URL).json()["results"]] == ["Two", "One"]
    found = client.get(URL, {"message_id": first.message_id}).json()["results"]
    assert [d["id"] for d in found] == [first.pk]


def test_a_claim_left_by_a_dead_pusher_holds_until_its_lease_ends(alice, account):
    from datetime import timedelta

    from django.utils import timezone

    # Made directly (no push enqueued), as if a worker had claimed it and died.
    draft = Draft.objects.create(
        owner=alice,
        account=account,
        subject="Orphaned",
        text="still here",
        message_id="<orphan-1@example.org>",
        push_token="dead-worker",
        push_lease_until=timezone.now() + timedelta(minutes=1),
    )
    with pytest.raises(drafts.DraftBusy):
        drafts.draft_push(draft_id=draft.pk)
    assert server_drafts(account) == []
    Draft.objects.filter(pk=draft.pk).update(push_lease_until=timezone.now() - timedelta(seconds=1))
    assert drafts.draft_push(draft_id=draft.pk) == 1
    [(uid, _, message)] = server_drafts(account)
    assert message["Subject"] == "Orphaned"
    assert Draft.objects.get(pk=draft.pk).server_uid == uid
