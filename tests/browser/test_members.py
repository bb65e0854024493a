"""Projects without the admin, in a real browser (issue 14, point 1): a researcher creates a project with the form,
invites an annotator by link; the annotator, signed out, opens the link, logs in and joins; the researcher changes
their role and removes them; the audit log on the members page shows each step."""

from __future__ import annotations

import pytest

from labeling.models import Membership, Project, ProjectRole
from tests.browser.conftest import watch_csp
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_create_invite_join_change_role_and_remove(page_for, browser, live_server, researcher, outsider):
    page = page_for(researcher, PASSWORD)
    page.on("dialog", lambda dialog: dialog.accept())  # "Remove otto from …?"

    # 1. A project from the simple form.
    page.get_by_role("link", name="New project").click()
    page.fill("#pf-name", "Heron Watch")
    page.fill("#pf-env", "Pendulum-v1")
    page.uncheck("input[name=modes][value=ranking]")
    page.fill("#pf-length", "40")
    page.click("#project-form button[type=submit]")
    page.wait_for_url(f"{live_server.url}/projects/heron-watch/")
    project = Project.objects.get(slug="heron-watch")
    assert (project.feedback_mode, project.segment_steps) == ("pairwise", 40)

    # 2. An invite link, made through htmx.
    page.get_by_role("navigation", name="Dashboard sections").get_by_role("link", name="Members", exact=True).click()
    page.wait_for_url(f"{live_server.url}/projects/heron-watch/members/")
    page.select_option("#invite-role", "annotator")
    page.get_by_role("button", name="Create invite link").click()
    link = page.locator("#new-invite-url")
    link.wait_for()
    invite_url = link.input_value()
    assert invite_url.startswith(f"{live_server.url}/invites/")

    # 3. The annotator opens it signed out: the login page first, then the invitation, then Join.
    context = browser.new_context()
    watch_csp(context, page.csp_violations)
    guest = context.new_page()
    guest.goto(invite_url)
    assert "/accounts/login/" in guest.url
    guest.fill("#id_username", outsider.username)
    guest.fill("#id_password", PASSWORD)
    guest.click("button[type=submit]")
    guest.wait_for_url(invite_url)
    guest.get_by_role("button", name="Join Heron Watch").click()
    guest.wait_for_url(f"{live_server.url}/projects/heron-watch/label/")
    assert Membership.objects.get(project=project, user=outsider).role == ProjectRole.ANNOTATOR
    context.close()

    # 4. The researcher sees the new member, makes them a researcher, then removes them.
    page.reload()
    row = page.locator("#members-table tr[data-username=otto]")
    row.locator("select[name=role]").select_option("researcher")
    row.get_by_role("button", name="Set role").click()
    page.wait_for_selector("#members-notice:has-text('otto is now a researcher')")
    assert Membership.objects.get(project=project, user=outsider).role == ProjectRole.RESEARCHER
    page.locator("#members-table tr[data-username=otto]").get_by_role("button", name="Remove").click()
    page.wait_for_selector("#members-notice:has-text('otto was removed')")
    assert page.locator("#members-table tr[data-username=otto]").count() == 0
    assert not Membership.objects.filter(project=project, user=outsider).exists()

    # 5. The audit log, newest first.
    whats = page.locator("#audit-table tbody tr td:nth-child(3)").all_inner_texts()
    assert whats == ["Member removed", "Role changed", "Invite accepted", "Invite created", "Project created"]
    whos = page.locator("#audit-table tbody tr td:nth-child(2)").all_inner_texts()
    assert whos == ["rita", "rita", "otto", "rita", "rita"]
    assert page.errors == []
