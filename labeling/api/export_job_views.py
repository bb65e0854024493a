"""Asynchronous exports (labeling.export_jobs): start one, follow its progress, download its file (researchers)."""

from __future__ import annotations

from django.http import FileResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.typing import AuthenticatedRequest
from labeling import export_jobs, exports
from labeling.models import ExportJob, ExportStatus

from .errors import error_response
from .views import require_researcher, researcher_project, visible_object

JOBS_SHOWN = 50

ExportRequest = inline_serializer(
    "ExportJobRequest",
    {
        "what": serializers.ChoiceField(choices=sorted(export_jobs.SOURCES)),
        "format": serializers.ChoiceField(choices=list(exports.FORMATS), required=False),
    },
)


class ExportJobSerializer(serializers.Serializer):
    """The schema of ``labeling.export_jobs.export_payload`` (the answer, and the ``export.ready`` event's export)."""

    id = serializers.IntegerField()
    kind = serializers.CharField(help_text='always "export"')
    what = serializers.CharField()
    format = serializers.CharField()
    status = serializers.ChoiceField(choices=["queued", "running", "done", "failed"])
    rows = serializers.IntegerField(help_text="rows written so far")
    total_rows = serializers.IntegerField(allow_null=True)
    progress = serializers.FloatField()
    size = serializers.IntegerField(allow_null=True, help_text="bytes, once done")
    error = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    url = serializers.CharField()
    download_url = serializers.CharField(allow_null=True)


def _job_for_researcher(request: AuthenticatedRequest, job_id: int) -> ExportJob:
    job = visible_object(ExportJob.objects.select_related("project"), pk=job_id, request=request, name="export")
    require_researcher(request, job.project)
    return job


class ExportJobListView(APIView):
    @extend_schema(
        responses=ExportJobSerializer(many=True),
        summary="The project's newest asynchronous exports",
    )
    def get(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        jobs = export_jobs.export_jobs_of(project)[:JOBS_SHOWN]
        return Response([export_jobs.export_payload(job) for job in jobs])

    @extend_schema(
        request=ExportRequest,
        responses={202: ExportJobSerializer},
        summary="Start an asynchronous export (judgments, clips or rankings) written to storage; export.ready "
        "is sent when its file is ready",
    )
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        body = request.data if isinstance(request.data, dict) else {}
        job = export_jobs.export_job_start(
            project=project,
            what=str(body.get("what", "")),
            fmt=str(body.get("format", "jsonl")),
            requested_by=request.user,
        )
        job.refresh_from_db()  # an eager worker (tests) may have finished it already
        return Response(export_jobs.export_payload(job), status=status.HTTP_202_ACCEPTED)


class ExportJobDetailView(APIView):
    @extend_schema(responses=ExportJobSerializer, summary="An asynchronous export: status, progress, download URL")
    def get(self, request: AuthenticatedRequest, job_id: int) -> Response:
        return Response(export_jobs.export_payload(_job_for_researcher(request, job_id)))


class ExportJobDownloadView(APIView):
    @extend_schema(
        responses={
            (200, "application/x-ndjson"): str,
            (200, "text/csv"): str,
            (200, "application/vnd.apache.parquet"): bytes,
        },
        summary="The file of a finished asynchronous export (409 until it is done)",
    )
    def get(self, request: AuthenticatedRequest, job_id: int) -> FileResponse | Response:
        job = _job_for_researcher(request, job_id)
        if job.status != ExportStatus.DONE or not job.file:
            return error_response("not_ready", f"this export is {job.status}, not done", 409)
        return FileResponse(
            job.file.open("rb"),
            content_type=exports.CONTENT_TYPES[job.format],
            as_attachment=True,
            filename=f"{job.project.slug}-{job.what}-{job.pk}.{job.format}",
        )
