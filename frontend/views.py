"""Pages for annotators and researchers. Thin: selectors to read, services to write, templates to show.

A page and the htmx fragment it swaps share one template: the fragment is an included partial, rendered
alone when ``request.htmx`` asks for it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views import defaults
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from accounts import tokens
from accounts.typing import AuthenticatedHttpRequest
from labeling import assignment, environments, events, rankings, revisions, selectors, services
from labeling import invites as invite_links
from labeling.errors import LeaseExpired, LeaseInvalid, NotFound, ServiceError, ValidationFailed
from labeling.models import Choice, Invite, Project, ProjectRole, Query, RenderStatus
from labeling.parsing import loads_bounded, parse_float, parse_int
from labeling.ratelimits import rate_limited
from trainer import loop, review
from trainer import selectors as trainer_selectors
from trainer.core.project_spec import MAX_SPEC_CHARS
from trainer.models import Run, RunKind
from trainer.project_specs import project_create_from_spec


def _project(request: AuthenticatedHttpRequest, slug: str) -> Project:
    try:
        return selectors.project_for_member(slug=slug, user=request.user)
    except NotFound:
        raise Http404("no such project") from None


def _researcher_project(request: AuthenticatedHttpRequest, slug: str) -> Project:
    """The project, if the user is one of its researchers; annotators and outsiders get a 404."""
    project = _project(request, slug)
    if not selectors.is_project_researcher(project=project, user=request.user):
        raise Http404("no such project")
    return project


@login_required
@require_GET
def home(request: AuthenticatedHttpRequest) -> HttpResponse:
    projects = list(selectors.projects_for_user(request.user))
    rows = [
        {
            "project": p,
            "researcher": selectors.is_project_researcher(project=p, user=request.user),
            "mine": selectors.annotator_progress(project=p, annotator=request.user),
        }
        for p in projects
    ]
    return render(request, "frontend/home.html", {"rows": rows})


def _spec_text(request: AuthenticatedHttpRequest) -> str:
    """The spec from the uploaded file, else the pasted text; a file that is too long or not UTF-8 is refused."""
    upload = request.FILES.get("spec_file")
    if upload is None:
        return request.POST.get("spec", "")
    if upload.size is None or upload.size > MAX_SPEC_CHARS:
        raise ValidationFailed("the spec file is too large", fields={"spec_file": [f"at most {MAX_SPEC_CHARS} bytes"]})
    try:
        return upload.read(MAX_SPEC_CHARS + 1).decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed("the spec file is not UTF-8 text", fields={"spec_file": ["not UTF-8 text"]}) from None


FORM_FIELDS = ("name", "slug", "env_id", "instructions", "segment_steps", "episode_steps", "overlap")


def _form_number(value: str) -> int | str | None:
    """A whole number typed in the form; anything else goes to the spec checker as it is, which names the field."""
    value = value.strip()
    if not value:
        return None
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else value


def _spec_from_form(post: Mapping[str, str], modes: list[str]) -> dict[str, Any]:
    """The project spec the simple form states: the environment preset supplies the factors and the rest."""
    spec: dict[str, Any] = {"spec_version": 1, "name": post.get("name", "").strip()}
    if post.get("slug", "").strip():
        spec["slug"] = post["slug"].strip()
    if post.get("instructions", "").strip():
        spec["instructions"] = post["instructions"]
    environment: dict[str, Any] = {"id": post.get("env_id", "").strip()}
    episode_steps = _form_number(post.get("episode_steps", ""))
    if episode_steps is not None:
        environment["episode_steps"] = episode_steps
    spec["environment"] = environment
    length = _form_number(post.get("segment_steps", ""))
    if length is not None:
        spec["clips"] = {"length": length}
    feedback: dict[str, Any] = {"modes": modes}
    overlap = _form_number(post.get("overlap", ""))
    if overlap is not None:
        feedback["overlap"] = overlap
    spec["feedback"] = feedback
    return spec


@login_required
@require_http_methods(["GET", "POST"])
def project_new(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Researchers create a project with the simple form (an environment preset's factors) or by uploading or
    pasting a project spec (YAML or JSON; README, 'Project specs'). The form builds a spec, so both take one path:
    ``project_create_from_spec``, which checks everything and creates the project with its creator as researcher."""
    if not request.user.is_researcher:
        raise Http404("no such page")
    context: dict[str, object] = {
        "spec": "",
        "errors": [],
        "max_chars": MAX_SPEC_CHARS,
        "environments": environments.available(),
        "form": {"modes": ["ranking", "pairwise"], "overlap": "1"},
    }
    if request.method == "POST":
        from_form = request.POST.get("source") == "form"
        try:
            if from_form:
                modes: list[str] = [m for m in ("ranking", "pairwise") if m in request.POST.getlist("modes")]
                context["form"] = {name: request.POST.get(name, "") for name in FORM_FIELDS} | {"modes": modes}
                spec: Any = _spec_from_form(request.POST, modes)
            else:
                spec = _spec_text(request)
                context["spec"] = spec
            project = project_create_from_spec(created_by=request.user, spec=spec)
        except ValidationFailed as error:
            context["error"] = error.message
            context["error_source"] = "form" if from_form else "spec"
            context["errors"] = sorted((path, "; ".join(problems)) for path, problems in error.fields.items())
            return render(request, "frontend/project_new.html", context, status=400)
        messages.success(request, f"Project {project.name} created. Generate clips to start labelling.")
        return redirect(project)
    return render(request, "frontend/project_new.html", context)


@login_required
@require_GET
def project_runs(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    """The runs table, polled by htmx while a run is unfinished; polling stops once everything has finished."""
    project = _researcher_project(request, slug)
    context = {
        "project": project,
        "progress": selectors.project_progress(project),
        **trainer_selectors.runs_overview(project),
    }
    response = render(request, "frontend/_runs.html", context)
    if request.htmx and not context["any_unfinished"]:
        return HttpResponseStopPolling(response.content)
    return response


@login_required
@rate_limited("runs")
@require_POST
def project_iteration_start(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    project = _researcher_project(request, slug)
    try:
        count = parse_int(request.POST.get("count", "1"), name="count", minimum=1, maximum=100)
    except ValidationFailed:
        messages.error(request, "The number of iterations must be a whole number from 1 to 100.")
        return redirect("project-loop", slug=project.slug)
    try:
        iteration = loop.iteration_create(project=project, created_by=request.user, count=count)
    except ValueError:
        messages.error(request, "The number of iterations must be a whole number.")
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Iteration {iteration.number}: {iteration.message.lower()}.")
    return redirect("project-loop", slug=project.slug)


@login_required
@require_POST
def project_run_action(request: AuthenticatedHttpRequest, slug: str, run_id: int) -> HttpResponse:
    project = _researcher_project(request, slug)
    run = Run.objects.filter(project=project, pk=run_id).select_related("project").first()
    if run is None:
        raise Http404("no such run")
    action = loop.RUN_ACTIONS.get(request.POST.get("action", ""))
    if action is None:
        messages.error(request, "Unknown action.")
    else:
        try:
            action(run)
        except ServiceError as error:
            messages.error(request, error.message)
    return redirect("project-loop", slug=project.slug)


@login_required
@rate_limited("runs")
@require_POST
def project_train(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    project = _researcher_project(request, slug)
    loop.run_start(project=project, kind=RunKind.RETRAIN, params={"sources": "auto"}, created_by=request.user)
    messages.success(request, "Building preferences; a new reward model will be trained from them.")
    return redirect("project-models", slug=project.slug)


@login_required
@rate_limited("runs")
@require_POST
def project_generate_clips(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    project = _researcher_project(request, slug)
    try:  # the same bounds as the API's GenerateClipsSerializer
        rollouts = parse_int(request.POST.get("rollouts", "8"), name="rollouts", minimum=1, maximum=1000)
        queries = parse_int(request.POST.get("queries", "50"), name="queries", minimum=0, maximum=100_000)
        seed = parse_int(request.POST.get("seed", "0"), name="seed", minimum=0, maximum=2**31 - 1)
    except ValidationFailed:
        messages.error(request, "Use 1–1000 rollouts, 0–100000 queries and a seed from 0 to 2147483647.")
        return redirect("project-data", slug=project.slug)
    loop.run_start(
        project=project,
        kind=RunKind.GENERATE_CLIPS,
        params={"rollouts": rollouts, "queries": queries, "seed": seed},
        created_by=request.user,
    )
    messages.success(request, "Clip generation started.")
    return redirect("project-data", slug=project.slug)


@login_required
@require_GET
def project_review(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    """Judged pairs the latest reward model confidently disputes, most confident first, with review actions."""
    project = _researcher_project(request, slug)
    try:
        page_number = parse_int(request.GET.get("page", "1"), name="page", minimum=1, maximum=1_000_000)
    except ValidationFailed:
        page_number = 1
    page = review.review_page(project, page=page_number)
    context = {
        "project": project,
        "page": page,
        "min_disagreement": review.REVIEW_MIN_DISAGREEMENT,
        "fps": project.render_fps or 30,
    }
    return render(request, "frontend/review.html", context)


REVIEW_ACTIONS = ("exclude", "include", "send_back", "flag", "unflag")


@login_required
@require_POST
def project_review_action(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    """One review action; htmx gets the pair's card again (with the action's effect), a plain form a redirect."""
    project = _researcher_project(request, slug)
    action = request.POST.get("action", "")
    reason = request.POST.get("reason", "")
    try:
        if action not in REVIEW_ACTIONS:
            raise ValidationFailed("unknown review action", fields={"action": list(REVIEW_ACTIONS)})
        query_id = parse_int(request.POST.get("query", ""), name="query", minimum=1)
        if action == "exclude":
            judgment_id = parse_int(request.POST.get("judgment", ""), name="judgment", minimum=1)
            services.judgment_exclude(project=project, judgment_id=judgment_id, by=request.user, reason=reason)
        elif action == "include":
            judgment_id = parse_int(request.POST.get("judgment", ""), name="judgment", minimum=1)
            services.judgment_include(project=project, judgment_id=judgment_id)
        elif action == "send_back":
            extra = parse_int(request.POST.get("extra", "1"), name="extra", minimum=1, maximum=20)
            services.query_send_back(project=project, query_id=query_id, extra=extra)
        elif action == "flag":
            user_id = parse_int(request.POST.get("annotator", ""), name="annotator", minimum=1)
            services.membership_flag(project=project, user_id=user_id, by=request.user, reason=reason)
        else:
            user_id = parse_int(request.POST.get("annotator", ""), name="annotator", minimum=1)
            services.membership_unflag(project=project, user_id=user_id)
    except ServiceError as error:
        return HttpResponse(error.message, status=error.status, content_type="text/plain; charset=utf-8")
    if not request.htmx:
        return redirect("project-review", slug=project.slug)
    row = review.review_row(project, query_id=query_id)
    if row is None:  # the pair left the review (no counted answers any more)
        return HttpResponse("")
    context = {
        "project": project,
        "row": row,
        "fps": project.render_fps or 30,
        "min_disagreement": review.REVIEW_MIN_DISAGREEMENT,
    }
    return render(request, "frontend/_review_row.html", context)


@login_required
@rate_limited("runs")
@require_POST
def project_review_score(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    """Score pairs judged since the latest reward model was trained (its scores are otherwise made at training)."""
    project = _researcher_project(request, slug)
    try:
        count = review.review_scores_refresh(project)
    except (ValueError, OSError) as error:
        messages.error(request, f"The new pairs could not be scored: {error}")
    else:
        messages.success(request, f"Scored {count} newly judged pair{'s' if count != 1 else ''}.")
    return redirect("project-review", slug=project.slug)


def _compare_context(request: AuthenticatedHttpRequest, project: Project, notice: str = "") -> dict:
    result = assignment.lease_next_query(project=project, annotator=request.user)
    context: dict = {
        "project": project,
        "notice": notice,
        "reason": result.reason,
        "reason_message": result.message,
        "mine": selectors.annotator_progress(project=project, annotator=request.user),
    }
    last = revisions.undoable_judgment(annotator=request.user, project_id=project.pk)
    context["undo"] = last
    if result.lease is not None:
        lease = result.lease
        query = Query.objects.select_related("clip_a", "clip_b").get(pk=lease.query_id)
        left, right = query.shown_clips(lease.swapped)
        context["preload"] = selectors.next_clips_preview(
            project=project, annotator=request.user, exclude_query_id=query.pk
        )
        factors_only = left.render_status == RenderStatus.NO_VIDEO and right.render_status == RenderStatus.NO_VIDEO
        context.update(
            factors_only=factors_only,
            factor_rows=_factor_rows(project, left.factor_totals, right.factor_totals) if factors_only else [],
            lease=lease,
            query=query,
            left=left,
            right=right,
            client_id=uuid.uuid4(),
            choices=[
                (Choice.LEFT, "Left is better", "ArrowLeft", "←"),
                (Choice.EQUAL, "Equally good", "ArrowUp", "↑"),
                (Choice.CANT_TELL, "Can't tell", "ArrowDown", "↓"),
                (Choice.RIGHT, "Right is better", "ArrowRight", "→"),
            ],
        )
    return context


def _factor_rows(project: Project, left: Mapping[str, Any], right: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A factors-only pair, factor by factor: each side's total, and its bar's width scaled to the larger of the
    two magnitudes, so each factor compares the two clips on its own scale (units differ between factors)."""
    rows = []
    for factor in project.factors.all():
        values = [_finite(totals.get(factor.key)) for totals in (left, right)]
        largest = max((abs(v) for v in values if v is not None), default=0.0)
        sides = [
            {
                "name": name,
                "value": value,
                "text": "—" if value is None else f"{value:.4g}",
                "percent": 0 if value is None or largest == 0 else round(100 * abs(value) / largest),
            }
            for name, value in zip(("left", "right"), values, strict=True)
        ]
        rows.append({"factor": factor, "sides": sides})
    return rows


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


@login_required
@require_GET
def label(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug)
    context = _compare_context(request, project)
    template = "frontend/_compare.html" if request.htmx else "frontend/label.html"
    return render(request, template, context)


@login_required
@require_POST
def label_judge(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug)
    notice = ""
    try:
        query_id = parse_int(request.POST["query"], name="query", minimum=1)
        lease_token = uuid.UUID(request.POST["lease"])
        client_id = uuid.UUID(request.POST["client_id"])
        choice = request.POST["choice"]
        if choice not in Choice.values:
            raise ValueError(choice)
        spent = request.POST.get("time_spent_ms")
        # The page's own timer: finite, then clamped to [0, 24 h] (a sleeping tab is no reason to refuse).
        time_spent_ms = int(min(max(parse_float(spent, name="time_spent_ms"), 0), 86_400_000)) if spent else None
    except (KeyError, ValueError, ValidationFailed):
        return HttpResponse("Malformed answer.", status=400)
    if not Query.objects.filter(pk=query_id, project=project).exists():
        raise Http404("no such query")
    try:
        assignment.judgment_submit(
            query_id=query_id,
            annotator=request.user,
            choice=choice,
            lease_token=lease_token,
            client_id=client_id,
            time_spent_ms=time_spent_ms,
        )
    except (LeaseExpired, LeaseInvalid):
        notice = "That pair was given to someone else after a long pause, so your answer was not needed."
    except ServiceError as error:
        notice = error.message
    if not request.htmx:
        if notice:
            messages.info(request, notice)
        return redirect("label", slug=project.slug)
    return render(request, "frontend/_compare.html", _compare_context(request, project, notice))


@login_required
@require_POST
def label_skip(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug)
    try:
        assignment.lease_skip(token=uuid.UUID(request.POST.get("lease", "")), annotator=request.user)
    except ValueError:
        return HttpResponse("Malformed request.", status=400)
    if not request.htmx:
        return redirect("label", slug=project.slug)
    return render(request, "frontend/_compare.html", _compare_context(request, project, "Skipped."))


@login_required
@require_POST
def label_undo(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    project = _project(request, slug)
    notice = "Your last answer was taken back; here is the same pair again."
    try:
        judgment_id = parse_int(request.POST.get("judgment", ""), name="judgment", minimum=1)
    except ValidationFailed:
        return HttpResponse("Malformed request.", status=400)
    try:
        revisions.judgment_undo(judgment_id=judgment_id, annotator=request.user)
    except ServiceError as error:
        notice = error.message
    if not request.htmx:
        messages.info(request, notice)
        return redirect("label", slug=project.slug)
    return render(request, "frontend/_compare.html", _compare_context(request, project, notice))


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def history(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    """The annotator's answers, newest first, each revisable; every change is kept as a revision."""
    project = _project(request, slug)
    if request.method == "POST":
        try:
            judgment_id = parse_int(request.POST.get("judgment", ""), name="judgment", minimum=1)
        except ValidationFailed:
            return HttpResponse("Malformed request.", status=400)
        try:
            judgment = revisions.judgment_revise(
                judgment_id=judgment_id, annotator=request.user, choice=request.POST.get("choice", "")
            )
        except ServiceError as error:
            return HttpResponse(error.message, status=error.status)
        row = selectors.history_rows(project=project, annotator=request.user, judgment_ids=[judgment.pk])[0]
        if request.htmx:
            return render(
                request, "frontend/_history_row.html", {"row": row, "project": project, "choices": Choice.choices}
            )
        return redirect("history", slug=project.slug)
    rows = selectors.history_rows(project=project, annotator=request.user)
    return render(request, "frontend/history.html", {"project": project, "rows": rows, "choices": Choice.choices})


@login_required
@rate_limited("rankings")
@require_http_methods(["GET", "HEAD", "POST"])
def rank(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    """The factor-ranking board: order the factors by importance, ties allowed, optional margins."""
    project = _project(request, slug)
    if not project.has_ranking:
        raise Http404("this project does not collect factor rankings")
    factors = list(project.factors.order_by("position", "id"))
    current = rankings.current_ranking_for(project=project, annotator=request.user)
    groups: list[list[str]] = current.groups if current else [[f.key] for f in factors]
    sigmas = {f.key: (current.sigmas.get(f.key, f.sigma) if current else f.sigma) for f in factors}
    error, status = None, 200
    if request.method == "POST":
        try:
            groups_posted = loads_bounded(request.POST.get("groups", ""))  # depth-limited, finite numbers
            sigmas_posted = {
                f.key: parse_float(request.POST[f"sigma_{f.key}"], name=f"sigma_{f.key}")
                for f in factors
                if request.POST.get(f"sigma_{f.key}", "").strip()
            }
        except (ValueError, TypeError, ValidationFailed):
            error, status = "The ranking could not be read; please try again.", 400
        else:
            try:
                rankings.ranking_submit(
                    project=project,
                    annotator=request.user,
                    groups=groups_posted,
                    sigmas=sigmas_posted,
                    comment=request.POST.get("comment", ""),
                )
            except ServiceError as failure:
                error, status = failure.message, 400
            else:
                messages.success(request, "Thank you — your ranking is saved. The reward model will be retrained.")
                return redirect("rank", slug=project.slug)
    extremes = selectors.factor_extremes(project)
    for clip_pair in extremes.values():
        for clip in clip_pair.values():
            if clip is not None and not clip.video and clip.render_status == "pending":
                services.send_task_by_name(events.RENDER_CLIP, clip.pk)  # shown next time
    by_key = {f.key: f for f in factors}
    # Data-only clips (uploaded or imported without video): the page shows each factor's spread instead.
    data_only = any(
        clip is not None and clip.render_status == RenderStatus.NO_VIDEO
        for clip_pair in extremes.values()
        for clip in clip_pair.values()
    )
    summaries = selectors.factor_summaries(project) if data_only else {}

    def examples(key: str) -> list[dict]:
        return [
            {"which": which, "clip": clip, "value": clip.factor_totals.get(key)}
            for which, clip in extremes[key].items()
            if clip is not None
        ]

    levels = [
        [
            {"factor": by_key[k], "sigma": sigmas[k], "examples": examples(k), "stats": summaries.get(k)}
            for k in group
            if k in by_key
        ]
        for group in groups
    ]
    context = {
        "project": project,
        "levels": [level for level in levels if level],
        "groups_json": json.dumps(groups),
        "current": current,
        "error": error,
        "history_count": project.rankings.filter(annotator=request.user).count(),
    }
    return render(request, "frontend/rank.html", context, status=status)


@login_required
@require_POST
def lease_heartbeat(request: AuthenticatedHttpRequest, token: uuid.UUID) -> JsonResponse:
    try:
        lease = assignment.lease_heartbeat(token=token, annotator=request.user)
    except ServiceError as error:
        return JsonResponse({"error": {"code": error.code, "message": error.message}}, status=error.status)
    return JsonResponse({"expires_at": lease.expires_at.isoformat()})


@login_required
@require_POST
def lease_release(request: AuthenticatedHttpRequest, token: uuid.UUID) -> HttpResponse:
    assignment.lease_release(token=token, annotator=request.user)
    return HttpResponse(status=204)


TOKEN_MAX_DAYS = 3650


@login_required
@require_http_methods(["GET", "POST"])
def account_tokens(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Your API tokens: list, create (the secret is shown on this one answer only), revoke."""
    projects = list(selectors.projects_for_user(request.user).order_by("slug"))
    context: dict = {"projects": projects, "created": None, "secret": None, "error": ""}
    if request.method == "POST":
        name = request.POST.get("name", "").strip()
        slug = request.POST.get("project", "").strip()
        days_text = request.POST.get("expires_days", "").strip()
        try:
            days = parse_int(days_text, name="expires_days", minimum=1, maximum=TOKEN_MAX_DAYS) if days_text else 0
        except ServiceError:
            days = -1
        project_id = next((p.pk for p in projects if p.slug == slug), None) if slug else None
        if slug and project_id is None:
            context["error"] = "No such project."
        elif days < 0:
            context["error"] = f"The expiry is 1 to {TOKEN_MAX_DAYS} days, or empty for none."
        else:
            try:
                token, secret = tokens.token_create(
                    user=request.user,
                    name=name,
                    project_id=project_id,
                    read_only=request.POST.get("read_only") == "on",
                    expires_at=timezone.now() + timedelta(days=days) if days else None,
                )
            except ValueError as error:
                context["error"] = str(error).capitalize() + "."
            else:
                context["created"], context["secret"] = token, secret
    slugs = {p.pk: p.slug for p in projects}
    context["rows"] = [
        {"token": t, "project": slugs.get(t.project_id, t.project_id) if t.project_id else None}
        for t in tokens.tokens_for_user(request.user)
    ]
    context["now"] = timezone.now()
    status = 400 if context["error"] else 200
    response = render(request, "frontend/account_tokens.html", context, status=status)
    response["Cache-Control"] = "no-store"  # the page may hold a secret
    return response


@login_required
@require_POST
def account_token_revoke(request: AuthenticatedHttpRequest, token_id: int) -> HttpResponse:
    if not tokens.token_revoke(user=request.user, token_id=token_id):
        raise Http404("no such token")
    messages.success(request, "Token revoked.")
    return redirect("account-tokens")


# --- Members, invites and the audit log (researchers of the project) --------------------------------------------


def _members_context(request: AuthenticatedHttpRequest, project: Project, **extra: object) -> dict[str, object]:
    invites = [
        {
            "invite": invite,
            "url": request.build_absolute_uri(reverse("invite", args=[invite_links.invite_token(invite)])),
        }
        for invite in selectors.project_invites(project, open_only=True)
    ]
    return {
        "project": project,
        "members": selectors.project_members(project),
        "invites": invites,
        "audit": selectors.audit_entries(project),
        "roles": ProjectRole.choices,
        "invite_max_days": services.INVITE_MAX_DAYS,
        "error": "",
        "notice": "",
        "created_invite_url": "",
        **extra,
    }


def _members_answer(
    request: AuthenticatedHttpRequest,
    project: Project,
    *,
    notice: str = "",
    error: ServiceError | None = None,
    **extra: object,
) -> HttpResponse:
    """After a change: the panel fragment for htmx, else back to the page with the outcome as a message."""
    message = error.message if error is not None else notice
    if not request.htmx:
        if message:
            (messages.error if error is not None else messages.success)(request, message)
        return redirect("project-members", slug=project.slug)
    context = _members_context(request, project, error=message if error else "", notice=notice, **extra)
    status = error.status if error is not None else 200
    return render(request, "frontend/_members.html", context, status=status)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def project_members(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    """The project's members with their roles, open invites and the audit log; POST adds a member by username."""
    project = _researcher_project(request, slug)
    if request.method == "POST":
        username = request.POST.get("username", "")[:150]
        try:
            membership = services.member_add(
                project=project, username=username, role=request.POST.get("role", ""), actor=request.user
            )
        except ServiceError as error:
            return _members_answer(request, project, error=error)
        notice = f"{membership.user.username} is now a {membership.get_role_display().lower()}."
        return _members_answer(request, project, notice=notice)
    template = "frontend/_members.html" if request.htmx else "frontend/members.html"
    return render(request, template, _members_context(request, project))


@login_required
@require_POST
def project_member(request: AuthenticatedHttpRequest, slug: str, member_id: int) -> HttpResponse:
    """Change a member's role (``action=role``) or remove them (``action=remove``)."""
    project = _researcher_project(request, slug)
    try:
        membership = selectors.project_member(project=project, membership_id=member_id)
    except NotFound:
        raise Http404("no such member") from None
    action = request.POST.get("action", "")
    try:
        if action == "role":
            membership = services.member_role_change(
                membership=membership, role=request.POST.get("role", ""), actor=request.user
            )
            notice = f"{membership.user.username} is now a {membership.get_role_display().lower()}."
        elif action == "remove":
            services.member_remove(membership=membership, actor=request.user)
            notice = f"{membership.user.username} was removed from the project."
        else:
            raise ValidationFailed("unknown action", fields={"action": ["role or remove"]})
    except ServiceError as error:
        return _members_answer(request, project, error=error)
    if not selectors.is_project_researcher(project=project, user=request.user):
        # The researcher made themselves an annotator (another researcher remains): the page is no longer theirs.
        messages.success(request, notice)
        if not request.htmx:
            return redirect("label", slug=project.slug)
        response = HttpResponse(status=204)
        response["HX-Redirect"] = reverse("label", args=[project.slug])
        return response
    return _members_answer(request, project, notice=notice)


@login_required
@require_POST
def project_invites(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    """Create an invite link with a role and a lifetime in days."""
    project = _researcher_project(request, slug)
    try:
        days = parse_int(request.POST.get("days", "7"), name="days", minimum=1, maximum=services.INVITE_MAX_DAYS)
        invite = services.invite_create(
            project=project, role=request.POST.get("role", ""), actor=request.user, days=days
        )
    except ServiceError as error:
        return _members_answer(request, project, error=error)
    url = request.build_absolute_uri(reverse("invite", args=[invite_links.invite_token(invite)]))
    notice = f"Invite link created ({invite.get_role_display().lower()}, single use, {days} day(s)): {url}"
    return _members_answer(request, project, notice=notice, created_invite_url=url)


@login_required
@require_POST
def project_invite_revoke(request: AuthenticatedHttpRequest, slug: str, invite_id: int) -> HttpResponse:
    project = _researcher_project(request, slug)
    try:
        invite = selectors.project_invite(project=project, invite_id=invite_id)
    except NotFound:
        raise Http404("no such invite") from None
    try:
        services.invite_revoke(invite=invite, actor=request.user)
    except ServiceError as error:
        return _members_answer(request, project, error=error)
    return _members_answer(request, project, notice="Invite revoked: its link no longer works.")


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def invite(request: AuthenticatedHttpRequest, invite_token: str) -> HttpResponse:
    """An invite link. Opened signed in, it shows the project and a Join button (the link alone changes nothing,
    so an image or a link preview can't enrol anybody); signed out, login_required sends the user through the
    login page and back here."""
    invite_id = invite_links.invite_id(invite_token)
    found = Invite.objects.select_related("project").filter(pk=invite_id).first() if invite_id else None
    if found is None:
        return render(request, "frontend/invite.html", {"problem": "This invite link is not valid."}, status=404)
    member = found.project.memberships.filter(user=request.user).exists()
    if request.method == "POST":
        try:
            services.invite_accept(invite_id=found.pk, user=request.user)
        except ServiceError as error:
            return render(request, "frontend/invite.html", {"problem": error.message}, status=error.status)
        if member:
            messages.info(request, f"You are already a member of {found.project.name}.")
        else:
            messages.success(request, f"Welcome to {found.project.name}.")
        return redirect(found.project)
    problem = (
        ""
        if found.state == "open" or member
        else f"This invite {'has expired' if found.state == 'expired' else 'was ' + found.state}."
    )
    context = {"invite": found, "project": found.project, "member": member, "problem": problem}
    return render(request, "frontend/invite.html", context, status=409 if problem else 200)


# --- Error pages (DEBUG off: production and the demo) -------------------------------------------------------------


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """The site's 404 page; under /api/ the API's JSON error, as programs expect from every API answer."""
    if request.path.startswith("/api/"):
        body = {"error": {"code": "not_found", "message": "no such API route", "fields": {}}}
        return JsonResponse(body, status=404)
    return render(request, "404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    """The site's 500 page (rendered without the request's context: nothing that may fail again); JSON under /api/."""
    if request.path.startswith("/api/"):
        body = {
            "error": {"code": "server_error", "message": "the server could not complete this request", "fields": {}}
        }
        return JsonResponse(body, status=500)
    return defaults.server_error(request)
