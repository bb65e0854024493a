"""Many annotators at once on PostgreSQL: no lost or duplicated judgment, no query over its overlap."""

from __future__ import annotations

import random
import threading
import time
import uuid

import numpy as np
import pytest
from django.db import connection, connections
from django.db.models import Count

from accounts.services import user_create
from labeling import assignment
from labeling.errors import ServiceError
from labeling.models import Judgment, Query
from labeling.services import membership_add, queries_create_random
from tests.conftest import add_fake_clips, make_project

pytestmark = [pytest.mark.integration]


@pytest.mark.django_db(transaction=True)
def test_concurrent_annotators_respect_overlap_and_idempotency(researcher):
    if connection.vendor != "postgresql":
        pytest.skip("row locks (SKIP LOCKED) need PostgreSQL; set DATABASE_URL")
    project = make_project(researcher, slug="crowd", overlap=3)
    clips = add_fake_clips(project, 20)
    created = queries_create_random(project=project, count=60, rng=np.random.default_rng(0), clips=clips)
    annotators = [user_create(username=f"a{i}", password="pw-123456789", role="annotator") for i in range(8)]
    for user in annotators:
        membership_add(project=project, user=user)
    accepted: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(user, seed):
        rng = random.Random(seed)
        deadline = time.monotonic() + 90
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
                if rng.random() < 0.1:
                    continue  # abandoned lease: the same one comes back on the next request
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
        thread.join(timeout=120)
    assert not errors, errors
    assert len(accepted) == len(set(accepted)) == Judgment.objects.count()
    assert Judgment.objects.count() == created * 3  # every query answered exactly overlap times
    over = Query.objects.annotate(n=Count("judgments")).filter(n__gt=3)
    assert not over.exists()
    for query in Query.objects.annotate(n=Count("judgments")):
        assert query.n == query.answers_given == 3 and query.status == "complete"
