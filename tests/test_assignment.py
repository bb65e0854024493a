"""The assignment engine: leases, overlap, idempotent judgments, and honest "nothing to do" answers."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from labeling import assignment
from labeling.errors import AlreadyJudged, ClientIdReused, LeaseExpired, LeaseInvalid
from labeling.models import Judgment, Lease, Query, QueryStatus
from labeling.services import queries_create_random
from tests.conftest import add_fake_clips


def answer(project, user, choice="left"):
    result = assignment.lease_next_query(project=project, annotator=user)
    assert result.lease is not None, result.reason
    return assignment.judgment_submit(
        query_id=result.lease.query_id,
        annotator=user,
        choice=choice,
        lease_token=result.lease.token,
        client_id=uuid.uuid4(),
    ).judgment


def test_an_annotator_never_gets_the_same_query_twice(project_with_queries, annotator):
    seen = [answer(project_with_queries, annotator).query_id for _ in range(10)]
    assert len(set(seen)) == 10
    nothing = assignment.lease_next_query(project=project_with_queries, annotator=annotator)
    assert nothing.lease is None and nothing.reason == assignment.NothingToDo.DONE


def test_a_query_never_gets_more_judgments_than_its_overlap(project_with_queries, annotator, annotator2, outsider):
    from labeling.services import membership_add

    membership_add(project=project_with_queries, user=outsider)
    for user in (annotator, annotator2):
        for _ in range(10):
            answer(project_with_queries, user)
    assert Query.objects.filter(status=QueryStatus.COMPLETE).count() == 10
    third = assignment.lease_next_query(project=project_with_queries, annotator=outsider)
    assert third.lease is None and third.reason == assignment.NothingToDo.DONE
    for query in Query.objects.all():
        assert query.judgments.count() == query.answers_given == 2


def test_the_same_lease_is_served_again_on_reload(project_with_queries, annotator):
    first = assignment.lease_next_query(project=project_with_queries, annotator=annotator).lease
    again = assignment.lease_next_query(project=project_with_queries, annotator=annotator).lease
    assert first.token == again.token
    assert Lease.objects.count() == 1


def test_leased_queries_are_not_handed_to_more_annotators_than_the_overlap(project, annotator, annotator2, outsider):
    from labeling.services import membership_add

    project.overlap = 1
    project.save()
    clips = add_fake_clips(project, 2)
    queries_create_random(project=project, count=1, rng=__import__("numpy").random.default_rng(0), clips=clips)
    Query.objects.update(answers_wanted=1)
    membership_add(project=project, user=outsider)
    assert assignment.lease_next_query(project=project, annotator=annotator).lease is not None
    blocked = assignment.lease_next_query(project=project, annotator=annotator2)
    assert blocked.lease is None and blocked.reason == assignment.NothingToDo.LEASED_BY_OTHERS
    # Once the lease expires, the query is free again.
    Lease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert assignment.lease_next_query(project=project, annotator=annotator2).lease is not None


def test_retry_with_the_same_client_id_returns_the_first_judgment(project_with_queries, annotator):
    lease = assignment.lease_next_query(project=project_with_queries, annotator=annotator).lease
    client_id = uuid.uuid4()
    kwargs = dict(
        query_id=lease.query_id, annotator=annotator, choice="right", lease_token=lease.token, client_id=client_id
    )
    first = assignment.judgment_submit(**kwargs)
    retry = assignment.judgment_submit(**kwargs)
    assert first.created and not retry.created
    assert first.judgment.pk == retry.judgment.pk
    assert Judgment.objects.count() == 1
    with pytest.raises(ClientIdReused):
        assignment.judgment_submit(**{**kwargs, "choice": "left"})


def test_a_second_different_judgment_is_refused(project_with_queries, annotator):
    lease = assignment.lease_next_query(project=project_with_queries, annotator=annotator).lease
    assignment.judgment_submit(
        query_id=lease.query_id, annotator=annotator, choice="left", lease_token=lease.token, client_id=uuid.uuid4()
    )
    with pytest.raises(AlreadyJudged):
        assignment.judgment_submit(
            query_id=lease.query_id,
            annotator=annotator,
            choice="right",
            lease_token=lease.token,
            client_id=uuid.uuid4(),
        )


def test_a_judgment_needs_its_authors_live_lease(project_with_queries, annotator, annotator2):
    lease = assignment.lease_next_query(project=project_with_queries, annotator=annotator).lease
    with pytest.raises(LeaseInvalid):  # someone else's lease
        assignment.judgment_submit(
            query_id=lease.query_id,
            annotator=annotator2,
            choice="left",
            lease_token=lease.token,
            client_id=uuid.uuid4(),
        )
    Lease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(LeaseExpired):
        assignment.judgment_submit(
            query_id=lease.query_id, annotator=annotator, choice="left", lease_token=lease.token, client_id=uuid.uuid4()
        )
    assert Judgment.objects.count() == 0


def test_swapped_display_is_recorded_and_mapped_back_to_clips(project_with_queries, annotator):
    lease = assignment.lease_next_query(project=project_with_queries, annotator=annotator).lease
    judgment = assignment.judgment_submit(
        query_id=lease.query_id, annotator=annotator, choice="left", lease_token=lease.token, client_id=uuid.uuid4()
    ).judgment
    assert judgment.swapped == lease.swapped
    left_clip = lease.query.clip_b_id if lease.swapped else lease.query.clip_a_id
    assert judgment.preferred_clip_id == left_clip
    assert judgment.target_a == (0.0 if lease.swapped else 1.0)


def test_unrendered_clips_are_not_served_and_the_reason_says_wait(project, annotator):
    from trainer.models import Run, RunKind

    clips = add_fake_clips(project, 4, ready=False)
    queries_create_random(project=project, count=3, rng=__import__("numpy").random.default_rng(0), clips=clips)
    Run.objects.create(
        project=project, kind=RunKind.GENERATE_CLIPS, steps=["generating_clips"], state="generating_clips"
    )
    result = assignment.lease_next_query(project=project, annotator=annotator)
    assert result.lease is None
    assert result.reason == assignment.NothingToDo.WAITING


def test_ranking_only_projects_serve_no_pairs(project_with_queries, annotator):
    project_with_queries.feedback_mode = "ranking"
    project_with_queries.save()
    result = assignment.lease_next_query(project=project_with_queries, annotator=annotator)
    assert result.lease is None and result.reason == assignment.NothingToDo.PAIRWISE_OFF


def test_expired_leases_are_swept(project_with_queries, annotator):
    assignment.lease_next_query(project=project_with_queries, annotator=annotator)
    assert assignment.leases_sweep_expired() == 0
    Lease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert assignment.leases_sweep_expired() == 1


def test_new_clips_get_new_queries_even_when_the_project_has_many(project):
    import numpy as np

    old = add_fake_clips(project, 6)
    assert queries_create_random(project=project, count=15, rng=np.random.default_rng(0), clips=old) == 15
    new = add_fake_clips(project, 3)
    assert queries_create_random(project=project, count=5, rng=np.random.default_rng(1), clips=new) == 3
    assert queries_create_random(project=project, count=5, rng=np.random.default_rng(2), clips=new) == 0


def test_a_skipped_pair_goes_to_others_and_never_back_to_the_skipper(project, annotator, annotator2):
    import numpy as np

    clips = add_fake_clips(project, 2)
    queries_create_random(project=project, count=1, rng=np.random.default_rng(0), clips=clips)
    lease = assignment.lease_next_query(project=project, annotator=annotator).lease
    assert assignment.lease_skip(token=lease.token, annotator=annotator)
    assert not assignment.lease_skip(token=lease.token, annotator=annotator2)  # not theirs
    again = assignment.lease_next_query(project=project, annotator=annotator)
    assert again.lease is None and again.reason == assignment.NothingToDo.DONE
    assert assignment.lease_next_query(project=project, annotator=annotator2).lease.query_id == lease.query_id
    assert assignment.leases_sweep_expired() == 0  # the skip is remembered, not swept


def test_higher_priority_queries_are_served_first(project, annotator):
    import numpy as np

    clips = add_fake_clips(project, 6)
    queries_create_random(project=project, count=5, rng=np.random.default_rng(0), clips=clips)
    urgent = Query.objects.order_by("-random_key").first()  # last in random order
    Query.objects.filter(pk=urgent.pk).update(priority=10)
    assert assignment.lease_next_query(project=project, annotator=annotator).lease.query_id == urgent.pk


def test_heartbeat_extends_and_release_frees_a_lease_from_the_page(client, project_with_queries, annotator):
    from django.urls import reverse

    client.force_login(annotator)
    lease = assignment.lease_next_query(project=project_with_queries, annotator=annotator).lease
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() + timedelta(seconds=5))
    beat = client.post(reverse("lease-heartbeat", args=[lease.token]))
    assert beat.status_code == 200
    assert Lease.objects.get(pk=lease.pk).expires_at > timezone.now() + timedelta(seconds=60)
    assert client.post(reverse("lease-release", args=[lease.token])).status_code == 204
    assert not Lease.objects.filter(pk=lease.pk).exists()
    gone = client.post(reverse("lease-heartbeat", args=[lease.token]))
    assert gone.status_code == 409 and gone.json()["error"]["code"] == "lease_invalid"
