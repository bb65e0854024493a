"""Writes for accounts."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models import Q

from .models import Role, User

RESEARCHERS_GROUP = "Researchers"
# Models a researcher manages through the Django admin (rows are further scoped to their own projects).
_RESEARCHER_MODELS = {
    "labeling": ["project", "rewardfactor", "membership", "rollout", "clip", "query", "judgment", "lease", "job"],
    "trainer": ["preferenceset", "rewardmodel", "iteration", "policycheckpoint"],
}


def researchers_group() -> Group:
    group, _ = Group.objects.get_or_create(name=RESEARCHERS_GROUP)
    wanted = Q()
    for app_label, models in _RESEARCHER_MODELS.items():
        wanted |= Q(content_type__app_label=app_label, content_type__model__in=models)
    group.permissions.set(Permission.objects.filter(wanted))
    return group


@transaction.atomic
def user_create(*, username: str, password: str, role: str = Role.ANNOTATOR, email: str = "") -> User:
    if role not in Role.values:
        raise ValueError(f"unknown role {role!r}")
    user = User(username=username, email=email, role=role, is_staff=role == Role.RESEARCHER)
    user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    if role == Role.RESEARCHER:
        user.groups.add(researchers_group())
    return user
