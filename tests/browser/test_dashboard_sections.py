"""The dashboard's sections, the clip browser, the policy page and the lineage links, in a real browser."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile

from labeling.models import Clip, Rollout
from tests.conftest import PASSWORD, add_fake_clips
from tests.test_dashboard import iteration_with_policy
from trainer.core import video

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _real_mp4() -> bytes:
    """A tiny H.264 MP4 the browser can decode (eight grey frames)."""
    frames = np.full((8, 32, 32, 3), 128, dtype=np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "v.mp4"
        video.write_mp4(frames, path, fps=8)
        return path.read_bytes()


def test_tabs_swap_sections_in_place_with_empty_states(page_for, live_server, project, researcher):
    page = page_for(researcher, PASSWORD)
    page.goto(f"{live_server.url}/projects/{project.slug}/")
    page.get_by_text("No iteration yet").wait_for()
    tabs = page.get_by_role("navigation", name="Dashboard sections")
    for tab, path, empty in (
        ("Data", "data/", "No clips yet"),
        ("Models", "models/", "No reward model yet"),
        ("Loop", "loop/", "No runs yet"),
        ("Quality", "quality/", "No answers yet"),
        ("Clips", "clips/", "No clips yet"),
    ):
        tabs.get_by_role("link", name=tab, exact=True).click()
        page.wait_for_url(f"{live_server.url}/projects/{project.slug}/{path}")
        page.locator("#section").get_by_text(empty).first.wait_for()
        assert tabs.locator('[aria-current="page"]').inner_text() == tab
        assert "nan" not in page.locator("#section").inner_text().split()
    page.go_back()  # htmx pushed each section's URL
    page.wait_for_url(f"{live_server.url}/projects/{project.slug}/quality/")
    assert page.errors == []


def test_the_clip_browser_filters_by_source_and_plays_clips(page_for, live_server, project, researcher):
    add_fake_clips(project, 3)
    rollout = Rollout(project=project, policy="policy:1:0", env_seed=1, n_steps=50, iteration=1)
    rollout.data.save("r.npz", ContentFile(b"x"), save=False)
    rollout.save()
    mine = Clip(project=project, rollout=rollout, start=0, length=10, iteration=1, factor_totals={"angle_sq": 2.5})
    mine.video.save("c.mp4", ContentFile(_real_mp4()), save=False)
    mine.render_status = "ready"
    mine.save()
    page = page_for(researcher, PASSWORD)
    page.goto(f"{live_server.url}/projects/{project.slug}/clips/")
    rows = page.locator("tr[data-clip]")
    rows.first.wait_for()
    assert rows.count() == 4
    page.select_option("select[name=source]", "policy")  # htmx reloads the list on change
    page.wait_for_url("**/clips/?*source=policy*")
    page.locator(f'tr[data-clip="{mine.pk}"]').wait_for()
    assert rows.count() == 1 and "2.5" in rows.first.inner_text()
    ready = page.evaluate(
        """async (pk) => {
            const v = document.querySelector(`tr[data-clip="${pk}"] video`);
            v.preload = 'auto'; v.load();
            await new Promise((ok) => { if (v.readyState >= 1) ok(); else v.addEventListener('loadedmetadata', ok); });
            return v.duration > 0;
        }""",
        mine.pk,
    )
    assert ready
    assert page.errors == []


def test_the_policy_page_plays_both_videos_and_links_its_lineage(page_for, live_server, project, researcher):
    mp4 = _real_mp4()
    _, first = iteration_with_policy(project, 1, true_mean=-900.0, learned_mean=3.0)
    run, second = iteration_with_policy(project, 2, true_mean=-150.0, learned_mean=12.0)
    for policy in (first, second):
        policy.video.save("v.mp4", ContentFile(mp4), save=True)
    page = page_for(researcher, PASSWORD)
    page.goto(f"{live_server.url}/projects/{project.slug}/loop/")
    page.locator("#runs").get_by_role("link", name="-150").click()  # the true return links to the policy
    page.wait_for_url(f"**/policies/{second.pk}/")
    # Both episodes play on one clock, side by side (the labelling page's synchronised player).
    videos = page.locator("#policy [data-sync-player] video")
    assert videos.count() == 2
    durations = page.evaluate(
        """async () => Promise.all([...document.querySelectorAll('#policy [data-sync-player] video')].map((v) =>
            new Promise((ok) => { if (v.readyState >= 1) ok(v.duration);
                                  else v.addEventListener('loadedmetadata', () => ok(v.duration)); })))"""
    )
    assert all(d > 0 for d in durations)
    cards = page.locator(".policy-card")
    assert "-150" in cards.nth(0).inner_text() and "-900" in cards.nth(1).inner_text()
    # Lineage: policy → the reward model it was trained on → its preference set and the run that made it.
    page.get_by_role("region", name="Lineage").get_by_role("link", name="v2").click()
    page.wait_for_url(f"**/reward-models/{second.reward_model_id}/")
    page.get_by_role("heading", name=f"Input: preference set #{run.preference_set_id}").wait_for()
    page.get_by_role("link", name="iteration 2").first.click()
    page.wait_for_url(f"**/runs/{run.pk}/lineage/")
    page.get_by_role("link", name="watch the policy of iteration 2").wait_for()
    assert page.errors == []
