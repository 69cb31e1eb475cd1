"""Identities, contacts and groups: who mail is from, and who it goes to.

- An identity is one From address (name, signature) of an account; an account has many.
- A group's name typed as a recipient expands to its members. Members are addresses or the
  names of other groups (nested); a group reached twice — a loop, or a diamond — is expanded
  once, so expansion always ends.
- Every address a message is sent to is collected as a Contact (``contacts_collect``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone

from mailcore.models import Contact, ContactGroup, Identity, MailAccount
from mailcore.protocols.compose import (
    AddressError,
    HeaderInjection,
    _split_addresses,
    parse_addresses,
)
from mailcore.protocols.mime import Address

# --------------------------------------------------------------------------- identities


def identity_list(*, user) -> QuerySet[Identity]:
    return Identity.objects.filter(account__owner=user).select_related("account")


def identity_get(*, user, identity_id: int) -> Identity:
    return get_object_or_404(identity_list(user=user), pk=identity_id)


def _one_address(value: str, what: str = "email_address") -> str:
    """A single valid address (no name), as the user wrote it; ValueError otherwise."""
    try:
        addresses = parse_addresses(value)
    except AddressError as exc:
        raise ValueError(f"{what}: {exc}") from None
    if len(addresses) != 1:
        raise ValueError(f"{what}: give exactly one address.")
    return addresses[0].email


def identity_create(
    *, account: MailAccount, email_address: str, name: str = "", signature: str = ""
) -> Identity:
    _check_name(name)
    return Identity.objects.create(
        account=account,
        name=name.strip(),
        email_address=_one_address(email_address),
        signature=signature,
    )


def identity_update(*, identity: Identity, **fields) -> Identity:
    if "email_address" in fields:
        fields["email_address"] = _one_address(fields["email_address"])
    if "name" in fields:
        _check_name(fields["name"])
        fields["name"] = fields["name"].strip()
    for name, value in fields.items():
        setattr(identity, name, value)
    identity.save()
    return identity


def _check_name(name: str) -> None:
    if any(ch in name for ch in "\r\n\0"):
        raise ValueError("The name must not contain line breaks.")


# --------------------------------------------------------------------------- contacts


def contact_list(*, user) -> QuerySet[Contact]:
    return Contact.objects.filter(owner=user)


def contact_get(*, user, contact_id: int) -> Contact:
    return get_object_or_404(contact_list(user=user), pk=contact_id)


def contact_create(*, owner, email_address: str, name: str = "") -> Contact:
    _check_name(name)
    email = _one_address(email_address)
    try:
        with transaction.atomic():
            return Contact.objects.create(owner=owner, name=name.strip(), email_address=email)
    except IntegrityError:
        raise ValueError(f"email_address: {email} is already a contact.") from None


def contact_update(*, contact: Contact, **fields) -> Contact:
    if "email_address" in fields:
        fields["email_address"] = _one_address(fields["email_address"])
    if "name" in fields:
        _check_name(fields["name"])
    for name, value in fields.items():
        setattr(contact, name, value)
    contact.collected = False
    try:
        with transaction.atomic():
            contact.save()
    except IntegrityError:
        raise ValueError(f"email_address: {contact.email_address} is already a contact.") from None
    return contact


def contacts_collect(*, owner, addresses: Iterable[Address]) -> int:
    """Remember the addresses sent to: new ones become contacts (with the name typed, if
    any), known ones get their last use updated and a name if they had none."""
    now = timezone.now()
    by_email: dict[str, Address] = {}
    for address in addresses:
        if address.email:
            by_email.setdefault(address.email.lower(), address)
    if not by_email:
        return 0
    existing = {c.email_address.lower(): c for c in _contacts_by_emails(owner, by_email)}
    created = 0
    for key, address in by_email.items():
        contact = existing.get(key)
        if contact is None:
            try:
                with transaction.atomic():
                    Contact.objects.create(
                        owner=owner,
                        name=address.name or "",
                        email_address=address.email,
                        collected=True,
                        last_used_at=now,
                    )
                created += 1
            except IntegrityError:  # collected at the same moment by another worker
                pass
            continue
        updates = {"last_used_at": now}
        if not contact.name and address.name:
            updates["name"] = address.name
        Contact.objects.filter(pk=contact.pk).update(**updates)
    return created


def _contacts_by_emails(owner, keys: Iterable[str]) -> list[Contact]:
    from django.db.models.functions import Lower

    return list(
        Contact.objects.annotate(lower_email=Lower("email_address")).filter(
            owner=owner, lower_email__in=list(keys)
        )
    )


# --------------------------------------------------------------------------- groups


def group_list(*, user) -> QuerySet[ContactGroup]:
    return ContactGroup.objects.filter(owner=user)


def group_get(*, user, group_id: int) -> ContactGroup:
    return get_object_or_404(group_list(user=user), pk=group_id)


def _clean_members(members: Sequence[str]) -> list[str]:
    """Addresses are validated (one per entry); anything without an @ is a group's name."""
    cleaned: list[str] = []
    errors: dict[str, str] = {}
    for member in members:
        if not isinstance(member, str) or not member.strip():
            errors[str(member)] = "empty member"
            continue
        member = member.strip()
        if any(ch in member for ch in "\r\n\0"):
            errors[member] = "line breaks are not allowed"
            continue
        if "@" not in member:
            cleaned.append(member)  # a group's name (may be created later)
            continue
        try:
            cleaned += [_format(address) for address in parse_addresses(member)]
        except AddressError as exc:
            errors.update(exc.errors)
    if errors:
        raise AddressError(errors)
    return cleaned


def _format(address: Address) -> str:
    if not address.name:
        return address.email
    name = address.name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{name}" <{address.email}>'


def group_create(*, owner, name: str, members: Sequence[str] = ()) -> ContactGroup:
    name = _group_name(name)
    try:
        with transaction.atomic():
            return ContactGroup.objects.create(
                owner=owner, name=name, members=_clean_members(members)
            )
    except IntegrityError:
        raise ValueError(f"name: there is already a group called {name}.") from None


def group_update(*, group: ContactGroup, **fields) -> ContactGroup:
    if "name" in fields:
        group.name = _group_name(fields["name"])
    if "members" in fields:
        group.members = _clean_members(fields["members"])
    try:
        with transaction.atomic():
            group.save()
    except IntegrityError:
        raise ValueError(f"name: there is already a group called {group.name}.") from None
    return group


def _group_name(name: str) -> str:
    name = " ".join(name.split()) if not any(ch in name for ch in "\r\n\0") else None
    if not name:
        raise ValueError("name: a group needs a name (no line breaks).")
    if "@" in name or "," in name or ";" in name:
        raise ValueError("name: a group's name cannot contain @ , or ;")
    return name


def group_expand(*, owner, name: str) -> list[Address]:
    """The addresses a group stands for: nested groups resolved, each group once (loops
    and diamonds end), duplicates (ignoring case) dropped, in first-seen order."""
    groups = {group.name.casefold(): group for group in group_list(user=owner)}
    return _expand(groups, name, set())


def _expand(groups: dict[str, ContactGroup], name: str, visited: set[str]) -> list[Address]:
    key = name.casefold()
    group = groups.get(key)
    if group is None or key in visited:
        return []
    visited.add(key)
    result: list[Address] = []
    for member in group.members:
        if "@" in member:
            result += parse_addresses(member)
        else:
            result += _expand(groups, member, visited)
    return _unique(result)


def _unique(addresses: Iterable[Address]) -> list[Address]:
    seen: set[str] = set()
    result: list[Address] = []
    for address in addresses:
        if address.email.lower() not in seen:
            seen.add(address.email.lower())
            result.append(address)
    return result


def recipients_resolve(*, owner, entries: str | Sequence[str]) -> list[Address]:
    """Recipients as typed (a list of entries, each one or more addresses separated by commas,
    or a group's name) -> addresses. A group name expands to its members; an entry that is
    neither a group nor a valid address is an error. Raises HeaderInjection for a line break,
    and AddressError listing every bad entry."""
    if isinstance(entries, str):
        entries = [entries]
    groups: dict[str, ContactGroup] | None = None
    result: list[Address] = []
    errors: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, str):
            errors[str(entry)] = "not an address"
            continue
        if any(ch in entry for ch in "\r\n\0"):
            raise HeaderInjection("A recipient must not contain line breaks.")
        for token in _split_addresses(entry):
            if "@" not in token:
                if groups is None:
                    groups = {group.name.casefold(): group for group in group_list(user=owner)}
                if token.casefold() in groups:
                    result += _expand(groups, token, set())
                    continue
            try:
                result += parse_addresses(token)
            except AddressError as exc:
                errors.update(exc.errors)
    if errors:
        raise AddressError(errors)
    return _unique(result)
