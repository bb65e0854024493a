"""Projects without the admin (issue 14, point 1): create a project from the form, add members by username,
invite by link, change roles, remove members; every change leaves an audit entry (who, when, what)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import Role, User
from accounts.services import user_create
from labeling import services
from labeling.errors import Conflict, LastResearcher, NotFound, ValidationFailed
from labeling.invites import invite_id, invite_token
from labeling.models import AuditAction, AuditEntry, Invite, Membership, Project, ProjectRole

from .conftest import PASSWORD, api_client_for, make_project


def login(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def actions(project: Project) -> list[tuple[str | None, str, str]]:
    """(actor, action, target) of the project's audit entries, oldest first."""
    return [
        (e.actor.username if e.actor else None, e.action, e.target)
        for e in AuditEntry.objects.filter(project=project).order_by("created_at", "pk")
    ]


def role_of(project: Project, user: User) -> str | None:
    return Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()


# --- services -----------------------------------------------------------------------------------------------------


def test_creating_a_project_is_audited_and_makes_the_creator_researcher(researcher):
    project = make_project(researcher)
    assert role_of(project, researcher) == ProjectRole.RESEARCHER
    assert actions(project) == [("rita", AuditAction.PROJECT_CREATED, project.name)]


def test_add_change_role_and_remove_each_leave_an_audit_entry(researcher, annotator):
    project = make_project(researcher)
    membership = services.member_add(project=project, username="anna", role="annotator", actor=researcher)
    services.member_role_change(membership=membership, role="researcher", actor=researcher)
    services.member_role_change(membership=membership, role="researcher", actor=researcher)  # no change: no entry
    services.member_remove(membership=membership, actor=researcher)
    assert role_of(project, annotator) is None
    assert actions(project)[1:] == [
        ("rita", AuditAction.MEMBER_ADDED, "anna"),
        ("rita", AuditAction.MEMBER_ROLE_CHANGED, "anna"),
        ("rita", AuditAction.MEMBER_REMOVED, "anna"),
    ]
    change = AuditEntry.objects.get(project=project, action=AuditAction.MEMBER_ROLE_CHANGED)
    assert change.details == {"from": "annotator", "to": "researcher"} and change.created_at <= timezone.now()


def test_adding_refuses_unknown_users_members_and_unknown_roles(researcher, annotator):
    project = make_project(researcher)
    with pytest.raises(ValidationFailed) as unknown:
        services.member_add(project=project, username="nobody", role="annotator", actor=researcher)
    assert "username" in unknown.value.fields
    with pytest.raises(Conflict):
        services.member_add(project=project, username="rita", role="annotator", actor=researcher)
    with pytest.raises(ValidationFailed):
        services.member_add(project=project, username="anna", role="owner", actor=researcher)
    assert len(actions(project)) == 1  # only the creation


def test_a_project_keeps_at_least_one_researcher(researcher, annotator):
    project = make_project(researcher)
    mine = Membership.objects.get(project=project, user=researcher)
    with pytest.raises(LastResearcher):
        services.member_role_change(membership=mine, role="annotator", actor=researcher)
    with pytest.raises(LastResearcher):
        services.member_remove(membership=mine, actor=researcher)
    assert role_of(project, researcher) == ProjectRole.RESEARCHER
    # With a second researcher, the first may step down or leave.
    services.member_add(project=project, username="anna", role="researcher", actor=researcher)
    services.member_role_change(membership=mine, role="annotator", actor=researcher)
    assert role_of(project, researcher) == ProjectRole.ANNOTATOR


def test_removing_a_member_releases_their_leases(project_with_queries, annotator, researcher):
    from labeling import assignment
    from labeling.models import Lease

    lease = assignment.lease_next_query(project=project_with_queries, annotator=annotator).lease
    assert lease is not None
    membership = Membership.objects.get(project=project_with_queries, user=annotator)
    services.member_remove(membership=membership, actor=researcher)
    assert not Lease.objects.filter(annotator=annotator).exists()


def test_an_invite_is_single_use_expires_and_can_be_revoked(researcher, annotator, annotator2, outsider):
    project = make_project(researcher)
    invite = services.invite_create(project=project, role="annotator", actor=researcher, days=3)
    assert invite_id(invite_token(invite)) == invite.pk
    assert invite_id(invite_token(invite) + "x") is None and invite_id(str(invite.pk)) is None
    services.invite_accept(invite_id=invite.pk, user=annotator)
    assert role_of(project, annotator) == ProjectRole.ANNOTATOR
    with pytest.raises(Conflict, match="used"):
        services.invite_accept(invite_id=invite.pk, user=annotator2)
    with pytest.raises(Conflict):
        services.invite_revoke(invite=invite, actor=researcher)  # used: remove the member instead

    expired = services.invite_create(project=project, role="annotator", actor=researcher)
    Invite.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(Conflict, match="expired"):
        services.invite_accept(invite_id=expired.pk, user=annotator2)

    revoked = services.invite_create(project=project, role="researcher", actor=researcher)
    services.invite_revoke(invite=revoked, actor=researcher)
    services.invite_revoke(invite=revoked, actor=researcher)  # twice is fine, recorded once
    with pytest.raises(Conflict, match="revoked"):
        services.invite_accept(invite_id=revoked.pk, user=outsider)
    with pytest.raises(NotFound):
        services.invite_accept(invite_id=10**9, user=outsider)
    with pytest.raises(ValidationFailed):
        services.invite_create(project=project, role="annotator", actor=researcher, days=0)
    assert [a for _, a, _ in actions(project)] == [
        AuditAction.PROJECT_CREATED,
        AuditAction.INVITE_CREATED,
        AuditAction.INVITE_ACCEPTED,
        AuditAction.INVITE_CREATED,
        AuditAction.INVITE_CREATED,
        AuditAction.INVITE_REVOKED,
    ]
    accepted = AuditEntry.objects.get(project=project, action=AuditAction.INVITE_ACCEPTED)
    assert accepted.actor == annotator and accepted.details == {"invite": invite.pk, "role": "annotator"}


def test_a_member_who_opens_an_invite_keeps_their_role_and_the_invite(researcher, annotator):
    project = make_project(researcher)
    services.membership_add(project=project, user=annotator, role="researcher", actor=researcher)
    invite = services.invite_create(project=project, role="annotator", actor=researcher)
    services.invite_accept(invite_id=invite.pk, user=annotator)
    assert role_of(project, annotator) == ProjectRole.RESEARCHER
    invite.refresh_from_db()
    assert invite.state == "open"


# --- pages -----------------------------------------------------------------------------------------------------


def test_members_page_is_for_the_projects_researchers_only(project, researcher, annotator, outsider):
    path = reverse("project-members", args=[project.slug])
    page = login(researcher).get(path)
    assert page.status_code == 200
    html = page.content.decode()
    assert "anna" in html and "ben" in html and "Audit log" in html and "Project created" in html
    assert login(annotator).get(path).status_code == 404
    assert login(outsider).get(path).status_code == 404


def test_members_page_changes_with_htmx_fragments(project, researcher, annotator, outsider):
    client = login(researcher)
    htmx = {"HTTP_HX_REQUEST": "true"}
    added = client.post(
        reverse("project-members", args=[project.slug]), {"username": "otto", "role": "annotator"}, **htmx
    )
    assert added.status_code == 200 and 'id="members-panel"' in added.content.decode()
    assert "<html" not in added.content.decode()  # the fragment only
    assert role_of(project, outsider) == ProjectRole.ANNOTATOR

    unknown = client.post(
        reverse("project-members", args=[project.slug]), {"username": "zed", "role": "annotator"}, **htmx
    )
    assert unknown.status_code == 400 and "no user by that name" in unknown.content.decode()

    anna = Membership.objects.get(project=project, user=annotator)
    member_path = reverse("project-member", args=[project.slug, anna.pk])
    assert client.post(member_path, {"action": "role", "role": "researcher"}, **htmx).status_code == 200
    assert role_of(project, annotator) == ProjectRole.RESEARCHER
    assert client.post(member_path, {"action": "explode"}, **htmx).status_code == 400
    assert client.post(member_path, {"action": "remove"}, **htmx).status_code == 200
    assert role_of(project, annotator) is None

    mine = Membership.objects.get(project=project, user=researcher)
    refused = client.post(reverse("project-member", args=[project.slug, mine.pk]), {"action": "remove"}, **htmx)
    assert refused.status_code == 409 and "at least one researcher" in refused.content.decode()

    created = client.post(reverse("project-invites", args=[project.slug]), {"role": "annotator", "days": "2"}, **htmx)
    assert created.status_code == 200 and "/invites/" in created.content.decode()
    invite = Invite.objects.get(project=project)
    revoked = client.post(reverse("project-invite-revoke", args=[project.slug, invite.pk]), **htmx)
    assert revoked.status_code == 200
    invite.refresh_from_db()
    assert invite.state == "revoked"
    assert client.post(reverse("project-invites", args=[project.slug]), {"days": "x"}, **htmx).status_code == 400

    html = client.get(reverse("project-members", args=[project.slug])).content.decode()
    for label in ("Member added", "Role changed", "Member removed", "Invite created", "Invite revoked"):
        assert label in html


def test_a_member_of_another_project_cannot_be_reached_by_id(project, researcher):
    olga = user_create(username="olga", password=PASSWORD, role=Role.RESEARCHER)
    other = make_project(olga, slug="other")
    olgas = Membership.objects.get(project=other, user=olga)
    response = login(researcher).post(reverse("project-member", args=[project.slug, olgas.pk]), {"action": "remove"})
    assert response.status_code == 404 and role_of(other, olga) == ProjectRole.RESEARCHER


def test_a_researcher_who_steps_down_is_sent_to_the_labelling_page(project, researcher, annotator):
    services.membership_add(project=project, user=annotator, role="researcher", actor=researcher)
    mine = Membership.objects.get(project=project, user=researcher)
    response = login(researcher).post(
        reverse("project-member", args=[project.slug, mine.pk]), {"action": "role", "role": "annotator"}
    )
    assert response.status_code == 302 and response["Location"] == reverse("label", args=[project.slug])
    # Through htmx the panel can't be swapped in (the page is no longer theirs): htmx is told to go there instead.
    services.member_role_change(membership=mine, role="researcher", actor=annotator)
    response = login(researcher).post(
        reverse("project-member", args=[project.slug, mine.pk]),
        {"action": "role", "role": "annotator"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 204 and response["HX-Redirect"] == reverse("label", args=[project.slug])


def test_invite_link_signed_out_goes_through_login_then_joins(researcher, outsider):
    project = make_project(researcher)
    invite = services.invite_create(project=project, role="annotator", actor=researcher)
    path = reverse("invite", args=[invite_token(invite)])
    anonymous = Client().get(path)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("login"))
    assert "next=" in anonymous["Location"]
    client = Client()
    response = client.post(reverse("login"), {"username": "otto", "password": PASSWORD, "next": path}, follow=True)
    assert response.status_code == 200 and f"Join {project.name}" in response.content.decode()
    assert role_of(project, outsider) is None  # opening the link alone changes nothing
    joined = client.post(path)
    assert joined.status_code == 302 and role_of(project, outsider) == ProjectRole.ANNOTATOR
    again = client.get(path)
    assert "already a member" in again.content.decode()


def test_bad_and_spent_invite_links_say_why(researcher, annotator, outsider):
    project = make_project(researcher)
    assert login(outsider).get(reverse("invite", args=["nonsense"])).status_code == 404
    assert login(outsider).post(reverse("invite", args=["x" * 300])).status_code == 404
    invite = services.invite_create(project=project, role="annotator", actor=researcher)
    services.invite_accept(invite_id=invite.pk, user=annotator)
    response = login(outsider).post(reverse("invite", args=[invite_token(invite)]))
    assert response.status_code == 409 and "used" in response.content.decode()
    assert role_of(project, outsider) is None


def test_project_form_creates_a_project_through_the_spec_path(researcher, annotator):
    client = login(researcher)
    page = client.get(reverse("project-new"))
    assert page.status_code == 200 and "Pendulum-v1" in page.content.decode()
    response = client.post(
        reverse("project-new"),
        {
            "source": "form",
            "name": "Form Made",
            "env_id": "Pendulum-v1",
            "modes": ["pairwise"],
            "segment_steps": "40",
            "overlap": "2",
            "instructions": "Keep it up.",
        },
    )
    project = Project.objects.get(name="Form Made")
    assert response.status_code == 302 and response["Location"] == project.get_absolute_url()
    assert (project.slug, project.feedback_mode, project.segment_steps, project.overlap) == (
        "form-made",
        "pairwise",
        40,
        2,
    )
    assert project.factors.count() > 0  # the preset's
    assert role_of(project, researcher) == ProjectRole.RESEARCHER
    assert actions(project) == [("rita", AuditAction.PROJECT_CREATED, "Form Made")]
    # Bad values are named by their spec path and nothing is stored; the form keeps what was typed.
    bad = client.post(
        reverse("project-new"),
        {"source": "form", "name": "Nope", "env_id": "Nope-v9", "modes": [], "segment_steps": "1", "overlap": "x"},
    )
    html = bad.content.decode()
    assert bad.status_code == 400 and "clips.length" in html and "feedback.overlap" in html
    assert 'value="Nope"' in html and not Project.objects.filter(name="Nope").exists()
    assert login(annotator).get(reverse("project-new")).status_code == 404


# --- API -------------------------------------------------------------------------------------------------------


def test_members_api(project, researcher, annotator, outsider):
    api = api_client_for(researcher)
    base = f"/api/v1/projects/{project.slug}/members/"
    listed = api.get(base).json()
    assert [m["username"] for m in listed] == ["rita", "anna", "ben"]
    created = api.post(base, {"username": "otto", "role": "annotator"}, format="json")
    assert created.status_code == 201 and created.json()["username"] == "otto"
    again = api.post(base, {"username": "otto"}, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    bad = api.post(base, {"username": "otto", "role": "boss"}, format="json")
    assert bad.status_code == 400 and "role" in bad.json()["error"]["fields"]
    otto = created.json()["id"]
    changed = api.patch(f"{base}{otto}/", {"role": "researcher"}, format="json")
    assert changed.status_code == 200 and changed.json()["role"] == "researcher"
    assert api.delete(f"{base}{otto}/").status_code == 204
    assert api.delete(f"{base}{otto}/").status_code == 404
    mine = Membership.objects.get(project=project, user=researcher).pk
    last = api.patch(f"{base}{mine}/", {"role": "annotator"}, format="json")
    assert last.status_code == 409 and last.json()["error"]["code"] == "last_researcher"
    audit = api.get(f"/api/v1/projects/{project.slug}/audit/").json()
    assert [e["action"] for e in audit[:3]] == ["member.removed", "member.role_changed", "member.added"]
    assert audit[0]["actor"] == "rita" and audit[0]["target"] == "otto"


def test_invites_api(researcher, outsider):
    project = make_project(researcher)
    api = api_client_for(researcher)
    base = f"/api/v1/projects/{project.slug}/invites/"
    created = api.post(base, {"role": "annotator", "days": 1}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert body["url"].endswith(reverse("invite", args=[body["token"]])) and body["state"] == "open"
    assert api.post(base, {"days": 1000}, format="json").status_code == 400
    assert [i["id"] for i in api.get(base).json()] == [body["id"]]
    joined = api_client_for(outsider).post("/api/v1/invites/accept/", {"token": body["token"]}, format="json")
    assert joined.status_code == 200 and joined.json() == {"project": project.slug, "role": "annotator"}
    assert api.get(base).json() == []  # used: no longer open
    assert api_client_for(outsider).post("/api/v1/invites/accept/", {"token": "x"}, format="json").status_code == 404
    second = api.post(base, {}, format="json").json()
    assert api.delete(f"{base}{second['id']}/").status_code == 204
    refused = api_client_for(outsider).post("/api/v1/invites/accept/", {"token": second["token"]}, format="json")
    assert refused.status_code == 409


# --- the admin -------------------------------------------------------------------------------------------------


def test_admin_created_project_has_its_creator_as_researcher_and_an_audit_entry(researcher):
    researcher.is_staff = True
    researcher.save()
    client = login(researcher)
    management = {"TOTAL_FORMS": 0, "INITIAL_FORMS": 0, "MIN_NUM_FORMS": 0, "MAX_NUM_FORMS": 1000}
    response = client.post(
        reverse("admin:labeling_project_add"),
        {
            "name": "Admin Made",
            "slug": "admin-made",
            "env_id": "Pendulum-v1",
            "segment_steps": 50,
            "render_width": 320,
            "render_height": 240,
            "feedback_mode": "both",
            "overlap": 1,
            "lease_ttl_seconds": 300,
            "loop_settings": "{}",
            "env_kwargs": "{}",
            "gold_rate": 0,
            "repeat_rate": 0,
            "qualification_size": 0,
            "qualification_threshold": 0.8,
            "status": "active",
            **{f"{prefix}-{k}": v for prefix in ("factors", "memberships") for k, v in management.items()},
        },
    )
    assert response.status_code == 302
    project = Project.objects.get(slug="admin-made")
    assert project.created_by == researcher and role_of(project, researcher) == ProjectRole.RESEARCHER
    assert client.get(reverse("project-detail", args=[project.slug])).status_code == 200
    assert client.get(reverse("project-members", args=[project.slug])).status_code == 200
    assert [a for _, a, _ in actions(project)] == [AuditAction.PROJECT_CREATED, AuditAction.MEMBER_ADDED]


def test_admin_membership_changes_are_audited_and_keep_a_researcher(project, researcher, annotator):
    researcher.is_staff = True
    researcher.save()
    client = login(researcher)
    anna = Membership.objects.get(project=project, user=annotator)
    response = client.post(reverse("admin:labeling_membership_change", args=[anna.pk]), {"role": "researcher"})
    assert response.status_code == 302 and role_of(project, annotator) == ProjectRole.RESEARCHER
    assert client.post(reverse("admin:labeling_membership_delete", args=[anna.pk]), {"post": "yes"}).status_code == 302
    assert role_of(project, annotator) is None
    mine = Membership.objects.get(project=project, user=researcher)
    client.post(reverse("admin:labeling_membership_delete", args=[mine.pk]), {"post": "yes"})
    assert role_of(project, researcher) == ProjectRole.RESEARCHER  # refused, with a message
    assert [a for _, a, t in actions(project) if t == "anna"][-2:] == [
        AuditAction.MEMBER_ROLE_CHANGED,
        AuditAction.MEMBER_REMOVED,
    ]
    audit_list = client.get(reverse("admin:labeling_auditentry_changelist"))
    assert audit_list.status_code == 200 and "Member removed" in audit_list.content.decode()
    assert client.get(reverse("admin:labeling_auditentry_add")).status_code == 403


def test_admin_membership_inline_goes_through_the_services(project, researcher, annotator, annotator2, outsider):
    """The project's change form in the admin: a row added, a role changed and a row deleted in the members inline
    each leave an audit entry by the researcher who saved the form."""
    from django.contrib import admin

    from tests.test_admin_scoping import admin_request, formsets_data, unbound_data

    researcher.is_staff = True
    researcher.save()
    second = make_project(researcher, slug="second")  # otto is in one of rita's projects, so she may add him
    services.membership_add(project=second, user=outsider, role="annotator", actor=researcher)
    model_admin = admin.site._registry[Project]
    request = admin_request(researcher)
    data = unbound_data(model_admin.get_form(request, project, change=True)(instance=project))
    for _prefix, inline_data, _formset_class in formsets_data(model_admin, request, project):
        data.update(inline_data)
    rows = {
        data[key]: key.rsplit("-", 1)[0] for key in list(data) if key.startswith("memberships-") and key.endswith("-id")
    }
    anna, ben = (Membership.objects.get(project=project, user=u) for u in (annotator, annotator2))
    data[f"{rows[anna.pk]}-DELETE"] = "on"
    data[f"{rows[ben.pk]}-role"] = "researcher"
    index = int(data["memberships-TOTAL_FORMS"])
    data.update({f"memberships-{index}-user": outsider.pk, f"memberships-{index}-role": "annotator"})
    data["memberships-TOTAL_FORMS"] = index + 1
    response = login(researcher).post(reverse("admin:labeling_project_change", args=[project.pk]), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert (role_of(project, annotator), role_of(project, annotator2), role_of(project, outsider)) == (
        None,
        ProjectRole.RESEARCHER,
        ProjectRole.ANNOTATOR,
    )
    latest = {(actor, action, target) for actor, action, target in actions(project)[-3:]}
    assert latest == {
        ("rita", AuditAction.MEMBER_REMOVED, "anna"),
        ("rita", AuditAction.MEMBER_ROLE_CHANGED, "ben"),
        ("rita", AuditAction.MEMBER_ADDED, "otto"),
    }
