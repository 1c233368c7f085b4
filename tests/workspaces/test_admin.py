"""Django admin: open to staff, closed to everyone else."""

from django.urls import reverse

from tests.factories import make_user


def test_staff_reach_the_admin_and_others_do_not(client_as, owner, db):
    staff = make_user("staff@example.com")
    staff.is_staff = staff.is_superuser = True
    staff.save()
    client = client_as(staff)
    assert client.get(reverse("admin:index")).status_code == 200
    assert client.get(reverse("admin:workspaces_auditentry_changelist")).status_code == 200
    response = client_as(owner).get(reverse("admin:index"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
