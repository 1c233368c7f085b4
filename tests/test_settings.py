"""Settings: strict environment helpers, secrets from files, the production guard, .env.example."""

import re
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from studio_site.settings import database_from_url, env_bool, env_int, env_str

from .conftest import ROOT


@pytest.mark.parametrize("raw,expected", [("1", True), ("YES", True), ("off", False), ("", False)])
def test_booleans_accept_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("CHORUS_FLAG", raw)
    assert env_bool("CHORUS_FLAG", not expected) is expected


def test_an_unknown_boolean_is_an_error_not_false(monkeypatch):
    monkeypatch.setenv("CHORUS_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="not a boolean"):
        env_bool("CHORUS_FLAG", False)


def test_integers_are_strict_and_bounded(monkeypatch):
    monkeypatch.setenv("CHORUS_N", "12")
    assert env_int("CHORUS_N", 1) == 12
    monkeypatch.setenv("CHORUS_N", "twelve")
    with pytest.raises(ImproperlyConfigured, match="not an integer"):
        env_int("CHORUS_N", 1)
    monkeypatch.setenv("CHORUS_N", "0")
    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        env_int("CHORUS_N", 5, minimum=1)


def test_a_secret_can_come_from_a_file(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("CHORUS_TOKEN", "from-env")
    monkeypatch.setenv("CHORUS_TOKEN_FILE", str(secret))
    assert env_str("CHORUS_TOKEN") == "s3cret"
    monkeypatch.setenv("CHORUS_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="cannot be read"):
        env_str("CHORUS_TOKEN")


def test_database_urls_are_parsed(monkeypatch):
    pg = database_from_url("postgres://u:p%40ss@db.example:5433/chorus?sslmode=require")
    assert (pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"], pg["NAME"]) == (
        "u",
        "p@ss",
        "db.example",
        "5433",
        "chorus",
    )
    assert pg["OPTIONS"] == {
        "sslmode": "require",
        "pool": {"min_size": 1, "max_size": 20, "timeout": 10},
    }
    assert pg["CONN_MAX_AGE"] == 0  # Django refuses persistent connections with a pool
    monkeypatch.setenv("DATABASE_POOL_SIZE", "0")
    monkeypatch.setenv("DATABASE_CONN_MAX_AGE", "60")
    unpooled = database_from_url("postgres://u@db.example/chorus")
    assert (unpooled["OPTIONS"], unpooled["CONN_MAX_AGE"]) == ({}, 60)
    lite = database_from_url("sqlite:////tmp/x.sqlite3")
    assert lite["NAME"] == "/tmp/x.sqlite3"
    assert lite["OPTIONS"]["transaction_mode"] == "IMMEDIATE"  # writers queue, not fail
    with pytest.raises(ImproperlyConfigured, match="not supported"):
        database_from_url("mysql://x/y")


def _load_settings(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('loaded')"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "studio_site.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    production = {"DATABASE_URL": "postgres://u@db.example/chorus", "CHORUS_VAR_DIR": str(tmp_path)}
    result = _load_settings(production)
    assert result.returncode != 0
    assert "SECRET_KEY (or SECRET_KEY_FILE) must be set when DEBUG is off" in result.stderr
    ok = _load_settings({**production, "SECRET_KEY": "x" * 50})
    assert ok.returncode == 0, ok.stderr
    assert not (tmp_path / "secret_key").exists()


def test_the_embedded_secret_key_is_generated_once_and_kept(tmp_path):
    assert _load_settings({"CHORUS_VAR_DIR": str(tmp_path)}).returncode == 0
    first = (tmp_path / "secret_key").read_text()
    assert _load_settings({"CHORUS_VAR_DIR": str(tmp_path)}).returncode == 0
    assert (tmp_path / "secret_key").read_text() == first and len(first) > 40
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_env_example_lists_every_variable_the_code_reads():
    code = (ROOT / "studio_site" / "settings.py").read_text()
    names = set(re.findall(r'env_(?:str|bool|int|float|list)\("([A-Z0-9_]+)"', code))
    for path in (ROOT / "apps").rglob("*.py"):
        names |= set(re.findall(r'environ\.get\("([A-Z0-9_]+)"', path.read_text()))
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?([A-Z0-9_]+)=", example, flags=re.M))
    assert names, "the scan found the variables"
    assert names - listed == set()


def test_the_embedded_default_serves_without_debug_and_mails_to_a_file(tmp_path):
    """``make run`` (no environment): DEBUG off, so an unknown URL never lists the URL conf,
    and e-mails (invitation links carry tokens) go to files in var/mail/, not to the log."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings as s; "
            "print(s.DEBUG, s.EMAIL_BACKEND, s.EMAIL_FILE_PATH, s.ALLOWED_HOSTS)",
        ],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "studio_site.settings",
            "CHORUS_VAR_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    debug, backend, mail_dir, hosts = result.stdout.split(" ", 3)
    assert debug == "False"
    assert backend == "django.core.mail.backends.filebased.EmailBackend"
    assert mail_dir == str(tmp_path / "mail")
    assert "127.0.0.1" in hosts
