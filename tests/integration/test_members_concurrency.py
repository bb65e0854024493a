"""Two researchers demote (or remove) each other at the same moment on PostgreSQL: one wins, the project keeps a
researcher, and neither request fails with a deadlock (labeling.services locks researcher rows first, in order)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from accounts.services import user_create
from labeling import services
from labeling.errors import LastResearcher
from labeling.models import Membership, ProjectRole
from tests.conftest import make_project

pytestmark = [pytest.mark.integration]


def one_round(researcher, change: str, attempt: int) -> tuple[list[str], int]:
    """Each of two researchers demotes (or removes) the other at once: the outcomes and researchers left."""
    project = make_project(researcher, slug=f"pair-{change}-{attempt}")
    other = user_create(username=f"rhea-{change}-{attempt}", password="pw-123456789", role="researcher")
    services.membership_add(project=project, user=other, role=ProjectRole.RESEARCHER, actor=researcher)
    mine = Membership.objects.get(project=project, user=researcher)
    theirs = Membership.objects.get(project=project, user=other)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def act(actor, target):
        try:
            barrier.wait()
            if change == "demote":
                services.member_role_change(membership=target, role=ProjectRole.ANNOTATOR, actor=actor)
            else:
                services.member_remove(membership=target, actor=actor)
            outcomes.append("done")
        except LastResearcher:
            outcomes.append("refused")
        except BaseException as error:  # a deadlock or anything else fails the test
            outcomes.append(repr(error))
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=act, args=(researcher, theirs)),
        threading.Thread(target=act, args=(other, mine)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes, Membership.objects.filter(project=project, role=ProjectRole.RESEARCHER).count()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", ["demote", "remove"])
def test_two_researchers_stepping_on_each_other_leave_one(researcher, change):
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL; set DATABASE_URL")
    for attempt in range(5):  # a few rounds: the threads interleave differently each time
        outcomes, left = one_round(researcher, change, attempt)
        assert sorted(outcomes) == ["done", "refused"], outcomes
        assert left == 1
