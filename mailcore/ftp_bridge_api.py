"""REST API joining mail and FTP (mailcore/ftp_bridge.py does the work):

- ``POST /api/v1/uploads/from-ftp/ {"site","path"}`` -> 201 the Upload, same shape as
  ``POST /api/v1/uploads/``, ready for an outgoing message's ``attachments``;
- ``POST /api/v1/mail/attachments/{id}/save-to-ftp/ {"site","path"}`` -> 202 job.

Another user's site or attachment is 404; an FTP refusal is 502 with the server's words.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from ftpcore import selectors as ftp_selectors
from ftpcore.api import FtpErrorsMixin
from mailcore import ftp_bridge, selectors
from mailcore.api import MailErrorsMixin
from mailcore.serializers import UploadSerializer
from webapp.jobs.api import JobEnvelope, JobSerializer


class FtpFileSerializer(serializers.Serializer):
    site = serializers.IntegerField(min_value=1)
    path = serializers.CharField(max_length=4096, trim_whitespace=False)

    def validate_path(self, value: str) -> str:
        try:
            return ftp_bridge.check_path(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc).removeprefix("path: ")) from None


def ftp_files(*, user, entries: list[dict]) -> list[tuple]:
    """Validated ``{site, path}`` entries as (the user's site, path); another's site -> 404."""
    return [
        (ftp_selectors.site_get(user=user, site_id=entry["site"]), entry["path"])
        for entry in entries
    ]


class UploadFromFtpView(FtpErrorsMixin, APIView):
    """Attach a file from one of your FTP sites: it is copied into a new upload."""

    @extend_schema(request=FtpFileSerializer, responses={201: UploadSerializer})
    def post(self, request):
        form = FtpFileSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        [(site, path)] = ftp_files(user=request.user, entries=[form.validated_data])
        upload = ftp_bridge.upload_create_from_ftp(owner=request.user, site=site, path=path)
        return Response(UploadSerializer(upload).data, status=status.HTTP_201_CREATED)


class AttachmentSaveToFtpView(MailErrorsMixin, FtpErrorsMixin, APIView):
    """Save an attachment to one of your FTP sites, in the background. ``path`` is the file
    to write; ending in "/" (or naming a folder) keeps the attachment's name. An existing
    file is never replaced: the job's ``result.path`` says the name used ("name (1).ext")."""

    @extend_schema(request=FtpFileSerializer, responses={202: JobEnvelope})
    def post(self, request, pk: int):
        attachment = selectors.attachment_get(user=request.user, attachment_id=pk)
        form = FtpFileSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        [(site, path)] = ftp_files(user=request.user, entries=[form.validated_data])
        job = ftp_bridge.attachment_save_to_ftp_start(
            owner=request.user, attachment=attachment, site=site, path=path
        )
        return Response({"job": JobSerializer(job).data}, status=status.HTTP_202_ACCEPTED)
