"""REST API v1 views: thin adapters from HTTP to selectors and services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from django.db.models import Model, QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.utils import (
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.tokens import token_project_id
from accounts.typing import AuthenticatedRequest
from labeling import assignment, exports, project_specs, rankings, revisions, selectors, services
from labeling.errors import LeaseInvalid, NotFound, ServiceError, ValidationFailed
from labeling.models import Choice, Judgment, Lease, Membership, Project, Query, RenderStatus, RewardFactor
from labeling.parsing import parse_int, parse_optional_int

from .errors import error_response
from .serializers import (
    AnnotatorClipSerializer,
    ClipSerializer,
    JudgmentCreateSerializer,
    JudgmentSerializer,
    ProjectCreateSerializer,
    ProjectSerializer,
    ProjectSpecBodySerializer,
    RankingCreateSerializer,
    RankingSerializer,
    RewardFactorSerializer,
)


def _roles(user, projects) -> dict[int, str]:
    if user.is_superuser:
        return {p.pk: "researcher" for p in projects}
    return dict(Membership.objects.filter(user=user, project__in=projects).values_list("project_id", "role"))


class _Forbidden(ServiceError):
    code = "permission_denied"
    status = 403


def require_researcher(request: AuthenticatedRequest, project) -> None:
    if not selectors.is_project_researcher(project=project, user=request.user):
        raise _Forbidden("only the project's researchers may do this")


def member_projects(request: AuthenticatedRequest) -> QuerySet[Project]:
    """The projects the caller belongs to, narrowed to its token's project when the token is scoped to one."""
    projects = selectors.projects_for_user(request.user)
    scope = token_project_id(request.auth)
    return projects if scope is None else projects.filter(pk=scope)


def member_project(request: AuthenticatedRequest, slug: str) -> Project:
    """The project, if the caller belongs to it (and its token may reach it); otherwise the same 404 as a project
    that does not exist: neither outsiders nor a token scoped to another project learn that it exists."""
    project = member_projects(request).filter(slug=slug).first()
    if project is None:
        raise NotFound("no such project")
    return project


def outside_token_scope(request: AuthenticatedRequest, queryset: QuerySet[Any], **lookup: Any) -> bool:
    """Whether the row ``lookup`` names lies outside the project the request's token is scoped to (False when the
    token is not scoped). ``queryset``'s model must reach its project through ``query__project``."""
    scope = token_project_id(request.auth)
    return scope is not None and not queryset.filter(query__project_id=scope, **lookup).exists()


def researcher_project(request: AuthenticatedRequest, slug: str) -> Project:
    """The project, for its researchers; 404 for non-members (no existence oracle), 403 for annotators."""
    project = member_project(request, slug)
    require_researcher(request, project)
    return project


_M = TypeVar("_M", bound=Model)


def visible_object(queryset: QuerySet[_M], *, pk: int, request: AuthenticatedRequest, name: str) -> _M:
    """The object with ``pk`` if it belongs to a project the caller is a member of.

    Otherwise exactly the answer for an id that doesn't exist (the same 404, byte for byte): an outsider can't
    tell another project's objects from missing ones. Inside a project the caller belongs to, researcher-only
    routes may still answer 403 afterwards (the project's existence is known to its members).
    """
    member_of = member_projects(request).values("pk")
    found = queryset.filter(pk=pk, project__in=member_of).first()
    if found is None:
        raise NotFound(f"no such {name}")
    return found


class ProjectListView(APIView):
    @extend_schema(responses=ProjectSerializer(many=True), summary="Projects you belong to")
    def get(self, request: AuthenticatedRequest) -> Response:
        projects = list(member_projects(request).prefetch_related("factors"))
        data = ProjectSerializer(projects, many=True, context={"roles": _roles(request.user, projects)}).data
        return Response(data)

    @extend_schema(
        request=PolymorphicProxySerializer(
            component_name="ProjectCreateBody",
            serializers=[ProjectSpecBodySerializer, ProjectCreateSerializer],
            resource_type_field_name=None,
        ),
        responses={201: ProjectSerializer},
        summary='Create a project from a project spec ({"spec": ...}) or the simple JSON body (researchers)',
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        if not request.user.is_researcher:
            raise _Forbidden("only researchers may create projects")
        if token_project_id(request.auth) is not None:
            raise _Forbidden("a token scoped to a project cannot create projects")
        if isinstance(request.data, dict) and "spec" in request.data:
            body = ProjectSpecBodySerializer(data=request.data)
            body.is_valid(raise_exception=True)
            project = project_specs.project_create_from_spec(created_by=request.user, spec=body.validated_data["spec"])
        else:
            spec = ProjectCreateSerializer(data=request.data)
            spec.is_valid(raise_exception=True)
            project = services.project_create(created_by=request.user, **spec.validated_data)
        data = ProjectSerializer(project, context={"roles": {project.pk: "researcher"}}).data
        return Response(data, status=status.HTTP_201_CREATED)


class ProjectDetailView(APIView):
    @extend_schema(responses=ProjectSerializer, summary="One project with its reward factors")
    def get(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = member_project(request, slug)
        roles = _roles(request.user, [project])
        return Response(ProjectSerializer(project, context={"roles": roles}).data)


class ProjectSpecView(APIView):
    @extend_schema(
        responses=inline_serializer("ProjectSpec", {"spec_version": serializers.IntegerField()}),
        summary="The project's spec (researchers); POSTing it with another slug creates an equal project",
    )
    def get(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        return Response(project_specs.project_spec(project))


class ClipPagination(CursorPagination):
    ordering = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class ClipListView(APIView):
    # Declared on the view so that the OpenAPI schema describes the paginated envelope
    # {next, previous, results: [...]} that the view returns (drf-spectacular reads pagination_class).
    pagination_class = ClipPagination

    @extend_schema(
        parameters=[
            OpenApiParameter("iteration", int, required=False, description="only clips of this iteration (≥ 0)"),
            OpenApiParameter("run", int, required=False, description="only clips cut by this run (an upload's)"),
        ],
        # Researchers get every field; annotators only what doesn't bias their answers (AnnotatorClip).
        responses=PolymorphicProxySerializer(
            component_name="ClipForRole",
            serializers=[ClipSerializer, AnnotatorClipSerializer],
            resource_type_field_name=None,
            many=True,
        ),
        summary="The project's clips, cursor-paginated",
    )
    def get(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = member_project(request, slug)
        iteration = parse_optional_int(
            request.query_params.get("iteration"), name="iteration", minimum=0, maximum=1_000_000_000
        )
        run = parse_optional_int(request.query_params.get("run"), name="run", minimum=1, maximum=2**63 - 1)
        clips = selectors.clips_for_project(project, iteration=iteration, run=run)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(clips, request, view=self)
        researcher = selectors.is_project_researcher(project=project, user=request.user)
        serializer_class = ClipSerializer if researcher else AnnotatorClipSerializer
        return paginator.get_paginated_response(serializer_class(page, many=True, context={"request": request}).data)


def lease_payload(request: AuthenticatedRequest, lease) -> dict:
    query = lease.query
    left, right = lease.shown_clips()
    context = {"request": request}
    factors_only = left.render_status == RenderStatus.NO_VIDEO and right.render_status == RenderStatus.NO_VIDEO
    return {
        "id": query.pk,
        "source": query.source,
        "left": AnnotatorClipSerializer(left, context=context).data,
        "right": AnnotatorClipSerializer(right, context=context).data,
        # Neither clip has video: answer from the factor totals (each side's factor_totals, read with these).
        "factors_only": factors_only,
        "factors": RewardFactorSerializer(RewardFactor.objects.filter(project_id=query.project_id), many=True).data
        if factors_only
        else None,
        "lease": str(lease.token),
        "lease_expires_at": lease.expires_at.isoformat(),
    }


_NEXT_RESPONSE = inline_serializer(
    "NextQueryResponse",
    {
        "query": inline_serializer(
            "LeasedQuery",
            {
                "id": serializers.IntegerField(),
                "source": serializers.CharField(),
                "left": AnnotatorClipSerializer(),
                "right": AnnotatorClipSerializer(),
                "factors_only": serializers.BooleanField(),
                "factors": RewardFactorSerializer(many=True, allow_null=True),
                "lease": serializers.UUIDField(),
                "lease_expires_at": serializers.DateTimeField(),
            },
            allow_null=True,
        ),
        "reason": serializers.CharField(allow_null=True),
        "message": serializers.CharField(allow_null=True),
    },
)


class NextQueryView(APIView):
    @extend_schema(request=None, responses=_NEXT_RESPONSE, summary="Lease your next query")
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = member_project(request, slug)
        result = assignment.lease_next_query(project=project, annotator=request.user)
        if result.lease is None:
            return Response({"query": None, "reason": result.reason, "message": result.message})
        lease = result.lease
        lease.query = Query.objects.select_related("clip_a", "clip_b").get(pk=lease.query_id)
        return Response({"query": lease_payload(request, lease), "reason": None, "message": None})


class PairQueriesSerializer(serializers.Serializer):
    pairs = serializers.ListField(
        child=serializers.ListField(
            child=serializers.IntegerField(min_value=1, max_value=2**63 - 1), min_length=2, max_length=2
        ),
        min_length=1,
        max_length=services.MAX_PAIRS_PER_REQUEST,
        help_text="Pairs of the project's clip ids, e.g. [[12, 40], [13, 41]]: both with video, or both without "
        "(factors-only: compared by their factor totals).",
    )
    priority = serializers.IntegerField(
        min_value=0, max_value=1000, required=False, default=0, help_text="Higher is served first (default 0)."
    )


_QUERY_ANSWERS_FIELDS: dict[str, serializers.Field] = {
    "id": serializers.IntegerField(),
    "clip_a": serializers.IntegerField(),
    "clip_b": serializers.IntegerField(),
    "source": serializers.CharField(),
    "status": serializers.CharField(),
    "answers_wanted": serializers.IntegerField(),
    "answers_given": serializers.IntegerField(),
    "answers": serializers.DictField(child=serializers.IntegerField()),
    "target_a": serializers.FloatField(allow_null=True),
    "majority": serializers.CharField(allow_null=True),
}
_QUERY_ANSWERS_LIST = inline_serializer(
    "QueryAnswersList", {"results": inline_serializer("QueryAnswers", _QUERY_ANSWERS_FIELDS, many=True)}
)


def _query_ids(raw: str | None) -> list[int]:
    text = (raw or "").strip()
    if not text:
        raise ValidationFailed("name the queries: ids=1,2,3", fields={"ids": ["required"]})
    parts = text.split(",")
    if len(parts) > services.MAX_PAIRS_PER_REQUEST:
        limit = services.MAX_PAIRS_PER_REQUEST
        raise ValidationFailed(f"at most {limit} ids a request", fields={"ids": [f"at most {limit}"]})
    return [parse_int(part.strip(), name="ids", minimum=1) for part in parts]


class PairQueriesView(APIView):
    """Queries a program asks for by pair, and their answers (researchers): imitation's preference gatherer."""

    @extend_schema(
        parameters=[OpenApiParameter("ids", str, required=True, description="comma-separated query ids, at most 500")],
        responses=_QUERY_ANSWERS_LIST,
        summary="Queries' status and human answers in canonical terms (researchers)",
    )
    def get(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        ids = _query_ids(request.query_params.get("ids"))
        return Response({"results": selectors.query_answers(project=project, query_ids=ids)})

    @extend_schema(
        request=PairQueriesSerializer,
        responses=_QUERY_ANSWERS_LIST,
        summary="Ask for specific pairs of clips (researchers): their queries, made once per pair, in order",
    )
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        payload = PairQueriesSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        queries = services.queries_for_pairs(
            project=project,
            pairs=[(a, b) for a, b in data["pairs"]],
            priority=data["priority"],
            # The serving order of new queries: random, and no seed a caller could use to predict it.
            rng=np.random.default_rng(),
        )
        ids = [query.pk for query in queries]
        return Response({"results": selectors.query_answers(project=project, query_ids=ids)})


class JudgmentCreateView(APIView):
    @extend_schema(
        request=JudgmentCreateSerializer,
        responses={201: JudgmentSerializer, 200: JudgmentSerializer},
        summary="Answer a leased query (idempotent on client_id)",
    )
    def post(self, request: AuthenticatedRequest, query_id: int) -> Response:
        query = visible_object(Query.objects.select_related("project"), pk=query_id, request=request, name="query")
        payload = JudgmentCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        result = assignment.judgment_submit(
            query_id=query.pk,
            annotator=request.user,
            choice=data["choice"],
            lease_token=data["lease"],
            client_id=data["client_id"],
            time_spent_ms=data.get("time_spent_ms"),
        )
        return Response(
            JudgmentSerializer(result.judgment).data,
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )


class JudgmentDetailView(APIView):
    @extend_schema(
        request=inline_serializer("JudgmentRevision", {"choice": serializers.ChoiceField(choices=Choice.choices)}),
        responses=JudgmentSerializer,
        summary="Revise one of your answers (the earlier choice is kept as a revision)",
    )
    def patch(self, request: AuthenticatedRequest, judgment_id: int) -> Response:
        if outside_token_scope(request, Judgment.objects.all(), pk=judgment_id):
            raise NotFound("no such judgment of yours")
        choice = request.data.get("choice") if isinstance(request.data, dict) else None
        judgment = revisions.judgment_revise(judgment_id=judgment_id, annotator=request.user, choice=str(choice))
        return Response(JudgmentSerializer(judgment).data)


class JudgmentUndoView(APIView):
    @extend_schema(
        request=None,
        responses=_NEXT_RESPONSE,
        summary="Take back your last answer (within 30 s); the pair comes back to you, leased",
    )
    def post(self, request: AuthenticatedRequest, judgment_id: int) -> Response:
        if outside_token_scope(request, Judgment.objects.all(), pk=judgment_id):
            raise NotFound("no such judgment of yours")
        lease = revisions.judgment_undo(judgment_id=judgment_id, annotator=request.user)
        lease.query = Query.objects.select_related("clip_a", "clip_b").get(pk=lease.query_id)
        return Response({"query": lease_payload(request, lease), "reason": None, "message": None})


class LeaseHeartbeatView(APIView):
    @extend_schema(
        request=None,
        responses=inline_serializer(
            "LeaseState", {"lease": serializers.UUIDField(), "expires_at": serializers.DateTimeField()}
        ),
        summary="Keep a lease alive",
    )
    def post(self, request: AuthenticatedRequest, token: str) -> Response:
        if outside_token_scope(request, Lease.objects.all(), token=_uuid(token)):
            raise LeaseInvalid("this lease does not exist or is not yours")
        lease = assignment.lease_heartbeat(token=_uuid(token), annotator=request.user)
        return Response({"lease": str(lease.token), "expires_at": lease.expires_at.isoformat()})


class LeaseSkipView(APIView):
    @extend_schema(request=None, responses={204: None}, summary="Skip a leased pair; it is not offered to you again")
    def post(self, request: AuthenticatedRequest, token: str) -> Response:
        if outside_token_scope(request, Lease.objects.all(), token=_uuid(token)):
            raise NotFound("no such lease")
        if not assignment.lease_skip(token=_uuid(token), annotator=request.user):
            raise NotFound("no such lease")
        return Response(status=status.HTTP_204_NO_CONTENT)


class LeaseReleaseView(APIView):
    @extend_schema(request=None, responses={204: None}, summary="Give a leased query back")
    def post(self, request: AuthenticatedRequest, token: str) -> Response:
        if outside_token_scope(request, Lease.objects.all(), token=_uuid(token)):
            return Response(status=status.HTTP_204_NO_CONTENT)  # releasing nothing is fine, as for any lease
        assignment.lease_release(token=_uuid(token), annotator=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _uuid(value: str):
    import uuid

    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("no such lease") from None


def export_response(export: exports.Export, fmt: str, filename: str) -> StreamingHttpResponse | Response:
    """Stream ``export`` as ``fmt`` (jsonl, csv or parquet) with a download name; 400 for any other format."""
    if fmt not in exports.FORMATS:
        return error_response(
            "invalid", "format must be jsonl, csv or parquet", 400, {"format": ["jsonl, csv or parquet"]}
        )
    response = StreamingHttpResponse(exports.stream(export, fmt), content_type=exports.CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="{filename}.{fmt}"'
    return response


EXPORT_FORMAT = OpenApiParameter("format", str, enum=list(exports.FORMATS), required=False)
EXPORT_RESPONSES = {
    (200, "application/x-ndjson"): str,
    (200, "text/csv"): str,
    (200, "application/vnd.apache.parquet"): bytes,
}


class _ExportView(APIView):
    """A researcher streams one kind of the project's rows as ``?format=jsonl|csv|parquet`` (labeling.exports)."""

    permission_classes = [IsAuthenticated]
    rows: Callable[[Project], Any]
    name: str

    def get(self, request: AuthenticatedRequest, slug: str) -> StreamingHttpResponse | Response:
        project = researcher_project(request, slug)
        fmt = request.query_params.get("format", "jsonl")
        return export_response(self.rows(project), fmt, f"{project.slug}-{self.name}")


def _export_schema(summary: str) -> Callable[[type[_ExportView]], type[_ExportView]]:
    return extend_schema_view(
        get=extend_schema(parameters=[EXPORT_FORMAT], responses=EXPORT_RESPONSES, summary=summary)
    )


@_export_schema("Stream every judgment of the project (JSON lines, CSV or Parquet)")
class JudgmentExportView(_ExportView):
    rows, name = staticmethod(exports.judgments), "judgments"


@_export_schema("Stream every clip: lineage (rollout, run, policy, iteration), true return, factor totals")
class ClipExportView(_ExportView):
    rows, name = staticmethod(exports.clips), "clips"


@_export_schema("Stream every factor ranking of the project, older ones included")
class RankingExportView(_ExportView):
    rows, name = staticmethod(exports.rankings), "rankings"


class RankingListView(APIView):
    @extend_schema(
        responses=RankingSerializer(many=True), summary="Rankings: yours, or every annotator's for researchers"
    )
    def get(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = member_project(request, slug)
        visible = project.rankings.select_related("annotator")
        if not selectors.is_project_researcher(project=project, user=request.user):
            visible = visible.filter(annotator=request.user)
        return Response(RankingSerializer(visible, many=True).data)

    @extend_schema(
        request=RankingCreateSerializer,
        responses={201: RankingSerializer},
        summary="Submit your factor ranking (becomes your current one; earlier ones are kept)",
    )
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = member_project(request, slug)
        if not project.has_ranking:
            raise _Forbidden("this project does not collect factor rankings")
        payload = RankingCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        ranking = rankings.ranking_submit(project=project, annotator=request.user, **payload.validated_data)
        return Response(RankingSerializer(ranking).data, status=status.HTTP_201_CREATED)
