"""Sign-in: e-mail + password, throttled per account and per address with a clear message."""

import pytest
from django.core import mail
from django.core.cache import cache
from django.urls import reverse

from tests.factories import PASSWORD


@pytest.fixture(autouse=True)
def _fresh_throttle():
    cache.clear()
    yield
    cache.clear()


def _sign_in(client, email, password=PASSWORD, ip="10.0.0.1"):
    return client.post(reverse("login"), {"email": email, "password": password}, REMOTE_ADDR=ip)


def test_signing_in_lands_on_the_workspace(client, owner, workspace):
    response = _sign_in(client, "OWNER@example.com")
    assert response.status_code == 302
    assert response["Location"] == reverse("workspaces:home")
    assert "Acme audio" in client.get(reverse("workspaces:home")).content.decode()


def test_a_wrong_password_is_a_clear_400(client, owner):
    response = _sign_in(client, "owner@example.com", "nope")
    assert response.status_code == 400
    assert "do not match an account" in response.content.decode()


def test_next_is_followed_only_when_it_is_local(client, owner, workspace):
    response = client.post(
        reverse("login"),
        {"email": "owner@example.com", "password": PASSWORD, "next": "https://evil.example/"},
    )
    assert response["Location"] == reverse("workspaces:home")
    client.logout()
    response = client.post(
        reverse("login"), {"email": "owner@example.com", "password": PASSWORD, "next": "/jobs/"}
    )
    assert response["Location"] == "/jobs/"


def test_an_account_is_throttled_after_five_failures(client, owner, settings):
    for ip in range(5):  # from different addresses: the per-account limit still applies
        assert _sign_in(client, "owner@example.com", "nope", ip=f"10.0.1.{ip}").status_code == 400
    response = _sign_in(client, "owner@example.com", ip="10.0.2.1")  # right password, too late
    assert response.status_code == 429
    assert "Too many failed sign-in attempts for this account" in response.content.decode()


def test_an_address_is_throttled_across_accounts(client, owner, settings):
    settings.CHORUS_LOGIN_MAX_FAILURES_PER_IP = 3
    for n in range(3):
        _sign_in(client, f"guess{n}@example.com", "nope", ip="10.9.9.9")
    response = _sign_in(client, "owner@example.com", ip="10.9.9.9")
    assert response.status_code == 429
    assert "your network address" in response.content.decode()
    assert _sign_in(client, "owner@example.com", ip="10.9.9.10").status_code == 302


def test_success_clears_the_account_counter(client, owner, workspace):
    for _ in range(4):
        _sign_in(client, "owner@example.com", "nope")
    assert _sign_in(client, "owner@example.com").status_code == 302
    client.logout()
    for _ in range(4):
        _sign_in(client, "owner@example.com", "nope", ip="10.0.0.2")
    assert _sign_in(client, "owner@example.com", ip="10.0.0.3").status_code == 302


def test_an_empty_form_is_a_400_with_field_errors(client, db):
    response = client.post(reverse("login"), {})
    assert response.status_code == 400
    assert "This field is required" in response.content.decode()


def test_password_reset_sends_a_working_link(client, owner, workspace):
    response = client.post(reverse("password_reset"), {"email": "owner@example.com"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    link = next(line for line in mail.outbox[0].body.splitlines() if "/reset/" in line)
    path = link.split("testserver", 1)[1]
    form = client.get(path, follow=True)
    assert "Choose a new password" in form.content.decode()
    response = client.post(
        form.redirect_chain[-1][0],
        {"new_password1": "a fresh long passphrase", "new_password2": "a fresh long passphrase"},
    )
    assert response.status_code == 302
    assert _sign_in(client, "owner@example.com", "a fresh long passphrase").status_code == 302


def test_password_change_page_works(client_as, owner, workspace):
    client = client_as(owner)
    assert client.get(reverse("password_change")).status_code == 200
    response = client.post(
        reverse("password_change"),
        {"old_password": PASSWORD, "new_password1": "another passphrase 2",
         "new_password2": "another passphrase 2"},
    )  # fmt: skip
    assert response.status_code == 302


def test_sign_out_needs_a_post(client_as, owner, workspace):
    client = client_as(owner)
    assert client.get(reverse("logout")).status_code == 405
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("workspaces:home")).status_code == 302


def test_the_admin_sign_in_is_throttled_too(client, db):
    from tests.factories import make_user

    staff = make_user("staff@example.com")
    staff.is_staff = True
    staff.save()
    for _ in range(5):
        client.post("/admin/login/", {"username": "staff@example.com", "password": "nope"})
    response = client.post("/admin/login/", {"username": "staff@example.com", "password": PASSWORD})
    assert response.status_code == 200  # the form again, not a redirect into the admin
    assert client.get("/admin/").status_code == 302


def test_a_garbage_client_address_is_not_stored(client, owner, workspace):
    _sign_in(client, "owner@example.com", ip="not-an-ip")
    client.post(reverse("workspaces:settings"), {"name": "Renamed"}, REMOTE_ADDR="not-an-ip")
    from apps.workspaces.models import AuditEntry

    assert AuditEntry.objects.get(action="workspace.renamed").ip_address is None


def test_mixed_case_duplicates_cannot_exist(db):
    from apps.workspaces.models import User

    User.objects.create_user(email="case@example.com")
    user = User(email="CASE@Example.com")
    with pytest.raises(Exception):  # noqa: B017 (the unique constraint, whatever the backend)
        user.save()
