from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts.api import ObtainTokenView
from labeling.media import clip_media

admin.site.site_header = "Heronry administration"
admin.site.site_title = "Heronry admin"

api_v1: list[URLPattern | URLResolver] = [
    path("auth/token/", ObtainTokenView.as_view(), name="api-token"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("labeling.api.urls")),
    path("", include("trainer.urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("api/v1/", include(api_v1)),
    path("media/clips/<int:clip_id>/<str:kind>", clip_media, name="clip-media"),
    path("", include("frontend.urls")),
]
