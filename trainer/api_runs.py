"""REST API for runs (loop iterations and every other piece of background work) and the policies they train."""

from __future__ import annotations

from typing import Any

from django.http import FileResponse
from django.http.response import HttpResponseBase
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.typing import AuthenticatedRequest
from labeling.api.serializers import bounded_json
from labeling.api.views import require_researcher, researcher_project, visible_object
from labeling.errors import NotFound, ValidationFailed
from labeling.media import VIDEO_TYPE, ranged_file_response

from . import loop
from .api import PreferenceRequestSerializer
from .models import EXTERNAL_DATA_KINDS, PolicyCheckpoint, Run, RunKind


class PolicySerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()
    video_url = serializers.SerializerMethodField(
        help_text="The evaluation episode's MP4 (token auth like the rest of the API); null until it is rendered."
    )

    class Meta:
        model = PolicyCheckpoint
        fields = [
            "id",
            "algorithm",
            "timesteps",
            "reward_model",
            "evaluation",
            "video_episode",
            "train_seconds",
            "download_url",
            "video_url",
        ]

    def get_download_url(self, policy: PolicyCheckpoint) -> str:
        return f"/api/v1/policies/{policy.pk}/checkpoint"

    def get_video_url(self, policy: PolicyCheckpoint) -> str | None:
        return f"/api/v1/policies/{policy.pk}/video" if policy.video else None


class RunSerializer(serializers.ModelSerializer):
    kind_label = serializers.CharField(source="get_kind_display", read_only=True)
    state_label = serializers.CharField(source="get_state_display", read_only=True)
    title = serializers.CharField(read_only=True)
    overall_progress = serializers.FloatField(read_only=True)
    policy = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = [
            "id",
            "kind",
            "kind_label",
            "title",
            "number",
            "steps",
            "state",
            "state_label",
            "paused",
            "progress",
            "overall_progress",
            "message",
            "error",
            "params",
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
            "url",
        ]

    @extend_schema_field(PolicySerializer(allow_null=True))
    def get_policy(self, run: Run) -> dict[str, Any] | None:
        policy = getattr(run, "policy", None)
        return PolicySerializer(policy).data if policy is not None else None

    def get_url(self, run: Run) -> str:
        return reverse("api-run", args=[run.pk])


class GenerateClipsSerializer(serializers.Serializer):
    rollouts = serializers.IntegerField(
        min_value=1, max_value=1_000, default=8, help_text="Episodes to roll out (1 to 1 000)."
    )
    steps = serializers.IntegerField(
        min_value=2, max_value=10_000, required=False, help_text="Steps per episode (2 to 10 000; preset default)."
    )
    policies = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        min_length=1,
        max_length=32,
        help_text="Scripted policy names used in turn (1 to 32 names).",
    )
    queries = serializers.IntegerField(
        min_value=0, max_value=100_000, default=50, help_text="Random queries to create (0 to 100 000)."
    )
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, default=0, help_text="0 to 2**31 - 1.")
    render = serializers.ChoiceField(choices=["queried", "all", "none"], default="queried")


class TrainingParamsSerializer(serializers.Serializer):
    preference_set = serializers.IntegerField(
        min_value=1, required=False, help_text="The preference set to train on (default: the newest)."
    )
    config = serializers.DictField(required=False, default=dict, help_text="RewardModelConfig overrides.")
    holdout_clip_fraction = serializers.FloatField(min_value=0.0, max_value=0.9, default=0.1)
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False, help_text="0 to 2**31 - 1.")

    def validate_config(self, value: dict[str, Any]) -> dict[str, Any]:
        return bounded_json(value, name="config", max_items=128, max_depth=2)


class RenderParamsSerializer(serializers.Serializer):
    clips = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1), min_length=1, max_length=10_000
    )


# How each kind's parameters are checked at the edge (bounds, types); the run service checks their meaning.
PARAMS_SERIALIZERS: dict[str, type[serializers.Serializer]] = {
    RunKind.RETRAIN: PreferenceRequestSerializer,
    RunKind.BUILD_PREFERENCES: PreferenceRequestSerializer,
    RunKind.TRAIN_REWARD_MODEL: TrainingParamsSerializer,
    RunKind.GENERATE_CLIPS: GenerateClipsSerializer,
    RunKind.RENDER_CLIPS: RenderParamsSerializer,
}


class RunCreateSerializer(serializers.Serializer):
    # Uploads and dataset imports have their own routes (they bring files or a dataset, not params).
    kind = serializers.ChoiceField(
        choices=[(value, label) for value, label in RunKind.choices if value not in EXTERNAL_DATA_KINDS],
        default=RunKind.ITERATION,
    )
    count = serializers.IntegerField(
        min_value=1, max_value=100, default=1, help_text="Iterations: how many to run one after another (1 to 100)."
    )
    settings = serializers.DictField(
        required=False,
        default=dict,
        help_text="Iterations: loop-settings overrides (see LoopSettings; maxima are in each field's doc).",
    )
    params = serializers.DictField(
        required=False,
        default=dict,
        help_text="Other kinds: generate_clips {rollouts, steps, policies, queries, seed, render}; retrain and "
        "build_preferences {sources, cap, margin_scope, pair_sampling, batches, keep_ties, level_weight_alpha, "
        "seed, config}; train_reward_model {preference_set, config, holdout_clip_fraction, seed}; "
        "render_clips {clips}.",
    )

    def validate_settings(self, value: dict[str, Any]) -> dict[str, Any]:
        return bounded_json(value, name="settings", max_items=256, max_depth=3)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        kind = attrs["kind"]
        if kind == RunKind.ITERATION:
            if attrs["params"]:
                raise serializers.ValidationError({"params": ["an iteration takes settings, not params"]})
            return attrs
        if attrs["settings"] or attrs["count"] != 1:
            raise serializers.ValidationError({"settings": ["only iterations take settings and count"]})
        params = PARAMS_SERIALIZERS[kind](data=bounded_json(attrs["params"], name="params", max_items=10_050))
        if not params.is_valid():
            raise serializers.ValidationError({"params": params.errors})
        attrs["params"] = params.validated_data
        return attrs


class RunActionSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=list(loop.RUN_ACTIONS))


def _run_for_researcher(request: AuthenticatedRequest, run_id: int) -> Run:
    run = visible_object(Run.objects.select_related("project"), pk=run_id, request=request, name="run")
    require_researcher(request, run.project)
    return run


class RunListView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("kind", str, enum=list(RunKind.values), required=False)],
        responses=RunSerializer(many=True),
        summary="The project's runs (loop iterations, retrains, clip generation, renders), newest first",
    )
    def get(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        runs = Run.objects.filter(project=project).select_related("policy").order_by("-created_at", "-id")
        kind = request.query_params.get("kind")
        if kind is not None:
            if kind not in RunKind.values:
                raise ValidationFailed(f"unknown run kind {kind[:40]!r}", fields={"kind": ["not a kind of run"]})
            runs = runs.filter(kind=kind)
        return Response(RunSerializer(runs[:200], many=True).data)

    @extend_schema(
        request=RunCreateSerializer,
        responses={201: RunSerializer},
        summary="Start a run: the next loop iteration(s) (pairwise mode: waits for its label budget), a retrain, "
        "a preference build, a reward training, clip generation or a render",
    )
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        spec = RunCreateSerializer(data=request.data)
        spec.is_valid(raise_exception=True)
        data = spec.validated_data
        if data["kind"] == RunKind.ITERATION:
            run = loop.iteration_create(
                project=project, created_by=request.user, overrides=data["settings"], count=data["count"]
            )
        else:
            run = loop.run_start(project=project, kind=data["kind"], params=data["params"], created_by=request.user)
        return Response(RunSerializer(run).data, status=status.HTTP_201_CREATED)


class RunDetailView(APIView):
    @extend_schema(responses=RunSerializer, summary="One run with its live progress")
    def get(self, request: AuthenticatedRequest, run_id: int) -> Response:
        return Response(RunSerializer(_run_for_researcher(request, run_id)).data)

    @extend_schema(
        request=RunActionSerializer,
        responses=RunSerializer,
        summary="pause | resume | cancel | start | retry (start: a waiting run now; retry: a failed one from its "
        "failed step)",
    )
    def post(self, request: AuthenticatedRequest, run_id: int) -> Response:
        run = _run_for_researcher(request, run_id)
        spec = RunActionSerializer(data=request.data)
        spec.is_valid(raise_exception=True)
        loop.RUN_ACTIONS[spec.validated_data["action"]](run)
        run.refresh_from_db()
        return Response(RunSerializer(run).data)


class PolicyCheckpointView(APIView):
    @extend_schema(
        responses={(200, "application/zip"): bytes},
        summary="A policy's Stable-Baselines3 zip (load it with set_parameters, not .load, to avoid unpickling)",
    )
    def get(self, request: AuthenticatedRequest, policy_id: int) -> FileResponse:
        policy = visible_object(
            PolicyCheckpoint.objects.select_related("project", "run"),
            pk=policy_id,
            request=request,
            name="policy",
        )
        project = policy.project
        require_researcher(request, project)
        if not policy.model_file:
            raise ValidationFailed("this policy has no checkpoint file")
        name = f"{project.slug}-iteration-{policy.run.number}-{policy.algorithm}.zip"
        return FileResponse(
            policy.model_file.open("rb"), content_type="application/zip", as_attachment=True, filename=name
        )


class PolicyVideoView(APIView):
    @extend_schema(
        responses={(200, "video/mp4"): bytes, (206, "video/mp4"): bytes},
        summary="A policy's evaluation episode as an MP4 (streamed; one HTTP Range gives 206); 404 until rendered",
    )
    def get(self, request: AuthenticatedRequest, policy_id: int) -> HttpResponseBase:
        policy = visible_object(
            PolicyCheckpoint.objects.select_related("project"), pk=policy_id, request=request, name="policy"
        )
        require_researcher(request, policy.project)  # as the checkpoint and the dashboard's policy page
        if not policy.video:
            raise NotFound("this policy has no video yet (it is rendered after training; see video_episode)")
        # Streamed through Django with the media rules (video/mp4, nosniff, sandbox), whatever the storage: a
        # token client gets the bytes, not a redirect to a signed object-store URL.
        return ranged_file_response(request, policy.video.storage, str(policy.video.name), VIDEO_TYPE)
