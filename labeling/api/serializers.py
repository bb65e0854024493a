"""API serializers: shapes of the JSON that goes in and out. No business logic here (see services)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from labeling import environments
from labeling.models import Choice, Clip, FeedbackMode, Judgment, Project, RenderStatus, RewardFactor
from labeling.parsing import json_size_ok
from labeling.signed_media import signed_clip_url

# Bounds on free-form JSON inputs (objects and lists): entries in all, nesting, string length.
MAX_KWARGS_ITEMS = 64
MAX_PARAMS_ITEMS = 256
MAX_RANKING_ITEMS = 2_000


def bounded_json(value: Any, *, name: str, max_items: int, max_depth: int = 4) -> Any:
    if not json_size_ok(value, max_items=max_items, max_depth=max_depth, max_string=1_000):
        raise serializers.ValidationError(
            f"{name} is too large: at most {max_items} entries, nested {max_depth} deep, strings of 1000 characters"
        )
    return value


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
    sigma = serializers.FloatField(min_value=0.0, max_value=1e6, required=False, default=1.0)
    source = serializers.CharField(max_length=100, required=False, default="")  # type: ignore[assignment]


class ProjectCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=64, required=False, default="")
    env_id = serializers.CharField(max_length=100)
    env_kwargs = serializers.DictField(
        required=False,
        default=dict,
        help_text="Constructor arguments, checked against the environment's allow-list (types, ranges; never paths).",
    )
    instructions = serializers.CharField(required=False, default="", allow_blank=True, max_length=20_000)
    factors = FactorSpecSerializer(many=True, required=False, max_length=64)  # type: ignore[call-arg]
    segment_steps = serializers.IntegerField(min_value=2, max_value=10_000, required=False)
    overlap = serializers.IntegerField(min_value=1, max_value=50, required=False, default=1)
    feedback_mode = serializers.ChoiceField(choices=FeedbackMode.choices, required=False, default=FeedbackMode.BOTH)
    render_width = serializers.IntegerField(min_value=16, max_value=1920, required=False)
    render_height = serializers.IntegerField(min_value=16, max_value=1080, required=False)
    render_fps = serializers.IntegerField(min_value=1, max_value=120, required=False)
    lease_ttl_seconds = serializers.IntegerField(min_value=10, max_value=86_400, required=False, default=300)

    def validate_env_kwargs(self, value: dict[str, Any]) -> dict[str, Any]:
        return bounded_json(value, name="env_kwargs", max_items=MAX_KWARGS_ITEMS, max_depth=2)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        known = environments.get(attrs["env_id"]) is not None or attrs["env_id"] == environments.EXTERNAL
        problems = environments.env_kwargs_problems(attrs["env_id"], attrs.get("env_kwargs") or {}) if known else {}
        if problems:  # keyed "env_kwargs.<key>": the error names the argument
            raise serializers.ValidationError(problems)
        return attrs


class ProjectSpecBodySerializer(serializers.Serializer):
    """``{"spec": {...}}`` or ``{"spec": "<YAML or JSON text>"}``; the spec's schema is in the README."""

    spec = serializers.JSONField(help_text="A project spec (spec_version 1) as an object, or its YAML/JSON text.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(self.initial_data) - {"spec"}
        if unknown:
            raise serializers.ValidationError({key: ["unknown field beside spec"] for key in sorted(unknown)})
        if not isinstance(attrs["spec"], dict | str):
            raise serializers.ValidationError({"spec": ["must be an object or YAML/JSON text"]})
        return attrs


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

    def _signed_url(self, clip: Clip, kind: str) -> str | None:
        """An absolute, short-lived signed URL (MEDIA_URL_MAX_AGE): token clients have no session to send."""
        if not (clip.video if kind == "video" else clip.poster):
            return None
        request = self.context.get("request")
        path = signed_clip_url(clip, kind, user=getattr(request, "user", None))
        return request.build_absolute_uri(path) if request else path

    def get_video_url(self, clip: Clip) -> str | None:
        return self._signed_url(clip, "video")

    def get_poster_url(self, clip: Clip) -> str | None:
        return self._signed_url(clip, "poster")


class AnnotatorClipSerializer(ClipSerializer):
    """What an annotator's client sees of a clip: the video, not the numbers that could bias the answer — except
    for a clip without video (data only), which is compared by its factor totals (factors-only pairs)."""

    has_video = serializers.SerializerMethodField()
    factor_totals = serializers.SerializerMethodField()

    class Meta(ClipSerializer.Meta):
        fields = ["id", "length", "render_status", "has_video", "video_url", "poster_url", "factor_totals"]

    def get_has_video(self, clip: Clip) -> bool:
        return clip.render_status != RenderStatus.NO_VIDEO

    @extend_schema_field(serializers.DictField(child=serializers.FloatField(), allow_null=True))
    def get_factor_totals(self, clip: Clip) -> dict[str, float] | None:
        """The totals by factor key for a clip without video; null for a clip with video (watch it instead)."""
        if clip.render_status != RenderStatus.NO_VIDEO:
            return None
        return {key: float(value) for key, value in (clip.factor_totals or {}).items()}


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


class RankingCreateSerializer(serializers.Serializer):
    groups = serializers.JSONField(help_text='Levels, most important first: [["angle"], ["speed", "torque"]]')
    sigmas = serializers.JSONField(
        required=False, default=dict, help_text='Per-factor margin multipliers: {"angle": 0.5}'
    )
    comment = serializers.CharField(required=False, default="", allow_blank=True, max_length=5000)

    # A ranking lists each factor once; the service refuses one longer than the project's factors early.
    def validate_groups(self, value: Any) -> Any:
        return bounded_json(value, name="groups", max_items=MAX_RANKING_ITEMS, max_depth=2)

    def validate_sigmas(self, value: Any) -> Any:
        return bounded_json(value, name="sigmas", max_items=MAX_RANKING_ITEMS, max_depth=1)


class RankingSerializer(serializers.ModelSerializer):
    annotator = serializers.CharField(source="annotator.username")

    class Meta:
        from labeling.models import FactorRanking

        model = FactorRanking
        fields = ["id", "annotator", "groups", "sigmas", "comment", "created_at"]
