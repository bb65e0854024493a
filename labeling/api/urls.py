from django.urls import path

import labeling.converters  # noqa: F401  (registers the bounded <id:...> path converter)

from . import export_job_views, member_views, views, webhook_views

urlpatterns = [
    path("projects/", views.ProjectListView.as_view(), name="api-projects"),
    path("projects/<slug:slug>/", views.ProjectDetailView.as_view(), name="api-project-detail"),
    path("projects/<slug:slug>/spec", views.ProjectSpecView.as_view(), name="api-project-spec"),
    path("projects/<slug:slug>/clips/", views.ClipListView.as_view(), name="api-clips"),
    path("projects/<slug:slug>/queries/", views.PairQueriesView.as_view(), name="api-queries"),
    path("projects/<slug:slug>/queries/next/", views.NextQueryView.as_view(), name="api-query-next"),
    path("projects/<slug:slug>/export/judgments", views.JudgmentExportView.as_view(), name="api-export-judgments"),
    path("projects/<slug:slug>/export/clips", views.ClipExportView.as_view(), name="api-export-clips"),
    path("projects/<slug:slug>/export/rankings", views.RankingExportView.as_view(), name="api-export-rankings"),
    path("projects/<slug:slug>/exports/", export_job_views.ExportJobListView.as_view(), name="api-export-jobs"),
    path("exports/<id:job_id>/", export_job_views.ExportJobDetailView.as_view(), name="api-export-job"),
    path("exports/<id:job_id>/download", export_job_views.ExportJobDownloadView.as_view(), name="api-export-download"),
    path("projects/<slug:slug>/rankings/", views.RankingListView.as_view(), name="api-rankings"),
    path("projects/<slug:slug>/members/", member_views.MemberListView.as_view(), name="api-members"),
    path("projects/<slug:slug>/members/<id:member_id>/", member_views.MemberDetailView.as_view(), name="api-member"),
    path("projects/<slug:slug>/invites/", member_views.InviteListView.as_view(), name="api-invites"),
    path("projects/<slug:slug>/invites/<id:invite_id>/", member_views.InviteDetailView.as_view(), name="api-invite"),
    path("invites/accept/", member_views.InviteAcceptView.as_view(), name="api-invite-accept"),
    path("projects/<slug:slug>/audit/", member_views.AuditListView.as_view(), name="api-audit"),
    path("projects/<slug:slug>/webhooks/", webhook_views.WebhookListView.as_view(), name="api-webhooks"),
    path("webhooks/<id:webhook_id>/", webhook_views.WebhookDetailView.as_view(), name="api-webhook"),
    path(
        "webhooks/<id:webhook_id>/deliveries/",
        webhook_views.WebhookDeliveryListView.as_view(),
        name="api-webhook-deliveries",
    ),
    path("queries/<id:query_id>/judgments/", views.JudgmentCreateView.as_view(), name="api-judgments"),
    path("judgments/<id:judgment_id>/", views.JudgmentDetailView.as_view(), name="api-judgment-detail"),
    path("judgments/<id:judgment_id>/undo/", views.JudgmentUndoView.as_view(), name="api-judgment-undo"),
    path("leases/<str:token>/heartbeat/", views.LeaseHeartbeatView.as_view(), name="api-lease-heartbeat"),
    path("leases/<str:token>/skip/", views.LeaseSkipView.as_view(), name="api-lease-skip"),
    path("leases/<str:token>/release/", views.LeaseReleaseView.as_view(), name="api-lease-release"),
]
