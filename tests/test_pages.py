"""Server-rendered pages: login, the comparison page and its htmx fragment, the researcher dashboard."""

from __future__ import annotations

import re

from django.urls import reverse

from labeling.models import Judgment
from tests.conftest import PASSWORD
from trainer.models import Run, RunKind, RunState


def login(client, user):
    response = client.post(reverse("login"), {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302
    return client


def form_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', html))


def test_login_page_and_wrong_password(client, annotator):
    assert client.get(reverse("login")).status_code == 200
    response = client.post(reverse("login"), {"username": annotator.username, "password": "wrong"})
    assert response.status_code == 200 and b"didn't match" in response.content


def test_home_lists_the_annotators_projects(client, project_with_queries, annotator):
    page = login(client, annotator).get(reverse("home")).content.decode()
    assert project_with_queries.name in page and "Compare clips" in page


def test_labelling_by_htmx_swaps_in_the_next_pair(client, project_with_queries, annotator):
    login(client, annotator)
    page = client.get(reverse("label", args=[project_with_queries.slug])).content.decode()
    assert "data-sync-player" in page and 'data-key="ArrowLeft"' in page and "htmx.min.js" in page
    fields = form_fields(page)
    for answered in range(1, 4):
        response = client.post(
            reverse("label-judge", args=[project_with_queries.slug]),
            {**fields, "choice": "right", "time_spent_ms": "1234"},
            HTTP_HX_REQUEST="true",
        )
        assert response.status_code == 200
        fragment = response.content.decode()
        assert fragment.lstrip().startswith('<section id="compare"')  # a fragment, not a full page
        assert "<html" not in fragment
        assert Judgment.objects.filter(annotator=annotator).count() == answered
        # "n of N" in the current batch (the ten pairs of the first clips), updated with every answer.
        assert f"<strong>{answered} of 10</strong> answered in this batch · {10 - answered} remaining" in fragment
        new_fields = form_fields(fragment)
        assert new_fields["query"] != fields["query"]
        fields = new_fields
    assert Judgment.objects.get(query_id=int(form_fields(page)["query"])).time_spent_ms == 1234


def test_double_submission_of_one_form_stores_one_judgment(client, project_with_queries, annotator):
    login(client, annotator)
    fields = form_fields(client.get(reverse("label", args=[project_with_queries.slug])).content.decode())
    for _ in range(2):
        client.post(
            reverse("label-judge", args=[project_with_queries.slug]),
            {**fields, "choice": "left"},
            HTTP_HX_REQUEST="true",
        )
    assert Judgment.objects.count() == 1


def test_malformed_answers_are_a_400(client, project_with_queries, annotator):
    login(client, annotator)
    url = reverse("label-judge", args=[project_with_queries.slug])
    assert client.post(url, {"choice": "left"}).status_code == 400
    assert client.post(url, {"query": "x", "lease": "y", "client_id": "z", "choice": "left"}).status_code == 400
    assert Judgment.objects.count() == 0


def test_nothing_to_do_says_why(client, project, annotator):
    login(client, annotator)
    page = client.get(reverse("label", args=[project.slug])).content.decode()
    assert 'data-reason="done"' in page and "answered every question" in page


def test_dashboard_shows_runs_with_progress_and_stops_polling_when_done(client, project, researcher):
    login(client, researcher)
    Run.objects.create(
        project=project,
        kind=RunKind.GENERATE_CLIPS,
        steps=[RunState.GENERATING_CLIPS],
        state=RunState.GENERATING_CLIPS,
        progress=0.4,
        message="Rolled out 2",
    )
    page = client.get(reverse("project-loop", args=[project.slug])).content.decode()
    assert "Rolled out 2" in page and 'value="40"' in page and 'hx-trigger="every 2s"' in page
    assert "Generate clips #" in page
    polling = client.get(reverse("project-runs", args=[project.slug]), HTTP_HX_REQUEST="true")
    assert polling.status_code == 200
    Run.objects.update(state=RunState.DONE, progress=1.0)
    finished = client.get(reverse("project-runs", args=[project.slug]), HTTP_HX_REQUEST="true")
    assert finished.status_code == 286  # htmx's "stop polling"


def test_researcher_starts_clip_generation_from_the_dashboard(
    client, project, researcher, django_capture_on_commit_callbacks
):
    login(client, researcher)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("project-generate", args=[project.slug]), {"rollouts": "1", "queries": "1", "seed": "0"}
        )
    assert response.status_code == 302
    run = Run.objects.get()
    assert run.state == "done", run.error  # ran in-process here; a real worker runs it in the integration test
    assert project.clips.count() == 4


def test_media_is_served_to_members_with_range_requests(client, project_with_queries, annotator, outsider):
    clip = project_with_queries.clips.first()
    login(client, annotator)
    full = client.get(clip.video_url)
    assert full.status_code == 200 and full["Accept-Ranges"] == "bytes"
    part = client.get(clip.video_url, HTTP_RANGE="bytes=0-9")
    assert part.status_code == 206 and part["Content-Range"].startswith("bytes 0-9/")
    assert b"".join(part.streaming_content) == clip.video.open("rb").read()[:10]
    assert client.get(clip.video_url, HTTP_RANGE="bytes=99999-").status_code == 416
    client.logout()
    login(client, outsider)
    assert client.get(clip.video_url).status_code == 404


def test_ranking_page_shows_factors_with_examples_and_saves_a_ranking(client, project, researcher, annotator):
    from labeling.models import FactorRanking
    from tests.test_rankings_and_reward_models import make_clips

    make_clips(project, researcher, rollouts=2)
    login(client, annotator)
    url = reverse("rank", args=[project.slug])
    page = client.get(url).content.decode()
    assert 'data-factor-key="angle_sq"' in page and "lower is better" in page and "Highest:" in page
    assert 'name="sigma_torque_sq"' in page
    bad = client.post(url, {"groups": '[["angle_sq"]]'})
    assert bad.status_code == 400 and "factors missing" in bad.content.decode()
    good = client.post(
        url,
        {
            "groups": '[["torque_sq"], ["angle_sq", "angular_velocity_sq"]]',
            "sigma_angle_sq": "0.5",
            "sigma_torque_sq": "1",
            "comment": "ok",
        },
    )
    assert good.status_code == 302
    ranking = FactorRanking.objects.get()
    assert ranking.groups == [["torque_sq"], ["angle_sq", "angular_velocity_sq"]] and ranking.sigmas == {
        "angle_sq": 0.5
    }
    again = client.get(url).content.decode()
    assert again.index('data-factor-key="torque_sq"') < again.index('data-factor-key="angle_sq"')
    assert client.post(url, {"groups": "not json"}).status_code == 400


def test_dashboard_shows_rankings_agreement_reward_models_and_training_chart(
    client, project, researcher, annotator, annotator2
):
    from labeling.rankings import ranking_submit
    from trainer.models import PreferenceSet, RewardModel

    ranking_submit(project=project, annotator=annotator, groups=[["angle_sq"], ["angular_velocity_sq"], ["torque_sq"]])
    ranking_submit(project=project, annotator=annotator2, groups=[["angle_sq"], ["torque_sq"], ["angular_velocity_sq"]])
    preference_set = PreferenceSet.objects.create(project=project, sources="rankings", n_pairs=10, checksum="x")
    RewardModel.objects.create(
        project=project,
        version=1,
        preference_set=preference_set,
        status="ready",
        metrics={"val_accuracy": 0.95, "holdout_spearman": 0.9, "epochs_run": 2},
        history=[
            {"epoch": 1, "val_loss": 0.5, "val_accuracy": 0.8, "train_loss": 0.6},
            {"epoch": 2, "val_loss": 0.3, "val_accuracy": 0.95, "train_loss": 0.4},
        ],
    )
    login(client, researcher)
    page = client.get(reverse("project-data", args=[project.slug])).content.decode()
    assert "angle_sq &gt; angular_velocity_sq &gt; torque_sq" in page
    assert "Kendall&#x27;s W" in page or "Kendall's W" in page
    page = client.get(reverse("project-models", args=[project.slug])).content.decode()
    assert "v1" in page and "0.950" in page and "data-chart=" in page and "uPlot.iife.min.js" in page
    response = client.post(reverse("project-train", args=[project.slug]))
    assert response.status_code == 302
    assert project.runs.filter(kind=RunKind.RETRAIN).exists()


def test_dashboard_shows_annotator_quality(client, project_with_queries, researcher, annotator, annotator2):
    import uuid

    from labeling import assignment

    for user in (annotator, annotator2):
        for choice in ("left", "right", "left"):
            lease = assignment.lease_next_query(project=project_with_queries, annotator=user).lease
            assignment.judgment_submit(
                query_id=lease.query_id, annotator=user, choice=choice, lease_token=lease.token, client_id=uuid.uuid4()
            )
    login(client, researcher)
    page = client.get(reverse("project-quality", args=[project_with_queries.slug])).content.decode()
    assert "Krippendorff" in page and "Fleiss" in page
    assert annotator.username in page and annotator2.username in page


def test_skip_button_preload_and_watch_to_end_option(client, project_with_queries, annotator):
    login(client, annotator)
    url = reverse("label", args=[project_with_queries.slug])
    page = client.get(url).content.decode()
    assert 'data-key="s"' in page and "<template data-preload>" in page and "data-requires-watch" not in page
    fields = form_fields(page)
    skipped = client.post(
        reverse("label-skip", args=[project_with_queries.slug]), {"lease": fields["lease"]}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "Skipped." in skipped and form_fields(skipped)["query"] != fields["query"]
    project_with_queries.require_full_view = True
    project_with_queries.save()
    page = client.get(url).content.decode()
    assert page.count("data-requires-watch disabled") == 4
