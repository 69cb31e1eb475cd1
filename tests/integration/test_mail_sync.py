"""IMAP → PostgreSQL sync against the real Dovecot (tests/peers)."""

import pytest

from mailcore.models import Mailbox, Message, Thread
from mailcore.protocols import imap
from mailcore.sync import BATCH_SIZE, account_sync
from tests.mailfactory import make_message, numbered_messages

pytestmark = pytest.mark.django_db


def _inbox(account) -> Mailbox:
    return account.mailboxes.get(role=Mailbox.Role.INBOX)


def test_folders_keep_their_hierarchy_and_special_use(dovecot, mail_user, imap_account):
    dovecot.create_folder(mail_user, "Projects/2026/Q1")
    dovecot.create_folder(mail_user, "Überweisungen")
    account_sync(account=imap_account)
    boxes = {m.path: m for m in imap_account.mailboxes.all()}
    q1 = boxes["Projects/2026/Q1"]
    assert (q1.name, q1.parent.path, q1.parent.parent.path) == ("Q1", "Projects/2026", "Projects")
    assert boxes["Überweisungen"].parent is None
    roles = {m.role: m.path for m in boxes.values() if m.role}
    assert roles == {
        "inbox": "INBOX",
        "sent": "Sent",
        "drafts": "Drafts",
        "trash": "Trash",
        "junk": "Junk",
        "archive": "Archive",
    }


def test_initial_sync_fills_newest_first_in_batches(dovecot, mail_user, imap_account):
    count = BATCH_SIZE * 2 + 17
    dovecot.seed_messages(mail_user, "INBOX", numbered_messages(count))
    seen_progress = []
    report = account_sync(account=imap_account, progress=lambda d, t: seen_progress.append((d, t)))
    inbox = _inbox(imap_account)
    assert inbox.messages.count() == count
    assert report.new == 0  # an initial fill announces no "new mail"
    assert (inbox.total, inbox.unread) == (count, count)
    assert seen_progress[0] == (BATCH_SIZE, count)  # the newest batch first
    assert seen_progress[-1] == (count, count)
    newest = inbox.messages.order_by("-date").first()
    assert newest.subject == f"Message {count - 1}"
    assert inbox.messages.order_by("uid").first().subject == "Message 0"
    assert inbox.synced_down_to == 0


def test_incremental_sync_picks_up_new_changed_and_expunged(dovecot, mail_user, imap_account):
    dovecot.seed_messages(mail_user, "INBOX", numbered_messages(20))
    account_sync(account=imap_account)
    dovecot.append(mail_user, "INBOX", make_message(subject="Fresh one"))
    dovecot.doveadm(
        "flags", "add", "-u", mail_user, "\\Seen \\Flagged", "mailbox", "INBOX", "uid", "3"
    )
    dovecot.doveadm("expunge", "-u", mail_user, "mailbox", "INBOX", "uid", "5")
    report = account_sync(account=imap_account)
    inbox = _inbox(imap_account)
    assert (report.new, report.changed, report.removed) == (1, 1, 1)
    assert inbox.messages.count() == 20
    assert inbox.messages.filter(subject="Fresh one").exists()
    third = inbox.messages.get(uid=3)
    assert third.seen and third.flagged
    assert not inbox.messages.filter(uid=5).exists()
    assert (inbox.total, inbox.unread) == (20, 19)


def test_a_sync_with_no_changes_selects_nothing_and_changes_nothing(
    dovecot, mail_user, imap_account
):
    dovecot.seed_messages(mail_user, "INBOX", numbered_messages(5))
    account_sync(account=imap_account)
    report = account_sync(account=imap_account)
    assert (report.new, report.changed, report.removed) == (0, 0, 0)


def test_uidvalidity_change_drops_the_cache_without_duplicates(dovecot, mail_user, imap_account):
    dovecot.seed_messages(mail_user, "Lists", numbered_messages(10, prefix="Old"))
    account_sync(account=imap_account)
    lists = imap_account.mailboxes.get(path="Lists")
    old_validity = lists.uidvalidity
    dovecot.doveadm("mailbox", "delete", "-u", mail_user, "Lists")
    dovecot.seed_messages(mail_user, "Lists", numbered_messages(4, prefix="New"))
    account_sync(account=imap_account)
    lists = imap_account.mailboxes.get(path="Lists")
    assert lists.uidvalidity != old_validity
    subjects = sorted(lists.messages.values_list("subject", flat=True))
    assert subjects == ["New 0", "New 1", "New 2", "New 3"]
    assert sorted(lists.messages.values_list("uid", flat=True)) == [1, 2, 3, 4]


def test_non_ascii_and_malformed_messages_are_cached(dovecot, mail_user, imap_account):
    malformed = (
        b"From: =?x-unknown?Q?Mystery?= <m@example.org>\r\n"
        b"Subject: Caf\xc3\xa9 cr\xe8me\r\n"
        b"Content-Type: multipart/mixed; boundary=missing\r\n\r\n"
        b"no boundary ever appears\r\n"
    )
    dovecot.seed_messages(
        mail_user,
        "INBOX",
        [
            make_message(subject="Grüße aus Köln — 東京", sender="Jürgen Groß <j@example.org>"),
            malformed,
        ],
    )
    account_sync(account=imap_account)
    messages = {m.uid: m for m in _inbox(imap_account).messages.all()}
    assert messages[1].subject == "Grüße aus Köln — 東京"
    assert messages[1].sender_name == "Jürgen Groß"
    assert messages[2].sender_email == "m@example.org"
    assert "Caf" in messages[2].subject


def test_a_connection_cut_mid_fetch_resumes_without_duplicates(
    dovecot, mail_user, imap_account, fault_proxy_factory
):
    count = BATCH_SIZE * 3
    dovecot.seed_messages(mail_user, "INBOX", numbered_messages(count))
    proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
    imap_account.incoming_host, imap_account.incoming_port = proxy.host, proxy.port
    imap_account.save()
    proxy.cut_after(400_000, direction="down", once=True)
    with pytest.raises(imap.ImapConnectionError):
        account_sync(account=imap_account)
    inbox = _inbox(imap_account)
    partial = inbox.messages.count()
    assert 0 < partial < count
    assert inbox.synced_down_to > 1
    account_sync(account=imap_account)
    uids = list(inbox.messages.values_list("uid", flat=True))
    assert len(uids) == len(set(uids)) == count


def test_replies_join_the_thread_whichever_arrives_first(dovecot, mail_user, imap_account):
    root = make_message(subject="Lunch?", message_id="<root@example.org>")
    reply = make_message(
        subject="Re: Lunch?", message_id="<r1@example.org>", in_reply_to="<root@example.org>"
    )
    dovecot.seed_messages(mail_user, "INBOX", [reply])  # the reply arrives first
    account_sync(account=imap_account)
    dovecot.seed_messages(mail_user, "Archive", [root])
    dovecot.append(
        mail_user,
        "INBOX",
        make_message(subject="RE: lunch?", message_id="<r2@example.org>"),  # no headers: subject
    )
    account_sync(account=imap_account)
    threads = set(Message.objects.filter(account=imap_account).values_list("thread", flat=True))
    assert len(threads) == 1
    thread = Thread.objects.get(pk=threads.pop())
    assert thread.message_count == 3


def test_folders_renamed_or_deleted_elsewhere_are_picked_up(dovecot, mail_user, imap_account):
    dovecot.seed_messages(mail_user, "Old name", numbered_messages(3))
    dovecot.create_folder(mail_user, "Doomed")
    account_sync(account=imap_account)
    dovecot.doveadm("mailbox", "rename", "-u", mail_user, "Old name", "New name")
    dovecot.doveadm("mailbox", "delete", "-u", mail_user, "Doomed")
    account_sync(account=imap_account)
    paths = set(imap_account.mailboxes.values_list("path", flat=True))
    assert "New name" in paths
    assert not paths & {"Old name", "Doomed"}
    renamed = imap_account.mailboxes.get(path="New name")
    assert (renamed.total, renamed.messages.count()) == (3, 3)
