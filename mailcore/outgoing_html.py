"""HTML a user sends (the compose editor's, or an API client's) is sanitized before it is
stored in a draft or built into a message: the same nh3 allowlist that makes incoming mail
safe to show (mailcore/protocols/sanitize.py), with remote images kept, since the sender
chose them."""

from __future__ import annotations

from mailcore.protocols.sanitize import sanitize_html


def outgoing_html_sanitize(*, html: str | None) -> str | None:
    """The allowlisted HTML, or None when there is none."""
    if not html or not html.strip():
        return None
    cleaned = sanitize_html(html, allow_remote_images=True).html
    return cleaned if cleaned.strip() else None
