"""The mail pages. Names start with "mail" so the navigation marks Mail as current; they
must not clash with the API router's names (mail-account-*, mail-message-*, …)."""

from django.urls import path

from mailcore import views

urlpatterns = [
    path("mail/", views.mail_index, name="mail"),
    path("mail/accounts/", views.account_list, name="mail-accounts"),
    path("mail/accounts/add/", views.account_add, name="mail-accounts-add"),
    path("mail/accounts/<int:account_id>/", views.account_edit, name="mail-accounts-edit"),
    path(
        "mail/accounts/<int:account_id>/delete/",
        views.account_delete,
        name="mail-accounts-delete",
    ),
    path("mail/accounts/<int:account_id>/test/", views.account_test, name="mail-accounts-test"),
    path("mail/accounts/<int:account_id>/trust/", views.account_trust, name="mail-accounts-trust"),
    path("mail/accounts/<int:account_id>/sync/", views.account_sync, name="mail-accounts-sync"),
    path("mail/messages/<int:message_id>/body/", views.message_body, name="mail-body"),
    path("mail/messages/<int:message_id>/source/", views.message_source, name="mail-source"),
]
