"""Checks shared by the forms and the API serializers of every app.

They raise Django's ValidationError, which Django forms show next to the field and DRF
turns into a 400 for the field, so one rule serves both.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

FINGERPRINT = re.compile(r"^([0-9A-F]{2}:){31}[0-9A-F]{2}$")


def clean_host(value: str | None, *, required: bool = True, example: str = "example.org") -> str:
    value = (value or "").strip()
    if not value:
        if required:
            raise ValidationError(f"Enter the server's host name, like {example}.")
        return value
    if any(c.isspace() or c in "/@?#" for c in value):
        raise ValidationError(f"Enter a host name or IP address, like {example}.")
    return value


def clean_fingerprint(value: str | None) -> str:
    """A pinned certificate's SHA-256, normalised to upper case "AA:BB:…"; blank is fine."""
    value = (value or "").strip().upper()
    if value and not FINGERPRINT.match(value):
        raise ValidationError(
            "A SHA-256 fingerprint is 32 hex byte pairs separated by colons (AA:BB:…)."
        )
    return value


def clean_single_line(value: str | None) -> str:
    """Values that end up in a protocol command: a line break would inject another one."""
    value = value or ""
    if any(c in value for c in "\r\n\0"):
        raise ValidationError("Must not contain line breaks or NUL characters.")
    return value
