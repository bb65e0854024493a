from django.urls import path

import labeling.converters  # noqa: F401  (registers the bounded <id:...> path converter)

from . import dashboard, views

urlpatterns = [
    path("", views.home, name="home"),
    path("account/tokens/", views.account_tokens, name="account-tokens"),
    path("account/tokens/<id:token_id>/revoke/", views.account_token_revoke, name="account-token-revoke"),
    path("projects/new/", views.project_new, name="project-new"),
    # The researcher dashboard: an overview and its sections (the members page is linked, served elsewhere).
    path("projects/<slug:slug>/", dashboard.overview, name="project-detail"),
    path("projects/<slug:slug>/data/", dashboard.section, {"name": "data"}, name="project-data"),
    path("projects/<slug:slug>/models/", dashboard.section, {"name": "models"}, name="project-models"),
    path("projects/<slug:slug>/loop/", dashboard.section, {"name": "loop"}, name="project-loop"),
    path("projects/<slug:slug>/quality/", dashboard.section, {"name": "quality"}, name="project-quality"),
    path("projects/<slug:slug>/clips/", dashboard.clips, name="project-clips"),
    path("projects/<slug:slug>/policies/<id:policy_id>/", dashboard.policy, name="project-policy"),
    path("projects/<slug:slug>/policies/<id:policy_id>/<str:kind>", dashboard.policy_media, name="policy-media"),
    path("projects/<slug:slug>/runs/<id:run_id>/lineage/", dashboard.run_lineage, name="project-run-lineage"),
    path("projects/<slug:slug>/reward-models/<id:model_id>/", dashboard.reward_model, name="project-reward-model"),
    path("projects/<slug:slug>/train/", views.project_train, name="project-train"),
    path("projects/<slug:slug>/runs/", views.project_runs, name="project-runs"),
    path("projects/<slug:slug>/runs/<id:run_id>/", views.project_run_action, name="project-run-action"),
    path("projects/<slug:slug>/iterations/start/", views.project_iteration_start, name="project-iteration-start"),
    path("projects/<slug:slug>/generate/", views.project_generate_clips, name="project-generate"),
    path("projects/<slug:slug>/members/", views.project_members, name="project-members"),
    path("projects/<slug:slug>/members/<id:member_id>/", views.project_member, name="project-member"),
    path("projects/<slug:slug>/invites/", views.project_invites, name="project-invites"),
    path(
        "projects/<slug:slug>/invites/<id:invite_id>/revoke/", views.project_invite_revoke, name="project-invite-revoke"
    ),
    path("invites/<str:invite_token>/", views.invite, name="invite"),
    path("projects/<slug:slug>/review/", views.project_review, name="project-review"),
    path("projects/<slug:slug>/review/action/", views.project_review_action, name="project-review-action"),
    path("projects/<slug:slug>/review/score/", views.project_review_score, name="project-review-score"),
    path("projects/<slug:slug>/label/", views.label, name="label"),
    path("projects/<slug:slug>/rank/", views.rank, name="rank"),
    path("projects/<slug:slug>/label/judge/", views.label_judge, name="label-judge"),
    path("projects/<slug:slug>/label/skip/", views.label_skip, name="label-skip"),
    path("projects/<slug:slug>/label/undo/", views.label_undo, name="label-undo"),
    path("projects/<slug:slug>/history/", views.history, name="history"),
    path("leases/<uuid:token>/heartbeat/", views.lease_heartbeat, name="lease-heartbeat"),
    path("leases/<uuid:token>/release/", views.lease_release, name="lease-release"),
]
