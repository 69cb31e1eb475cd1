"""The mail pages (Django views, forms, the body frame) — server side, with the test client."""

from __future__ import annotations

import itertools
import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from mailcore import services
from mailcore.models import Attachment, MailAccount, Mailbox, Message, MessageBody
from mailcore.sync import account_sync
from tests.mailfactory import make_message
from webapp.jobs.models import Job

pytestmark = pytest.mark.django_db

_uids = itertools.count(1)
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf000000030101005c2c8e0e0000000049454e44ae426082"
)


def seed_account(owner, **fields) -> MailAccount:
    values = {
        "name": "Home",
        "email_address": f"{owner.username}@example.org",
        "incoming_host": "127.0.0.1",
        "incoming_port": 9,
        "incoming_security": "none",
        "username": owner.username,
        "password": "pw-one",
    }
    return services.account_create(owner=owner, **{**values, **fields})


def seed_inbox(account) -> Mailbox:
    return Mailbox.objects.get_or_create(
        account=account, path="INBOX", defaults={"name": "Inbox", "role": "inbox", "delimiter": "/"}
    )[0]


def seed_message(account, *, html: str = "", text: str = "", subject: str = "Hello") -> Message:
    message = Message.objects.create(
        account=account,
        mailbox=seed_inbox(account),
        uid=next(_uids),
        subject=subject,
        sender_name="Carol",
        sender_email="carol@example.org",
        date=timezone.now(),
        snippet=text[:100],
    )
    MessageBody.objects.create(
        message=message, headers=[["Subject", subject]], text=text, html=html
    )
    return message


FORM = {
    "email_address": "alice@example.org",
    "display_name": "Alice",
    "name": "",
    "incoming_protocol": "imap",
    "incoming_host": "imap.example.org",
    "incoming_security": "tls",
    "incoming_port": "",
    "username": "alice@example.org",
    "password": "pw-one",
    "incoming_tls_fingerprint": "",
    "smtp_host": "smtp.example.org",
    "smtp_security": "tls",
    "smtp_port": "",
    "smtp_username": "",
    "smtp_password": "",
    "smtp_tls_fingerprint": "",
    "pop3_leave_on_server": "on",
}


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


# Pages and access -------------------------------------------------------------------------


def test_url_names():
    assert reverse("mail") == "/mail/"
    assert reverse("mail-accounts") == "/mail/accounts/"
    assert reverse("mail-accounts-add") == "/mail/accounts/add/"
    assert reverse("mail-accounts-edit", args=[3]) == "/mail/accounts/3/"
    assert reverse("mail-body", args=[7]) == "/mail/messages/7/body/"
    # The API router's names are untouched.
    assert reverse("mail-account-detail", args=[3]) == "/api/v1/mail/accounts/3/"


def test_every_mail_page_needs_a_login(client, alice):
    account = seed_account(alice)
    message = seed_message(account, text="hi")
    gets = [
        "/mail/",
        "/mail/accounts/",
        "/mail/accounts/add/",
        f"/mail/accounts/{account.pk}/",
        f"/mail/accounts/{account.pk}/delete/",
        f"/mail/messages/{message.pk}/body/",
        f"/mail/messages/{message.pk}/source/",
    ]
    for path in gets:
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/login/?next="), path
    for action in ["test", "trust", "sync", "delete"]:
        response = client.post(f"/mail/accounts/{account.pk}/{action}/")
        assert response.status_code == 302, action
    assert MailAccount.objects.filter(pk=account.pk).exists()


def test_no_accounts_shows_a_welcome_card(alice_client):
    page = alice_client.get("/mail/").content.decode()
    assert "No mail accounts yet" in page
    assert 'href="/mail/accounts/add/"' in page
    assert "mail-app" not in page


def test_the_mail_page_bootstraps_accounts_but_never_secrets(alice_client, alice):
    seed_account(alice, name="Work <b>", password="pw-very-secret", smtp_password="smtp-secret")
    response = alice_client.get("/mail/?mailbox=5&message=x")
    page = response.content.decode()
    assert response.status_code == 200
    assert 'id="mail-app"' in page
    assert "pw-very-secret" not in page and "smtp-secret" not in page
    assert "Work <b>" not in page  # escaped inside the JSON script
    assert '"mailbox": 5' in page and '"message": null' in page
    assert "/mail/messages/{id}/body/" in page
    nav = re.search(r'<nav class="nav".*?</nav>', page, re.S).group(0)
    assert 'href="/mail/" aria-current="page"' in nav


def test_settings_page_links_to_the_mail_accounts(alice_client):
    page = alice_client.get("/settings/").content.decode()
    assert "Mail accounts" in page
    assert 'href="/mail/accounts/"' in page


# Adding, editing, deleting accounts -------------------------------------------------------


def test_adding_an_account_saves_it_and_starts_its_first_sync(alice_client, alice):
    response = alice_client.post("/mail/accounts/add/", FORM)
    account = MailAccount.objects.get(owner=alice)
    job = Job.objects.get(owner=alice, kind=Job.Kind.MAIL_SYNC)
    assert response.status_code == 302
    assert response["Location"] == f"/mail/?account={account.pk}&job={job.pk}"
    assert account.name == "alice@example.org"  # defaults to the address
    assert (account.incoming_port, account.smtp_port) == (993, 465)  # ports follow security
    assert account.password == "pw-one"
    assert account.smtp_username == "alice@example.org"  # services: SMTP login = incoming
    assert account.smtp_password == "pw-one"
    assert job.state == Job.State.QUEUED


@pytest.mark.parametrize(
    ("security", "smtp_security", "ports"),
    [
        ("starttls", "starttls", (143, 587)),
        ("none", "none", (143, 587)),
        ("tls", "tls", (993, 465)),
    ],
)
def test_ports_follow_the_security_choice(alice_client, alice, security, smtp_security, ports):
    form = {**FORM, "incoming_security": security, "smtp_security": smtp_security}
    assert alice_client.post("/mail/accounts/add/", form).status_code == 302
    account = MailAccount.objects.get(owner=alice)
    assert (account.incoming_port, account.smtp_port) == ports


def test_pop3_is_refused_until_it_is_supported(alice_client, alice):
    form = {**FORM, "incoming_protocol": "pop3", "incoming_security": "tls"}
    response = alice_client.post("/mail/accounts/add/", form)
    assert "POP3 accounts are not supported yet" in str(
        response.context["form"].errors["incoming_protocol"]
    )
    assert not MailAccount.objects.filter(owner=alice).exists()


def test_an_explicit_port_wins(alice_client, alice):
    alice_client.post("/mail/accounts/add/", {**FORM, "incoming_port": "10993"})
    assert MailAccount.objects.get(owner=alice).incoming_port == 10993


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"incoming_host": ""}, "incoming_host", "host name"),
        ({"incoming_host": "imap example.org"}, "incoming_host", "host name or IP"),
        ({"password": ""}, "password", "required"),
        ({"incoming_port": "70000"}, "incoming_port", "65535"),
        ({"email_address": "not-an-address"}, "email_address", "valid email"),
        ({"incoming_tls_fingerprint": "AB:CD"}, "incoming_tls_fingerprint", "SHA-256"),
    ],
)
def test_the_form_refuses_bad_values(alice_client, alice, change, field, message):
    response = alice_client.post("/mail/accounts/add/", {**FORM, **change})
    assert response.status_code == 200
    assert message in str(response.context["form"].errors[field])
    assert 'class="field-error"' in response.content.decode()
    assert not MailAccount.objects.filter(owner=alice).exists()
    assert not Job.objects.filter(owner=alice).exists()


def test_a_fingerprint_is_normalised(alice_client, alice):
    fingerprint = ":".join(["ab"] * 32)
    alice_client.post("/mail/accounts/add/", {**FORM, "incoming_tls_fingerprint": fingerprint})
    assert MailAccount.objects.get(owner=alice).incoming_tls_fingerprint == fingerprint.upper()


def _edit_form(account, **change) -> dict:
    form = {name: getattr(account, name) for name in FORM}
    form.update(password="", smtp_password="", smtp_username="", pop3_leave_on_server="on")
    form.update(change)
    return form


def test_editing_keeps_blank_passwords_and_never_shows_them(alice_client, alice):
    account = seed_account(alice, password="pw-never-shown")
    page = alice_client.get(f"/mail/accounts/{account.pk}/").content.decode()
    assert "pw-never-shown" not in page
    assert "Leave blank to keep the saved one." in page
    response = alice_client.post(
        f"/mail/accounts/{account.pk}/", _edit_form(account, name="Renamed")
    )
    assert response.status_code == 302
    account.refresh_from_db()
    assert account.name == "Renamed"
    assert account.password == "pw-never-shown"
    assert account.smtp_password == "pw-never-shown"


def test_a_new_password_carries_the_copied_smtp_password_along(alice_client, alice):
    account = seed_account(alice)  # SMTP login copied from the incoming one
    alice_client.post(f"/mail/accounts/{account.pk}/", _edit_form(account, password="pw-two"))
    account.refresh_from_db()
    assert (account.password, account.smtp_password) == ("pw-two", "pw-two")


def test_a_separate_smtp_login_is_kept(alice_client, alice):
    account = seed_account(alice, smtp_username="mailer", smtp_password="smtp-own")
    form = _edit_form(account, password="pw-two", smtp_username="mailer")
    alice_client.post(f"/mail/accounts/{account.pk}/", form)
    account.refresh_from_db()
    assert account.password == "pw-two"
    assert (account.smtp_username, account.smtp_password) == ("mailer", "smtp-own")


def test_deleting_asks_first(alice_client, alice):
    account = seed_account(alice)
    page = alice_client.get(f"/mail/accounts/{account.pk}/delete/").content.decode()
    assert "Remove Home?" in page
    assert "stays on the server" in page
    assert MailAccount.objects.filter(pk=account.pk).exists()
    response = alice_client.post(f"/mail/accounts/{account.pk}/delete/")
    assert response.status_code == 302
    assert not MailAccount.objects.filter(pk=account.pk).exists()


def test_the_account_list(alice_client, alice):
    account = seed_account(alice, name="Work")
    MailAccount.objects.filter(pk=account.pk).update(
        sync_state="error", last_error="NO [AUTH] nope"
    )
    page = alice_client.get("/mail/accounts/").content.decode()
    assert "Work" in page and "127.0.0.1:9" in page
    assert "Last sync failed:" in page and "NO [AUTH] nope" in page
    assert f'hx-post="/mail/accounts/{account.pk}/test/"' in page


def test_forms_need_the_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    account = seed_account(alice)
    assert client.post("/mail/accounts/add/", FORM).status_code == 403
    assert client.post(f"/mail/accounts/{account.pk}/delete/").status_code == 403
    assert client.post(f"/mail/accounts/{account.pk}/sync/").status_code == 403


def test_sync_now_returns_a_live_job_row(alice_client, alice):
    account = seed_account(alice)
    response = alice_client.post(f"/mail/accounts/{account.pk}/sync/", HTTP_HX_REQUEST="true")
    job = Job.objects.get(owner=alice, kind=Job.Kind.MAIL_SYNC)
    page = response.content.decode()
    assert f'data-job-id="{job.pk}"' in page
    assert 'role="progressbar"' in page and 'data-field="state"' in page
    # Without htmx: back to the list with a note.
    response = alice_client.post(f"/mail/accounts/{account.pk}/sync/", follow=True)
    assert "Sync of Home started." in response.content.decode()


# Another user's objects -------------------------------------------------------------------


def test_bob_gets_404_for_alices_account_pages_and_messages(client, alice, bob):
    account = seed_account(alice)
    message = seed_message(account, html="<p>Private</p>")
    client.force_login(bob)
    for path in [
        f"/mail/accounts/{account.pk}/",
        f"/mail/accounts/{account.pk}/delete/",
        f"/mail/messages/{message.pk}/body/",
        f"/mail/messages/{message.pk}/source/",
    ]:
        assert client.get(path).status_code == 404, path
    for action in ["test", "trust", "sync", "delete"]:
        data = {"fingerprint": ":".join(["AB"] * 32)}
        assert client.post(f"/mail/accounts/{account.pk}/{action}/", data).status_code == 404
    assert client.post(f"/mail/accounts/{account.pk}/", FORM).status_code == 404
    account.refresh_from_db()
    assert account.name == "Home" and account.incoming_tls_fingerprint == ""
    assert not Job.objects.filter(owner=bob).exists()
    assert "Home" not in client.get("/mail/").content.decode()


# The body frame ---------------------------------------------------------------------------

HOSTILE = """
<p onclick="alert(1)">Hello <b>there</b></p>
<script>alert(2)</script>
<img src="https://tracker.example/pixel.png" alt="tracker">
<img src="cid:logo@example">
<a href="javascript:alert(3)">bad</a> <a href="https://example.org/ok">ok</a>
<iframe src="https://evil.example/"></iframe>
"""


def test_the_body_frame_is_sanitized_with_a_strict_policy(alice_client, alice):
    message = seed_message(seed_account(alice), html=HOSTILE)
    Attachment.objects.create(
        message=message, part="2", filename="logo.png", content_type="image/png",
        size=len(PIXEL), content_id="logo@example", inline=True, data=PIXEL,
    )  # fmt: skip
    response = alice_client.get(f"/mail/messages/{message.pk}/body/")
    page = response.content.decode()
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    csp = response["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "style-src 'unsafe-inline'" in csp
    assert "img-src data:;" in csp and "https:" not in csp
    assert "script-src" not in csp and "frame-ancestors 'self'" in csp
    assert response["X-Frame-Options"] == "SAMEORIGIN"
    assert response["Cache-Control"] == "private"
    assert "<script" not in page and "alert(2)" not in page
    assert "onclick" not in page and "javascript:" not in page and "<iframe" not in page
    assert ' src="https://tracker.example' not in page  # held back, not loaded
    assert 'src="data:image/png;base64,' in page  # the inline part, from our own copy
    assert 'href="https://example.org/ok"' in page
    assert "<b>there</b>" in page


def test_remote_images_only_when_asked(alice_client, alice):
    message = seed_message(seed_account(alice), html=HOSTILE)
    response = alice_client.get(f"/mail/messages/{message.pk}/body/?images=1")
    assert 'src="https://tracker.example/pixel.png"' in response.content.decode()
    assert "img-src data: https:;" in response["Content-Security-Policy"]
    assert "<script" not in response.content.decode()


def test_plain_text_is_escaped_with_links(alice_client, alice):
    text = "Hi <b>Alice</b> & co,\nsee https://example.org/a?b=1\n> quoted line"
    message = seed_message(seed_account(alice), text=text)
    response = alice_client.get(f"/mail/messages/{message.pk}/body/")
    page = response.content.decode()
    assert "Hi &lt;b&gt;Alice&lt;/b&gt; &amp; co" in page
    assert '<a href="https://example.org/a?b=1"' in page
    assert "<blockquote" in page and "quoted line" in page
    assert "default-src 'none'" in response["Content-Security-Policy"]


def test_a_message_without_text(alice_client, alice):
    message = seed_message(seed_account(alice))
    page = alice_client.get(f"/mail/messages/{message.pk}/body/").content.decode()
    assert "This message has no text." in page


def test_the_main_page_never_embeds_message_html(alice_client, alice):
    seed_message(seed_account(alice), html="<p>SECRET-BODY-MARKER</p>")
    assert "SECRET-BODY-MARKER" not in alice_client.get("/mail/").content.decode()


# Against the real server ------------------------------------------------------------------


def test_test_connection_shows_the_servers_words(alice_client, imap_account):
    imap_account.password = "wrong"
    imap_account.save()
    response = alice_client.post(f"/mail/accounts/{imap_account.pk}/test/", HTTP_HX_REQUEST="true")
    page = response.content.decode()
    assert response.status_code == 200
    assert "Could not connect." in page and "Authentication failed" in page
    assert "<html" not in page  # a fragment for htmx


def test_test_connection_succeeds_without_script_too(alice_client, imap_account):
    response = alice_client.post(f"/mail/accounts/{imap_account.pk}/test/")
    page = response.content.decode()
    assert "Connection works." in page
    assert "<html" in page  # the whole account list, with the result in place


def test_an_untrusted_certificate_can_be_trusted(alice_client, imap_account, dovecot):
    imap_account.incoming_security, imap_account.incoming_port = "tls", dovecot.imaps_port
    imap_account.save()
    url = f"/mail/accounts/{imap_account.pk}/"
    page = alice_client.post(url + "test/", HTTP_HX_REQUEST="true").content.decode()
    assert dovecot.fingerprint in page
    assert "Trust this certificate" in page
    response = alice_client.post(
        url + "trust/", {"fingerprint": dovecot.fingerprint}, HTTP_HX_REQUEST="true"
    )
    imap_account.refresh_from_db()
    assert imap_account.incoming_tls_fingerprint == dovecot.fingerprint
    assert "Connection works." in response.content.decode()


def test_a_bad_fingerprint_is_not_saved(alice_client, imap_account):
    response = alice_client.post(
        f"/mail/accounts/{imap_account.pk}/trust/", {"fingerprint": "nope"}, HTTP_HX_REQUEST="true"
    )
    assert "SHA-256" in response.content.decode()
    imap_account.refresh_from_db()
    assert imap_account.incoming_tls_fingerprint == ""


def test_body_and_source_come_from_the_server(alice_client, dovecot, mail_user, imap_account):
    raw = make_message(subject="From the server", body="Line one <tag>\nhttps://example.org/x")
    dovecot.seed_messages(mail_user, "INBOX", [raw])
    account_sync(account=imap_account)
    message = Message.objects.get(account=imap_account)
    body = alice_client.get(f"/mail/messages/{message.pk}/body/")
    assert body.status_code == 200
    assert "Line one &lt;tag&gt;" in body.content.decode()
    source = alice_client.get(f"/mail/messages/{message.pk}/source/")
    assert source["Content-Type"] == "text/plain; charset=utf-8"
    assert "Subject: From the server" in source.content.decode()
    assert "sandbox" in source["Content-Security-Policy"]


def test_an_unreachable_server_is_a_502_in_the_frame(alice_client, alice):
    account = seed_account(alice)  # port 9: nothing listens
    message = Message.objects.create(
        account=account, mailbox=seed_inbox(account), uid=1, date=timezone.now()
    )
    response = alice_client.get(f"/mail/messages/{message.pk}/body/")
    assert response.status_code == 502
    assert "Could not load this message from the server" in response.content.decode()
    assert "default-src 'none'" in response["Content-Security-Policy"]
