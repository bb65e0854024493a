"""REST API for external data: upload an episode from your own simulator, import a local Minari dataset."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.typing import AuthenticatedRequest
from labeling.api.views import researcher_project

from . import external_data
from .api_runs import RunSerializer


class RolloutUploadSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="The episode as an .npz: observations (T+1, …), actions (T, …), factor_<key> (T,) for every "
        "project factor, optional rewards (T,) and frames (T or T+1, H, W, 3) uint8 (README: the upload format)."
    )
    video = serializers.FileField(
        required=False, help_text="Optional H.264 MP4 of T or T+1 frames, instead of frames in the archive."
    )
    queries = serializers.IntegerField(
        min_value=0, max_value=external_data.MAX_QUERIES, required=False,
        help_text="Random pairwise queries to create (default: one per new clip with video).",
    )  # fmt: skip
    fps = serializers.IntegerField(
        min_value=1, max_value=120, required=False, help_text="Frame rate of the clips cut from frames (1 to 120)."
    )
    render = serializers.ChoiceField(
        choices=["queried", "all"],
        default="queried",
        help_text="Whose video to make: the clips in a query (default), or all (you will ask your own pairs).",
    )


class MinariImportSerializer(serializers.Serializer):
    dataset = serializers.CharField(
        max_length=300, help_text="A dataset id (e.g. pendulum/random-v0) or a path inside MINARI_DATASETS_PATH."
    )
    max_episodes = serializers.IntegerField(
        min_value=1, max_value=1_000_000, required=False, help_text="At most MINARI_MAX_EPISODES (default)."
    )
    queries = serializers.IntegerField(min_value=0, max_value=external_data.MAX_QUERIES, required=False)


class RolloutUploadView(APIView):
    parser_classes = [MultiPartParser]

    @extend_schema(
        request={"multipart/form-data": RolloutUploadSerializer},
        responses={202: RunSerializer},
        summary="Upload an episode from your own simulator (researchers): it is checked, stored and cut into "
        "clips by an upload run",
    )
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        spec = RolloutUploadSerializer(data=request.data)
        spec.is_valid(raise_exception=True)
        data = spec.validated_data
        run = external_data.rollout_upload(
            project=project,
            file=data["file"],
            video=data.get("video"),
            created_by=request.user,
            queries=data.get("queries"),
            fps=data.get("fps"),
            render_all=data["render"] == "all",
        )
        return Response(RunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class MinariImportView(APIView):
    @extend_schema(
        request=MinariImportSerializer,
        responses={202: RunSerializer},
        summary="Import a local Minari dataset's episodes as rollouts and clips (researchers; an import_dataset "
        "run; nothing is downloaded)",
    )
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        spec = MinariImportSerializer(data=request.data)
        spec.is_valid(raise_exception=True)
        data = spec.validated_data
        run = external_data.minari_import_start(
            project=project,
            dataset=data["dataset"],
            created_by=request.user,
            max_episodes=data.get("max_episodes"),
            queries=data.get("queries"),
        )
        return Response(RunSerializer(run).data, status=status.HTTP_202_ACCEPTED)
