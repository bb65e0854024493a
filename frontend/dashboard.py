"""The researcher dashboard in sections, the policy pages, the clip browser and the lineage views.

Each page and its htmx fragment share one template: the section templates extend ``base_template``, the full
page (site header, the project's tabs) or just the section, chosen by ``request.htmx``. The tabs swap sections
with htmx and push the URL, and stay plain links without JavaScript.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_safe

from accounts.typing import AuthenticatedHttpRequest
from labeling import selectors, webhooks
from labeling.errors import ValidationFailed
from labeling.media import serve_media_field
from labeling.models import Project
from labeling.parsing import parse_int
from labeling.signed_media import KINDS
from trainer import dashboard
from trainer import selectors as trainer_selectors
from trainer.policy_video import policy_video_resend

from .views import _project, _researcher_project

PAGE = "frontend/dashboard/page.html"
FRAGMENT = "frontend/dashboard/fragment.html"


def _render(
    request: AuthenticatedHttpRequest, template: str, project: Project, tab: str, context: dict
) -> HttpResponse:
    # htmx's own requests get the fragment; a history restore (back to a page not in htmx's cache) needs it whole.
    partial = request.htmx and not request.htmx.boosted and not request.htmx.history_restore_request
    base = FRAGMENT if partial else PAGE
    return render(
        request,
        template,
        {"project": project, "tab": tab, "sections": dashboard.SECTIONS, "base_template": base, **context},
    )


@login_required
@require_GET
def overview(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug)
    if not selectors.is_project_researcher(project=project, user=request.user):
        return redirect("label", slug=project.slug)  # annotators have nothing to do on the dashboard
    context = dashboard.overview(project) | {"webhooks": webhooks.endpoints_overview(project)}
    return _render(request, "frontend/dashboard/overview.html", project, "overview", context)


SECTION_READS = {
    "data": dashboard.data_section,
    "models": dashboard.models_section,
    "quality": dashboard.quality_section,
}


@login_required
@require_GET
def section(request: AuthenticatedHttpRequest, slug: str, name: str) -> HttpResponse:
    project = _researcher_project(request, slug)
    if name == "loop":
        context = {
            "progress": selectors.project_progress(project),
            **trainer_selectors.runs_overview(project),
        }
    else:
        context = SECTION_READS[name](project)
    return _render(request, f"frontend/dashboard/{name}.html", project, name, context)


# --- the clip browser ----------------------------------------------------------------------------------------


def _tristate(value: str) -> bool | None:
    return {"yes": True, "no": False}.get(value)


@login_required
@require_GET
def clips(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    """Every clip of the project, newest first, filtered by iteration, source, rendered and judged."""
    project = _researcher_project(request, slug)
    get = request.GET
    try:
        iteration_text = get.get("iteration", "")
        iteration = parse_int(iteration_text, name="iteration", minimum=0, maximum=10**6) if iteration_text else None
        before_text = get.get("before", "")
        before = parse_int(before_text, name="before", minimum=1) if before_text else None
    except ValidationFailed as error:
        return HttpResponse(error.message, status=400)
    source = get.get("source") or None
    if source is not None and source not in selectors.CLIP_SOURCES:
        return HttpResponse("Unknown source.", status=400)
    filters = selectors.ClipFilters(
        iteration=iteration,
        source=source,
        rendered=_tristate(get.get("rendered", "")),
        judged=_tristate(get.get("judged", "")),
    )
    page, next_before = selectors.clips_browse(project=project, filters=filters, before=before)
    keys = list(project.factors.order_by("position", "id").values_list("key", flat=True))
    rows = [
        {
            "clip": clip,
            "source": selectors.clip_source(clip.rollout.policy),
            "factors": [(key, clip.factor_totals.get(key)) for key in keys],
        }
        for clip in page
    ]
    query = get.copy()
    query.pop("before", None)
    context = {
        "rows": rows,
        "keys": keys,
        "filters": filters,
        "sources": selectors.CLIP_SOURCES,
        "iterations": selectors.clip_iterations(project),
        "next_before": next_before,
        "filter_query": query.urlencode(),
        "first_page": before is None,
    }
    return _render(request, "frontend/dashboard/clips.html", project, "clips", context)


# --- policies -------------------------------------------------------------------------------------------------


@login_required
@require_GET
def policy(request: AuthenticatedHttpRequest, slug: str, policy_id: int) -> HttpResponse:
    """Watch a policy: its evaluation episode next to the previous policy's, with true and learned returns."""
    project = _researcher_project(request, slug)
    found = dashboard.policy_for_project(project=project, policy_id=policy_id)
    if found is None:
        raise Http404("no such policy")
    context = dashboard.policy_compare(found)
    for shown in (context["policy"], context["previous"]):
        if shown is not None:
            policy_video_resend(shown)  # a video whose render message was lost: shown next time
    return _render(request, "frontend/dashboard/policy.html", project, "loop", context)


@login_required
@require_safe
def policy_media(request: AuthenticatedHttpRequest, slug: str, policy_id: int, kind: str) -> HttpResponseBase:
    """A policy's video or poster, for the project's members (like clip media: checked, never static)."""
    project = _project(request, slug)
    found = dashboard.policy_for_project(project=project, policy_id=policy_id)
    if found is None or kind not in KINDS:
        raise Http404("no such policy")
    return serve_media_field(request, found.video if kind == "video" else found.poster, kind)


# --- lineage --------------------------------------------------------------------------------------------------


@login_required
@require_GET
def run_lineage(request: AuthenticatedHttpRequest, slug: str, run_id: int) -> HttpResponse:
    project = _researcher_project(request, slug)
    run = dashboard.run_for_project(project=project, run_id=run_id)
    if run is None:
        raise Http404("no such run")
    context = {"lineage": dashboard.run_lineage(run)}
    return _render(request, "frontend/dashboard/run.html", project, "loop", context)


@login_required
@require_GET
def reward_model(request: AuthenticatedHttpRequest, slug: str, model_id: int) -> HttpResponse:
    project = _researcher_project(request, slug)
    model = dashboard.reward_model_for_project(project=project, model_id=model_id)
    if model is None:
        raise Http404("no such reward model")
    return _render(
        request, "frontend/dashboard/reward_model.html", project, "models", dashboard.reward_model_lineage(model)
    )
