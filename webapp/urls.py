from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "Satchel administration"
admin.site.site_title = "Satchel admin"
admin.site.index_title = "Users, jobs and everything they own"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("webapp.api.urls")),
    path("", include("mailcore.outbox_urls")),
    path("", include("mailcore.urls")),
    path("", include("ftpcore.urls")),
    path("", include("webapp.core.urls")),
]
