"""Reads. Every query starts from the user, so another user's sites simply do not exist."""

from __future__ import annotations

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from ftpcore.models import FtpSite, UploadSession


def site_list(*, user) -> QuerySet[FtpSite]:
    return FtpSite.objects.filter(owner=user)


def site_get(*, user, site_id: int) -> FtpSite:
    return get_object_or_404(site_list(user=user), pk=site_id)


def upload_session_list(*, user, site: FtpSite) -> QuerySet[UploadSession]:
    """The user's chunked uploads to the site: another user's do not exist (404)."""
    return UploadSession.objects.filter(owner=user, site=site)
