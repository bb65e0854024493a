"""An annotator answers factors-only pairs (clips without video) by keyboard in a real browser: the page shows
each side's factor totals instead of video, and the arrow keys answer as they do for videos."""

from __future__ import annotations

import numpy as np
import pytest

from labeling.models import Choice, Clip, Judgment, RenderStatus
from labeling.services import queries_for_pairs
from tests.conftest import PASSWORD, add_fake_clips

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def factors_only_project(project):
    clips = add_fake_clips(project, 4, ready=False)
    Clip.objects.filter(pk__in=[clip.pk for clip in clips]).update(render_status=RenderStatus.NO_VIDEO)
    pairs = [(clips[0].pk, clips[1].pk), (clips[2].pk, clips[3].pk)]
    queries_for_pairs(project=project, pairs=pairs, rng=np.random.default_rng(0))
    return project


def test_answer_factors_only_pairs_by_keyboard(page_for, live_server, factors_only_project, annotator):
    page = page_for(annotator, PASSWORD)
    page.goto(f"{live_server.url}/projects/{factors_only_project.slug}/label/")
    table = page.locator("table[data-factors-only]")
    table.wait_for(state="visible")
    assert page.locator("video").count() == 0
    text = table.inner_text()
    for factor in factors_only_project.factors.all():
        assert factor.label in text
    assert "have no video" in text and ("lower is better" in text or "higher is better" in text)
    assert page.locator("table[data-factors-only] td[data-side=left] .factor-value").count() == 3
    answered = []
    for key in ("ArrowLeft", "ArrowRight"):
        query = page.get_attribute("#compare", "data-query-id")
        assert page.locator("button[data-key=ArrowLeft]").is_enabled()
        page.keyboard.press(key)
        page.wait_for_function(
            "(q) => { const el = document.querySelector('#compare'); return el && el.dataset.queryId !== q; }",
            arg=query,
        )
        answered.append(int(query))
    page.locator(".empty-state").wait_for(state="visible")
    judgments = Judgment.objects.filter(annotator=annotator).order_by("id")
    assert [(j.query_id, j.choice) for j in judgments] == list(zip(answered, [Choice.LEFT, Choice.RIGHT], strict=True))
    assert page.errors == []
