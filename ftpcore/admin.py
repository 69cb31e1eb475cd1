from django.contrib import admin

from ftpcore.models import FtpSite, Transfer


@admin.register(FtpSite)
class FtpSiteAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "host", "port", "security", "username", "created_at"]
    list_filter = ["security", "passive"]
    search_fields = ["name", "host", "username", "owner__username"]
    list_select_related = ["owner"]
    exclude = ["password"]  # set through the app, never shown
    readonly_fields = ["created_at"]


@admin.register(Transfer)
class TransferAdmin(admin.ModelAdmin):
    list_display = [
        "id", "owner", "kind", "site", "path", "state", "bytes_done", "bytes_total", "attempts",
        "created_at", "finished_at",
    ]  # fmt: skip
    list_filter = ["state", "kind"]
    search_fields = ["path", "target_path", "owner__username", "site__name"]
    list_select_related = ["owner", "site"]
    raw_id_fields = ["owner", "site", "target_site"]
    readonly_fields = [
        "claim", "sha256", "heartbeat_at", "created_at", "started_at", "finished_at",
    ]  # fmt: skip
