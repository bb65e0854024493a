"""Writes for accounts."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models import Q

from .models import Role, User

RESEARCHERS_GROUP = "Researchers"
# Models a researcher manages through the Django admin, as (app label, model name); rows are further scoped to
# their own projects. Filled at start-up by the apps that own the models (labeling.admin's scoped admins call
# researcher_models_add), so accounts names no other app's models.
_RESEARCHER_MODELS: set[tuple[str, str]] = set()


def researcher_models_add(app_label: str, model_name: str) -> None:
    _RESEARCHER_MODELS.add((app_label, model_name))


def researchers_group() -> Group:
    """The researchers' group, its permissions brought up to date with the models registered now."""
    group, _ = Group.objects.get_or_create(name=RESEARCHERS_GROUP)
    wanted = Q(pk__in=[])
    for app_label, model_name in _RESEARCHER_MODELS:
        wanted |= Q(content_type__app_label=app_label, content_type__model=model_name)
    group.permissions.set(Permission.objects.filter(wanted))
    return group


def researchers_group_refresh(**kwargs: object) -> None:
    """After migrations (a model added or renamed): the existing group gets the permissions of today's models."""
    if Group.objects.filter(name=RESEARCHERS_GROUP).exists():
        researchers_group()


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
