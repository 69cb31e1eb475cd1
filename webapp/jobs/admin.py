from django.contrib import admin, messages
from django.shortcuts import redirect
from django.urls import path

from webapp.jobs.models import Job
from webapp.jobs.services import job_start_connectivity_check


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "owner", "state", "progress", "created_at", "finished_at"]
    list_filter = ["state", "kind", "created_at"]
    search_fields = ["owner__username", "error"]
    list_select_related = ["owner"]
    readonly_fields = [f.name for f in Job._meta.fields]
    date_hierarchy = "created_at"
    change_list_template = "admin/jobs/job/change_list.html"

    @admin.display(description="Progress")
    def progress(self, job: Job) -> str:
        total = "?" if job.total is None else job.total
        return f"{job.done} / {total} {job.unit}".strip()

    def has_add_permission(self, request) -> bool:
        return False

    def get_urls(self):
        check = self.admin_site.admin_view(self.check_connectivity_view)
        check_url = path("check-connectivity/", check, name="jobs_job_check_connectivity")
        return [check_url, *super().get_urls()]

    def check_connectivity_view(self, request):
        if request.method != "POST":
            return redirect("admin:jobs_job_changelist")
        job = job_start_connectivity_check(owner=request.user)
        self.message_user(request, f"Connectivity check #{job.pk} queued.", messages.SUCCESS)
        return redirect("admin:jobs_job_change", job.pk)
