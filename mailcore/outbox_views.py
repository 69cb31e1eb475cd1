"""The outbox page: the user's outgoing messages with their delivery state. The page renders
the rows; static/js/compose.js keeps them live (``outbox.state`` events) and cancels."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from mailcore.models import OutgoingMessage

CANCELLABLE = ("scheduled", "queued", "retrying")


def _recipients(message: OutgoingMessage) -> str:
    """To, Cc and Bcc as one line; the fields hold {name, email} objects (or plain strings)."""
    people = [*(message.to or []), *(message.cc or []), *(message.bcc or [])]
    return ", ".join(
        (p.get("email") or p.get("name") or "") if isinstance(p, dict) else str(p) for p in people
    )


@login_required
@require_GET
def outbox_page(request: HttpRequest) -> HttpResponse:
    messages = (
        OutgoingMessage.objects.filter(owner=request.user)
        .select_related("account")
        .defer("raw")
        .order_by("-id")[:200]
    )
    rows = [
        {"message": m, "recipients": _recipients(m), "cancellable": m.state in CANCELLABLE}
        for m in messages
    ]
    return render(request, "mail/outbox.html", {"rows": rows})
