"""The IMAP engine (mailcore.protocols.imap) against the real private Dovecot.

The Dovecot fixture is shared by the whole session: every test works in its own
uuid-named folders and never assumes INBOX is empty. Capabilities are sometimes
narrowed on a live session (``session.capabilities -= {...}``) to drive the code
paths used for servers without PREVIEW, BINARY, MOVE, LIST-STATUS or QRESYNC.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import imapclient
import pytest

from mailcore.protocols.imap import (
    Address,
    Folder,
    ImapAuthError,
    ImapCertificateError,
    ImapCommandError,
    ImapConfig,
    ImapConnectionError,
    ImapSession,
    Security,
    _assign_name_roles,
    check_login,
)
from tests.peers.dovecot import DovecotServer

MAIL = Path(__file__).resolve().parent.parent / "data" / "mail"
ATTACHMENT_PAYLOAD = bytes(range(256)) * 4


def config(dovecot: DovecotServer, **overrides: object) -> ImapConfig:
    values: dict = {
        "host": dovecot.host,
        "port": dovecot.imap_port,
        "security": Security.NONE,
        "username": "alice",
        "password": "secret-alice",
        "timeout": 10.0,
    }
    values.update(overrides)
    return ImapConfig(**values)


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def message(
    subject: str = "Hello",
    body: str = "Just a plain body.",
    *,
    sender: str = "Alice Example <alice@example.org>",
    to: str = "Bob <bob@example.org>",
    content_type: str = "text/plain; charset=utf-8",
    extra: str = "",
    message_id: str | None = None,
) -> bytes:
    mid = message_id or f"<{uuid.uuid4().hex}@example.org>"
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Date: Mon, 04 Mar 2024 10:00:00 +0000\r\nMessage-ID: {mid}\r\n{extra}"
        f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        f"{body}\r\n"
    ).encode()


@pytest.fixture
def session(dovecot: DovecotServer) -> Iterator[ImapSession]:
    with ImapSession(config(dovecot)) as imap:
        yield imap


@pytest.fixture
def folder(dovecot: DovecotServer) -> str:
    name = unique()
    dovecot.create_folder("alice", name)
    return name


def seed(dovecot: DovecotServer, folder: str, *raws: bytes, flags: list[str] | None = None) -> None:
    dovecot.seed_messages("alice", folder, list(raws), flags=flags)


def mailbox_names(dovecot: DovecotServer, *options: str) -> set[str]:
    listing = dovecot.doveadm("mailbox", "list", *options, "-u", "alice")
    return set(listing.stdout.splitlines())


# --------------------------------------------------------------------------- login and TLS


def test_login_plain_reports_capabilities_after_enable(dovecot: DovecotServer) -> None:
    with ImapSession(config(dovecot)) as imap:
        assert {"IMAP4REV1", "CONDSTORE", "QRESYNC", "UIDPLUS", "MOVE"} <= imap.capabilities
        assert all(cap == cap.upper() for cap in imap.capabilities)
        imap.noop()


def test_login_starttls_with_ca_file(dovecot: DovecotServer) -> None:
    capabilities = check_login(
        config(dovecot, security=Security.STARTTLS, ca_file=str(dovecot.cert_path))
    )
    assert "IMAP4REV1" in capabilities
    assert "STARTTLS" not in capabilities  # post-TLS capabilities, not the greeting's


def test_login_tls_on_imaps_port_with_ca_file(dovecot: DovecotServer) -> None:
    cfg = config(dovecot, port=dovecot.imaps_port, security="tls", ca_file=str(dovecot.cert_path))
    with ImapSession(cfg) as imap:
        assert imap.list_folders()[0].path == "INBOX"


def test_login_with_non_ascii_password_goes_as_literal(dovecot: DovecotServer) -> None:
    user = unique("u")
    dovecot.add_user(user, 'pässwörd "quoted" \\ ok')
    assert "IMAP4REV1" in check_login(
        config(dovecot, username=user, password='pässwörd "quoted" \\ ok')
    )


def test_wrong_password_raises_auth_error_with_server_text(dovecot: DovecotServer) -> None:
    with pytest.raises(ImapAuthError) as caught:
        ImapSession(config(dovecot, password="wrong"))
    assert caught.value.reply == "[AUTHENTICATIONFAILED] Authentication failed."


@pytest.mark.parametrize("security", [Security.TLS, Security.STARTTLS])
def test_untrusted_certificate_then_trusted_by_fingerprint(
    dovecot: DovecotServer, security: Security
) -> None:
    port = dovecot.imaps_port if security == Security.TLS else dovecot.imap_port
    with pytest.raises(ImapCertificateError) as caught:
        check_login(config(dovecot, port=port, security=security))
    assert caught.value.fingerprint == dovecot.fingerprint
    assert "certificate" in caught.value.reply.lower()

    pinned = config(dovecot, port=port, security=security, tls_fingerprint=dovecot.fingerprint)
    assert "IMAP4REV1" in check_login(pinned)
    # Pins are compared loosely (case, separators), as users paste them.
    loose = dovecot.fingerprint.replace(":", "").lower()
    assert "IMAP4REV1" in check_login(
        config(dovecot, port=port, security=security, tls_fingerprint=loose)
    )


def test_wrong_fingerprint_is_refused_even_with_a_trusting_ca(dovecot: DovecotServer) -> None:
    wrong = ":".join(["AB"] * 32)
    cfg = config(
        dovecot,
        port=dovecot.imaps_port,
        security=Security.TLS,
        tls_fingerprint=wrong,
        ca_file=str(dovecot.cert_path),
    )
    with pytest.raises(ImapCertificateError) as caught:
        check_login(cfg)
    assert caught.value.fingerprint == dovecot.fingerprint


def test_invalid_config_values_raise_value_error(dovecot: DovecotServer) -> None:
    with pytest.raises(ValueError, match="security"):
        ImapSession(config(dovecot, security="ssl"))
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        ImapSession(config(dovecot, password="a\r\nb"))


# --------------------------------------------------------------------------- folders


def test_folders_inbox_first_with_special_use_roles(session: ImapSession) -> None:
    folders = session.list_folders()
    assert folders[0].path == "INBOX"
    assert folders[0].role == "inbox"
    roles = {f.role: f.path for f in folders if f.role}
    assert roles == {
        "inbox": "INBOX",
        "sent": "Sent",
        "drafts": "Drafts",
        "trash": "Trash",
        "junk": "Junk",
        "archive": "Archive",
    }
    sent = next(f for f in folders if f.path == "Sent")
    assert "\\Sent" in sent.flags
    assert sent.selectable
    assert sent.parent is None
    assert sent.delimiter == "/"
    assert len({f.path for f in folders}) == len(folders)


def test_well_known_names_get_roles_only_when_special_use_is_missing() -> None:
    def make(path: str, role: str | None = None) -> Folder:
        parent, _, name = path.rpartition(".")
        return Folder(path, name, parent or None, ".", (), role, True)

    folders = _assign_name_roles(
        [
            make("INBOX", "inbox"),
            make("INBOX.Sent Items"),
            make("Sent Messages"),
            make("INBOX.Deleted Messages"),
            make("Papierkorb"),
            make("SPAM"),
            make("Projects.Archive"),
            make("Entwürfe", "drafts"),
            make("Drafts"),
        ]
    )
    roles = {f.path: f.role for f in folders if f.role}
    assert roles == {
        "INBOX": "inbox",
        "Sent Messages": "sent",  # top-level beats INBOX.Sent Items
        "Papierkorb": "trash",
        "SPAM": "junk",
        "Entwürfe": "drafts",  # SPECIAL-USE wins; "Drafts" gets no second role
    }


def test_create_nested_rename_delete_with_subscriptions(
    session: ImapSession, dovecot: DovecotServer
) -> None:
    base = unique("tree")
    session.create_folder(f"{base}/Sub/Deep")
    by_path = {f.path: f for f in session.list_folders()}
    deep = by_path[f"{base}/Sub/Deep"]
    assert (deep.name, deep.parent, deep.delimiter) == ("Deep", f"{base}/Sub", "/")
    assert by_path[f"{base}/Sub"].parent == base
    assert f"{base}/Sub/Deep" in mailbox_names(dovecot, "-s")

    session.rename_folder(f"{base}/Sub/Deep", f"{base}/Renamed")
    paths = {f.path for f in session.list_folders()}
    assert f"{base}/Renamed" in paths
    assert f"{base}/Sub/Deep" not in paths
    subscribed = mailbox_names(dovecot, "-s")
    assert f"{base}/Renamed" in subscribed
    assert f"{base}/Sub/Deep" not in subscribed

    session.create_folder(f"{base}/Sub/Child")
    assert not by_path[f"{base}/Sub"].selectable  # Maildir: an implicit \Noselect parent
    session.rename_folder(f"{base}/Sub", f"{base}/Moved")  # children's subscriptions follow
    subscribed = {name for name in mailbox_names(dovecot, "-s") if name.startswith(base)}
    assert subscribed == {f"{base}/Renamed", f"{base}/Moved/Child"}

    session.delete_folder(f"{base}/Renamed")
    assert f"{base}/Renamed" not in {f.path for f in session.list_folders()}
    assert f"{base}/Renamed" not in mailbox_names(dovecot, "-s")


def test_non_ascii_folder_name_round_trips(session: ImapSession, dovecot: DovecotServer) -> None:
    path = f"Überweisungen {uuid.uuid4().hex[:6]} & Co ☕/Café"
    session.create_folder(path)
    assert path in mailbox_names(dovecot)  # doveadm shows the decoded UTF-8 name
    assert path in {f.path for f in session.list_folders()}
    uid = session.append(path, message("in a non-ASCII folder"))
    assert session.select(path).exists == 1
    assert session.uids() == [uid]
    assert path in session.folder_statuses()
    session.rename_folder(path, path + " ✓")
    session.delete_folder(path + " ✓")
    assert path + " ✓" not in mailbox_names(dovecot)


def test_command_errors_carry_the_server_text(session: ImapSession, folder: str) -> None:
    with pytest.raises(ImapCommandError) as exists:
        session.create_folder(folder)
    assert "[ALREADYEXISTS]" in exists.value.reply
    with pytest.raises(ImapCommandError) as missing:
        session.select(unique("missing"))
    assert "doesn't exist" in missing.value.reply
    session.noop()  # the session survives command errors


def test_user_input_with_cr_lf_nul_or_bad_uids_is_refused(
    session: ImapSession, folder: str
) -> None:
    for bad in ("evil\r\nA1 DELETE INBOX", "line\nfeed", "nul\0byte", ""):
        with pytest.raises(ValueError):
            session.create_folder(bad)
    with pytest.raises(ValueError):
        session.select("x\r\n")
    session.select(folder)
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        session.search(text="a\r\nb")
    for uids in ([0], [-3], [True], ["5"], [1.5], "12"):
        with pytest.raises(ValueError):
            session.set_flags(uids, add=["\\Seen"])  # type: ignore[arg-type]
    for flag in ("two words", "(paren", '"quoted"', "\\Seen\r\n"):
        with pytest.raises(ValueError):
            session.set_flags([1], add=[flag])
    with pytest.raises(ValueError):
        session.fetch_part(1, "1; DELETE", "7bit")
    session.noop()


# --------------------------------------------------------------------------- status


def test_statuses_with_and_without_list_status(
    session: ImapSession, dovecot: DovecotServer, folder: str
) -> None:
    seed(dovecot, folder, message("one"), message("two"))
    seed(dovecot, folder, message("three"), flags=["\\Seen"])
    dovecot.create_folder("alice", f"{folder}/child")

    status = session.folder_status(folder)
    assert (status.messages, status.unseen, status.uidnext) == (3, 2, 4)
    assert status.uidvalidity > 0
    assert status.highestmodseq is not None and status.highestmodseq > 0

    statuses = session.folder_statuses()
    assert statuses[folder] == status
    assert "INBOX" in statuses
    selectable = {f.path for f in session.list_folders() if f.selectable}
    assert set(statuses) == selectable

    session.capabilities = session.capabilities - {"LIST-STATUS"}
    assert session.folder_statuses() == statuses  # pipelined STATUS, same answer


# --------------------------------------------------------------------------- summaries


@pytest.fixture
def varied(dovecot: DovecotServer, folder: str) -> dict[str, int]:
    """A folder with the awkward messages; returns name -> uid."""
    raws = {
        "plain": message(
            "=?utf-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=",
            "Hallo Welt,\r\n\r\n  this   is the\tbody with Grüße.",
            sender="=?iso-8859-1?Q?J=F6rg?= <joerg@example.org>",
            to='"Müller, Hans" <hans@example.org>, plain@example.org',
        ),
        "latin1": message("=?ISO-8859-1?B?U2No9m5lIEdy/N9l?= und =?utf-8?B?w6Q=?="),
        "split": message("=?utf-8?B?w6==?= =?utf-8?B?vA==?= split", sender="<nobody@example.org>"),
        "attachment": (MAIL / "attachment-rfc2231.eml").read_bytes(),
        "malformed": (MAIL / "malformed.eml").read_bytes(),
        "html": (MAIL / "html-related.eml").read_bytes(),
        "nosubject": b"From: x@example.org\r\n\r\nno headers to speak of\r\n",
        "nofrom": b"Subject: orphan\r\nDate: not a date at all\r\n\r\nwho sent this?\r\n",
        "forward": FORWARD,
    }
    seed(dovecot, folder, *raws.values())
    return {name: uid for uid, name in enumerate(raws, 1)}


def test_summaries_decode_headers_addresses_and_threading(
    session: ImapSession, folder: str, varied: dict[str, int]
) -> None:
    session.select(folder)
    summaries = {s.uid: s for s in session.fetch_summaries(session.uids())}
    assert len(summaries) == len(varied)

    plain = summaries[varied["plain"]]
    assert plain.subject == "Grüße aus Köln"
    assert plain.sender == Address("Jörg", "joerg@example.org")
    assert plain.to == (
        Address("Müller, Hans", "hans@example.org"),
        Address("", "plain@example.org"),
    )
    assert plain.reply_to == (Address("Jörg", "joerg@example.org"),)  # defaults to From
    assert plain.date == datetime(2024, 3, 4, 10, 0, tzinfo=UTC)
    assert plain.internaldate.tzinfo is not None
    assert plain.modseq is not None and plain.modseq > 0
    assert plain.message_id.startswith("<") and plain.message_id.endswith("@example.org>")
    assert plain.flags == frozenset()
    assert plain.snippet == "Hallo Welt, this is the body with Grüße."
    assert not plain.has_attachments
    assert plain.bodystructure["part"] == "1"

    assert summaries[varied["latin1"]].subject == "Schöne Grüße und ä"
    assert summaries[varied["split"]].subject == "ü split"  # one character over two words
    assert summaries[varied["split"]].sender == Address("", "nobody@example.org")

    att = summaries[varied["attachment"]]
    assert att.subject == "Rates € for 2024"
    assert att.date == datetime(2024, 3, 5, 14, 30, tzinfo=timezone(timedelta(hours=1)))
    assert att.in_reply_to == "<parent@example.org>"
    assert att.references == ("<root@example.org>", "<parent@example.org>")
    assert att.cc == tuple(Address("", f"{x}@example.org") for x in "abc")  # group syntax
    assert att.reply_to == (Address("", "replies@example.org"),)

    nofrom = summaries[varied["nofrom"]]
    assert (nofrom.sender, nofrom.reply_to, nofrom.date) == (None, (), None)
    assert nofrom.subject == "orphan"

    nosubject = summaries[varied["nosubject"]]
    assert (nosubject.subject, nosubject.date, nosubject.message_id) == ("", None, "")
    assert nosubject.to == ()
    assert nosubject.snippet == "no headers to speak of"


def test_attachment_bodystructure_filename_and_exact_part_bytes(
    session: ImapSession, folder: str, varied: dict[str, int]
) -> None:
    session.select(folder)
    uid = varied["attachment"]
    (summary,) = session.fetch_summaries([uid])
    assert summary.has_attachments
    tree = summary.bodystructure
    assert (tree["part"], tree["type"], tree["subtype"]) == ("", "multipart", "mixed")
    assert tree["params"]["boundary"] == "outer"
    text, attachment = tree["children"]
    assert text == {
        "part": "1",
        "type": "text",
        "subtype": "plain",
        "params": {"charset": "utf-8"},
        "id": None,
        "encoding": "quoted-printable",
        "size": text["size"],
        "disposition": None,
        "filename": None,
        "children": [],
    }
    assert attachment["part"] == "2"
    assert attachment["disposition"] == "attachment"
    assert attachment["filename"] == "€ rates ü.bin"  # RFC 2231, continued
    assert attachment["params"]["name"] == "€ rates ü.bin"
    assert attachment["encoding"] == "base64"
    assert summary.snippet == "Die Preise für 2024 sind im Anhang."

    assert session.fetch_part(uid, "2", "base64") == ATTACHMENT_PAYLOAD  # BINARY.PEEK
    assert (
        session.fetch_part(uid, "1", "quoted-printable")
        == "Die Preise für 2024 sind im Anhang.".encode()
    )
    session.capabilities = session.capabilities - {"BINARY"}
    assert session.fetch_part(uid, "2", "base64") == ATTACHMENT_PAYLOAD  # own decoding
    assert session.fetch_part(uid, "1", "quoted-printable").startswith("Die Preise für".encode())
    assert "\\Seen" not in session.fetch_summaries([uid])[0].flags  # PEEK only


FORWARD = (
    b"From: fwd@example.org\r\nSubject: Fwd: inner\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n--o\r\n'
    b"Content-Type: text/plain\r\n\r\nSee below.\r\n--o\r\n"
    b"Content-Type: message/rfc822\r\n\r\n"
    b"From: inner@example.org\r\nSubject: inner\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="i"\r\n\r\n--i\r\n'
    b"Content-Type: text/plain\r\n\r\ninner plain\r\n--i\r\n"
    b"Content-Type: text/html\r\n\r\n<p>inner html</p>\r\n--i--\r\n"
    b"--o--\r\n"
)


def test_attached_message_part_numbers_match_the_server(
    session: ImapSession, folder: str, varied: dict[str, int]
) -> None:
    session.select(folder)
    uid = varied["forward"]
    (summary,) = session.fetch_summaries([uid])
    assert summary.has_attachments
    assert summary.snippet == "See below."
    forwarded = summary.bodystructure["children"][1]
    assert (forwarded["part"], forwarded["type"], forwarded["subtype"]) == (
        "2",
        "message",
        "rfc822",
    )
    (inner,) = forwarded["children"]
    assert (inner["part"], inner["subtype"]) == ("2.TEXT", "alternative")
    assert [child["part"] for child in inner["children"]] == ["2.1", "2.2"]
    assert session.fetch_part(uid, "2.1", "7bit") == b"inner plain"
    assert session.fetch_part(uid, "2.2", "7bit") == b"<p>inner html</p>"


def test_html_only_message_with_inline_image(
    session: ImapSession, folder: str, varied: dict[str, int]
) -> None:
    session.select(folder)
    (summary,) = session.fetch_summaries([varied["html"]])
    assert summary.subject == "Schöne Grüße"
    # Dovecot's PREVIEW keeps the <title> and breaks words at </b>.
    assert "Hallo & willkommen zur Käse" in summary.snippet
    assert "color" not in summary.snippet
    session.capabilities = session.capabilities - {"PREVIEW"}
    (summary,) = session.fetch_summaries([varied["html"]])
    assert summary.snippet == "Hallo & willkommen zur Käse-Auswahl!"  # our own html-to-text
    related = summary.bodystructure
    assert related["subtype"] == "related"
    image = related["children"][1]
    assert (image["type"], image["id"], image["filename"]) == ("image", "<logo@x>", "logo-ü.png")
    assert not summary.has_attachments  # an inline image of the HTML body


def test_malformed_message_is_still_summarised(
    session: ImapSession, folder: str, varied: dict[str, int]
) -> None:
    session.select(folder)
    (summary,) = session.fetch_summaries([varied["malformed"]])
    assert summary.date is None
    assert "caf" in summary.subject  # unknown charset and 8-bit bytes: best effort
    assert summary.subject.startswith("Hall")
    assert summary.sender is not None
    assert summary.sender.email == "broken@example.org"
    assert summary.sender.name.startswith("Broken")
    assert summary.to == ()  # "undisclosed-recipients:;" is an empty group
    assert summary.message_id == "<malformed-1@example.org>"
    assert isinstance(summary.snippet, str)


def test_snippets_without_preview_come_from_the_text_part(
    session: ImapSession, folder: str, varied: dict[str, int]
) -> None:
    session.select(folder)
    with_preview = {s.uid: s.snippet for s in session.fetch_summaries(list(varied.values()))}
    session.capabilities = session.capabilities - {"PREVIEW"}
    without = {s.uid: s.snippet for s in session.fetch_summaries(list(varied.values()))}
    for name in ("plain", "attachment", "nosubject", "latin1", "forward"):
        uid = varied[name]
        assert without[uid] == with_preview[uid], name


def test_summaries_match_imapclients_parse(
    session: ImapSession, dovecot: DovecotServer, folder: str, varied: dict[str, int]
) -> None:
    """Cross-check the hand-written tokenizer with IMAPClient's parser on real responses."""
    seed(dovecot, folder, *generated_messages(40))
    session.select(folder)
    ours = {s.uid: s for s in session.fetch_summaries(session.uids())}
    with imapclient.IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False) as client:
        client.normalise_times = False
        client.login("alice", "secret-alice")
        client.select_folder(folder, readonly=True)
        theirs = client.fetch(
            client.search(), ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE"]
        )
    assert set(theirs) == set(ours)
    for uid, data in theirs.items():
        summary = ours[uid]
        envelope = data[b"ENVELOPE"]
        assert summary.size == data[b"RFC822.SIZE"]
        assert summary.internaldate == data[b"INTERNALDATE"]
        assert summary.flags == {f.decode() for f in data[b"FLAGS"]} - {"\\Recent"}
        assert summary.message_id == (envelope.message_id or b"").decode()
        assert [a.email for a in summary.to] == [
            f"{a.mailbox.decode()}@{a.host.decode()}" for a in envelope.to or () if a.host
        ]
        assert leaves(summary.bodystructure) == client_leaves(data[b"BODYSTRUCTURE"])


def leaves(node: dict) -> list[tuple[str, str, int]]:
    if node["children"] and node["type"] == "multipart":
        return [leaf for child in node["children"] for leaf in leaves(child)]
    return [(node["type"], node["subtype"], node["size"])]


def client_leaves(body: object) -> list[tuple[str, str, int]]:
    if body.is_multipart:  # type: ignore[attr-defined]
        return [leaf for child in body[0] for leaf in client_leaves(child)]  # type: ignore[index]
    return [(body[0].decode().lower(), body[1].decode().lower(), body[6])]  # type: ignore[index]


# --------------------------------------------------------------------------- flags and changes


def test_set_flags_and_changes_since_modseq(
    session: ImapSession, dovecot: DovecotServer, folder: str
) -> None:
    seed(dovecot, folder, *(message(f"m{i}") for i in range(4)))
    before = session.select(folder, readonly=False)
    assert before.exists == 4
    assert before.highestmodseq is not None
    session.set_flags([1, 3], add=["\\Seen", "\\Flagged", "$Forwarded"])
    session.set_flags([3], remove=["\\Flagged"])

    changes = session.changes_since(before.highestmodseq)
    assert changes.vanished == []
    assert {c.uid: c.flags for c in changes.flags} == {
        1: {"\\Seen", "\\Flagged", "$Forwarded"},
        3: {"\\Seen", "$Forwarded"},
    }
    assert all(c.modseq and c.modseq > before.highestmodseq for c in changes.flags)
    assert session.search(flagged=True) == [1]
    assert session.search(unseen=True) == [2, 4]

    everything = {c.uid: c.flags for c in session.all_flags()}
    assert everything == {
        1: changes.flags[0].flags,
        2: set(),
        3: {"\\Seen", "$Forwarded"},
        4: set(),
    }


def test_empty_folder(session: ImapSession, folder: str) -> None:
    selected = session.select(folder)
    assert (selected.exists, selected.uidnext) == (0, 1)
    assert session.uids() == []
    assert session.all_flags() == []
    assert session.search() == []
    assert session.fetch_summaries([]) == []
    changes = session.changes_since(selected.highestmodseq or 1)
    assert (changes.flags, changes.vanished) == ([], [])


def test_readonly_selection_is_reopened_for_changes(
    session: ImapSession, dovecot: DovecotServer, folder: str
) -> None:
    seed(dovecot, folder, message("x"))
    session.select(folder)  # EXAMINE
    session.set_flags([1], add=["\\Seen"])
    assert session.fetch_summaries([1])[0].flags == {"\\Seen"}


def test_vanished_after_expunge_via_qresync(dovecot: DovecotServer, folder: str) -> None:
    seed(dovecot, folder, *(message(f"m{i}") for i in range(5)))
    with ImapSession(config(dovecot)) as first:
        modseq = first.select(folder).highestmodseq
        assert modseq is not None
        first.expunge([2, 4])
        first.set_flags([5], add=["\\Answered"])
    with ImapSession(config(dovecot)) as later:
        later.select(folder)
        changes = later.changes_since(modseq)
        assert changes.vanished == [2, 4]
        assert [(c.uid, c.flags) for c in changes.flags] == [(5, {"\\Answered"})]

        later.capabilities = later.capabilities - {"QRESYNC"}
        assert later.changes_since(modseq).vanished is None  # caller diffs uid lists


def test_move_returns_uid_map_with_and_without_move(
    session: ImapSession, dovecot: DovecotServer, folder: str
) -> None:
    raws = [message(f"move {i}") for i in range(4)]
    seed(dovecot, folder, *raws)
    target = unique("target")
    dovecot.create_folder("alice", target)
    seed(dovecot, target, message("already there"))

    session.select(folder, readonly=False)
    assert session.move([2, 3], target) == {2: 2, 3: 3}
    session.capabilities = session.capabilities - {"MOVE"}
    assert session.move([4], target) == {4: 4}  # COPY + \Deleted + UID EXPUNGE
    assert session.uids() == [1]
    session.select(target)
    assert [session.fetch_raw(uid) for uid in (2, 3, 4)] == raws[1:]


def test_expunge_removes_only_the_given_uids(
    session: ImapSession, dovecot: DovecotServer, folder: str
) -> None:
    seed(dovecot, folder, *(message(f"e{i}") for i in range(3)))
    session.select(folder, readonly=False)
    session.set_flags([1], add=["\\Deleted"])  # deleted elsewhere, not to be expunged
    session.expunge([2])
    assert session.uids() == [1, 3]
    assert "\\Deleted" in session.fetch_summaries([1])[0].flags
    session.expunge([])  # nothing to do, no command


def test_fetch_raw_is_byte_identical_and_missing_uid_errors(
    session: ImapSession, dovecot: DovecotServer, folder: str
) -> None:
    raws = [(MAIL / "attachment-rfc2231.eml").read_bytes(), (MAIL / "malformed.eml").read_bytes()]
    seed(dovecot, folder, *raws)
    session.select(folder)
    assert [session.fetch_raw(1), session.fetch_raw(2)] == raws
    with pytest.raises(ImapCommandError):
        session.fetch_raw(99)
    assert [s.uid for s in session.fetch_summaries([99, 2, 1])] == [2, 1]


def test_append_with_flags_and_date_returns_uid(session: ImapSession, folder: str) -> None:
    when = datetime(2023, 12, 24, 18, 30, 5, tzinfo=timezone(timedelta(hours=-5)))
    raw = message("appended", "body")
    uid = session.append(folder, raw, flags=["\\Seen", "$Label1"], when=when)
    assert uid == 1
    session.select(folder)
    (summary,) = session.fetch_summaries([uid])
    assert summary.flags == {"\\Seen", "$Label1"}
    assert summary.internaldate == when
    assert session.fetch_raw(uid) == raw
    assert session.search(since=date(2023, 12, 24), before=date(2023, 12, 25)) == [uid]
    assert session.search(since=date(2024, 1, 1)) == []


def test_uids_min_uid_does_not_return_the_last_uid_below_it(
    session: ImapSession, dovecot: DovecotServer, folder: str
) -> None:
    seed(dovecot, folder, message("a"), message("b"), message("c"))
    session.select(folder)
    assert session.uids() == [1, 2, 3]
    assert session.uids(min_uid=2) == [2, 3]
    assert session.uids(min_uid=10) == []  # "10:*" is "3:10" to the server


def test_search_non_ascii_and_quoted_text(
    session: ImapSession, dovecot: DovecotServer, folder: str
) -> None:
    seed(
        dovecot,
        folder,
        message("Treffen", "Wir sehen uns in München."),
        message("=?utf-8?Q?Br=C3=BCcke?=", "nothing"),
        message("quotes", 'He said "hi" \\ there'),
    )
    session.select(folder)
    assert session.search(text="München") == [1]
    assert session.search(text="brücke") == [2]  # the decoded subject, case-insensitive
    assert session.search(text='"hi" \\') == [3]
    assert session.search(text="nowhere-to-be-found") == []
    assert session.search() == [1, 2, 3]

    session.capabilities = session.capabilities - {"LITERAL+", "ESEARCH"}
    assert session.search(text="München") == [1]  # synchronising literal, plain SEARCH
    assert session.append(folder, message("Grüße", "ünïcödé")) == 4


def test_refused_literal_leaves_the_session_in_step(session: ImapSession, folder: str) -> None:
    missing = unique("missing")
    with pytest.raises(ImapCommandError, match="TRYCREATE"):
        session.append(missing, message("lost"))  # LITERAL+: the literal goes anyway
    session.capabilities = session.capabilities - {"LITERAL+"}
    with pytest.raises(ImapCommandError, match="TRYCREATE"):
        session.append(missing, message("lost"))  # refused instead of "+ go ahead"
    session.noop()
    assert session.append(folder, message("kept")) == 1


def test_other_sessions_flag_changes_do_not_confuse_a_fetch(
    session: ImapSession, dovecot: DovecotServer, folder: str
) -> None:
    seed(dovecot, folder, *(message(f"u{i}") for i in range(3)))
    session.select(folder)
    with ImapSession(config(dovecot)) as other:
        other.select(folder, readonly=False)
        other.set_flags([1, 2, 3], add=["\\Flagged"])
    summaries = session.fetch_summaries([1, 2, 3])  # unsolicited FETCHes arrive first
    assert [s.uid for s in summaries] == [1, 2, 3]
    assert all(s.subject.startswith("u") for s in summaries)


# --------------------------------------------------------------------------- failures


def test_connection_cut_mid_fetch_raises_connection_error(
    dovecot: DovecotServer, folder: str, fault_proxy_factory
) -> None:
    seed(dovecot, folder, *generated_messages(400))
    proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
    proxy.cut_after(60_000, direction="down", once=True)
    started = time.monotonic()
    with ImapSession(config(dovecot, port=proxy.port, timeout=5.0)) as imap:
        imap.select(folder)
        uids = imap.uids()
        with pytest.raises(ImapConnectionError):
            imap.fetch_summaries(uids)
        with pytest.raises(ImapConnectionError):
            imap.noop()  # the session is closed now, not out of step
    assert time.monotonic() - started < 5


def test_stalled_server_times_out(dovecot: DovecotServer, folder: str, fault_proxy_factory) -> None:
    seed(dovecot, folder, *generated_messages(200))
    proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
    proxy.stall_after(30_000, seconds=30, direction="down", once=True)
    started = time.monotonic()
    with ImapSession(config(dovecot, port=proxy.port, timeout=1.0)) as imap:
        imap.select(folder)
        with pytest.raises(ImapConnectionError, match="in time"):
            imap.fetch_summaries(imap.uids())
    assert time.monotonic() - started < 6


def test_connection_refused_is_a_connection_error(
    dovecot: DovecotServer, fault_proxy_factory
) -> None:
    proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
    port = proxy.port
    proxy.stop()
    with pytest.raises(ImapConnectionError):
        check_login(config(dovecot, port=port, timeout=2.0))


# --------------------------------------------------------------------------- performance


def generated_messages(count: int) -> list[bytes]:
    """Small but varied messages: plain, alternative, with attachment, html-only."""
    names = ["Alice Example", "Bob Müller", "=?utf-8?Q?Zo=C3=AB?=", ""]
    subjects = ["Hello", "Re: numbers", "=?utf-8?Q?Gr=C3=BC=C3=9Fe?=", "=?iso-8859-1?Q?caf=E9?="]
    start = datetime(2024, 1, 1, tzinfo=UTC)
    out = []
    for i in range(count):
        name = names[i % len(names)]
        sender = f"{name} <user{i % 50}@example.org>" if name else f"user{i % 50}@example.org"
        refs = " ".join(f"<r{i}-{k}@example.org>" for k in range(i % 4))
        head = (
            f"From: {sender}\r\nTo: Bob <bob@example.org>, carol@example.org\r\n"
            f"Subject: {subjects[i % len(subjects)]} {i}\r\n"
            f"Date: {format_datetime(start + timedelta(minutes=i))}\r\n"
            f"Message-ID: <gen{i}@example.org>\r\n"
            + (f"References: {refs}\r\n" if refs else "")
            + "MIME-Version: 1.0\r\n"
        )
        text = f"Message number {i}: " + "lorem ipsum dolor sit amet Grüße " * 8
        kind = i % 4
        if kind == 0:
            body = f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
        elif kind == 1:
            body = (
                'Content-Type: multipart/alternative; boundary="a"\r\n\r\n--a\r\n'
                f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n--a\r\n"
                f"Content-Type: text/html; charset=utf-8\r\n\r\n<p>{text}</p>\r\n--a--\r\n"
            )
        elif kind == 2:
            body = (
                'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
                f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n--m\r\n"
                'Content-Type: application/pdf; name="r.pdf"\r\n'
                'Content-Disposition: attachment; filename="r.pdf"\r\n'
                "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--m--\r\n"
            )
        else:
            html = f"<html><body>{text}</body></html>"
            body = f"Content-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
        out.append((head + body).encode())
    return out


def test_fetch_10000_summaries_in_batches(dovecot: DovecotServer, folder: str) -> None:
    seed(dovecot, folder, *generated_messages(10_000))
    with ImapSession(config(dovecot)) as imap:
        started = time.perf_counter()
        imap.select(folder)
        uids = imap.uids()
        summaries = []
        for index in range(0, len(uids), 1000):
            summaries.extend(imap.fetch_summaries(uids[index : index + 1000]))
        elapsed = time.perf_counter() - started
    print(f"\nIMAP engine: uids + summaries of {len(summaries)} messages in {elapsed:.2f} s")
    assert len(summaries) == 10_000
    assert sum(s.has_attachments for s in summaries) == 2500
    assert summaries[2].subject == "Grüße 2"
    assert summaries[-1].snippet.startswith("Message number 9999: lorem ipsum")
    # ~1.1-1.5 s on an idle machine (IMAPClient needs ~2.6 s for the fetch alone); the
    # bound only catches a collapse such as a round trip per message.
    assert elapsed < 8


def test_search_by_header_finds_a_message_id(dovecot):
    user = f"h{uuid.uuid4().hex[:8]}"
    dovecot.add_user(user, "pw")
    dovecot.seed_messages(
        user, "INBOX", [_hdr_message("<one@example.org>"), _hdr_message("<two@example.org>")]
    )
    config = ImapConfig(
        host=dovecot.host, port=dovecot.imap_port, security="none", username=user, password="pw"
    )
    with ImapSession(config) as session:
        session.select("INBOX")
        assert session.search(header=("Message-ID", "<two@example.org>")) == [2]
        with pytest.raises(ValueError):
            session.search(header=("Message-ID", "<x>\r\nA1 LOGOUT"))


def _hdr_message(message_id: str) -> bytes:
    return f"From: a@example.org\r\nMessage-ID: {message_id}\r\nSubject: s\r\n\r\nbody\r\n".encode()
