from django.contrib import admin

from ftpcore.models import FtpSite


@admin.register(FtpSite)
class FtpSiteAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "host", "port", "security", "username", "created_at"]
    list_filter = ["security", "passive"]
    search_fields = ["name", "host", "username", "owner__username"]
    list_select_related = ["owner"]
    exclude = ["password"]  # set through the app, never shown
    readonly_fields = ["created_at"]
