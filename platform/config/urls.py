from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

import labeling.converters  # noqa: F401  (registers the bounded <id:...> path converter)
from accounts.api import ApiTokenDetailView, ApiTokenListView, ObtainTokenView
from labeling.admin import view_on_site as admin_view_on_site
from labeling.media import clip_media

admin.site.site_header = "Heronry administration"
admin.site.site_title = "Heronry admin"

api_v1: list[URLPattern | URLResolver] = [
    path("auth/token/", ObtainTokenView.as_view(), name="api-token"),
    path("auth/tokens/", ApiTokenListView.as_view(), name="api-tokens"),
    path("auth/tokens/<id:token_id>/", ApiTokenDetailView.as_view(), name="api-token-detail"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path(
        "docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api-schema", template_name="frontend/swagger_ui.html"),
        name="api-docs",
    ),
    path("", include("labeling.api.urls")),
    path("", include("trainer.urls")),
]

urlpatterns = [
    # Before admin.site.urls: the admin's "view on site" redirect, scoped like the rest of the admin.
    path(
        "admin/r/<str:content_type_id>/<str:object_id>/",
        admin.site.admin_view(admin_view_on_site),
        name="admin-view-on-site",
    ),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("api/v1/", include(api_v1)),
    path("media/clips/<id:clip_id>/<str:kind>", clip_media, name="clip-media"),
    path("", include("frontend.urls")),
]

# DEBUG off (production, the demo): the site's own pages, and JSON errors under /api/.
handler404 = "frontend.views.page_not_found"
handler500 = "frontend.views.server_error"
