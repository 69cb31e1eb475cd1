"""The outbox page's URL (its name starts with "mail" so the navigation marks Mail current),
and the drafts API (/api/v1/mail/drafts/, mailcore/drafts_api.py)."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from mailcore import outbox_views
from mailcore.drafts_api import DraftViewSet

drafts_router = SimpleRouter(use_regex_path=False)
drafts_router.register("mail/drafts", DraftViewSet, basename="mail-draft")

urlpatterns = [
    path("mail/outbox/", outbox_views.outbox_page, name="mail-outbox-page"),
    path("api/v1/", include(drafts_router.urls)),
]
