"""Webhook endpoints of a project and their delivery logs (researchers only)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.typing import AuthenticatedRequest
from labeling import events, webhooks
from labeling.models import WebhookDelivery, WebhookEndpoint

from .views import require_researcher, researcher_project, visible_object

EVENT_CHOICES = sorted(events.WEBHOOK_EVENTS)
DELIVERIES_SHOWN = 100


class WebhookSerializer(serializers.ModelSerializer):
    project: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    events = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_CHOICES), min_length=1, max_length=16)

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "project", "url", "description", "events", "is_active", "created_at", "updated_at"]
        read_only_fields = ["id", "project", "created_at", "updated_at"]


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.CharField(read_only=True, help_text="whsec_…: shown this once; verify signatures with it.")

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]


class WebhookBodySerializer(serializers.Serializer):
    url = serializers.URLField(max_length=2000)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    events = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_CHOICES), min_length=1, max_length=16)
    is_active = serializers.BooleanField(required=False)


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "msg_id",
            "event",
            "status",
            "attempts",
            "response_code",
            "error",
            "duration_ms",
            "created_at",
            "last_attempt_at",
            "next_attempt_at",
            "delivered_at",
            "attempt_log",
            "payload",
        ]
        read_only_fields = fields


def _endpoint(request: AuthenticatedRequest, webhook_id: int) -> WebhookEndpoint:
    endpoint = visible_object(
        WebhookEndpoint.objects.select_related("project"), pk=webhook_id, request=request, name="webhook"
    )
    require_researcher(request, endpoint.project)
    return endpoint


class WebhookListView(APIView):
    @extend_schema(responses=WebhookSerializer(many=True), summary="The project's webhook endpoints (researchers)")
    def get(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        return Response(WebhookSerializer(project.webhooks.select_related("project"), many=True).data)

    @extend_schema(
        request=WebhookBodySerializer,
        responses={201: WebhookCreatedSerializer},
        summary="Register a webhook endpoint; the answer holds its signing secret, shown this once (researchers)",
    )
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        project = researcher_project(request, slug)
        body = WebhookBodySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        endpoint = webhooks.endpoint_create(project=project, created_by=request.user, **body.validated_data)
        return Response(WebhookCreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED)


class WebhookDetailView(APIView):
    @extend_schema(responses=WebhookSerializer, summary="One webhook endpoint (researchers)")
    def get(self, request: AuthenticatedRequest, webhook_id: int) -> Response:
        return Response(WebhookSerializer(_endpoint(request, webhook_id)).data)

    @extend_schema(
        request=WebhookBodySerializer(partial=True),
        responses=WebhookSerializer,
        summary="Change a webhook endpoint's URL, events, description or whether it is active (researchers)",
    )
    def patch(self, request: AuthenticatedRequest, webhook_id: int) -> Response:
        endpoint = _endpoint(request, webhook_id)
        body = WebhookBodySerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        changes: dict[str, Any] = dict(body.validated_data)
        webhooks.endpoint_update(endpoint, **changes)
        return Response(WebhookSerializer(endpoint).data)

    @extend_schema(responses={204: None}, summary="Delete a webhook endpoint and its delivery log (researchers)")
    def delete(self, request: AuthenticatedRequest, webhook_id: int) -> Response:
        _endpoint(request, webhook_id).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveryListView(APIView):
    @extend_schema(
        responses=WebhookDeliverySerializer(many=True),
        summary=f"The endpoint's newest {DELIVERIES_SHOWN} deliveries with their attempts (researchers)",
    )
    def get(self, request: AuthenticatedRequest, webhook_id: int) -> Response:
        endpoint = _endpoint(request, webhook_id)
        deliveries = endpoint.deliveries.order_by("-created_at", "-id")[:DELIVERIES_SHOWN]
        return Response(WebhookDeliverySerializer(deliveries, many=True).data)
