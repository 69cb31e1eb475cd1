"""The file manager pages. Thin: selectors read (always from the user), services write.

The browser page (``files``) is a shell; its script (static/js/files.js) talks to the REST
API (/api/v1/ftp/sites/). Site management is plain Django forms calling ftpcore.services.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ftpcore import selectors, services
from ftpcore.forms import PORTS, FtpSiteForm
from ftpcore.models import FtpSite
from ftpcore.protocols import ftp
from webapp.forms import TrustCertificateForm


def _int_param(request: HttpRequest, name: str) -> int | None:
    value = request.GET.get(name, "")
    return int(value) if value.isdigit() else None


# The browser page --------------------------------------------------------------------------


@login_required
@require_GET
def files_index(request: HttpRequest) -> HttpResponse:
    site_id = _int_param(request, "site")
    chosen = selectors.site_get(user=request.user, site_id=site_id) if site_id else None
    sites = list(selectors.site_list(user=request.user))
    if not sites:
        return render(request, "files/index.html", {"sites": []})
    site = chosen or sites[0]
    context = {
        "sites": sites,
        "site": site,
        "files_data": {
            "sites": [
                {"id": s.pk, "name": s.name, "host": s.host, "initial_path": s.initial_path}
                for s in sites
            ],
            "site": site.pk,
            "path": request.GET.get("path") or "",
            "api": reverse("ftp-site-list"),
            "transfers": reverse("ftp-transfer-list"),
            "page": reverse("files"),
            "edit_url": reverse("files-sites-edit", args=[0]).replace("/0/", "/{id}/"),
        },
    }
    return render(request, "files/index.html", context)


# Sites -------------------------------------------------------------------------------------


@login_required
@require_GET
def site_list(request: HttpRequest) -> HttpResponse:
    return render(request, "files/sites.html", {"rows": _site_rows(request.user)})


def _site_rows(user, results: dict[int, dict] | None = None) -> list[dict[str, Any]]:
    results = results or {}
    return [
        {"site": site, "result": results.get(site.pk)} for site in selectors.site_list(user=user)
    ]


def _ports() -> dict[str, int]:
    return {str(security): port for security, port in PORTS.items()}


@login_required
@require_http_methods(["GET", "POST"])
def site_add(request: HttpRequest) -> HttpResponse:
    form = FtpSiteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        site = services.site_create(owner=request.user, **form.site_fields())
        messages.success(request, f"Added {site.name}.")
        return redirect(f"{reverse('files')}?site={site.pk}")
    return render(
        request, "files/site_form.html", {"form": form, "adding": True, "ports": _ports()}
    )


@login_required
@require_http_methods(["GET", "POST"])
def site_edit(request: HttpRequest, site_id: int) -> HttpResponse:
    site = selectors.site_get(user=request.user, site_id=site_id)
    form = FtpSiteForm(request.POST or None, instance=site)
    if request.method == "POST" and form.is_valid():
        fields = form.site_fields()
        site = selectors.site_get(user=request.user, site_id=site_id)  # unsaved form edits
        services.site_update(site=site, **fields)
        messages.success(request, f"Saved {site.name}.")
        return redirect("files-sites")
    context = {"form": form, "site": site, "adding": False, "ports": _ports()}
    return render(request, "files/site_form.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def site_delete(request: HttpRequest, site_id: int) -> HttpResponse:
    site = selectors.site_get(user=request.user, site_id=site_id)
    if request.method == "POST":
        name = site.name
        services.site_delete(site=site)
        messages.success(request, f"Removed {name}. Its files are still on the server.")
        return redirect("files-sites")
    return render(request, "files/site_confirm_delete.html", {"site": site})


def _check(site: FtpSite) -> dict[str, Any]:
    """Log in to the site: its welcome and features, or the refusal in the server's words
    with plain words (and an untrusted certificate's fingerprint, to choose to trust it)."""
    try:
        result = services.site_check(site=site)
    except ftp.FtpError as exc:
        return {
            "ok": False,
            "detail": str(exc),  # the reply code and the server's words
            "explanation": exc.explanation if exc.explanation != exc.reply else "",
            "fingerprint": getattr(exc, "fingerprint", ""),
        }
    return {"ok": True, "welcome": result["welcome"], "features": result["features"]}


def _site_result(request: HttpRequest, site: FtpSite, **context: Any) -> HttpResponse:
    """htmx swaps in the result only; without script, the site list shows it."""
    if request.headers.get("HX-Request"):
        return render(request, "files/_site_result.html", {"site": site, **context})
    rows = _site_rows(request.user, {site.pk: context})
    return render(request, "files/sites.html", {"rows": rows})


@login_required
@require_POST
def site_test(request: HttpRequest, site_id: int) -> HttpResponse:
    site = selectors.site_get(user=request.user, site_id=site_id)
    return _site_result(request, site, check=_check(site))


@login_required
@require_POST
def site_trust(request: HttpRequest, site_id: int) -> HttpResponse:
    site = selectors.site_get(user=request.user, site_id=site_id)
    form = TrustCertificateForm(request.POST)
    if not form.is_valid():
        error = "; ".join(form.errors.get("fingerprint", ["Invalid fingerprint."]))
        return _site_result(request, site, check={"ok": False, "detail": error})
    services.site_update(site=site, tls_fingerprint=form.cleaned_data["fingerprint"])
    return _site_result(request, site, check=_check(site), trusted=True)
