"""Bad input exits 2 with a message naming the culprit and what would be valid."""

from __future__ import annotations

import pytest


def _run(carbond, *args):
    return carbond("run", "--duration", "1", "--interval", "0.5", *args)


def test_unknown_config_key_names_key_and_file(carbond):
    cfg = carbond.tmp / "c.toml"
    cfg.write_text("[daemon]\ninterval = 2\n")
    r = _run(carbond, "--config", str(cfg), "--store", carbond.store)
    assert r.returncode == 2
    assert "unknown key 'interval' in [daemon]" in r.stderr
    assert str(cfg) in r.stderr and "interval_s" in r.stderr  # the close match


def test_unknown_config_section(carbond):
    cfg = carbond.tmp / "c.toml"
    cfg.write_text("[demon]\ninterval_s = 2\n")
    r = carbond("config", "check", "--config", str(cfg))
    assert r.returncode == 2 and "unknown section [demon]" in r.stderr and "daemon" in r.stderr


def test_wrong_type_in_config(carbond):
    cfg = carbond.tmp / "c.toml"
    cfg.write_text('[impacts]\npue = "high"\n')
    r = carbond("config", "check", "--config", str(cfg))
    assert r.returncode == 2
    assert "[impacts] pue" in r.stderr and "expected a number" in r.stderr and "'high'" in r.stderr


def test_wrong_type_in_environment(carbond):
    carbond.env["CARBOND_INTERVAL"] = "fast"
    r = carbond("config", "check")
    assert r.returncode == 2 and "CARBOND_INTERVAL" in r.stderr and "expected a number" in r.stderr


def test_invalid_toml(carbond):
    cfg = carbond.tmp / "c.toml"
    cfg.write_text("[daemon\n")
    r = carbond("config", "check", "--config", str(cfg))
    assert r.returncode == 2 and "not valid TOML" in r.stderr


def test_missing_config_file(carbond):
    r = carbond("config", "check", "--config", str(carbond.tmp / "nope.toml"))
    assert r.returncode == 2 and "does not exist" in r.stderr


@pytest.mark.parametrize(
    ("url", "expect"),
    [
        ("sqlite://relative/c.db", "must be absolute"),
        ("postgres://h/db", "unknown scheme 'postgres'"),
        ("influxdb+v1://host/db", "no port"),
        ("influxdb+v2://host:8086/bucket", "need ?org=ORG"),
        ("influxdb+v1://host:99999/db", "port"),
        ("c.db", "no scheme"),
    ],
)
def test_bad_store_url(carbond, url, expect):
    r = _run(carbond, "--store", url)
    assert r.returncode == 2
    assert expect in r.stderr and "valid forms" in r.stderr


def test_store_url_password_is_not_echoed(carbond):
    r = _run(carbond, "--store", "influxdb+v1://admin:s3cret@host/db")
    assert r.returncode == 2 and "s3cret" not in r.stderr


def test_unknown_region_lists_close_matches(carbond):
    r = _run(carbond, "--store", carbond.store, "--region", "Germny")
    assert r.returncode == 2
    assert "unknown region 'Germny'" in r.stderr and "DE (Germany)" in r.stderr
    r = carbond("intensity", "frnace")
    assert r.returncode == 2 and "FR (France)" in r.stderr


@pytest.mark.parametrize("interval", ["0", "-1", "abc", "nan", "inf"])
def test_bad_interval(carbond, interval):
    r = carbond("run", "--store", carbond.store, f"--interval={interval}", "--duration", "1")
    assert r.returncode == 2
    assert "--interval" in r.stderr


def test_bad_duration(carbond):
    r = carbond("run", "--store", carbond.store, "--duration=-5")
    assert r.returncode == 2 and "--duration" in r.stderr


def test_unwritable_database_path(carbond):
    blocker = carbond.tmp / "a-file"
    blocker.write_text("not a directory")
    r = _run(carbond, "--store", f"sqlite://{blocker}/sub/c.db")
    assert r.returncode == 2
    assert str(blocker) in r.stderr and "cannot create directory" in r.stderr
    r = _run(carbond, "--store", "sqlite:///proc/carbond-test/c.db")
    assert r.returncode == 2 and "/proc/carbond-test" in r.stderr


def test_database_path_is_a_directory(carbond):
    (carbond.tmp / "dir.db").mkdir()
    r = _run(carbond, "--store", f"sqlite://{carbond.tmp}/dir.db")
    assert r.returncode == 2 and "dir.db" in r.stderr


def test_export_of_missing_database(carbond):
    r = carbond("export", "--store", f"sqlite://{carbond.tmp}/missing.db")
    assert r.returncode == 2 and "no database" in r.stderr


def test_export_bad_time_and_measurement(carbond):
    r = carbond("export", "--store", carbond.store, "--since", "yesterday-ish")
    assert r.returncode == 2 and "--since" in r.stderr and "ISO 8601" in r.stderr
    r = carbond("export", "--store", carbond.store, "--measurement", "hosts")
    assert r.returncode == 2 and "device, host, job, run" in r.stderr


def test_config_check_reports_origins_and_redacts_secrets(carbond):
    cfg = carbond.tmp / "c.toml"
    cfg.write_text('[impacts]\npue = 1.2\n[store]\ntoken = "tok-123"\n')
    carbond.env["CARBOND_REGION"] = "FR"
    import json

    doc = json.loads(carbond("config", "check", "--config", str(cfg), "--json", check=True).stdout)
    s = doc["settings"]
    assert s["impacts.pue"] == {"value": 1.2, "origin": f"file {cfg}"}
    assert s["region.zone"] == {"value": "FR", "origin": "env CARBOND_REGION"}
    assert s["daemon.interval_s"]["origin"] == "default"
    assert s["store.token"]["value"] == "***"
    text = carbond("config", "check", "--config", str(cfg), check=True).stdout
    assert "tok-123" not in text and "config OK" in text
