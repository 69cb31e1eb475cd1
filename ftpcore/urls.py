"""The file manager pages. Names start with "files" so the navigation marks Files as current;
they must not clash with the API router's names (ftp-site-*)."""

from django.urls import path

from ftpcore import views

urlpatterns = [
    path("files/", views.files_index, name="files"),
    path("files/sites/", views.site_list, name="files-sites"),
    path("files/sites/add/", views.site_add, name="files-sites-add"),
    path("files/sites/<int:site_id>/", views.site_edit, name="files-sites-edit"),
    path("files/sites/<int:site_id>/delete/", views.site_delete, name="files-sites-delete"),
    path("files/sites/<int:site_id>/test/", views.site_test, name="files-sites-test"),
    path("files/sites/<int:site_id>/trust/", views.site_trust, name="files-sites-trust"),
]
