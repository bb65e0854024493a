"""Many annotators at once on PostgreSQL: no lost or duplicated judgment, no query over its overlap."""

from __future__ import annotations

import random
import threading
import time
import uuid
from datetime import timedelta

import numpy as np
import pytest
from django.db import connection, connections
from django.db.models import Count
from django.utils import timezone

from accounts.services import user_create
from labeling import assignment
from labeling.errors import ServiceError
from labeling.models import Judgment, Lease, Query
from labeling.services import membership_add, queries_create_random
from tests.conftest import add_fake_clips, make_project

pytestmark = [pytest.mark.integration]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("n_clients, n_queries", [(8, 60), pytest.param(32, 700, marks=pytest.mark.slow)])
def test_concurrent_annotators_respect_overlap_and_idempotency(researcher, n_clients, n_queries):
    if connection.vendor != "postgresql":
        pytest.skip("row locks (SKIP LOCKED) need PostgreSQL; set DATABASE_URL")
    project = make_project(researcher, slug="crowd", overlap=3)
    clips = add_fake_clips(project, 60)
    created = queries_create_random(project=project, count=n_queries, rng=np.random.default_rng(0), clips=clips)
    assert created == n_queries
    annotators = [user_create(username=f"a{i}", password="pw-123456789", role="annotator") for i in range(n_clients)]
    for user in annotators:
        membership_add(project=project, user=user)
    accepted: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(user, seed):
        rng = random.Random(seed)
        deadline = time.monotonic() + 500
        try:
            while True:
                result = assignment.lease_next_query(project=project, annotator=user)
                if result.lease is None:
                    if result.reason == assignment.NothingToDo.DONE:
                        return
                    # Others hold (or are writing to) the last queries: come back shortly, as a client would.
                    assert time.monotonic() < deadline, "annotators starved"
                    time.sleep(0.01)
                    continue
                roll = rng.random()
                if roll < 0.05:
                    continue  # a reload: the same lease comes back on the next request
                if roll < 0.10:  # the tab closed: sendBeacon releases the lease
                    assignment.lease_release(token=result.lease.token, annotator=user)
                    continue
                if roll < 0.15:  # the client vanished: its lease runs out and others may take the query
                    Lease.objects.filter(pk=result.lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
                    continue
                client_id = uuid.uuid4()
                for _ in range(rng.choice([1, 1, 2, 3])):  # retries and double submissions
                    try:
                        outcome = assignment.judgment_submit(
                            query_id=result.lease.query_id,
                            annotator=user,
                            choice=rng.choice(["left", "right"]),
                            lease_token=result.lease.token,
                            client_id=client_id,
                        )
                    except ServiceError:
                        continue
                    if outcome.created:
                        with lock:
                            accepted.append((outcome.judgment.query_id, user.pk))
        except BaseException as error:  # surfaced below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(user, i)) for i, user in enumerate(annotators)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    assert len(accepted) == len(set(accepted)) == Judgment.objects.count()
    assert Judgment.objects.count() == created * 3  # every query answered exactly overlap times
    over = Query.objects.annotate(n=Count("judgments")).filter(n__gt=3)
    assert not over.exists()
    for query in Query.objects.annotate(n=Count("judgments")):
        assert query.n == query.answers_given == 3 and query.status == "complete"
