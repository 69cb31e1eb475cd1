"""Reads. Every query starts from the user, so another user's sites simply do not exist."""

from __future__ import annotations

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from ftpcore.models import FtpSite


def site_list(*, user) -> QuerySet[FtpSite]:
    return FtpSite.objects.filter(owner=user)


def site_get(*, user, site_id: int) -> FtpSite:
    return get_object_or_404(site_list(user=user), pk=site_id)
