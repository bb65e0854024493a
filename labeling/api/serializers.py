"""API serializers: shapes of the JSON that goes in and out. No business logic here (see services)."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework import serializers

from labeling.models import Choice, Clip, FeedbackMode, Job, Judgment, Project, RewardFactor


class RewardFactorSerializer(serializers.ModelSerializer):
    class Meta:
        model = RewardFactor
        fields = ["key", "label", "description", "unit", "direction", "sigma", "source", "position"]


class ProjectSerializer(serializers.ModelSerializer):
    factors = RewardFactorSerializer(many=True, read_only=True)
    role = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = [
            "slug",
            "name",
            "instructions",
            "env_id",
            "env_kwargs",
            "segment_steps",
            "render_width",
            "render_height",
            "render_fps",
            "feedback_mode",
            "overlap",
            "lease_ttl_seconds",
            "status",
            "created_at",
            "factors",
            "role",
        ]

    def get_role(self, project: Project) -> str | None:
        roles: dict[int, str] = self.context.get("roles", {})
        return roles.get(project.pk)


class FactorSpecSerializer(serializers.Serializer):
    key = serializers.RegexField(r"^[a-z][a-z0-9_]{0,63}$")
    label = serializers.CharField(max_length=100, required=False, default="")  # type: ignore[assignment]
    description = serializers.CharField(required=False, default="", allow_blank=True)
    unit = serializers.CharField(max_length=32, required=False, default="", allow_blank=True)
    direction = serializers.ChoiceField(choices=[1, -1], required=False, default=1)
    sigma = serializers.FloatField(min_value=0.0, required=False, default=1.0)
    source = serializers.CharField(max_length=100, required=False, default="")  # type: ignore[assignment]


class ProjectCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=64, required=False, default="")
    env_id = serializers.CharField(max_length=100)
    env_kwargs = serializers.DictField(required=False, default=dict)
    instructions = serializers.CharField(required=False, default="", allow_blank=True)
    factors = FactorSpecSerializer(many=True, required=False)
    segment_steps = serializers.IntegerField(min_value=2, max_value=10_000, required=False)
    overlap = serializers.IntegerField(min_value=1, max_value=50, required=False, default=1)
    feedback_mode = serializers.ChoiceField(choices=FeedbackMode.choices, required=False, default=FeedbackMode.BOTH)
    render_width = serializers.IntegerField(min_value=16, max_value=1920, required=False)
    render_height = serializers.IntegerField(min_value=16, max_value=1080, required=False)
    render_fps = serializers.IntegerField(min_value=1, max_value=120, required=False)
    lease_ttl_seconds = serializers.IntegerField(min_value=10, max_value=86_400, required=False, default=300)


class ClipSerializer(serializers.ModelSerializer):
    video_url = serializers.SerializerMethodField()
    poster_url = serializers.SerializerMethodField()

    class Meta:
        model = Clip
        fields = [
            "id",
            "rollout",
            "start",
            "length",
            "iteration",
            "render_status",
            "factor_totals",
            "true_return",
            "video_url",
            "poster_url",
        ]

    def _absolute(self, path: str | None) -> str | None:
        request = self.context.get("request")
        return request.build_absolute_uri(path) if (request and path) else path

    def get_video_url(self, clip: Clip) -> str | None:
        return self._absolute(clip.video_url)

    def get_poster_url(self, clip: Clip) -> str | None:
        return self._absolute(clip.poster_url)


class AnnotatorClipSerializer(ClipSerializer):
    """What an annotator's client sees of a clip: the video, not the numbers that could bias the answer."""

    class Meta(ClipSerializer.Meta):
        fields = ["id", "length", "render_status", "video_url", "poster_url"]


class JudgmentCreateSerializer(serializers.Serializer):
    choice = serializers.ChoiceField(choices=Choice.choices)
    lease = serializers.UUIDField()
    client_id = serializers.UUIDField()
    time_spent_ms = serializers.IntegerField(min_value=0, max_value=86_400_000, required=False, allow_null=True)


class JudgmentSerializer(serializers.ModelSerializer):
    annotator = serializers.CharField(source="annotator.username")
    preferred_clip = serializers.IntegerField(source="preferred_clip_id", allow_null=True)

    class Meta:
        model = Judgment
        fields = [
            "id",
            "query",
            "annotator",
            "choice",
            "swapped",
            "preferred_clip",
            "time_spent_ms",
            "client_id",
            "created_at",
        ]


class JobSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id",
            "kind",
            "status",
            "progress",
            "message",
            "error",
            "params",
            "result",
            "created_at",
            "started_at",
            "finished_at",
            "url",
        ]

    def get_url(self, job: Job) -> str:
        return reverse("api-job-detail", args=[job.pk])


class GenerateClipsSerializer(serializers.Serializer):
    rollouts = serializers.IntegerField(min_value=1, max_value=10_000, default=8)
    steps = serializers.IntegerField(min_value=2, max_value=100_000, required=False)
    policies = serializers.ListField(child=serializers.CharField(max_length=100), required=False, min_length=1)
    queries = serializers.IntegerField(min_value=0, max_value=1_000_000, default=50)
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, default=0)
    render = serializers.ChoiceField(choices=["queried", "all", "none"], default="queried")


class JobCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["generate_clips"])
    params = serializers.DictField(required=False, default=dict)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        params = GenerateClipsSerializer(data=attrs["params"])
        params.is_valid(raise_exception=True)
        attrs["params"] = params.validated_data
        return attrs


class RankingCreateSerializer(serializers.Serializer):
    groups = serializers.JSONField(help_text='Levels, most important first: [["angle"], ["speed", "torque"]]')
    sigmas = serializers.JSONField(
        required=False, default=dict, help_text='Per-factor margin multipliers: {"angle": 0.5}'
    )
    comment = serializers.CharField(required=False, default="", allow_blank=True, max_length=5000)


class RankingSerializer(serializers.ModelSerializer):
    annotator = serializers.CharField(source="annotator.username")

    class Meta:
        from labeling.models import FactorRanking

        model = FactorRanking
        fields = ["id", "annotator", "groups", "sigmas", "comment", "created_at"]
