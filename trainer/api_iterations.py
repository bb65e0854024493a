"""REST API for the loop: list and start iterations, pause / resume / cancel them, download policies."""

from __future__ import annotations

from typing import Any

from django.http import FileResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.typing import AuthenticatedRequest
from labeling.api.serializers import bounded_json
from labeling.api.views import require_researcher, researcher_project, visible_object
from labeling.errors import ValidationFailed

from . import loop
from .models import Iteration, PolicyCheckpoint


class PolicySerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = PolicyCheckpoint
        fields = ["id", "algorithm", "timesteps", "reward_model", "evaluation", "train_seconds", "download_url"]

    def get_download_url(self, policy: PolicyCheckpoint) -> str:
        return f"/api/v1/policies/{policy.pk}/checkpoint"


class IterationSerializer(serializers.ModelSerializer):
    state_label = serializers.CharField(source="get_state_display", read_only=True)
    overall_progress = serializers.FloatField(read_only=True)
    policy = serializers.SerializerMethodField()

    class Meta:
        model = Iteration
        fields = [
            "id",
            "number",
            "state",
            "state_label",
            "paused",
            "progress",
            "overall_progress",
            "message",
            "error",
            "start_after_labels",
            "follow_ups",
            "labels_used",
            "preference_set",
            "reward_model",
            "policy",
            "previous",
            "results",
            "settings",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_policy(self, iteration: Iteration) -> dict[str, Any] | None:
        policy = getattr(iteration, "policy", None)
        return PolicySerializer(policy).data if policy is not None else None


class IterationCreateSerializer(serializers.Serializer):
    count = serializers.IntegerField(
        min_value=1, max_value=100, default=1, help_text="Iterations to run one after another (1 to 100)."
    )
    settings = serializers.DictField(
        required=False,
        default=dict,
        help_text="Loop-settings overrides for these iterations (see LoopSettings; maxima are in each field's doc).",
    )

    def validate_settings(self, value: dict[str, Any]) -> dict[str, Any]:
        return bounded_json(value, name="settings", max_items=256, max_depth=3)


class IterationActionSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=list(loop.ITERATION_ACTIONS))


def _iteration_for_researcher(request: AuthenticatedRequest, iteration_id: int) -> Iteration:
    iteration = visible_object(
        Iteration.objects.select_related("project"), pk=iteration_id, request=request, name="iteration"
    )
    require_researcher(request, iteration.project)
    return iteration


class IterationListView(APIView):
    @extend_schema(responses=IterationSerializer(many=True), summary="The loop's iterations, newest first")
    def get(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        iterations = Iteration.objects.filter(project=project).select_related("policy").order_by("-number")
        return Response(IterationSerializer(iterations, many=True).data)

    @extend_schema(
        request=IterationCreateSerializer,
        responses={201: IterationSerializer},
        summary="Start the next iteration (pairwise mode: it waits for its label budget, then starts itself)",
    )
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        spec = IterationCreateSerializer(data=request.data)
        spec.is_valid(raise_exception=True)
        iteration = loop.iteration_create(
            project=project,
            created_by=request.user,
            overrides=spec.validated_data["settings"],
            count=spec.validated_data["count"],
        )
        return Response(IterationSerializer(iteration).data, status=status.HTTP_201_CREATED)


class IterationDetailView(APIView):
    @extend_schema(responses=IterationSerializer, summary="One iteration with its live progress")
    def get(self, request: AuthenticatedRequest, iteration_id: int) -> Response:
        return Response(IterationSerializer(_iteration_for_researcher(request, iteration_id)).data)

    @extend_schema(
        request=IterationActionSerializer,
        responses=IterationSerializer,
        summary="pause | resume | cancel | start | retry (start: a waiting iteration now; retry: a failed one)",
    )
    def post(self, request: AuthenticatedRequest, iteration_id: int) -> Response:
        iteration = _iteration_for_researcher(request, iteration_id)
        spec = IterationActionSerializer(data=request.data)
        spec.is_valid(raise_exception=True)
        loop.ITERATION_ACTIONS[spec.validated_data["action"]](iteration)
        iteration.refresh_from_db()
        return Response(IterationSerializer(iteration).data)


class PolicyCheckpointView(APIView):
    @extend_schema(
        responses={(200, "application/zip"): bytes},
        summary="A policy's Stable-Baselines3 zip (load it with set_parameters, not .load, to avoid unpickling)",
    )
    def get(self, request: AuthenticatedRequest, policy_id: int) -> FileResponse:
        policy = visible_object(
            PolicyCheckpoint.objects.select_related("project", "iteration"),
            pk=policy_id,
            request=request,
            name="policy",
        )
        project = policy.project
        require_researcher(request, project)
        if not policy.model_file:
            raise ValidationFailed("this policy has no checkpoint file")
        name = f"{project.slug}-iteration-{policy.iteration.number}-{policy.algorithm}.zip"
        return FileResponse(
            policy.model_file.open("rb"), content_type="application/zip", as_attachment=True, filename=name
        )
