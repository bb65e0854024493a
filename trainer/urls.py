from django.urls import path

import labeling.converters  # noqa: F401  (registers the bounded <id:...> path converter)

from . import api, api_external, api_review, api_runs

urlpatterns = [
    path("projects/<slug:slug>/reward-models/", api.RewardModelListView.as_view(), name="api-reward-models"),
    path("reward-models/<id:model_id>/weights", api.RewardModelWeightsView.as_view(), name="api-reward-weights"),
    path("projects/<slug:slug>/export/preferences", api.PreferenceExportView.as_view(), name="api-export-preferences"),
    path("projects/<slug:slug>/runs/", api_runs.RunListView.as_view(), name="api-runs"),
    path("runs/<id:run_id>/", api_runs.RunDetailView.as_view(), name="api-run"),
    path("projects/<slug:slug>/rollouts/", api_external.RolloutUploadView.as_view(), name="api-rollouts"),
    path("projects/<slug:slug>/imports/minari", api_external.MinariImportView.as_view(), name="api-import-minari"),
    path("projects/<slug:slug>/review/", api_review.ReviewListView.as_view(), name="api-review"),
    path(
        "projects/<slug:slug>/review/judgments/<id:judgment_id>/exclude",
        api_review.JudgmentExcludeView.as_view(),
        name="api-review-exclude",
    ),
    path(
        "projects/<slug:slug>/review/queries/<id:query_id>/send-back",
        api_review.QuerySendBackView.as_view(),
        name="api-review-send-back",
    ),
    path(
        "projects/<slug:slug>/review/annotators/<id:user_id>/flag",
        api_review.AnnotatorFlagView.as_view(),
        name="api-review-flag",
    ),
    path("policies/<id:policy_id>/checkpoint", api_runs.PolicyCheckpointView.as_view(), name="api-policy"),
    path("policies/<id:policy_id>/video", api_runs.PolicyVideoView.as_view(), name="api-policy-video"),
]
