"""Settings the service depends on: systemd's directories, the Prometheus address, what a reload changes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from carbond import config
from carbond.config import default_config_path, default_socket_path, default_store_url, load_settings
from carbond.errors import ConfigError
from carbond.reload import plan_reload


def test_systemd_directories_give_the_defaults(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "SYSTEM_SOCKET", tmp_path / "none.sock")
    env = {"STATE_DIRECTORY": "/var/lib/carbond", "RUNTIME_DIRECTORY": "/run/carbond",
           "CONFIGURATION_DIRECTORY": "/etc/carbond", "XDG_RUNTIME_DIR": "/run/user/0"}
    assert default_store_url(env) == "sqlite:///var/lib/carbond/carbond.db"
    assert default_socket_path(env) == "/run/carbond/carbond.sock"
    assert default_config_path(env) == Path("/etc/carbond/carbond.toml")
    assert default_config_path({"CONFIGURATION_DIRECTORY": "/home/u/.config/carbond"}) == Path(
        "/home/u/.config/carbond/carbond.toml")
    assert default_config_path({}) == Path("/etc/carbond/carbond.toml")


def test_a_running_system_service_socket_wins_over_the_user_runtime_dir(tmp_path, monkeypatch):
    system = tmp_path / "carbond.sock"
    monkeypatch.setattr(config, "SYSTEM_SOCKET", system)
    env = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    assert default_socket_path(env) == "/run/user/1000/carbond.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(system))
        assert default_socket_path(env) == str(system)
        assert default_socket_path({**env, "RUNTIME_DIRECTORY": "/run/x"}) == "/run/x/carbond.sock"


def test_config_file_from_configuration_directory(tmp_path):
    (tmp_path / "carbond.toml").write_text('[daemon]\ninterval_s = 2.5\n[prometheus]\nlisten = "127.0.0.1:9464"\n')
    resolved = load_settings(env={"CONFIGURATION_DIRECTORY": str(tmp_path), "HOME": str(tmp_path)})
    assert resolved.config_path == tmp_path / "carbond.toml"
    assert resolved.settings.daemon.interval_s == 2.5
    assert resolved.settings.prometheus.listen == "127.0.0.1:9464"


@pytest.mark.parametrize("listen", ["", "127.0.0.1:9464", ":9464", "[::1]:9464", "node-1.example:9100"])
def test_valid_prometheus_addresses(listen):
    assert load_settings(env={"CARBOND_PROMETHEUS_LISTEN": listen, "HOME": "/nonexistent"}).settings.prometheus.listen == listen


@pytest.mark.parametrize("listen", ["9464", "127.0.0.1:", "127.0.0.1:99999", "::1:9464", "host:port"])
def test_bad_prometheus_addresses_name_the_setting(listen):
    with pytest.raises(ConfigError, match=r"CARBOND_PROMETHEUS_LISTEN.*(HOST:PORT|IPv6)"):
        load_settings(env={"CARBOND_PROMETHEUS_LISTEN": listen, "HOME": "/nonexistent"})


def _settings(**env: str):
    return load_settings(env={"HOME": "/nonexistent", **env}).settings


def test_reload_applies_live_settings_and_keeps_restart_ones():
    old = _settings(CARBOND_STORE="sqlite:///tmp/a.db")
    new = _settings(CARBOND_STORE="sqlite:///tmp/b.db", CARBOND_INTERVAL="0.5", CARBOND_REGION="FR",
                    CARBOND_DAEMON_LOG_LEVEL="debug", CARBOND_STORE_FLUSH_INTERVAL_S="3",
                    CARBOND_INTENSITY_TOKEN="s3cret", CARBOND_PROMETHEUS_LISTEN="127.0.0.1:1")
    plan = plan_reload(old, new)
    applied = {s.path for s in plan.applied}
    pending = {s.path for s in plan.pending}
    assert applied == {"daemon.interval_s", "region.zone", "daemon.log_level", "store.flush_interval_s", "intensity.token"}
    assert pending == {"store.url", "prometheus.listen"}
    assert plan.settings.store.url == "sqlite:///tmp/a.db" and plan.settings.prometheus.listen == ""  # kept
    assert plan.settings.daemon.interval_s == 0.5 and plan.settings.store.flush_interval_s == 3.0
    assert plan.changed("region.") and plan.changed("intensity.") and not plan.changed("impacts.")
    assert plan_reload(old, old).applied == () and plan_reload(old, old).pending == ()
