"""Reading mail in Chromium: the three panes, the keyboard, live updates, phones, accounts.

Mail that the tests act on (flags, moves, deletes) lives on the real Dovecot and is synced
into Satchel with the real engine; the list-only tests seed rows straight into PostgreSQL.
"""

from __future__ import annotations

import itertools
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import pytest
from django.db import connection
from django.utils import timezone
from playwright.sync_api import expect

from mailcore import services
from mailcore.models import MailAccount, Mailbox, Message, MessageBody
from mailcore.sync import account_sync
from tests.mailfactory import make_message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}


def _log_in(page, username: str = "alice", password: str = "secret-alice") -> None:  # noqa: S107
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".topbar")).to_be_visible()


def sync(account) -> None:
    """account_sync in a thread of its own: Playwright's event loop runs in this one, and
    publishing live events (async_to_sync) refuses to run inside a running loop."""

    def run() -> None:
        try:
            account_sync(account=account)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(run).result()


def wait_for(check, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _rows(page):
    return page.locator("#list-spacer .mail-row")


def _row(page, subject: str):
    return _rows(page).filter(has=page.locator(".row-subject", has_text=subject))


def _folder(page, name: str):
    """A folder's link in the tree, by its exact name (its accessible name adds the count)."""
    names = page.locator(".folder-name", has_text=re.compile(f"^{re.escape(name)}$"))
    return page.locator("#folder-tree .folder").filter(has=names)


def _inbox_count(page):
    return _folder(page, "Inbox").locator(".folder-count")


def _message(account, subject: str) -> Message:
    return Message.objects.get(account=account, subject=subject)


# Mail on the server ------------------------------------------------------------------------


def html_message(
    *,
    subject: str,
    sender: str,
    html: str,
    text: str,
    date,
    to: str = "Alice Example <alice@example.org>",
    cc: str | None = None,
    attachment: tuple[str, bytes, str] | None = None,
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    if cc:
        message["Cc"] = cc
    message["Subject"] = subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = make_msgid(domain="example.org")
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    if attachment:
        filename, data, content_type = attachment
        maintype, subtype = content_type.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return bytes(message)


REPORT_HTML = """
<div style="font-family: Georgia, serif; max-width: 600px">
  <h2 style="color:#1b4d89">Q3 at a glance</h2>
  <p>Hi Alice,</p>
  <p>Here are the numbers for the third quarter. Revenue is up <b>12%</b> on last year and the
  new pricing page converts twice as well as the old one.</p>
  <table style="border-collapse: collapse" cellpadding="6" border="1">
    <tr><th>Region</th><th>Revenue</th><th>Change</th></tr>
    <tr><td>North</td><td>€ 412,000</td><td style="color:#1f8a4c">+14%</td></tr>
    <tr><td>South</td><td>€ 287,500</td><td style="color:#1f8a4c">+9%</td></tr>
  </table>
  <p><img src="https://tracker.example/open.gif" width="1" height="1" alt=""></p>
  <p>The full report is attached. <a href="https://example.org/q3">Open the dashboard</a>.</p>
  <script>alert("not in my inbox")</script>
  <p style="color:#5d6b7e">— Dana</p>
</div>
"""


def seed_mailbox(dovecot, user: str) -> None:
    """A lived-in inbox on the server: HTML, attachments, a conversation, flags, old mail."""
    now = timezone.now()
    old = [
        make_message(
            subject=f"Archive note {n}",
            sender="Records <records@example.org>",
            body=f"Old message number {n}.",
            date=now - timedelta(days=420 + n),
        )
        for n in range(12)
    ]
    dovecot.seed_messages(user, "INBOX", old, flags=["\\Seen"])
    kickoff = make_msgid(domain="example.org")
    reply = make_msgid(domain="example.org")
    seen = [
        make_message(
            subject="Your invoice #2026-1142",
            sender="HostingCo Billing <billing@hostingco.example>",
            body="Your invoice for November is attached. Amount due: € 24.00.",
            date=now - timedelta(days=3),
            attachment=("invoice-2026-1142.pdf", b"%PDF-1.4 " + b"x" * 48_000, "application/pdf"),
        ),
        make_message(
            subject="Kickoff: website redesign",
            sender="Priya Raman <priya@example.org>",
            body="Let's meet on Monday to agree the scope.",
            date=now - timedelta(days=2, hours=3),
            message_id=kickoff,
        ),
        make_message(
            subject="Re: Kickoff: website redesign",
            sender="Alice Example <alice@example.org>",
            to="Priya Raman <priya@example.org>",
            body="Monday works. I'll bring the sitemap.\n\n> Let's meet on Monday.",
            date=now - timedelta(days=2, hours=1),
            message_id=reply,
            in_reply_to=kickoff,
            references=[kickoff],
        ),
        make_message(
            subject="Weekly digest: 5 stories you missed",
            sender="The Digest <news@digest.example>",
            body="This week: self-hosting, mail clients, and the joy of plain text.",
            date=now - timedelta(days=4),
        ),
    ]
    dovecot.seed_messages(user, "INBOX", seen, flags=["\\Seen"])
    flagged = [
        make_message(
            subject="Flight confirmation LH 1234",
            sender="Lufthansa <noreply@lufthansa.example>",
            body="Frankfurt → Lisbon, 12 December, seat 14A. Check-in opens 23 h before.",
            date=now - timedelta(days=1, hours=5),
        )
    ]
    dovecot.seed_messages(user, "INBOX", flagged, flags=["\\Seen", "\\Flagged"])
    unread = [
        make_message(
            subject="Re: Kickoff: website redesign",
            sender="Priya Raman <priya@example.org>",
            body="Great — see you Monday. I booked the big room.",
            date=now - timedelta(hours=20),
            in_reply_to=reply,
            references=[kickoff, reply],
        ),
        make_message(
            subject="Lunch on Friday?",
            sender="Sam Okafor <sam@example.org>",
            body="The new ramen place opened around the corner. 12:30?",
            date=now - timedelta(minutes=50),
        ),
        html_message(
            subject="Quarterly report: Q3 numbers",
            sender="Dana Whitfield <dana@example.org>",
            cc="Finance <finance@example.org>",
            html=REPORT_HTML,
            text="Q3 at a glance: revenue up 12%.",
            date=_earlier_today(now, timedelta(minutes=20)),
            attachment=("q3-report.pdf", b"%PDF-1.4 " + b"y" * 120_000, "application/pdf"),
        ),
    ]
    dovecot.seed_messages(user, "INBOX", unread)
    dovecot.create_folder(user, "Projects")
    dovecot.create_folder(user, "Projects/Website")
    dovecot.seed_messages(
        user,
        "Projects/Website",
        [make_message(subject="Sitemap draft", date=now - timedelta(days=6))],
        flags=["\\Seen"],
    )


def _earlier_today(now, before):
    """``now - before``, unless that is yesterday (a run just after midnight, UTC like the
    browser): then a second ago, so the list still shows it as today's, with its time."""
    earlier = now - before
    return earlier if earlier.date() == now.date() else now - timedelta(seconds=1)


@pytest.fixture
def synced_account(dovecot, mail_user, imap_account):
    seed_mailbox(dovecot, mail_user)
    sync(imap_account)
    return imap_account


# Rows straight in the database (no server needed for reading lists) -----------------------

_uids = itertools.count(1)


def db_account(owner, **fields) -> MailAccount:
    values = {
        "name": "Home",
        "email_address": "alice@example.org",
        "incoming_host": "127.0.0.1",
        "incoming_port": 9,
        "incoming_security": "none",
        "username": "alice",
        "password": "pw",
    }
    return services.account_create(owner=owner, **{**values, **fields})


def db_inbox(account, **fields) -> Mailbox:
    return Mailbox.objects.create(
        account=account, path="INBOX", name="Inbox", role="inbox", delimiter="/", **fields
    )


def db_messages(mailbox, count: int) -> None:
    now = timezone.now()
    Message.objects.bulk_create(
        Message(
            account=mailbox.account,
            mailbox=mailbox,
            uid=next(_uids),
            subject=f"Bulk message {n}",
            sender_name="Robot",
            sender_email="robot@example.org",
            date=now - timedelta(minutes=n),
            snippet=f"Number {n}",
            seen=True,
        )
        for n in range(count)
    )
    Mailbox.objects.filter(pk=mailbox.pk).update(total=count)


# Tests -------------------------------------------------------------------------------------


def test_empty_state_then_adding_an_account_syncs_it(
    page, screenshot, alice, dovecot, mail_user, celery_worker
):
    dovecot.seed_messages(mail_user, "INBOX", [make_message(subject="Welcome to your new mailbox")])
    _log_in(page)
    expect(page.get_by_role("heading", name="No mail accounts yet")).to_be_visible()
    screenshot("mail-ui-empty")
    page.get_by_role("link", name="Add a mail account").click()
    page.get_by_label("Email address").fill(f"{mail_user}@example.org")
    expect(page.locator("#id_username")).to_have_value(f"{mail_user}@example.org")
    page.locator("#id_incoming_host").fill(dovecot.host)
    port = page.locator("#id_incoming_port")
    expect(port).to_have_value("993")
    page.locator("#id_incoming_security").select_option("starttls")
    expect(port).to_have_value("143")  # the port follows the security choice
    page.locator("#id_incoming_security").select_option("none")
    port.fill(str(dovecot.imap_port))
    page.locator("#id_username").fill(mail_user)
    page.locator("#id_password").fill(mail_user[::-1])
    page.locator("#id_smtp_security").select_option("tls")
    expect(page.locator("#id_smtp_port")).to_have_value("465")
    screenshot("mail-ui-account-form")
    page.get_by_role("button", name="Add account and sync").click()
    # On the mail page (its address soon names the inbox instead of ?account=…&job=…).
    expect(page.locator(".messages")).to_contain_text("Its first sync has started.")
    expect(_folder(page, "Inbox")).to_be_visible(timeout=30_000)
    expect(_row(page, "Welcome to your new mailbox")).to_be_visible(timeout=30_000)
    account = MailAccount.objects.get(owner=alice)
    assert account.incoming_port == dovecot.imap_port and account.smtp_port == 465


def test_three_panes_and_an_html_message(page, screenshot, alice, synced_account):
    _log_in(page)
    tree = page.locator("#folder-tree")
    for name in ["Inbox", "Drafts", "Sent", "Archive", "Junk", "Trash", "Projects"]:
        expect(_folder(page, name)).to_be_visible()
    # Hierarchy: Website sits inside Projects.
    expect(tree.locator("[data-mailbox-item] [data-mailbox-item] .folder-name")).to_have_text(
        "Website"
    )
    inbox = _folder(page, "Inbox")
    expect(inbox).to_have_attribute("aria-current", "page")
    expect(inbox.locator(".folder-count")).to_have_text("3")
    expect(inbox).to_have_class(re.compile(r"\bhas-unread\b"))
    expect(page.locator("#list-title")).to_have_text("Inbox")
    assert _rows(page).count() <= 40  # windowed: only what is in view (+ overscan)
    report = _row(page, "Quarterly report: Q3 numbers")
    expect(report).to_have_class(re.compile(r"\bunread\b"))
    expect(report.locator(".row-from")).to_have_text("Dana Whitfield")
    expect(report.locator(".row-clip")).to_be_visible()
    assert ":" in report.locator(".row-date").inner_text()  # today: the time
    old = _row(page, "Archive note 0")
    old.scroll_into_view_if_needed()
    assert "2025" in old.locator(".row-date").inner_text()  # last year: the date
    flight = _row(page, "Flight confirmation LH 1234")
    expect(flight.locator(".row-flag")).to_have_attribute("aria-pressed", "true")
    page.locator("#list-viewport").evaluate("v => v.scrollTop = 0")
    screenshot("mail-ui-inbox")

    report.click()
    reader = page.locator("#reader")
    expect(reader.locator(".reader-subject")).to_have_text("Quarterly report: Q3 numbers")
    expect(reader.locator(".msg-from")).to_contain_text("Dana Whitfield")
    expect(reader.locator(".msg-from")).to_contain_text("<dana@example.org>")
    expect(reader.locator(".msg-addresses").first).to_contain_text("Alice Example")
    expect(reader.locator(".msg-addresses", has_text="Cc")).to_contain_text("Finance")
    attachment = reader.locator(".attachments a")
    expect(attachment).to_contain_text("q3-report.pdf")
    expect(attachment).to_contain_text("117 KB")
    expect(reader.locator(".images-bar")).to_contain_text("1 remote image blocked")
    frame = reader.locator("iframe.msg-frame")
    expect(frame).to_have_attribute("sandbox", "allow-popups allow-popups-to-escape-sandbox")
    body = page.frame_locator("iframe.msg-frame")
    expect(body.get_by_role("heading", name="Q3 at a glance")).to_be_visible()
    expect(body.locator("td", has_text="€ 412,000")).to_be_visible()
    assert body.locator("script").count() == 0
    # The message HTML never enters the page itself.
    assert "412,000" not in page.content()
    message = _message(synced_account, "Quarterly report: Q3 numbers")
    wait_for(lambda: Message.objects.get(pk=message.pk).seen, what="opening marks read")
    expect(report).not_to_have_class(re.compile(r"\bunread\b"))
    expect(inbox.locator(".folder-count")).to_have_text("2")  # live from mailbox.counts
    screenshot("mail-ui-reading-html")
    page.emulate_media(color_scheme="dark")
    screenshot("mail-ui-reading-dark")
    page.emulate_media(color_scheme="light")
    reader.get_by_role("button", name="Show images").click()
    expect(frame).to_have_attribute("src", f"/mail/messages/{message.pk}/body/?images=1")
    expect(reader.locator(".images-bar")).to_have_count(0)
    with page.expect_download() as download:
        attachment.click()
    assert download.value.suggested_filename == "q3-report.pdf"


def test_keyboard_shortcuts_change_state_on_the_server(
    page, screenshot, alice, dovecot, mail_user, synced_account
):
    _log_in(page)
    expect(_rows(page).first).to_be_visible()
    subjects = [row.inner_text() for row in _rows(page).locator(".row-subject").all()]
    assert subjects[:3] == [
        "Quarterly report: Q3 numbers",
        "Lunch on Friday?",
        "Re: Kickoff: website redesign",
    ]
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    lunch = _row(page, "Lunch on Friday?")
    expect(lunch).to_have_class(re.compile(r"\bcursor\b"))
    # Keys typed into the search box are text, not shortcuts.
    page.keyboard.press("/")
    expect(page.locator("#search")).to_be_focused()
    page.keyboard.type("j")
    page.keyboard.press("Escape")  # clears the search
    page.keyboard.press("Escape")  # leaves the box
    expect(lunch).to_have_class(re.compile(r"\bcursor\b"))

    message = _message(synced_account, "Lunch on Friday?")
    page.keyboard.press("o")
    expect(page.locator(".reader-subject")).to_have_text("Lunch on Friday?")
    wait_for(lambda: Message.objects.get(pk=message.pk).seen, what="o marks read")
    page.keyboard.press("u")
    wait_for(lambda: not Message.objects.get(pk=message.pk).seen, what="u marks unread")
    expect(lunch).to_have_class(re.compile(r"\bunread\b"))
    page.keyboard.press("s")
    wait_for(lambda: Message.objects.get(pk=message.pk).flagged, what="s flags")
    flags = dovecot.doveadm(
        "-f", "tab", "fetch", "-u", mail_user, "flags", "mailbox", "INBOX", "uid",
        str(message.uid),
    ).stdout  # fmt: skip
    assert "\\Flagged" in flags and "\\Seen" not in flags
    expect(lunch.locator(".row-flag")).to_have_attribute("aria-pressed", "true")

    page.keyboard.press("#")  # to the Trash
    expect(lunch).to_have_count(0)
    expect(page.locator(".toast").last).to_contain_text("Trash")
    wait_for(lambda: dovecot.message_count(mail_user, "Trash") == 1, what="moved to Trash")
    # The cursor moved on to the next message, which e archives.
    kickoff = _row(page, "Re: Kickoff: website redesign").filter(has_text="Priya Raman")
    expect(kickoff).to_have_class(re.compile(r"\bcursor\b"))
    page.keyboard.press("e")
    expect(kickoff).to_have_count(0)
    wait_for(lambda: dovecot.message_count(mail_user, "Archive") == 1, what="archived")
    archive = Mailbox.objects.get(account=synced_account, role="archive")
    archived = archive.messages.get()
    assert (archived.subject, archived.sender_name) == (
        "Re: Kickoff: website redesign",
        "Priya Raman",
    )

    page.keyboard.press("?")
    help_dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(help_dialog).to_be_visible()
    expect(help_dialog).to_contain_text("Archive")
    screenshot("mail-ui-shortcuts")
    page.keyboard.press("Escape")
    expect(help_dialog).to_be_hidden()


def test_select_many_with_shift_click_then_act_in_bulk(
    page, screenshot, alice, dovecot, synced_account
):
    _log_in(page)
    boxes = _rows(page).locator(".row-select")
    expect(boxes.first).to_be_visible()
    boxes.nth(0).click()
    boxes.nth(3).click(modifiers=["Shift"])
    expect(page.locator("#bulk-count")).to_have_text("4 selected")
    picked = _rows(page).locator(".row-subject").all_inner_texts()[:4]
    page.get_by_role("button", name="Mark read").click()
    wait_for(
        lambda: all(m.seen for m in Message.objects.filter(subject__in=picked)),
        what="bulk read",
    )
    expect(
        page.locator("#folder-tree .folder", has_text="Inbox").locator(".folder-count")
    ).to_have_text("")
    page.locator("#bulk-actions").get_by_role("button", name="Move to…").click()
    dialog = page.get_by_role("dialog", name="Move 4 messages to…")
    screenshot("mail-ui-move-dialog")
    dialog.get_by_placeholder("Filter folders").fill("webs")
    dialog.get_by_role("button", name="Website").click()
    expect(page.locator("#bulk-actions")).to_be_hidden()
    website = Mailbox.objects.get(account=synced_account, path="Projects/Website")
    wait_for(lambda: website.messages.count() == 5, what="bulk move")
    expect(page.locator("#list-summary")).to_have_text("16 messages")
    expect(_rows(page).first.locator(".row-from")).to_have_text("Alice Example")


def test_the_list_is_windowed_and_loads_as_you_scroll(page, alice):
    inbox = db_inbox(db_account(alice))
    db_messages(inbox, 1200)
    _log_in(page)
    expect(_rows(page).first).to_contain_text("Bulk message 0")
    viewport = page.locator("#list-viewport")
    for _ in range(30):
        viewport.evaluate("v => v.scrollTop = v.scrollHeight")
        page.wait_for_timeout(150)
        if _row(page, "Bulk message 1199").count():
            break
    expect(_row(page, "Bulk message 1199")).to_be_visible()
    assert _rows(page).count() <= 60, "rows out of view must leave the DOM"
    assert page.locator("#list-summary").inner_text() == "1,200 messages"
    viewport.evaluate("v => v.scrollTop = 0")
    expect(_row(page, "Bulk message 0")).to_be_visible()


def test_new_mail_appears_at_the_top_without_a_reload(
    page, alice, dovecot, mail_user, imap_account
):
    dovecot.seed_messages(mail_user, "INBOX", [make_message(subject="First one")])
    sync(imap_account)
    _log_in(page)
    expect(page.locator(".connection")).to_have_attribute("data-state", "open")
    expect(_row(page, "First one")).to_be_visible()
    page.evaluate("window.notReloaded = true")
    dovecot.seed_messages(
        mail_user,
        "INBOX",
        [make_message(subject="Hot off the press", date=timezone.now())],
    )
    sync(imap_account)  # publishes mail.new and mailbox.counts
    expect(_rows(page).first.locator(".row-subject")).to_have_text("Hot off the press")
    expect(page.locator(".toast").last).to_contain_text("Hot off the press")
    expect(
        page.locator("#folder-tree .folder", has_text="Inbox").locator(".folder-count")
    ).to_have_text("2")
    assert page.evaluate("window.notReloaded") is True


def test_conversation_view_groups_a_thread(page, screenshot, alice, synced_account):
    _log_in(page)
    expect(_rows(page).first).to_be_visible()
    page.get_by_role("button", name="Conversation view").click()
    thread = _row(page, "Re: Kickoff: website redesign")
    expect(thread).to_have_count(1)
    expect(thread.locator(".row-count")).to_have_text("3")
    expect(thread.locator(".row-from")).to_contain_text("Priya Raman")
    thread.click()
    reader = page.locator("#reader")
    expect(reader.locator(".thread-size")).to_have_text("3 messages")
    expect(reader.locator(".msg.collapsed")).to_have_count(2)
    # The newest unread message is the one shown in full; the others fold.
    body = page.frame_locator("iframe.msg-frame")
    expect(body.locator("body")).to_contain_text("I booked the big room")
    screenshot("mail-ui-conversation")
    reader.locator(".msg-collapsed", has_text="Alice Example").click()
    expect(body.locator("body")).to_contain_text("I'll bring the sitemap")
    page.get_by_role("button", name="Conversation view").click()
    expect(_row(page, "Re: Kickoff: website redesign")).to_have_count(2)


def test_search_and_filters(page, alice, synced_account):
    _log_in(page)
    expect(_rows(page).first).to_be_visible()
    page.locator("#search").fill("invoi")
    expect(_rows(page)).to_have_count(1)
    expect(_rows(page).first.locator(".row-subject")).to_have_text("Your invoice #2026-1142")
    expect(page.locator("#list-title")).to_have_text("Search: invoi")
    page.locator("#search").fill("")
    page.get_by_role("button", name="Filters").click()
    page.get_by_label("Flagged").check()
    expect(_rows(page)).to_have_count(1)
    expect(_rows(page).first.locator(".row-subject")).to_have_text("Flight confirmation LH 1234")
    page.get_by_label("Flagged").uncheck()
    page.get_by_label("Unread").check()
    expect(_rows(page)).to_have_count(3)
    page.get_by_role("button", name="Clear filters").click()
    page.locator("#search").fill("nothing-matches-this")
    expect(page.locator("#list-empty")).to_contain_text("No messages match")
    # Asking the server too is offered for one folder with a query.
    expect(page.get_by_label("Search the server too")).to_be_enabled()
    page.get_by_label("All folders of this account").check()
    expect(page.get_by_label("Search the server too")).to_be_disabled()


def test_folder_actions_go_to_the_server(
    page, screenshot, alice, dovecot, mail_user, synced_account
):
    _log_in(page)
    tree = page.locator("#folder-tree")
    tree.get_by_role("button", name="Actions for Work").click()
    page.get_by_role("menuitem", name="New folder…").click()
    dialog = page.get_by_role("dialog", name="New folder")
    dialog.get_by_label("Folder name").fill("Receipts")
    dialog.get_by_label("Inside").select_option(label="Projects")
    screenshot("mail-ui-new-folder")
    dialog.get_by_role("button", name="Create folder").click()
    expect(_folder(page, "Receipts")).to_be_visible()
    assert dovecot.doveadm("mailbox", "status", "-u", mail_user, "messages", "Projects/Receipts")
    tree.get_by_role("button", name="Actions for Receipts").click()
    page.get_by_role("menuitem", name="Rename…").click()
    dialog = page.get_by_role("dialog", name="Rename “Receipts”")
    dialog.get_by_label("New name").fill("Bills")
    dialog.get_by_role("button", name="Rename").click()
    expect(_folder(page, "Bills")).to_be_visible()
    _folder(page, "Bills").click()
    expect(page.locator("#list-empty")).to_contain_text("No messages in Bills")
    tree.get_by_role("button", name="Actions for Bills").click()
    page.get_by_role("menuitem", name="Delete…").click()
    page.get_by_role("dialog", name="Delete “Bills”?").get_by_role(
        "button", name="Delete folder"
    ).click()
    expect(_folder(page, "Bills")).to_have_count(0)
    expect(page.locator("#list-title")).to_have_text("Inbox")
    status = dovecot.doveadm(
        "mailbox", "status", "-u", mail_user, "messages", "Projects/Bills", check=False
    )
    assert status.returncode != 0
    # The inbox can be neither renamed nor deleted.
    tree.get_by_role("button", name="Actions for Inbox").click()
    expect(page.get_by_role("menuitem", name="Delete…")).to_be_disabled()


def test_phone_shows_one_pane_at_a_time(page, screenshot, alice, synced_account):
    page.set_viewport_size(PHONE)
    _log_in(page)
    list_pane = page.locator(".list-pane")
    reader = page.locator("#reader")
    expect(list_pane).to_be_visible()
    expect(reader).to_be_hidden()
    expect(page.locator("#folders-pane")).not_to_be_in_viewport()
    expect(_rows(page).first).to_be_visible()
    screenshot("mail-ui-phone-list")
    page.get_by_role("button", name="Show folders").click()
    expect(_folder(page, "Sent")).to_be_in_viewport()
    page.wait_for_function(
        "document.getElementById('folders-pane').getBoundingClientRect().left >= 0"
    )
    screenshot("mail-ui-phone-folders")
    page.locator("#drawer-backdrop").click(position={"x": 370, "y": 400})
    expect(page.locator("#folders-pane")).not_to_be_in_viewport()
    _row(page, "Quarterly report: Q3 numbers").click()
    expect(reader).to_be_visible()
    expect(list_pane).to_be_hidden()
    expect(page.get_by_role("button", name="Back to the list")).to_be_visible()
    expect(page.frame_locator("iframe.msg-frame").locator("h2")).to_have_text("Q3 at a glance")
    screenshot("mail-ui-phone-message")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "nothing may overflow sideways"
    page.get_by_role("button", name="Back to the list").click()
    expect(list_pane).to_be_visible()
    expect(reader).to_be_hidden()


def test_sync_errors_show_above_the_list_with_retry(page, screenshot, alice):
    account = db_account(alice, name="Work")
    db_inbox(account)
    MailAccount.objects.filter(pk=account.pk).update(
        sync_state="error", last_error="[AUTHENTICATIONFAILED] Authentication failed."
    )
    _log_in(page)
    banner = page.locator("#list-banner .sync-error")
    expect(banner).to_contain_text("Sync failed.")
    expect(banner).to_contain_text("[AUTHENTICATIONFAILED] Authentication failed.")
    expect(page.locator("#list-empty")).to_contain_text("No messages in Inbox")
    screenshot("mail-ui-sync-error")
    banner.get_by_role("button", name="Retry").click()
    expect(banner).to_have_count(0)
    expect(page.locator("#folder-tree .account-sync .progress")).to_be_visible()


def test_server_refusals_are_shown_in_their_own_words(page, alice):
    account = db_account(alice)
    inbox = db_inbox(account)
    Message.objects.create(
        account=account, mailbox=inbox, uid=1, subject="Not cached", date=timezone.now()
    )
    _log_in(page)
    _row(page, "Not cached").click()
    expect(page.locator(".toast.failed").last).to_be_visible()
    toast = page.locator(".toast.failed").last.inner_text()
    expect(page.locator(".reader-failed")).to_contain_text(toast)
    # e with no Archive folder says so instead of guessing.
    page.keyboard.press("e")
    expect(page.locator(".toast.failed").last).to_contain_text("has no Archive folder")


def test_a_plain_text_message_from_the_database(page, alice):
    account = db_account(alice)
    message = Message.objects.create(
        account=account,
        mailbox=db_inbox(account),
        uid=1,
        subject="Plain and simple",
        sender_name="Ann",
        sender_email="ann@example.org",
        date=timezone.now(),
        seen=True,
    )
    MessageBody.objects.create(
        message=message, text="Hello <world>,\nread https://example.org/page please.\n> quoted"
    )
    _log_in(page)
    page.goto(f"/mail/?mailbox={message.mailbox_id}&message={message.pk}")
    body = page.frame_locator("iframe.msg-frame")
    expect(body.locator("body")).to_contain_text("Hello <world>,")
    expect(body.get_by_role("link", name="https://example.org/page")).to_have_attribute(
        "target", "_blank"
    )
    expect(page.locator("#reader-source")).to_have_attribute(
        "href", f"/mail/messages/{message.pk}/source/"
    )


def test_the_account_pages(page, screenshot, alice, dovecot, imap_account, celery_worker):
    MailAccount.objects.filter(pk=imap_account.pk).update(
        incoming_security="tls", incoming_port=dovecot.imaps_port
    )
    _log_in(page)
    page.goto("/mail/accounts/")
    card = page.locator(f"#account-{imap_account.pk}")
    card.get_by_role("button", name="Test connection").click()
    result = card.locator(".account-result")
    expect(result).to_contain_text("Could not connect.")
    expect(result.get_by_label("Certificate fingerprint (SHA-256)")).to_have_text(
        dovecot.fingerprint
    )
    screenshot("mail-ui-accounts-untrusted")
    result.get_by_role("button", name="Trust this certificate").click()
    expect(result).to_contain_text("Connection works.")
    imap_account.refresh_from_db()
    assert imap_account.incoming_tls_fingerprint == dovecot.fingerprint
    card.get_by_role("button", name="Sync now").click()
    expect(result.locator("[data-field=state]")).to_have_text("done", timeout=30_000)
    expect(result.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    screenshot("mail-ui-accounts")
    card.get_by_role("link", name="Edit").click()
    expect(page.locator("#id_password")).to_have_value("")
    page.locator("#id_name").fill("Work mail")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".messages")).to_contain_text("Saved Work mail.")
    page.set_viewport_size(PHONE)
    screenshot("mail-ui-accounts-phone")
    page.get_by_role("link", name="Delete").click()
    page.get_by_role("button", name="Remove account").click()
    expect(page.get_by_role("heading", name="No mail accounts yet")).to_be_visible()
    assert not MailAccount.objects.filter(pk=imap_account.pk).exists()


def test_bob_cannot_open_alices_message_frame(page, alice, bob):
    account = db_account(alice)
    message = Message.objects.create(
        account=account, mailbox=db_inbox(account), uid=1, subject="Mine", date=timezone.now()
    )
    MessageBody.objects.create(message=message, html="<p>alice only</p>")
    _log_in(page, "bob", "secret-bob")
    response = page.goto(f"/mail/messages/{message.pk}/body/")
    assert response.status == 404
    assert "alice only" not in page.content()
