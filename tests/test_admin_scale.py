"""Admin change lists that stay fast on big tables: capped counts, pages up to the cap, cheap filters."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from django.test import Client

from labeling.admin import CappedCountPaginator
from labeling.models import Judgment, Query
from labeling.services import queries_create_random
from tests.conftest import add_fake_clips


@pytest.fixture
def staff_client(researcher) -> Client:
    client = Client()
    client.force_login(researcher)
    return client


@pytest.fixture
def judged(project, annotator, annotator2):
    clips = add_fake_clips(project, 10)
    queries_create_random(project=project, count=30, rng=np.random.default_rng(0), clips=clips)
    for query in Query.objects.filter(project=project):
        for user in (annotator, annotator2):
            Judgment.objects.create(query=query, annotator=user, choice="left", client_id=uuid.uuid4())
    return project


def test_the_paginator_counts_exactly_up_to_its_cap_and_pages_stop_there(judged, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "cap", 25)
    rows = Judgment.objects.order_by("-id")
    paginator = CappedCountPaginator(rows, 10)
    assert paginator.count >= 26  # more than the cap: the cap + 1, or PostgreSQL's planner estimate if larger
    assert paginator.num_pages == 3  # the first 25 rows only
    small = CappedCountPaginator(Judgment.objects.filter(pk__in=rows.values("pk")[:7]), 5)
    assert (small.count, small.num_pages) == (7, 2)
    assert CappedCountPaginator([1, 2, 3], 2).count == 3  # plain lists are counted as usual


def test_big_change_lists_render_first_and_last_page_and_filters(judged, staff_client, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "cap", 25)
    for url in ("/admin/labeling/judgment/", "/admin/labeling/query/"):
        first = staff_client.get(url)
        assert first.status_code == 200
        assert staff_client.get(url, {"p": 3}).status_code == 200  # the last page under the cap
        assert staff_client.get(url, {"p": 40}).status_code == 200  # past it: the last page again
    page = staff_client.get("/admin/labeling/query/", {"iteration": "0"})
    assert page.status_code == 200 and "?iteration=0" in page.content.decode()
    assert staff_client.get("/admin/labeling/query/", {"iteration": "x" * 30}).status_code == 200
    assert (
        staff_client.get("/admin/labeling/judgment/", {"annotator__id__exact": judged.created_by_id}).status_code == 200
    )
