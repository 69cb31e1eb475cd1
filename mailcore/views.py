"""The mail pages of the browser UI. Thin: selectors read (always from the user), services write.

The mail page itself is a shell; its script talks to the REST API (/api/v1/mail/). A message's
body is never put into that page: it is served by `message_body` as a document of its own,
with a strict Content-Security-Policy, for a sandboxed <iframe>.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from mailcore import selectors, services
from mailcore.forms import (
    INCOMING_PORTS,
    SMTP_PORTS,
    MailAccountForm,
)
from mailcore.models import MailAccount
from mailcore.protocols import imap, smtp
from mailcore.protocols.sanitize import text_to_html
from mailcore.serializers import MailAccountSerializer
from webapp.forms import TrustCertificateForm

# Remote content stays off; styles inline only; images from data: URLs (inline cid: parts),
# and from https: once the reader asks for them. No scripts, forms, fonts or frames at all.
BODY_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:{images}; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'; "
    "sandbox allow-popups allow-popups-to-escape-sandbox"
)


def _int_param(request: HttpRequest, name: str) -> int | None:
    value = request.GET.get(name, "")
    return int(value) if value.isdigit() else None


# The mail page -----------------------------------------------------------------------------


@login_required
@require_GET
def mail_index(request: HttpRequest) -> HttpResponse:
    accounts = list(selectors.account_list(user=request.user))
    if not accounts:
        return render(request, "mail/index.html", {"accounts": []})
    start = {name: _int_param(request, name) for name in ("account", "mailbox", "message", "job")}
    context = {
        "accounts": accounts,
        "accounts_data": MailAccountSerializer(accounts, many=True).data,
        "start": start,
        "body_url": reverse("mail-body", args=[0]).replace("/0/", "/{id}/"),
        "source_url": reverse("mail-source", args=[0]).replace("/0/", "/{id}/"),
        "accounts_url": reverse("mail-accounts"),
    }
    return render(request, "mail/index.html", context)


# Accounts ----------------------------------------------------------------------------------


def _ports_context() -> dict[str, Any]:
    """The default ports, for the form's script to follow the security choice."""
    return {
        "incoming": {f"{p.value}:{s.value}": port for (p, s), port in INCOMING_PORTS.items()},
        "smtp": {s.value: port for s, port in SMTP_PORTS.items()},
    }


@login_required
@require_GET
def account_list(request: HttpRequest) -> HttpResponse:
    return render(request, "mail/accounts.html", {"rows": _account_rows(request.user)})


def _account_rows(user, results: dict[int, dict] | None = None) -> list[dict[str, Any]]:
    results = results or {}
    return [
        {"account": account, "result": results.get(account.pk)}
        for account in selectors.account_list(user=user)
    ]


@login_required
@require_http_methods(["GET", "POST"])
def account_add(request: HttpRequest) -> HttpResponse:
    form = MailAccountForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        account = services.account_create(owner=request.user, **form.account_fields())
        job = services.account_sync_start(account=account)
        messages.success(request, f"Added {account.name}. Its first sync has started.")
        return redirect(f"{reverse('mail')}?account={account.pk}&job={job.pk}")
    context = {"form": form, "ports": _ports_context(), "adding": True}
    return render(request, "mail/account_form.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def account_edit(request: HttpRequest, account_id: int) -> HttpResponse:
    account = selectors.account_get(user=request.user, account_id=account_id)
    form = MailAccountForm(request.POST or None, instance=account)
    if request.method == "POST" and form.is_valid():
        fields = form.account_fields()
        account = selectors.account_get(user=request.user, account_id=account_id)
        services.account_update(account=account, **fields)
        messages.success(request, f"Saved {account.name}.")
        return redirect("mail-accounts")
    context = {"form": form, "account": account, "ports": _ports_context(), "adding": False}
    return render(request, "mail/account_form.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def account_delete(request: HttpRequest, account_id: int) -> HttpResponse:
    account = selectors.account_get(user=request.user, account_id=account_id)
    if request.method == "POST":
        name = account.name
        services.account_delete(account=account)
        messages.success(request, f"Removed {name}. Its mail is still on the server.")
        return redirect("mail-accounts")
    return render(request, "mail/account_confirm_delete.html", {"account": account})


def _check(account: MailAccount) -> dict[str, Any]:
    """Log in to the account's server: ok, or the server's own words (and an untrusted
    certificate's fingerprint, so the person can choose to trust it)."""
    try:
        result = services.account_check(account=account)
    except imap.ImapCertificateError as exc:
        return {"ok": False, "detail": exc.reply, "fingerprint": exc.fingerprint}
    except imap.ImapError as exc:
        return {"ok": False, "detail": exc.reply}
    except smtp.SmtpCertificateError as exc:
        detail = f"Sending (SMTP): {exc.reply} Its certificate's SHA-256 is {exc.fingerprint}."
        return {"ok": False, "detail": detail}
    except smtp.SmtpError as exc:
        return {"ok": False, "detail": f"Sending (SMTP): {exc.reply}"}
    sending = " and to its SMTP server" if result["smtp"] == "ok" else ""
    return {
        "ok": True,
        "detail": f"Logged in to {account.incoming_host} as {account.username}{sending}.",
    }


def _account_result(request: HttpRequest, account: MailAccount, **context: Any) -> HttpResponse:
    """htmx swaps in the result only; without script, the account list shows it."""
    if request.headers.get("HX-Request"):
        return render(request, "mail/_account_result.html", {"account": account, **context})
    rows = _account_rows(request.user, {account.pk: context})
    return render(request, "mail/accounts.html", {"rows": rows})


@login_required
@require_POST
def account_test(request: HttpRequest, account_id: int) -> HttpResponse:
    account = selectors.account_get(user=request.user, account_id=account_id)
    return _account_result(request, account, check=_check(account))


@login_required
@require_POST
def account_trust(request: HttpRequest, account_id: int) -> HttpResponse:
    account = selectors.account_get(user=request.user, account_id=account_id)
    form = TrustCertificateForm(request.POST)
    if not form.is_valid():
        error = "; ".join(form.errors.get("fingerprint", ["Invalid fingerprint."]))
        return _account_result(request, account, check={"ok": False, "detail": error})
    fingerprint = form.cleaned_data["fingerprint"]
    services.account_update(account=account, incoming_tls_fingerprint=fingerprint)
    return _account_result(request, account, check=_check(account), trusted=True)


@login_required
@require_POST
def account_sync(request: HttpRequest, account_id: int) -> HttpResponse:
    account = selectors.account_get(user=request.user, account_id=account_id)
    job = services.account_sync_start(account=account)
    if request.headers.get("HX-Request"):
        return render(request, "mail/_sync_job.html", {"job": job, "account": account})
    messages.info(request, f"Sync of {account.name} started.")
    return redirect("mail-accounts")


# Message bodies ----------------------------------------------------------------------------


def _frame_response(response: HttpResponse, *, images: bool) -> HttpResponse:
    response["Content-Security-Policy"] = BODY_CSP.format(images=" https:" if images else "")
    response["Cache-Control"] = "private"
    response["Referrer-Policy"] = "no-referrer"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
@require_GET
@xframe_options_sameorigin
def message_body(request: HttpRequest, message_id: int) -> HttpResponse:
    """The message's body as its own document, for the reading pane's sandboxed frame."""
    message = selectors.message_get(user=request.user, message_id=message_id)
    images = request.GET.get("images") in {"1", "true", "yes"}
    try:
        safe = services.message_body_html(message=message, allow_remote_images=images)
    except imap.ImapError as exc:
        response = render(
            request, "mail/body.html", {"error": exc.reply, "message": message}, status=502
        )
        return _frame_response(response, images=False)
    context: dict[str, Any] = {"message": message}
    text = message.body.text
    if safe is not None:
        context["html"] = safe.html
    elif text.strip():
        context.update(html=text_to_html(text), is_text=True)
    return _frame_response(render(request, "mail/body.html", context), images=images)


@login_required
@require_GET
def message_source(request: HttpRequest, message_id: int) -> HttpResponse:
    """The original message as plain text in the browser (the API's raw/ is a download)."""
    message = selectors.message_get(user=request.user, message_id=message_id)
    try:
        raw = services.message_raw(message=message)
    except imap.ImapError as exc:
        return HttpResponse(
            f"Could not fetch the message from the server: {exc.reply}",
            status=502,
            content_type="text/plain; charset=utf-8",
        )
    response = HttpResponse(
        raw.decode("utf-8", errors="replace"), content_type="text/plain; charset=utf-8"
    )
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private"
    response["X-Content-Type-Options"] = "nosniff"
    return response
