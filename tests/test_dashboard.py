"""The researcher dashboard in sections, the clip browser, the policy pages and the lineage views."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils import timezone

from labeling import assignment
from labeling.models import Clip, Judgment, Query, RenderStatus, Rollout
from labeling.numbers import display_number
from tests.conftest import add_fake_clips
from tests.test_pages import login
from trainer.models import ITERATION_STEPS, PolicyCheckpoint, PreferenceSet, RewardModel, Run, RunKind, RunState

SECTIONS = ("project-detail", "project-data", "project-models", "project-loop", "project-quality", "project-clips")
# An MP4's first box: enough for the media view, which serves bytes without decoding them.
FAKE_MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(64)
FAKE_JPEG = b"\xff\xd8\xff\xe0" + bytes(32)


def answer(project, user, choice: str) -> Judgment:
    lease = assignment.lease_next_query(project=project, annotator=user).lease
    assert lease is not None
    return assignment.judgment_submit(
        query_id=lease.query_id, annotator=user, choice=choice, lease_token=lease.token, client_id=uuid.uuid4()
    ).judgment


def iteration_with_policy(project, number: int, *, true_mean: float, learned_mean: float, video: bool = True):
    raw = b"not read"
    preference_set = PreferenceSet(project=project, sources="judgments", n_pairs=3, checksum="0" * 64)
    preference_set.file.save("p.parquet", ContentFile(raw), save=False)
    preference_set.counts = {"human": 3}
    preference_set.save()
    model = RewardModel.objects.create(
        project=project, version=number, preference_set=preference_set, status="ready", metrics={"val_accuracy": 0.9}
    )
    run = Run.objects.create(
        project=project,
        number=number,
        steps=list(ITERATION_STEPS),
        state=RunState.DONE,
        preference_set=preference_set,
        reward_model=model,
        labels_used=3,
    )
    RewardModel.objects.filter(pk=model.pk).update(run=run)
    PreferenceSet.objects.filter(pk=preference_set.pk).update(run=run)
    previous = PolicyCheckpoint.objects.filter(project=project).order_by("-created_at").first()
    policy = PolicyCheckpoint(
        project=project,
        run=run,
        reward_model=model,
        previous=previous,
        algorithm="sac",
        timesteps=100 * number,
        evaluation={"true_mean": true_mean, "learned_mean": learned_mean, "episodes": 2},
        video_episode={"seed": 1, "steps": 200, "true_return": true_mean, "learned_return": learned_mean},
    )
    policy.model_file.save("p.zip", ContentFile(b"PK"), save=False)
    if video:
        policy.video.save("p.mp4", ContentFile(FAKE_MP4), save=False)
        policy.poster.save("p.jpg", ContentFile(FAKE_JPEG), save=False)
    policy.save()
    return run, policy


# --- sections ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SECTIONS)
def test_each_section_is_a_page_and_an_htmx_fragment_with_empty_states(client, project, researcher, name):
    login(client, researcher)
    url = reverse(name, args=[project.slug])
    page = client.get(url).content.decode()
    assert "<html" in page and 'aria-label="Dashboard sections"' in page
    assert f'href="{url}"\n     hx-get' in page or 'aria-current="page"' in page
    fragment = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in fragment and fragment.lstrip().startswith("{#") is False
    assert 'id="section"' in fragment and "site-header" not in fragment
    for text in (page, fragment):
        assert "nan" not in re.sub(r"<[^>]+>", " ", text).split()  # never a bare "nan"
    assert "/members/" in page  # the members page is one tab away


def test_sections_are_for_researchers_only(client, project, annotator):
    login(client, annotator)
    assert client.get(reverse("project-detail", args=[project.slug])).status_code == 302  # to the label page
    for name in SECTIONS[1:]:
        assert client.get(reverse(name, args=[project.slug])).status_code == 404


def test_quality_before_any_overlap_says_so_instead_of_nan(client, project_with_queries, researcher, annotator):
    answer(project_with_queries, annotator, "left")
    login(client, researcher)
    page = client.get(reverse("project-quality", args=[project_with_queries.slug])).content.decode()
    assert "needs overlapping answers" in page and "= nan" not in page and "nan" not in page.split()


def test_label_counts_agree_on_the_label_page_the_overview_and_the_sections(
    client, project_with_queries, researcher, annotator
):
    for choice in ("left", "cant_tell", "right"):
        answer(project_with_queries, annotator, choice)
    login(client, annotator)
    label_page = client.get(reverse("label", args=[project_with_queries.slug])).content.decode()
    assert "You have answered 3 so far (1 of them" in label_page
    client.logout()
    login(client, researcher)
    for name in ("project-detail", "project-data", "project-quality"):
        page = client.get(reverse(name, args=[project_with_queries.slug])).content.decode()
        counts = re.findall(r'data-count="answered">(\d+)<', page)
        assert counts and set(counts) == {"3"}, (name, counts)
    quality = client.get(reverse("project-quality", args=[project_with_queries.slug])).content.decode()
    # One row per annotator: 3 answers, of which 1 "can't tell" (not "2 answered + 1 can't tell").
    row = re.search(r"<td>anna</td>(.*?)</tr>", quality, re.S).group(1)
    assert re.findall(r'class="num">(\d+)<', row)[:2] == ["3", "1"]


def test_a_waiting_iteration_shows_one_label_count(client, project_with_queries, researcher, annotator):
    for choice in ("left", "right"):
        answer(project_with_queries, annotator, choice)
    Run.objects.create(
        project=project_with_queries,
        number=1,
        steps=list(ITERATION_STEPS),
        state=RunState.QUEUED,
        start_after_labels=20,
        message="Waiting for labels",
    )
    login(client, researcher)
    page = client.get(reverse("project-loop", args=[project_with_queries.slug])).content.decode()
    assert "Waiting for labels (2/20)" in page and "2 so far" in page
    overview = client.get(reverse("project-detail", args=[project_with_queries.slug])).content.decode()
    assert "(2/20 labels)" in overview


def test_progress_bars_show_the_runs_overall_progress(client, project, researcher):
    run = Run.objects.create(
        project=project, number=1, steps=list(ITERATION_STEPS), state=RunState.TRAINING_POLICY, progress=0.5
    )
    assert run.percent == 42  # step 3 of 6, half done: (2 + 0.5) / 6
    login(client, researcher)
    for name in ("project-detail", "project-loop"):
        page = client.get(reverse(name, args=[project.slug])).content.decode()
        assert 'value="42"' in page and 'value="50"' not in page


def test_dates_have_one_format(client, project_with_queries, researcher, annotator):
    answer(project_with_queries, annotator, "left")
    iteration_with_policy(project_with_queries, 1, true_mean=-0.0000000000004815630460337808, learned_mean=2.0)
    login(client, researcher)
    for name in SECTIONS:
        page = client.get(reverse(name, args=[project_with_queries.slug])).content.decode()
        shown = re.findall(r'<time datetime="[^"]+">([^<]+)</time>', page)
        for text in shown:
            assert re.fullmatch(r"\d{1,2} [A-Z][a-z]{2} \d{4}, \d{2}:\d{2}", text), (name, text)
        text = re.sub(r"<[^>]+>", " ", page)  # what people read (the chart's data keeps full precision)
        assert "-0.0000000000004815" not in text and "e-13" not in text


def test_the_returns_chart_puts_learned_return_on_its_own_axis(client, project, researcher):
    iteration_with_policy(project, 1, true_mean=-900.0, learned_mean=3.0)
    iteration_with_policy(project, 2, true_mean=-150.0, learned_mean=12.0)
    login(client, researcher)
    page = client.get(reverse("project-loop", args=[project.slug])).content.decode()
    spec = json.loads(re.search(r'data-chart="([^"]+)"', page).group(1).replace("&quot;", '"'))
    axes = {series["label"]: series["axis"] for series in spec["series"]}
    assert axes == {"true return": "left", "learned return (model units)": "right"}


def test_display_number_rounds_returns_sensibly():
    assert display_number(-0.0000000000004815630460337808) == "0"
    assert display_number(-1234.56789) == "-1,235"
    assert display_number(0.123456) == "0.1235"
    assert display_number(float("nan")) == "—" and display_number(None) == "—"


# --- the clip browser ----------------------------------------------------------------------------------------


def test_the_clip_browser_filters_and_pages(client, project_with_queries, researcher, annotator):
    project = project_with_queries
    answer(project, annotator, "left")
    judged = Query.objects.filter(judgments__isnull=False).values_list("clip_a_id", "clip_b_id").first()
    policy_rollout = Rollout(project=project, policy="policy:7:0", env_seed=1, n_steps=50, iteration=2)
    policy_rollout.data.save("r.npz", ContentFile(b"x"), save=False)
    policy_rollout.save()
    policy_clip = Clip.objects.create(
        project=project, rollout=policy_rollout, start=0, length=10, iteration=2, factor_totals={"angle_sq": 1.23456789}
    )
    login(client, researcher)
    url = reverse("project-clips", args=[project.slug])

    def shown(**params) -> set[int]:
        response = client.get(url, params)
        assert response.status_code == 200
        return {int(pk) for pk in re.findall(r'data-clip="(\d+)"', response.content.decode())}

    everything = set(Clip.objects.filter(project=project).values_list("pk", flat=True))
    assert shown() == everything
    assert shown(source="policy") == {policy_clip.pk}
    assert shown(source="scripted") == everything - {policy_clip.pk}
    assert shown(iteration=2) == {policy_clip.pk}
    assert shown(rendered="no") == {policy_clip.pk}  # the fake clips are ready, the new one is pending
    assert shown(judged="yes") == set(judged)
    assert shown(judged="no", rendered="yes") == everything - set(judged) - {policy_clip.pk}
    page = client.get(url, {"source": "policy"}).content.decode()
    assert "1.235" in page  # factor values, rounded
    assert client.get(url, {"iteration": "x"}).status_code == 400
    assert client.get(url, {"source": "nope"}).status_code == 400
    # Pages of 24, newest first, continued by id.
    add_fake_clips(project, 30)
    first = client.get(url).content.decode()
    more = re.search(r"before=(\d+)", first)
    assert more and len(re.findall(r'data-clip="', first)) == 24
    second = shown(before=more.group(1))
    assert max(second) < int(more.group(1)) and len(second) == len(everything) + 30 - 24


def test_the_clip_browser_empty_state(client, project, researcher):
    login(client, researcher)
    page = client.get(reverse("project-clips", args=[project.slug])).content.decode()
    assert "No clips yet" in page
    assert (
        "No clips match"
        in client.get(reverse("project-clips", args=[project.slug]), {"judged": "yes"}).content.decode()
    )


# --- policies and lineage ------------------------------------------------------------------------------------


def test_the_policy_page_shows_its_video_next_to_the_previous_one(client, project, researcher, annotator, settings):
    settings.MEDIA_SERVING = "django"
    _, first = iteration_with_policy(project, 1, true_mean=-900.0, learned_mean=3.0)
    run, second = iteration_with_policy(project, 2, true_mean=-150.0, learned_mean=12.0)
    login(client, researcher)
    page = client.get(reverse("project-policy", args=[project.slug, second.pk])).content.decode()
    videos = re.findall(r'<video data-side="\w+" src="([^"]+)"', page)
    assert videos == [
        reverse("policy-media", args=[project.slug, second.pk, "video"]),
        reverse("policy-media", args=[project.slug, first.pk, "video"]),
    ]
    assert "-150" in page and "-900" in page and "12" in page
    # The lineage links inputs and outputs.
    for link in (
        reverse("project-reward-model", args=[project.slug, second.reward_model_id]),
        reverse("project-policy", args=[project.slug, first.pk]),
        reverse("project-run-lineage", args=[project.slug, run.pk]),
    ):
        assert f'href="{link}' in page
    media = client.get(videos[0])
    assert media.status_code == 200 and media["Content-Type"] == "video/mp4" and media["X-Content-Type-Options"]
    assert client.get(reverse("policy-media", args=[project.slug, second.pk, "poster"]))["Content-Type"] == (
        "image/jpeg"
    )
    # Members may watch the media (like clip media); the page is the researchers'.
    client.logout()
    login(client, annotator)
    assert client.get(videos[0]).status_code == 200
    assert client.get(reverse("project-policy", args=[project.slug, second.pk])).status_code == 404


def test_the_first_policy_and_a_failed_render_say_so(client, project, researcher):
    _, policy = iteration_with_policy(project, 1, true_mean=1.0, learned_mean=1.0, video=False)
    policy.video_episode = {"seed": 1, "error": "RuntimeError: no display"}
    policy.save()
    login(client, researcher)
    page = client.get(reverse("project-policy", args=[project.slug, policy.pk])).content.decode()
    assert "No previous policy" in page and "could not be rendered: RuntimeError: no display" in page
    assert client.get(reverse("policy-media", args=[project.slug, policy.pk, "video"])).status_code == 404


def test_a_policy_whose_video_is_being_rendered_says_so(client, project, researcher):
    _, policy = iteration_with_policy(project, 1, true_mean=1.0, learned_mean=1.0, video=False)
    policy.video_episode = {"seed": 1, "queued": True, "queued_at": timezone.now().isoformat()}
    policy.save()
    login(client, researcher)
    page = client.get(reverse("project-policy", args=[project.slug, policy.pk])).content.decode()
    assert 'data-video="queued"' in page and "being rendered" in page


def test_a_queued_video_whose_policy_cannot_load_records_why_even_if_the_policy_is_gone(
    client, project, researcher, monkeypatch
):
    from trainer import policy_video

    _, policy = iteration_with_policy(project, 1, true_mean=1.0, learned_mean=1.0, video=False)
    policy.video_episode = {"seed": 4, "queued": True, "queued_at": timezone.now().isoformat()}
    policy.save()
    episode = policy_video.policy_video_render_queued(policy.pk)  # its model file is two bytes, not a snapshot
    policy.refresh_from_db()
    assert episode == policy.video_episode and episode["seed"] == 4 and episode["error"]
    login(client, researcher)
    assert (
        "could not be rendered"
        in client.get(reverse("project-policy", args=[project.slug, policy.pk])).content.decode()
    )

    # The checkpoint is deleted while the render task loads it (its training step was retried): nothing to save.
    _, gone = iteration_with_policy(project, 2, true_mean=1.0, learned_mean=1.0, video=False)
    gone.video_episode = {"seed": 5, "queued": True, "queued_at": timezone.now().isoformat()}
    gone.save()

    def delete_then_fail(project):
        PolicyCheckpoint.objects.filter(pk=gone.pk).delete()
        raise RuntimeError("no simulator")

    monkeypatch.setattr(policy_video, "env_factory", delete_then_fail)
    assert policy_video.policy_video_render_queued(gone.pk)["error"] == "RuntimeError: no simulator"
    assert not PolicyCheckpoint.objects.filter(pk=gone.pk).exists()


def test_lineage_of_a_run_and_of_a_reward_model(client, project, researcher):
    run, policy = iteration_with_policy(project, 1, true_mean=1.0, learned_mean=1.0)
    rollout = Rollout(project=project, policy=f"policy:{policy.pk}:0", env_seed=1, n_steps=50, iteration=1, run=run.pk)
    rollout.data.save("r.npz", ContentFile(b"x"), save=False)
    rollout.save()
    Clip.objects.create(
        project=project, rollout=rollout, start=0, length=10, iteration=1, render_status=RenderStatus.READY
    )
    login(client, researcher)
    page = client.get(reverse("project-run-lineage", args=[project.slug, run.pk])).content.decode()
    assert "1 clips" in page and "(1 with video)" in page
    assert f'href="{reverse("project-policy", args=[project.slug, policy.pk])}"' in page
    assert f'href="{reverse("project-reward-model", args=[project.slug, run.reward_model_id])}"' in page
    model_page = client.get(reverse("project-reward-model", args=[project.slug, run.reward_model_id])).content.decode()
    assert f"preference set #{run.preference_set_id}" in model_page and "Policy of iteration 1" in model_page
    assert f'href="{reverse("project-run-lineage", args=[project.slug, run.pk])}"' in model_page
    other = Run.objects.create(project=project, kind=RunKind.GENERATE_CLIPS, steps=["generating_clips"])
    assert client.get(reverse("project-run-lineage", args=[project.slug, other.pk])).status_code == 200
    assert client.get(reverse("project-run-lineage", args=[project.slug, 10**6])).status_code == 404


def test_admin_lists_round_returns(project):
    from django.contrib import admin as django_admin

    from labeling.models import Clip as ClipModel
    from labeling.models import Rollout as RolloutModel

    noisy = -0.0000000000004815630460337808
    clip = add_fake_clips(project, 1)[0]
    clip.true_return = noisy
    assert django_admin.site._registry[ClipModel].true_return(clip) == "0"
    rollout = clip.rollout
    rollout.true_return = -1234.56789
    assert django_admin.site._registry[RolloutModel].true_return(rollout) == "-1,235"
    _, policy = iteration_with_policy(project, 1, true_mean=noisy, learned_mean=0.123456)
    policy_admin = django_admin.site._registry[PolicyCheckpoint]
    assert policy_admin.true_return(policy) == "0" and policy_admin.learned_return(policy) == "0.1235"


def test_a_policy_video_that_cannot_be_rendered_is_recorded_not_raised(project):
    from trainer.policy_video import policy_video_render

    _, policy = iteration_with_policy(project, 1, true_mean=1.0, learned_mean=1.0, video=False)

    class Broken:
        def predict(self, *args, **kwargs):
            raise RuntimeError("no policy here")

    episode = policy_video_render(checkpoint=policy, model=Broken(), reward_fn=None, seed=3)
    policy.refresh_from_db()
    assert episode["error"] and "steps" not in episode and policy.video_episode == episode and not policy.video
