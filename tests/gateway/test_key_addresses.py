"""A personal key used from a new address is flagged for the workspace's managers
(``gateway.services.key_address_seen`` on every /v1 call → ``billing.anomalies``)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.billing.models import AnomalyFlag, AnomalyKind, KeyAddress
from apps.gateway import services

pytestmark = pytest.mark.django_db


@pytest.fixture
def issued(workspace, member):
    return services.api_key_create(workspace=workspace, user=member, name="Laptop script")


def call(client, raw, address):
    return client.get("/v1/models", HTTP_XI_API_KEY=raw, REMOTE_ADDR=address)


def test_a_key_from_a_second_address_is_flagged_once(client, issued, member):
    assert call(client, issued.raw, "203.0.113.5").status_code == 200
    assert not AnomalyFlag.objects.exists()  # its first address is not news
    assert call(client, issued.raw, "198.51.100.7").status_code == 200
    flag = AnomalyFlag.objects.get()
    assert (flag.kind, flag.api_key_id, flag.address, flag.user) == (
        AnomalyKind.NEW_ADDRESS,
        issued.api_key.pk,
        "198.51.100.7",
        member,
    )
    for address in ("203.0.113.5", "198.51.100.7"):
        assert call(client, issued.raw, address).status_code == 200
    assert AnomalyFlag.objects.count() == 1
    assert set(KeyAddress.objects.values_list("address", flat=True)) == {
        "203.0.113.5",
        "198.51.100.7",
    }


def test_a_known_address_costs_no_statement_for_an_hour(client, issued):
    call(client, issued.raw, "203.0.113.9")
    with CaptureQueriesContext(connection) as queries:
        assert call(client, issued.raw, "203.0.113.9").status_code == 200
    assert not [q for q in queries if KeyAddress._meta.db_table in q["sql"]]


def test_a_refused_key_records_no_address(client):
    assert call(client, "sk_not_a_key", "203.0.113.5").status_code == 401
    assert not KeyAddress.objects.exists()
