from django.urls import path

import labeling.converters  # noqa: F401  (registers the bounded <id:...> path converter)

from . import api, api_iterations

urlpatterns = [
    path("projects/<slug:slug>/reward-models/", api.RewardModelListView.as_view(), name="api-reward-models"),
    path("reward-models/<id:model_id>/weights", api.RewardModelWeightsView.as_view(), name="api-reward-weights"),
    path("projects/<slug:slug>/export/preferences", api.PreferenceExportView.as_view(), name="api-export-preferences"),
    path("projects/<slug:slug>/iterations/", api_iterations.IterationListView.as_view(), name="api-iterations"),
    path("iterations/<id:iteration_id>/", api_iterations.IterationDetailView.as_view(), name="api-iteration"),
    path("policies/<id:policy_id>/checkpoint", api_iterations.PolicyCheckpointView.as_view(), name="api-policy"),
]
