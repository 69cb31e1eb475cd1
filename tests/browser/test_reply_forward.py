"""Replies and forwards in Chromium, end to end: from the reading pane through the real
Celery worker into the aiosmtpd peer, and the original's flag on the real Dovecot after."""

from __future__ import annotations

import hashlib
import re

import pytest
from playwright.sync_api import expect

from mailcore.models import Draft, Mailbox, Message
from tests.browser.test_compose_ui import _parsed, _plain, _tokens
from tests.browser.test_compose_ui import account as account
from tests.browser.test_mail_ui import _log_in, sync
from tests.integration.test_drafts import wait_for
from tests.integration.test_forwarding import server_flags
from tests.mailfactory import make_message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PAYLOAD = bytes(range(256)) * 40  # 10 KiB of every byte value


def _seed(dovecot, mail_user, account, folder: str = "INBOX", **fields) -> Message:
    dovecot.append(mail_user, folder, make_message(to=account.email_address, **fields))
    sync(account)
    return Message.objects.get(account=account, subject=fields["subject"])


def _open(page, message: Message) -> None:
    page.goto(
        f"/mail/?account={message.account_id}&mailbox={message.mailbox_id}&message={message.pk}"
    )
    expect(page.locator("#reader-scroll")).to_contain_text(message.subject)


def test_a_reply_from_the_reading_pane_threads_and_marks_the_original_answered(
    page, alice, account, dovecot, mail_user, smtp, celery_worker
):
    original = _seed(
        dovecot,
        mail_user,
        account,
        subject="Budget",
        message_id="<budget-3@example.org>",
        in_reply_to="<budget-2@example.org>",
        references=["<budget-1@example.org>", "<budget-2@example.org>"],
    )
    _log_in(page)
    _open(page, original)
    page.get_by_role("button", name="Reply", exact=True).click()
    expect(page.locator("#compose-title")).to_have_text("Reply")
    expect(page.locator("#compose-forward")).to_be_hidden()
    expect(page.locator("#compose-rich")).to_contain_text("Carol Sender wrote:")
    expect(page.locator("#compose-rich")).to_be_focused()
    page.keyboard.type("Looks right to me.")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#compose-dialog")).to_be_hidden()

    [captured] = smtp.wait_for_messages(1, timeout=40)
    sent = _parsed(captured)
    assert sent["In-Reply-To"] == "<budget-3@example.org>"
    assert sent["References"].split() == [
        "<budget-1@example.org>",
        "<budget-2@example.org>",
        "<budget-3@example.org>",
    ]
    assert _plain(sent).startswith("Looks right to me.")
    wait_for(
        lambda: "\\Answered" in server_flags(account)[original.uid],
        what="the original to be \\Answered on the server",
    )
    original.refresh_from_db()
    assert original.answered


def test_a_forward_as_attachment_carries_the_original_as_message_rfc822(
    page, screenshot, alice, account, dovecot, mail_user, smtp, celery_worker
):
    original = _seed(
        dovecot,
        mail_user,
        account,
        subject="Site photos",
        message_id="<photos@example.org>",
        body="The photos from Tuesday.",
        attachment=("north wall.jpg", PAYLOAD, "image/jpeg"),
    )
    _log_in(page)
    _open(page, original)
    page.get_by_role("button", name="Forward").click()
    expect(page.locator("#compose-title")).to_have_text("Forward")
    panel = page.locator("#compose-forward")
    expect(panel).to_be_visible()
    chip = panel.locator(".compose-forward-file")
    expect(chip).to_have_count(1)
    expect(chip).to_contain_text("north wall.jpg")
    expect(chip).to_contain_text("from the original")
    expect(page.get_by_label("Include the original's attachment")).to_be_checked()
    expect(page.locator("#compose-rich")).to_contain_text("Forwarded message")
    to = page.locator("#compose-to-input")
    to.fill("dave@example.org")
    to.press("Enter")
    screenshot("forward-inline")
    page.set_viewport_size({"width": 390, "height": 800})
    screenshot("forward-inline-narrow")
    page.set_viewport_size({"width": 1280, "height": 800})

    page.locator("#compose-forward-mode").select_option("attachment")
    expect(chip).to_contain_text("Site photos.eml")
    expect(chip).to_contain_text("with its attachment")
    expect(page.get_by_label("Include the original's attachment")).to_be_hidden()
    # The untouched quoted text goes: the original travels whole.
    expect(page.locator("#compose-rich")).not_to_contain_text("Forwarded message")
    page.locator("#compose-rich").click()
    page.keyboard.type("See the attached message.")
    screenshot("forward-as-attachment")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#compose-dialog")).to_be_hidden()

    [captured] = smtp.wait_for_messages(1, timeout=40)
    sent = _parsed(captured)
    assert list(captured.rcpt_tos) == ["dave@example.org"]
    assert sent["Subject"] == "Fwd: Site photos"
    assert "See the attached message." in _plain(sent)
    [attached] = list(sent.iter_attachments())
    assert attached.get_content_type() == "message/rfc822"
    inner = attached.get_content()
    assert inner["Message-ID"] == "<photos@example.org>"
    [photo] = list(inner.iter_attachments())
    assert hashlib.sha256(photo.get_content()).digest() == hashlib.sha256(PAYLOAD).digest()
    wait_for(
        lambda: "$Forwarded" in server_flags(account)[original.uid],
        what="the original to carry $Forwarded on the server",
    )


def test_an_inline_forward_without_the_original_attachments(
    page, alice, account, dovecot, mail_user, smtp, celery_worker
):
    original = _seed(
        dovecot,
        mail_user,
        account,
        subject="Invoice",
        attachment=("invoice.pdf", PAYLOAD, "application/pdf"),
    )
    _log_in(page)
    _open(page, original)
    page.get_by_role("button", name="Forward").click()
    page.get_by_label("Include the original's attachment").uncheck()
    expect(page.locator(".compose-forward-file.excluded")).to_have_count(1)
    to = page.locator("#compose-to-input")
    to.fill("dave@example.org")
    to.press("Enter")
    page.keyboard.press("Control+Enter")
    [captured] = smtp.wait_for_messages(1, timeout=40)
    sent = _parsed(captured)
    assert list(sent.iter_attachments()) == []
    assert "Forwarded message" in _plain(sent)


def test_a_message_in_the_drafts_folder_opens_in_compose(
    page, screenshot, alice, account, dovecot, mail_user
):
    draft = _seed(
        dovecot,
        mail_user,
        account,
        folder="Drafts",
        subject="Half-written plan",
        body="First point.",
    )
    assert Mailbox.objects.get(pk=draft.mailbox_id).role == "drafts"
    _log_in(page)
    _open(page, draft)
    bar = page.locator(".draft-bar")
    expect(bar).to_contain_text("This is a draft")
    screenshot("draft-in-reader")
    bar.get_by_role("button", name="Edit draft").click()
    expect(page.locator("#compose-dialog")).to_be_visible()
    expect(page.locator("#compose-title")).to_have_text("Draft")
    expect(page.locator("#compose-subject")).to_have_value("Half-written plan")
    expect(_tokens(page, "to")).to_have_count(1)
    expect(page.locator("#compose-rich")).to_contain_text("First point.")
    page.locator("#compose-close").click()
    expect(page.locator("#compose-dialog")).to_be_hidden()
    # Double-click on the row opens it too (Thunderbird, Roundcube).
    page.locator(".mail-row", has_text="Half-written plan").dblclick()
    expect(page.locator("#compose-dialog")).to_be_visible()
    expect(page.locator("#compose-subject")).to_have_value("Half-written plan")
    page.locator("#compose-close").click()
    expect(page.locator("#compose-dialog")).to_be_hidden()
    page.locator("#list-title").click()  # and Enter on the row under the cursor
    page.keyboard.press("Enter")
    expect(page.locator("#compose-dialog")).to_be_visible()
    expect(page.locator("#compose-subject")).to_have_value("Half-written plan")


def test_a_forward_saved_as_draft_comes_back_as_the_same_forward(
    page, alice, account, dovecot, mail_user, smtp, celery_worker
):
    original = _seed(
        dovecot,
        mail_user,
        account,
        subject="Floor plan",
        attachment=("plan.pdf", PAYLOAD, "application/pdf"),
    )
    _log_in(page)
    _open(page, original)
    page.get_by_role("button", name="Forward").click()
    page.locator("#compose-forward-mode").select_option("attachment")
    page.locator("#compose-to-input").fill("erin@example.org,")
    expect(page.locator("#compose-saved")).to_have_text(re.compile("^Saved"), timeout=10_000)
    draft = Draft.objects.get(owner=alice)
    assert (draft.forward_of_id, draft.forward_mode) == (original.pk, "attachment")
    page.keyboard.press("Escape")
    expect(page.locator("#compose-dialog")).to_be_hidden()

    page.goto(f"/mail/?draft={draft.pk}")
    expect(page.locator("#compose-dialog")).to_be_visible()
    expect(page.locator("#compose-forward-mode")).to_have_value("attachment")
    expect(page.locator(".compose-forward-file")).to_contain_text("Floor plan.eml")
    page.locator("#compose-send").click()
    expect(page.locator("#compose-dialog")).to_be_hidden()
    [captured] = smtp.wait_for_messages(1, timeout=40)
    [attached] = list(_parsed(captured).iter_attachments())
    assert attached.get_content_type() == "message/rfc822"
    wait_for(
        lambda: "$Forwarded" in server_flags(account)[original.uid],
        what="the original to carry $Forwarded on the server",
    )
