"""Who may see what, told with personas: a researcher, an annotator and an outsider."""

from __future__ import annotations

from django.urls import reverse

from accounts.services import user_create
from labeling.models import Project
from tests.conftest import PASSWORD, api_client_for, make_project


def test_annotator_sees_only_projects_they_belong_to(project, annotator, researcher):
    other = make_project(researcher, slug="cheetah-secret")
    response = api_client_for(annotator).get("/api/v1/projects/")
    assert response.status_code == 200
    assert [p["slug"] for p in response.json()] == [project.slug]
    assert response.json()[0]["role"] == "annotator"
    assert other.slug not in str(response.content)


def test_outsider_cannot_see_a_project_even_exists(project, outsider):
    client = api_client_for(outsider)
    assert client.get("/api/v1/projects/").json() == []
    response = client.get(f"/api/v1/projects/{project.slug}/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert client.post(f"/api/v1/projects/{project.slug}/queries/next/").status_code == 404


def test_outsider_cannot_open_the_labelling_page(client, project, outsider):
    client.force_login(outsider)
    assert client.get(reverse("label", args=[project.slug])).status_code == 404
    assert client.get(reverse("project-detail", args=[project.slug])).status_code == 404


def test_anonymous_visitors_are_sent_to_login(client, project):
    response = client.get(reverse("label", args=[project.slug]))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert client.get("/api/v1/projects/").status_code in (401, 403)


def test_only_researchers_create_projects(annotator, researcher):
    spec = {"name": "Cheetah", "env_id": "HalfCheetah-v5"}
    denied = api_client_for(annotator).post("/api/v1/projects/", spec, format="json")
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "permission_denied"
    created = api_client_for(researcher).post("/api/v1/projects/", spec, format="json")
    assert created.status_code == 201, created.content
    assert [f["key"] for f in created.json()["factors"]] == ["forward_velocity", "control_cost"]
    assert created.json()["role"] == "researcher"


def test_only_the_projects_researchers_export(project_with_queries, annotator, researcher, db):
    url = f"/api/v1/projects/{project_with_queries.slug}/export/judgments?format=jsonl"
    assert api_client_for(annotator).get(url).status_code == 403
    assert api_client_for(researcher).get(url).status_code == 200
    stranger = user_create(username="rex", password=PASSWORD, role="researcher")
    assert api_client_for(stranger).get(url).status_code == 404


def test_annotator_is_redirected_from_the_dashboard_to_labelling(client, project, annotator):
    client.force_login(annotator)
    response = client.get(reverse("project-detail", args=[project.slug]))
    assert response.status_code == 302 and response["Location"] == reverse("label", args=[project.slug])


def test_researcher_admin_is_scoped_to_their_projects(client, project, researcher, db):
    other_owner = user_create(username="olga", password=PASSWORD, role="researcher")
    hidden = make_project(other_owner, slug="hidden")
    client.force_login(researcher)
    page = client.get("/admin/labeling/project/")
    assert page.status_code == 200
    assert project.name in page.content.decode() and hidden.name not in page.content.decode()
    assert client.get("/admin/labeling/clip/").status_code == 200
    assert Project.objects.count() == 2


def test_researcher_starts_clip_generation_and_training_from_the_admin(client, project, researcher):
    from trainer.models import Run

    client.force_login(researcher)
    for action in ("generate_clips", "train_reward_model"):
        response = client.post("/admin/labeling/project/", {"action": action, "_selected_action": [project.pk]})
        assert response.status_code == 302
    assert set(Run.objects.filter(project=project).values_list("kind", flat=True)) == {"generate_clips", "retrain"}


def test_researcher_creates_gold_questions_from_the_admin(client, project, researcher):
    from labeling.models import Query
    from tests.conftest import add_fake_clips

    add_fake_clips(project, 30)
    client.force_login(researcher)
    response = client.post(
        "/admin/labeling/project/", {"action": "create_gold_questions", "_selected_action": [project.pk]}
    )
    assert response.status_code == 302
    assert Query.objects.filter(project=project, source="gold").count() == 20
