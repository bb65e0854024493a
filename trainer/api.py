"""REST API for training artefacts: reward-model versions, their weights, and preference exports."""

from __future__ import annotations

from typing import Any

from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.typing import AuthenticatedRequest
from labeling import exports
from labeling.api.errors import error_response
from labeling.api.serializers import bounded_json
from labeling.api.views import require_researcher, researcher_project, visible_object
from labeling.errors import NotFound, ValidationFailed
from labeling.parsing import parse_optional_int

from .core.reward import RewardModelConfig
from .models import PreferenceSet, RewardModel
from .preference_building import PreferenceParams, read_preference_set
from .preference_layouts import uni_rlhf_npz


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
            "run",
            "config",
            "metrics",
            "history",
            "created_at",
            "weights_url",
        ]

    def get_weights_url(self, reward_model: RewardModel) -> str | None:
        return f"/api/v1/reward-models/{reward_model.pk}/weights" if reward_model.weights else None


class PreferenceRequestSerializer(serializers.Serializer):
    """How to build a preference set (and, in a retrain, the reward-model config to train on it)."""

    sources = serializers.ChoiceField(choices=["auto", "rankings", "judgments", "both"], default="auto")
    cap = serializers.IntegerField(
        min_value=1, max_value=5_000_000, default=200_000, help_text="Preference pairs at most (1 to 5 000 000)."
    )
    margin_scope = serializers.ChoiceField(choices=["pool", "batch"], default="pool")
    pair_sampling = serializers.ChoiceField(choices=["all", "batch"], default="all")
    batches = serializers.IntegerField(min_value=1, max_value=100_000, default=1000, help_text="1 to 100 000.")
    keep_ties = serializers.BooleanField(default=False)
    level_weight_alpha = serializers.FloatField(
        min_value=0.0, max_value=100.0, default=1.0, help_text="0 to 100 (finite: DRF refuses nan and inf)."
    )
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, default=0, help_text="0 to 2**31 - 1.")
    config = serializers.DictField(
        required=False,
        default=dict,
        help_text="RewardModelConfig overrides (each field's maximum is in trainer/core/reward/config.py).",
    )

    def validate_config(self, value: dict[str, Any]) -> dict[str, Any]:
        return bounded_json(value, name="config", max_items=128, max_depth=2)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        config = attrs.pop("config")
        try:
            RewardModelConfig().merged(config)
            PreferenceParams.from_dict({**attrs, "reward_config": config})
        except (TypeError, ValueError) as error:
            raise serializers.ValidationError({"config": [str(error)]}) from None
        return {**attrs, "reward_config": config}


class RewardModelListView(APIView):
    @extend_schema(responses=RewardModelSerializer(many=True), summary="The project's reward-model versions")
    def get(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        models = RewardModel.objects.filter(project=project).order_by("-version")
        return Response(RewardModelSerializer(models, many=True).data)

    @extend_schema(
        request=PreferenceRequestSerializer,
        responses={202: OpenApiTypes.OBJECT},
        summary="Build preferences from rankings and/or judgments, then train a new version (a retrain run; the "
        "same as POST …/runs/ with kind=retrain)",
    )
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        from . import loop
        from .api_runs import RunSerializer
        from .models import RunKind

        project = researcher_project(request, slug)
        spec = PreferenceRequestSerializer(data=request.data)
        spec.is_valid(raise_exception=True)
        run = loop.run_start(project=project, kind=RunKind.RETRAIN, params=spec.validated_data, created_by=request.user)
        return Response(RunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class RewardModelWeightsView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("part", str, enum=["weights", "metadata"], required=False)],
        responses={(200, "application/octet-stream"): bytes, (200, "application/json"): OpenApiTypes.OBJECT},
        summary="A reward model's weights (safetensors); ?part=metadata for its JSON",
    )
    def get(self, request: AuthenticatedRequest, model_id: int) -> FileResponse | Response:
        reward_model = visible_object(
            RewardModel.objects.select_related("project"), pk=model_id, request=request, name="reward model"
        )
        project = reward_model.project
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
            OpenApiParameter(
                "format",
                str,
                enum=["jsonl", "csv", "parquet", "uni-rlhf"],
                required=False,
                description="uni-rlhf: Preference Transformer / Uni-RLHF label arrays (.npz) for dataset projects",
            ),
            OpenApiParameter("set", int, required=False, description="preference set id (default: latest)"),
        ],
        responses={
            (200, "application/x-ndjson"): str,
            (200, "text/csv"): str,
            (200, "application/vnd.apache.parquet"): bytes,
            (200, "application/octet-stream"): bytes,
        },
        summary="A preference set: every labelled pair with its target, weight and origin",
    )
    def get(
        self, request: AuthenticatedRequest, slug: str
    ) -> StreamingHttpResponse | FileResponse | HttpResponse | Response:
        project = researcher_project(request, slug)
        sets = PreferenceSet.objects.filter(project=project).order_by("-created_at", "-id")
        set_id = parse_optional_int(request.query_params.get("set"), name="set", minimum=1)
        preference_set = sets.filter(pk=set_id).first() if set_id is not None else sets.first()
        if preference_set is None:
            raise NotFound("no preference set yet")
        fmt = request.query_params.get("format", "jsonl")
        if fmt == "uni-rlhf":
            npz = HttpResponse(uni_rlhf_npz(preference_set), content_type="application/octet-stream")
            name = f"{project.slug}-preferences-{preference_set.pk}-uni-rlhf.npz"
            npz["Content-Disposition"] = f'attachment; filename="{name}"'
            return npz
        filename = f"{project.slug}-preferences-{preference_set.pk}.{fmt}"
        if fmt == "parquet":
            return FileResponse(
                preference_set.file.open("rb"),
                as_attachment=True,
                filename=filename,
                content_type="application/vnd.apache.parquet",
            )
        if fmt not in ("jsonl", "csv"):
            raise ValidationFailed(
                "format must be jsonl, csv, parquet or uni-rlhf", fields={"format": ["jsonl, csv, parquet or uni-rlhf"]}
            )
        stream = exports.stream(exports.from_arrow(read_preference_set(preference_set)), fmt)
        response = StreamingHttpResponse(stream, content_type=exports.CONTENT_TYPES[fmt])
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
