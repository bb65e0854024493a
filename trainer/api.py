"""REST API for training artefacts: reward-model versions, their weights, and preference exports."""

from __future__ import annotations

from typing import Any

from django.http import FileResponse, StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.typing import AuthenticatedRequest
from labeling import exports, selectors
from labeling.api.errors import error_response
from labeling.api.serializers import JobSerializer
from labeling.api.views import require_researcher
from labeling.errors import NotFound, ValidationFailed
from labeling.models import JobKind
from labeling.services import job_start

from .models import PreferenceSet, RewardModel
from .preference_building import COLUMNS, PreferenceParams, read_preference_set
from .reward import RewardModelConfig


class RewardModelSerializer(serializers.ModelSerializer):
    weights_url = serializers.SerializerMethodField()

    class Meta:
        model = RewardModel
        fields = [
            "id",
            "version",
            "status",
            "error",
            "preference_set",
            "job",
            "config",
            "metrics",
            "history",
            "created_at",
            "weights_url",
        ]

    def get_weights_url(self, reward_model: RewardModel) -> str | None:
        return f"/api/v1/reward-models/{reward_model.pk}/weights" if reward_model.weights else None


class TrainRequestSerializer(serializers.Serializer):
    sources = serializers.ChoiceField(choices=["auto", "rankings", "judgments", "both"], default="auto")
    cap = serializers.IntegerField(min_value=1, max_value=5_000_000, default=200_000)
    margin_scope = serializers.ChoiceField(choices=["pool", "batch"], default="pool")
    pair_sampling = serializers.ChoiceField(choices=["all", "batch"], default="all")
    batches = serializers.IntegerField(min_value=1, max_value=100_000, default=1000)
    keep_ties = serializers.BooleanField(default=False)
    level_weight_alpha = serializers.FloatField(min_value=0.0, max_value=100.0, default=1.0)
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, default=0)
    config = serializers.DictField(required=False, default=dict, help_text="RewardModelConfig overrides")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        config = attrs.pop("config")
        try:
            RewardModelConfig.from_dict({**RewardModelConfig().to_dict(), **config})
            PreferenceParams.from_dict({**attrs, "reward_config": config})
        except (TypeError, ValueError) as error:
            raise serializers.ValidationError({"config": [str(error)]}) from None
        return {**attrs, "reward_config": config, "train": True}


class RewardModelListView(APIView):
    @extend_schema(responses=RewardModelSerializer(many=True), summary="The project's reward-model versions")
    def get(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = selectors.project_for_member(slug=slug, user=request.user)
        require_researcher(request, project)
        models = RewardModel.objects.filter(project=project).order_by("-version")
        return Response(RewardModelSerializer(models, many=True).data)

    @extend_schema(
        request=TrainRequestSerializer,
        responses={202: JobSerializer},
        summary="Build preferences from rankings and/or judgments, then train a new version",
    )
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = selectors.project_for_member(slug=slug, user=request.user)
        require_researcher(request, project)
        spec = TrainRequestSerializer(data=request.data)
        spec.is_valid(raise_exception=True)
        job = job_start(
            project=project, kind=JobKind.BUILD_PREFERENCES, params=spec.validated_data, created_by=request.user
        )
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class RewardModelWeightsView(APIView):
    @extend_schema(
        responses={(200, "application/octet-stream"): bytes},
        summary="A reward model's weights (safetensors); ?part=metadata for its JSON",
    )
    def get(self, request: AuthenticatedRequest, model_id: int) -> FileResponse | Response:
        reward_model = RewardModel.objects.select_related("project").filter(pk=model_id).first()
        if reward_model is None:
            raise NotFound("no such reward model")
        project = selectors.project_for_member(slug=reward_model.project.slug, user=request.user)
        require_researcher(request, project)
        part = request.query_params.get("part", "weights")
        if part not in ("weights", "metadata"):
            raise ValidationFailed("part must be weights or metadata", fields={"part": ["weights or metadata"]})
        field = reward_model.weights if part == "weights" else reward_model.metadata
        if not field:
            return error_response("not_ready", "this reward model has no weights yet", 409)
        content_type = "application/octet-stream" if part == "weights" else "application/json"
        name = f"{project.slug}-v{reward_model.version}.{'safetensors' if part == 'weights' else 'json'}"
        return FileResponse(field.open("rb"), content_type=content_type, as_attachment=True, filename=name)


class PreferenceExportView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("format", str, enum=["jsonl", "csv", "parquet"], required=False),
            OpenApiParameter("set", int, required=False, description="preference set id (default: latest)"),
        ],
        responses={(200, "application/x-ndjson"): str},
        summary="A preference set: every labelled pair with its target, weight and origin",
    )
    def get(self, request: AuthenticatedRequest, slug: str) -> StreamingHttpResponse | FileResponse | Response:
        project = selectors.project_for_member(slug=slug, user=request.user)
        require_researcher(request, project)
        sets = PreferenceSet.objects.filter(project=project).order_by("-created_at", "-id")
        set_id = request.query_params.get("set")
        if set_id is not None and not set_id.isdigit():
            raise ValidationFailed("set must be an id", fields={"set": ["not an integer"]})
        preference_set = sets.filter(pk=int(set_id)).first() if set_id else sets.first()
        if preference_set is None:
            raise NotFound("no preference set yet")
        fmt = request.query_params.get("format", "jsonl")
        filename = f"{project.slug}-preferences-{preference_set.pk}.{fmt}"
        if fmt == "parquet":
            return FileResponse(
                preference_set.file.open("rb"),
                as_attachment=True,
                filename=filename,
                content_type="application/vnd.apache.parquet",
            )
        if fmt not in ("jsonl", "csv"):
            raise ValidationFailed("format must be jsonl, csv or parquet", fields={"format": ["jsonl, csv or parquet"]})
        table = read_preference_set(preference_set)

        def rows():
            for batch in table.to_batches(max_chunksize=10_000):
                yield from batch.to_pylist()

        stream = exports.as_jsonl(rows()) if fmt == "jsonl" else exports.as_csv(rows(), COLUMNS)
        response = StreamingHttpResponse(stream, content_type="application/x-ndjson" if fmt == "jsonl" else "text/csv")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
