"""Checks of FTP site settings shared by the site form and the API serializer."""

from __future__ import annotations

import codecs

from django.core.exceptions import ValidationError

from webapp.validators import clean_single_line


def clean_encoding(value: str | None) -> str:
    """A codec the control connection can use: it must keep ASCII commands as they are."""
    value = (value or "").strip() or "utf-8"
    try:
        name = codecs.lookup(value).name
    except LookupError:
        raise ValidationError(f"Unknown encoding “{value}”.") from None
    if "USER x".encode(name, "ignore") != b"USER x":
        raise ValidationError("The encoding must be ASCII-compatible (utf-8, latin-1…).")
    return value


def clean_initial_path(value: str | None) -> str:
    value = clean_single_line((value or "").strip()) or "/"
    if not value.startswith("/"):
        raise ValidationError("The folder starts with /, like /pub.")
    return value
