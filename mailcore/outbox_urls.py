"""The outbox page's URL (its name starts with "mail" so the navigation marks Mail current)."""

from django.urls import path

from mailcore import outbox_views

urlpatterns = [
    path("mail/outbox/", outbox_views.outbox_page, name="mail-outbox-page"),
]
