from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from webapp.jobs import selectors, services
from webapp.jobs.models import Job


class JobSerializer(serializers.ModelSerializer):
    class Meta:
        model = Job
        fields = [
            "id", "kind", "state", "done", "total", "unit", "error", "result",
            "created_at", "started_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


JobEnvelope = inline_serializer("JobAccepted", {"job": JobSerializer()})


class JobViewSet(viewsets.ReadOnlyModelViewSet):
    """Long-running work: read its state, cancel it, start the connectivity check."""

    serializer_class = JobSerializer
    lookup_value_converter = "int"

    def get_queryset(self):
        return selectors.job_list(user=self.request.user)

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = services.job_cancel(job=self.get_object())
        return Response(JobSerializer(job).data)

    @extend_schema(request=None, responses={202: JobEnvelope})
    @action(detail=False, methods=["post"], url_path="connectivity-check")
    def connectivity_check(self, request):
        job = services.job_start_connectivity_check(owner=request.user)
        return Response({"job": JobSerializer(job).data}, status=status.HTTP_202_ACCEPTED)
