"""Identities, contacts and groups (mailcore/people.py): nested group expansion without loops."""

from __future__ import annotations

import pytest

from mailcore import outbox, people
from mailcore.models import Contact
from mailcore.protocols.compose import AddressError, HeaderInjection
from mailcore.protocols.mime import Address

pytestmark = pytest.mark.django_db


def emails(addresses: list[Address]) -> list[str]:
    return [address.email for address in addresses]


def test_nested_groups_expand_and_loops_end(alice):
    people.group_create(owner=alice, name="Team", members=["a@example.org", "Ops", "b@example.org"])
    people.group_create(owner=alice, name="Ops", members=["c@example.org", "Team", "Infra"])
    people.group_create(
        owner=alice, name="Infra", members=["d@example.org", "Ops", "A@example.org"]
    )
    assert emails(people.group_expand(owner=alice, name="team")) == [
        "a@example.org",
        "c@example.org",
        "d@example.org",
        "b@example.org",
    ]
    # A group that names itself ends too.
    people.group_create(owner=alice, name="Self", members=["Self", "s@example.org"])
    assert emails(people.group_expand(owner=alice, name="Self")) == ["s@example.org"]


def test_recipients_mix_groups_and_addresses(alice):
    people.group_create(owner=alice, name="Friends", members=['"Bo Bee" <bo@example.org>'])
    resolved = people.recipients_resolve(
        owner=alice, entries=["Friends, carol@example.org", "Dan <dan@example.org>"]
    )
    assert resolved == [
        Address("Bo Bee", "bo@example.org"),
        Address("", "carol@example.org"),
        Address("Dan", "dan@example.org"),
    ]


def test_bad_entries_are_all_listed(alice):
    with pytest.raises(AddressError) as caught:
        people.recipients_resolve(owner=alice, entries=["nobody-group", "x@", "ok@example.org"])
    assert set(caught.value.errors) == {"nobody-group", "x@"}
    with pytest.raises(HeaderInjection):
        people.recipients_resolve(owner=alice, entries=["a@example.org\r\nBcc: evil@x.org"])


def test_groups_are_per_user(alice, bob):
    people.group_create(owner=bob, name="Team", members=["secret@example.org"])
    with pytest.raises(AddressError):
        people.recipients_resolve(owner=alice, entries=["Team"])


def test_group_members_are_validated_and_names_unique(alice):
    with pytest.raises(AddressError) as caught:
        people.group_create(owner=alice, name="G", members=["good@example.org", "bad@@x"])
    assert list(caught.value.errors) == ["bad@@x"]
    people.group_create(owner=alice, name="G", members=[])
    with pytest.raises(ValueError, match="already"):
        people.group_create(owner=alice, name="g", members=[])


def test_contacts_collected_once_case_insensitively(alice):
    people.contact_create(owner=alice, name="", email_address="Known@Example.org")
    people.contacts_collect(
        owner=alice,
        addresses=[Address("Known One", "known@example.org"), Address("New", "new@example.org")],
    )
    people.contacts_collect(owner=alice, addresses=[Address("", "NEW@example.org")])
    contacts = {c.email_address.lower(): c for c in Contact.objects.filter(owner=alice)}
    assert set(contacts) == {"known@example.org", "new@example.org"}
    assert contacts["known@example.org"].name == "Known One"
    assert contacts["new@example.org"].collected


def test_retry_delays_follow_the_schedule_with_jitter(settings):
    settings.OUTBOX_RETRY_DELAYS = [60, 300, 900, 1800, 3600]
    for attempts, base in [(1, 60), (2, 300), (5, 3600), (6, 3600), (40, 3600)]:
        delay = outbox.retry_delay(attempts)
        assert base * 0.9 <= delay <= base * 1.1
