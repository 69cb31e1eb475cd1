"""The FTP picker in Chromium: attach a file from an FTP site while composing, and save an
attachment from the reading pane to an FTP site — through the real Celery worker, the real
pyftpdlib, Dovecot and aiosmtpd peers."""

from __future__ import annotations

import hashlib
import os
import re
from email import message_from_bytes, policy

import pytest
from playwright.sync_api import expect

from ftpcore.models import FtpSite
from tests.browser.test_mail_ui import _log_in, _row, sync, wait_for
from tests.mailfactory import make_message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HOST = "127.0.0.1"


@pytest.fixture
def account(sending_account):
    return sending_account


@pytest.fixture
def site(alice, ftp) -> FtpSite:
    home = ftp.homes["alice"]
    (home / "docs").mkdir()
    (home / "photos").mkdir()
    (home / "docs" / "Q3 report.pdf").write_bytes(os.urandom(180_000))
    (home / "docs" / "minutes.txt").write_bytes(b"Minutes of the meeting.\n")
    (home / "notes.txt").write_bytes(b"todo\n")
    return FtpSite.objects.create(
        owner=alice,
        name="Studio server",
        host=ftp.host,
        port=ftp.port,
        username="alice",
        password="secret-alice",
    )


def _picker(page):
    return page.locator("dialog.ftp-picker")


def _active(page):
    return _picker(page).locator(".fp-entry[aria-selected=true] .fp-entry-name")


def test_attach_from_ftp_by_keyboard_then_send(
    page, screenshot, alice, account, site, ftp, smtp, celery_worker
):
    report = (ftp.homes["alice"] / "docs" / "Q3 report.pdf").read_bytes()
    _log_in(page)
    page.goto("/mail/")
    page.locator("#compose-button").click()
    page.locator("#compose-ftp").click()
    picker = _picker(page)
    expect(picker.locator(".fp-entry")).to_have_count(3)
    picker.locator(".fp-list").press("Escape")  # closes the picker, not the message
    expect(picker).to_be_hidden()
    expect(page.locator("#compose-dialog")).to_be_visible()
    page.locator("#compose-ftp").click()
    expect(picker).to_be_visible()
    expect(picker.locator(".fp-site")).to_have_value(str(site.pk))
    expect(picker.locator(".fp-entry-name")).to_have_text(["docs", "photos", "notes.txt"])
    expect(picker.locator(".fp-ok")).to_be_disabled()  # a folder is highlighted
    list_ = picker.locator(".fp-list")
    expect(list_).to_be_focused()
    screenshot("ftp-picker-attach")

    list_.press("ArrowDown")
    expect(_active(page)).to_have_text("photos")
    list_.press("Enter")
    expect(picker.locator(".fp-status")).to_have_text("This folder is empty.")
    expect(picker.locator(".fp-crumb[aria-current]")).to_have_text("photos")
    list_.press("Backspace")
    expect(picker.locator(".fp-entry-name")).to_have_count(3)
    list_.press("d")  # type-ahead
    expect(_active(page)).to_have_text("docs")
    list_.press("Enter")
    expect(picker.locator(".fp-entry-name")).to_have_text(["minutes.txt", "Q3 report.pdf"])
    list_.press("q")
    expect(_active(page)).to_have_text("Q3 report.pdf")
    expect(picker.locator(".fp-ok")).to_be_enabled()
    screenshot("ftp-picker-attach-folder")
    page.emulate_media(color_scheme="dark")
    screenshot("ftp-picker-attach-dark")
    page.emulate_media(color_scheme="light")
    list_.press("Enter")
    expect(picker).to_be_hidden()

    chip = page.locator('#compose-files .compose-file[data-filename="Q3 report.pdf"]')
    expect(chip).to_have_class(re.compile(r"\buploaded\b"))
    expect(chip.locator(".upload-status")).to_have_text("176 KB")
    screenshot("ftp-picker-compose-chip")

    to = page.locator("#compose-to-input")
    to.fill("bob@example.org")
    to.press("Enter")
    page.locator("#compose-subject").fill("The Q3 report")
    page.locator("#compose-text").press("Control+Enter")
    expect(page.locator("#compose-dialog")).to_be_hidden()
    [captured] = smtp.wait_for_messages(1, timeout=40)
    parsed = message_from_bytes(captured.data, policy=policy.default)
    [attachment] = list(parsed.iter_attachments())
    assert attachment.get_filename() == "Q3 report.pdf"
    assert hashlib.sha256(attachment.get_content()).digest() == hashlib.sha256(report).digest()


def test_a_missing_ftp_file_shows_the_servers_words(page, screenshot, alice, account, site, ftp):
    page.set_viewport_size({"width": 390, "height": 760})  # a phone
    _log_in(page)
    page.goto("/mail/")
    page.locator("#compose-button").click()
    page.locator("#compose-ftp").click()
    picker = _picker(page)
    expect(picker.locator(".fp-entry-name")).to_have_count(3)
    screenshot("ftp-picker-phone")
    (ftp.homes["alice"] / "notes.txt").unlink()  # gone between listing and picking
    picker.locator(".fp-entry", has_text="notes.txt").dblclick()
    chip = page.locator('#compose-files .compose-file[data-filename="notes.txt"]')
    expect(chip).to_have_class(re.compile(r"\bfailed\b"))
    expect(chip.locator(".upload-status")).to_contain_text("550")
    screenshot("ftp-picker-phone-failed")


def test_save_an_attachment_to_ftp_from_the_reading_pane(
    page, screenshot, alice, account, site, ftp, dovecot, mail_user, celery_worker
):
    data = os.urandom(260_000)
    raw = make_message(
        subject="Signed contract",
        attachment=("contract.pdf", data, "application/pdf"),
    )
    dovecot.seed_messages(mail_user, "INBOX", [raw])
    sync(account)
    (ftp.homes["alice"] / "docs" / "contract.pdf").write_bytes(b"an older contract")

    _log_in(page)
    page.goto("/mail/")
    _row(page, "Signed contract").click()
    reader = page.locator("#reader")
    save = reader.locator(".fp-save")
    expect(save).to_have_text("Save to FTP…")
    screenshot("ftp-picker-reader")
    save.click()
    picker = _picker(page)
    expect(picker.locator("#fp-title")).to_have_text("Save “contract.pdf” to FTP")
    expect(picker.locator(".fp-name")).to_have_value("contract.pdf")
    expect(picker.locator(".fp-entry-name")).to_have_text(["docs", "photos", "notes.txt"])
    list_ = picker.locator(".fp-list")
    expect(list_).to_be_focused()
    list_.press("ArrowDown")  # nothing is highlighted when saving: Enter alone saves here
    expect(_active(page)).to_have_text("docs")
    list_.press("Enter")
    expect(picker.locator(".fp-crumb[aria-current]")).to_have_text("docs")
    expect(picker.locator(".fp-status")).to_have_text(
        "“contract.pdf” is already here and stays as it is: "
        "this one will be saved as “contract (1).pdf”."
    )
    screenshot("ftp-picker-save")
    picker.locator(".fp-ok").click()
    expect(picker).to_be_hidden()

    job = reader.locator(".fp-job")
    expect(job.locator(".state")).to_have_text("done", timeout=30_000)
    expect(job.locator(".fp-job-note")).to_have_text(
        "contract.pdf saved as /docs/contract (1).pdf (the name was taken)"
    )
    expect(job.locator(".progress")).to_have_attribute("aria-valuenow", "100")
    screenshot("ftp-picker-saved")
    docs = ftp.homes["alice"] / "docs"
    assert (docs / "contract.pdf").read_bytes() == b"an older contract"
    wait_for(lambda: (docs / "contract (1).pdf").exists(), what="the saved file")
    saved = (docs / "contract (1).pdf").read_bytes()
    assert hashlib.sha256(saved).digest() == hashlib.sha256(data).digest()
