from django.urls import path

from . import api

urlpatterns = [
    path("projects/<slug:slug>/reward-models/", api.RewardModelListView.as_view(), name="api-reward-models"),
    path("reward-models/<int:model_id>/weights", api.RewardModelWeightsView.as_view(), name="api-reward-weights"),
    path("projects/<slug:slug>/export/preferences", api.PreferenceExportView.as_view(), name="api-export-preferences"),
]
