"""REST API for the disagreement review: judged pairs the reward ensemble confidently disputes, and the
researcher's three corrections (mark a judgment wrong, send a pair back, flag an annotator)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.typing import AuthenticatedRequest
from labeling import services
from labeling.api.views import researcher_project
from labeling.parsing import parse_optional_int

from . import review


def review_row(row: dict[str, Any]) -> dict[str, Any]:
    score, query = row["score"], row["query"]
    return {
        "query": query.pk,
        "clip_a": query.clip_a_id,
        "clip_b": query.clip_b_id,
        "source": query.source,
        "status": query.status,
        "answers_wanted": query.answers_wanted,
        "p_model": round(score.p_model, 4),
        "spread": round(score.spread, 4),
        "p_human": round(score.p_human, 4),
        "answers": score.answers,
        "disagreement": round(score.disagreement, 4),
        "judgments": [
            {
                "id": item["judgment"].pk,
                "annotator": item["judgment"].annotator.username,
                "annotator_id": item["judgment"].annotator_id,
                "annotator_flagged": item["flag"] is not None,
                "choice": item["judgment"].choice,
                "swapped": item["judgment"].swapped,
                "label": item["label"],
                "excluded_at": item["judgment"].excluded_at,
                "exclusion_reason": item["judgment"].exclusion_reason,
            }
            for item in row["judgments"]
        ],
    }


class ReviewListView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("page", int, required=False, description="1-based page of 20 pairs")],
        responses=OpenApiTypes.OBJECT,
        summary="Judged pairs where the reward ensemble confidently disagrees with the humans, most confident first",
    )
    def get(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        page_number = parse_optional_int(request.query_params.get("page"), name="page", minimum=1) or 1
        page = review.review_page(project, page=page_number)
        model = page.reward_model
        return Response(
            {
                "reward_model": None if model is None else {"id": model.pk, "version": model.version},
                "count": page.total,
                "to_review": page.to_review,
                "unscored": page.unscored,
                # A big project's first review is computed by a task: no counts or results until it is done.
                "computing": page.computing,
                "page": page.page,
                "pages": page.pages,
                "results": [review_row(row) for row in page.rows],
            }
        )


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=services.REASON_MAX_CHARS, required=False, default="", allow_blank=True)
    undo = serializers.BooleanField(required=False, default=False, help_text="Take the mark back.")


class SendBackSerializer(serializers.Serializer):
    extra = serializers.IntegerField(min_value=1, max_value=services.SEND_BACK_MAX_EXTRA, default=1)


class JudgmentExcludeView(APIView):
    @extend_schema(
        request=ReasonSerializer,
        responses=OpenApiTypes.OBJECT,
        summary="Mark a judgment wrong (left out of training, kept in history and raw exports); undo=true: take back",
    )
    def post(self, request: AuthenticatedRequest, slug: str, judgment_id: int) -> Response:
        project = researcher_project(request, slug)
        body = ReasonSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if body.validated_data["undo"]:
            judgment = services.judgment_include(project=project, judgment_id=judgment_id)
        else:
            judgment = services.judgment_exclude(
                project=project, judgment_id=judgment_id, by=request.user, reason=body.validated_data["reason"]
            )
        return Response(
            {"id": judgment.pk, "excluded_at": judgment.excluded_at, "exclusion_reason": judgment.exclusion_reason}
        )


class QuerySendBackView(APIView):
    @extend_schema(
        request=SendBackSerializer,
        responses=OpenApiTypes.OBJECT,
        summary="Send a judged pair back for more answers (it wants `extra` more and is open again)",
    )
    def post(self, request: AuthenticatedRequest, slug: str, query_id: int) -> Response:
        project = researcher_project(request, slug)
        body = SendBackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        query = services.query_send_back(project=project, query_id=query_id, extra=body.validated_data["extra"])
        return Response(
            {
                "id": query.pk,
                "status": query.status,
                "answers_wanted": query.answers_wanted,
                "answers_given": query.answers_given,
            }
        )


class AnnotatorFlagView(APIView):
    @extend_schema(
        request=ReasonSerializer,
        responses=OpenApiTypes.OBJECT,
        summary="Flag an annotator of the project for researchers' attention; undo=true clears the flag",
    )
    def post(self, request: AuthenticatedRequest, slug: str, user_id: int) -> Response:
        project = researcher_project(request, slug)
        body = ReasonSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if body.validated_data["undo"]:
            membership = services.membership_unflag(project=project, user_id=user_id)
        else:
            membership = services.membership_flag(
                project=project, user_id=user_id, by=request.user, reason=body.validated_data["reason"]
            )
        return Response(
            {
                "annotator_id": membership.user_id,
                "flagged_at": membership.flagged_at,
                "flag_reason": membership.flag_reason,
            }
        )
