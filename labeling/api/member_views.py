"""A project's members, invites and audit log (researchers only), and taking an invite (anyone signed in)."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.typing import AuthenticatedRequest
from labeling import selectors, services
from labeling.errors import NotFound
from labeling.invites import invite_id, invite_token
from labeling.models import AuditEntry, Invite, Membership, ProjectRole

from .views import researcher_project


class MemberSerializer(serializers.ModelSerializer):
    user_id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "user_id", "username", "role", "created_at"]
        read_only_fields = fields


class MemberAddSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=ProjectRole.choices, default=ProjectRole.ANNOTATOR)


class MemberRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=ProjectRole.choices)


class InviteSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField(help_text="The link to send; it works once, until it expires.")
    token = serializers.SerializerMethodField(help_text="The link's token, for POST /api/v1/invites/accept/.")
    state = serializers.CharField(read_only=True)

    class Meta:
        model = Invite
        fields = ["id", "role", "state", "created_at", "expires_at", "url", "token"]
        read_only_fields = fields

    def get_url(self, invite: Invite) -> str:
        request: Request = self.context["request"]
        # The page that takes an invite is the front end's; its route is found by name, not imported.
        return request.build_absolute_uri(reverse("invite", args=[invite_token(invite)]))

    def get_token(self, invite: Invite) -> str:
        return invite_token(invite)


class InviteCreateSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=ProjectRole.choices, default=ProjectRole.ANNOTATOR)
    days = serializers.IntegerField(min_value=1, max_value=services.INVITE_MAX_DAYS, default=7)


class InviteAcceptSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=200)


class InviteAcceptedSerializer(serializers.Serializer):
    project = serializers.CharField(help_text="The project's slug.")
    role = serializers.ChoiceField(choices=ProjectRole.choices)


class AuditEntrySerializer(serializers.ModelSerializer):
    actor = serializers.CharField(
        source="actor.username", default=None, read_only=True, allow_null=True, help_text="null: the platform itself"
    )

    class Meta:
        model = AuditEntry
        fields = ["id", "created_at", "actor", "action", "target", "details"]
        read_only_fields = fields


class MemberListView(APIView):
    @extend_schema(responses=MemberSerializer(many=True), summary="The project's members and roles (researchers)")
    def get(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        return Response(MemberSerializer(selectors.project_members(project), many=True).data)

    @extend_schema(
        request=MemberAddSerializer,
        responses={201: MemberSerializer},
        summary="Add an existing user by username, with a role (researchers)",
    )
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        body = MemberAddSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        membership = services.member_add(project=project, actor=request.user, **body.validated_data)
        return Response(MemberSerializer(membership).data, status=status.HTTP_201_CREATED)


class MemberDetailView(APIView):
    @extend_schema(
        request=MemberRoleSerializer,
        responses=MemberSerializer,
        summary="Change a member's role; a project keeps at least one researcher (researchers)",
    )
    def patch(self, request: AuthenticatedRequest, slug: str, member_id: int) -> Response:
        project = researcher_project(request, slug)
        membership = selectors.project_member(project=project, membership_id=member_id)
        body = MemberRoleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        membership = services.member_role_change(
            membership=membership, role=body.validated_data["role"], actor=request.user
        )
        return Response(MemberSerializer(membership).data)

    @extend_schema(
        responses={204: None}, summary="Remove a member; a project keeps at least one researcher (researchers)"
    )
    def delete(self, request: AuthenticatedRequest, slug: str, member_id: int) -> Response:
        project = researcher_project(request, slug)
        membership = selectors.project_member(project=project, membership_id=member_id)
        services.member_remove(membership=membership, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class InviteListView(APIView):
    @extend_schema(responses=InviteSerializer(many=True), summary="The project's open invites (researchers)")
    def get(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        invites = selectors.project_invites(project, open_only=True)
        return Response(InviteSerializer(invites, many=True, context={"request": request}).data)

    @extend_schema(
        request=InviteCreateSerializer,
        responses={201: InviteSerializer},
        summary="Create a single-use invite link with a role and a lifetime in days (researchers)",
    )
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        body = InviteCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        invite = services.invite_create(project=project, actor=request.user, **body.validated_data)
        return Response(InviteSerializer(invite, context={"request": request}).data, status=status.HTTP_201_CREATED)


class InviteDetailView(APIView):
    @extend_schema(responses={204: None}, summary="Revoke an invite: its link stops working (researchers)")
    def delete(self, request: AuthenticatedRequest, slug: str, invite_id: int) -> Response:
        project = researcher_project(request, slug)
        invite = selectors.project_invite(project=project, invite_id=invite_id)
        services.invite_revoke(invite=invite, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class InviteAcceptView(APIView):
    @extend_schema(
        request=InviteAcceptSerializer,
        responses=InviteAcceptedSerializer,
        summary="Take an invite: the caller becomes a member with its role (a member already keeps theirs)",
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        body = InviteAcceptSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        found = invite_id(body.validated_data["token"])
        if found is None:
            raise NotFound("this invite link is not valid")
        membership = services.invite_accept(invite_id=found, user=request.user)
        return Response({"project": membership.project.slug, "role": membership.role})


class AuditListView(APIView):
    @extend_schema(
        responses=AuditEntrySerializer(many=True),
        summary=f"The project's latest {selectors.AUDIT_SHOWN} audit entries, newest first (researchers)",
    )
    def get(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        return Response(AuditEntrySerializer(selectors.audit_entries(project), many=True).data)
