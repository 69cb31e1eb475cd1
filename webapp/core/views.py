from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from webapp.core.services import user_token_regenerate
from webapp.jobs import selectors as job_selectors
from webapp.jobs.services import job_start_connectivity_check

RECENT_JOBS = 10


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return redirect("mail")


@login_required
def settings_index(request: HttpRequest) -> HttpResponse:
    jobs = job_selectors.job_list(user=request.user)[:RECENT_JOBS]
    token = getattr(request.user, "auth_token", None)
    return render(request, "settings/index.html", {"jobs": jobs, "token": token})


@login_required
@require_POST
def settings_token_regenerate(request: HttpRequest) -> HttpResponse:
    user_token_regenerate(user=request.user)
    messages.success(request, "A new API token was made; the old one no longer works.")
    return redirect("settings")


@login_required
@require_POST
def settings_check_start(request: HttpRequest) -> HttpResponse:
    job = job_start_connectivity_check(owner=request.user)
    if request.headers.get("HX-Request"):
        return render(request, "settings/_job_row.html", {"job": job})
    messages.info(request, "Connectivity check queued.")
    return redirect("settings")


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """For load balancers and compose: the process serves and the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"ok": True})
