"""Composing in Chromium: the dialog, autocomplete, uploads, undo, replies and the outbox page,
sending through the real Celery worker into the real aiosmtpd peer (AUTH after STARTTLS)."""

from __future__ import annotations

import hashlib
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes, policy

import pytest
from django.db import connection
from playwright.sync_api import expect

from mailcore import outbox, people
from mailcore.models import Draft, OutgoingMessage
from tests.browser.test_mail_ui import _log_in, sync
from tests.integration.test_drafts import server_drafts, wait_for
from tests.mailfactory import make_message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HOST = "127.0.0.1"


@pytest.fixture
def account(sending_account):
    return sending_account


def _open_compose(page):
    page.goto("/mail/")
    page.locator("#compose-button").click()
    expect(page.locator("#compose-dialog")).to_be_visible()


def _tokens(page, field: str):
    return page.locator(f'.tokens[data-name="{field}"] .token')


def _parsed(captured):
    return message_from_bytes(captured.data, policy=policy.default)


def _plain(parsed) -> str:
    return parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")


def test_compose_to_two_recipients_sends_and_the_outbox_shows_it(
    page, screenshot, alice, account, smtp, celery_worker
):
    _log_in(page)
    _open_compose(page)
    expect(page.locator("#compose-from")).to_contain_text(account.email_address)
    screenshot("compose-empty")
    to = page.locator("#compose-to-input")
    to.fill("bob@example.org")
    to.press("Enter")
    to.fill("carol@example.org,")
    expect(_tokens(page, "to")).to_have_count(2)
    page.locator("#compose-subject").fill("Lunch on Friday")
    page.locator("#compose-rich").click()
    page.keyboard.type("Shall we meet at noon?")
    page.keyboard.press("Enter")
    page.keyboard.type("Alice")
    screenshot("compose-filled")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#compose-dialog")).to_be_hidden()
    expect(page.locator(".compose-toast")).to_contain_text("Sending…")
    expect(page.locator(".compose-toast button", has_text="Undo")).to_be_visible()

    [captured] = smtp.wait_for_messages(1, timeout=40)
    assert sorted(captured.rcpt_tos) == ["bob@example.org", "carol@example.org"]
    assert captured.login == "alice" and captured.tls
    parsed = _parsed(captured)
    assert parsed["Subject"] == "Lunch on Friday"
    assert "Alice Liddell" in parsed["From"]
    assert "Shall we meet at noon?\nAlice" in _plain(parsed)
    assert "<div>Shall we meet at noon?</div>" in parsed.get_body(("html",)).get_content()

    page.goto("/mail/outbox/")
    row = page.locator("#outbox-rows tr", has_text="Lunch on Friday")
    expect(row.locator("[data-field=state]")).to_have_text("sent", timeout=20_000)
    expect(row.locator("[data-field=attempts]")).to_have_text("1")
    expect(row.locator(".outbox-cancel")).to_have_count(0)
    screenshot("outbox")


def test_autocomplete_picks_a_contact_and_a_group_by_keyboard(page, alice, account):
    people.contact_create(owner=alice, name="Bob Builder", email_address="bob@example.org")
    people.contact_create(owner=alice, name="Bobby Tables", email_address="bobby@example.org")
    people.group_create(owner=alice, name="Team", members=["x@example.org", "y@example.org"])
    _log_in(page)
    _open_compose(page)
    to = page.locator("#compose-to-input")
    to.press_sequentially("bob")
    options = page.locator("#compose-suggest [role=option]")
    expect(options).to_have_count(2)
    expect(options.first).to_have_class(re.compile("active"))
    to.press("ArrowDown")
    expect(options.nth(1)).to_have_class(re.compile("active"))
    to.press("ArrowUp")
    to.press("ArrowDown")
    chosen = options.nth(1).locator(".suggest-name").inner_text()
    to.press("Enter")
    expect(page.locator("#compose-suggest")).to_be_hidden()
    expect(_tokens(page, "to")).to_have_count(1)
    names = {"Bob Builder": "bob@example.org", "Bobby Tables": "bobby@example.org"}
    assert _tokens(page, "to").first.get_attribute("data-value") == f"{chosen} <{names[chosen]}>"

    to.press_sequentially("tea")
    expect(options).to_have_count(1)
    expect(options.first).to_contain_text("Group")
    to.press("Tab")
    expect(_tokens(page, "to")).to_have_count(2)
    assert _tokens(page, "to").nth(1).get_attribute("data-value") == "Team"
    expect(_tokens(page, "to").nth(1)).to_have_class(re.compile("group"))
    assert page.evaluate("document.activeElement.id") == "compose-to-input"

    to.press("Backspace")
    expect(_tokens(page, "to")).to_have_count(1)
    to.press("Backspace")
    expect(_tokens(page, "to")).to_have_count(0)


def test_an_attachment_shows_progress_and_arrives(page, alice, account, smtp, celery_worker):
    data = os.urandom(3 * 1024 * 1024)
    _log_in(page)
    _open_compose(page)
    page.locator("#compose-to-input").fill("bob@example.org")
    page.locator("#compose-subject").fill("The report")
    page.locator("#compose-file").set_input_files(
        [{"name": "report.bin", "mimeType": "application/octet-stream", "buffer": data}]
    )
    row = page.locator(".compose-file", has_text="report.bin")
    expect(row.locator("[role=progressbar]")).to_be_visible()
    expect(row).to_have_class(re.compile("uploaded"), timeout=30_000)
    expect(row.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "100")
    expect(row).to_have_attribute("data-progress", "100")
    page.locator("#compose-send").click()
    expect(page.locator(".compose-toast")).to_be_visible()

    [captured] = smtp.wait_for_messages(1, timeout=40)
    [part] = list(_parsed(captured).iter_attachments())
    assert part.get_filename() == "report.bin"
    assert hashlib.sha256(part.get_content()).digest() == hashlib.sha256(data).digest()


def test_undo_cancels_and_nothing_reaches_the_server(page, alice, account, smtp, celery_worker):
    _log_in(page)
    _open_compose(page)
    page.locator("#compose-to-input").fill("bob@example.org")
    page.locator("#compose-subject").fill("Oops, not yet")
    page.locator("#compose-rich").click()
    page.keyboard.type("Draft text.")
    page.keyboard.press("Control+Enter")
    page.locator(".compose-toast button", has_text="Undo").click()
    expect(page.locator(".toast", has_text="Sending cancelled")).to_be_visible()
    # The message is back in the editor.
    expect(page.locator("#compose-dialog")).to_be_visible()
    expect(page.locator("#compose-subject")).to_have_value("Oops, not yet")
    expect(_tokens(page, "to")).to_have_count(1)
    message = OutgoingMessage.objects.get(owner=alice, subject="Oops, not yet")
    assert message.state == "cancelled"
    time.sleep(12)  # past the undo window: the worker must not send it
    assert smtp.messages == []
    assert OutgoingMessage.objects.get(pk=message.pk).state == "cancelled"


def test_a_bad_address_is_shown_next_to_its_field(page, alice, account):
    _log_in(page)
    _open_compose(page)
    to = page.locator("#compose-to-input")
    to.fill("bob@example.org")
    to.press("Enter")
    to.fill("not-an-address@@example")
    to.press("Enter")
    page.locator("#compose-subject").fill("Hello")
    page.locator("#compose-send").click()
    error = page.locator('[data-error-for="to"]')
    expect(error).to_be_visible()
    expect(error).to_contain_text("not-an-address@@example")
    expect(page.locator(".token.invalid")).to_have_attribute(
        "data-value", "not-an-address@@example"
    )
    expect(page.locator("#compose-dialog")).to_be_visible()
    assert not OutgoingMessage.objects.filter(owner=alice).exists()


def test_reply_prefills_from_the_open_message_and_threads(
    page, alice, account, dovecot, mail_user, smtp, celery_worker
):
    raw = make_message(
        subject="Re: Fwd: Plans",
        sender="Carol Sender <carol@example.org>",
        to=f"{account.email_address}",
        body="Are you coming?\n> earlier line",
        message_id="<plans-1@example.org>",
    )
    dovecot.append(mail_user, "INBOX", raw)
    sync(account)
    from mailcore.models import Message

    message = Message.objects.get(account=account, subject="Re: Fwd: Plans")
    _log_in(page)
    page.goto(f"/mail/?account={account.pk}&mailbox={message.mailbox_id}&message={message.pk}")
    expect(page.locator("#reader-content")).to_be_visible()
    expect(page.locator("#reader-scroll")).to_contain_text("Plans")
    page.get_by_role("button", name="Forward").click()  # the reading pane's buttons
    expect(page.locator("#compose-title")).to_have_text("Forward")
    expect(page.locator("#compose-subject")).to_have_value("Fwd: Plans")
    page.keyboard.press("Escape")
    expect(page.locator("#compose-dialog")).to_be_hidden()
    page.locator("#list-title").click()  # focus on the page, not in a frame
    page.keyboard.press("r")
    expect(page.locator("#compose-dialog")).to_be_visible()
    expect(page.locator("#compose-title")).to_have_text("Reply")
    expect(page.locator("#compose-subject")).to_have_value("Re: Plans")
    expect(_tokens(page, "to")).to_have_count(1)
    assert _tokens(page, "to").first.get_attribute("data-value") == (
        "Carol Sender <carol@example.org>"
    )
    # Rich mode quotes the original in a blockquote (one level deeper for its own quote).
    quote = page.locator("#compose-rich > blockquote")
    expect(quote).to_contain_text("Are you coming?")
    expect(quote.locator("blockquote")).to_have_text("earlier line")
    expect(page.locator("#compose-rich")).to_contain_text("Carol Sender wrote:")
    page.keyboard.type("Yes, see you there.")
    page.keyboard.press("Control+Enter")
    [captured] = smtp.wait_for_messages(1, timeout=40)
    parsed = _parsed(captured)
    assert parsed["In-Reply-To"] == "<plans-1@example.org>"
    assert parsed["Subject"] == "Re: Plans"
    text = _plain(parsed)
    assert re.search(
        r"^Yes, see you there\.\n\nOn .+, Carol Sender wrote:\n> Are you coming\?\n>> earlier line",
        text,
    )
    assert '<blockquote type="cite"' in parsed.get_body(("html",)).get_content()


def test_a_draft_is_saved_while_typing_resumed_and_gone_once_sent(
    page, screenshot, alice, account, smtp, celery_worker
):
    _log_in(page)
    _open_compose(page)
    page.locator("#compose-to-input").fill("bob@example.org,")
    page.locator("#compose-subject").fill("Weekend")
    page.locator("#compose-rich").click()
    page.keyboard.type("First thoughts")
    saved = page.locator("#compose-saved")
    expect(saved).to_have_text(re.compile(r"^Saved \d{1,2}:\d{2}"), timeout=10_000)
    screenshot("compose-draft-saved")
    draft = Draft.objects.get(owner=alice)
    assert draft.subject == "Weekend" and draft.to == ["bob@example.org"]
    wait_for(lambda: [c for c in server_drafts(account) if c[2]["Subject"] == "Weekend"])

    page.keyboard.type(", and second ones")
    page.keyboard.press("Escape")  # closing saves what the timer has not saved yet
    expect(page.locator("#compose-dialog")).to_be_hidden()
    wait_for(lambda: "second ones" in Draft.objects.get(pk=draft.pk).text, what="the save")
    wait_for(
        lambda: [
            c
            for c in server_drafts(account)
            if "second ones" in c[2].get_body(("plain",)).get_content()
        ],
        what="the new copy",
    )
    assert len(server_drafts(account)) == 1

    _open_compose(page)
    expect(page.locator("#compose-subject")).to_have_value("")
    page.locator("#compose-drafts-toggle").click()
    item = page.locator("#compose-drafts-list [data-draft]", has_text="Weekend")
    expect(item).to_contain_text("bob@example.org")
    screenshot("compose-drafts-list")
    item.click()
    expect(page.locator("#compose-subject")).to_have_value("Weekend")
    expect(_tokens(page, "to")).to_have_count(1)
    expect(page.locator("#compose-rich")).to_have_text("First thoughts, and second ones")
    expect(saved).to_have_text(re.compile(r"^Saved "))
    page.locator("#compose-send").click()
    expect(page.locator(".compose-toast")).to_be_visible()
    [captured] = smtp.wait_for_messages(1, timeout=40)
    assert "First thoughts, and second ones" in _plain(_parsed(captured))
    assert not Draft.objects.filter(owner=alice).exists()
    wait_for(lambda: not server_drafts(account), what="the server copy to go")


def test_a_draft_opens_from_the_outbox_page_and_discarding_deletes_it(
    page, screenshot, alice, account, celery_worker
):
    _log_in(page)
    _open_compose(page)
    page.locator("#compose-subject").fill("Never mind")
    expect(page.locator("#compose-saved")).to_have_text(re.compile("^Saved"), timeout=10_000)
    [draft] = Draft.objects.filter(owner=alice)
    page.goto("/mail/outbox/")
    link = page.locator("#outbox-drafts a", has_text="Never mind")
    expect(link).to_have_attribute("href", f"/mail/?draft={draft.pk}")
    screenshot("outbox-drafts")
    link.click()
    expect(page.locator("#compose-dialog")).to_be_visible()
    expect(page.locator("#compose-subject")).to_have_value("Never mind")
    page.locator("#compose-discard").click()
    expect(page.locator("#compose-dialog")).to_be_hidden()
    wait_for(lambda: not Draft.objects.filter(owner=alice).exists(), what="the deletion")
    wait_for(lambda: not server_drafts(account), what="the server copy to go")


def test_a_message_that_fails_shows_a_notice_on_any_page_and_a_badge(
    page, screenshot, alice, account, smtp, celery_worker
):
    smtp.fail_next("DATA", 550, "5.7.1 Message refused by policy")
    _log_in(page)
    _open_compose(page)
    page.locator("#compose-to-input").fill("bob@example.org,")
    page.locator("#compose-subject").fill("Doomed")
    page.locator("#compose-rich").click()
    page.keyboard.type("This will bounce.")
    page.keyboard.press("Control+Enter")
    expect(page.locator(".compose-toast")).to_be_visible()
    page.goto("/settings/")  # the notice comes to whatever page is open
    expect(page.locator(".topbar .connection")).to_have_attribute("data-state", "open")
    notice = page.locator(".notice.failed")
    expect(notice).to_be_visible(timeout=40_000)
    expect(notice).to_contain_text("Your message could not be delivered")
    expect(notice).to_contain_text("“Doomed” to bob@example.org")
    expect(notice).to_contain_text("550 5.7.1 Message refused by policy")
    expect(notice.get_by_role("link", name="Open the outbox")).to_have_attribute(
        "href", "/mail/outbox/"
    )
    badge = page.locator("#nav-failed")
    expect(badge).to_have_text("1")
    expect(badge).to_have_attribute("href", "/mail/outbox/")
    screenshot("failure-notice")
    assert OutgoingMessage.objects.get(owner=alice, subject="Doomed").state == "failed"

    page.goto("/files/")  # persistent: still there on the next page, the count from the API
    expect(notice).to_contain_text("550 5.7.1 Message refused by policy")
    expect(badge).to_have_text("1")
    notice.get_by_role("button", name="Dismiss").click()
    expect(notice).to_have_count(0)
    page.reload()
    expect(badge).to_have_text("1")  # the message is still failed: the outbox says so
    expect(page.locator(".notice")).to_have_count(0)

    # A failure while no page listened is announced on the next page load.
    def create():  # in a thread of its own: publishing refuses Playwright's event loop
        try:
            return outbox.outbox_create(
                owner=alice, account=account, to=["carol@example.org"], subject="Also doomed"
            )
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(create).result()
    OutgoingMessage.objects.filter(pk=other.pk).update(
        state="failed", next_attempt_at=None, last_error="550 5.1.1 carol: no such user"
    )
    page.reload()
    expect(notice).to_contain_text("“Also doomed” to carol@example.org")
    expect(notice).to_contain_text("550 5.1.1 carol: no such user")
    expect(badge).to_have_text("2")
    badge.click()
    expect(page.locator("#outbox-rows tr", has_text="Doomed").first).to_contain_text("failed")
