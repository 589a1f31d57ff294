from __future__ import annotations

from pathlib import Path

import pytest

from carbond.config import SPECS, default_socket_path, default_store_url, load_settings
from carbond.errors import ConfigError

BASE_ENV = {"HOME": "/home/u"}


def test_defaults():
    r = load_settings(env=BASE_ENV)
    assert r.settings.daemon.interval_s == 1.0
    assert r.settings.store.url == "sqlite:///home/u/.local/share/carbond/carbond.db"
    assert all(origin == "default" for origin in r.origins.values())


def test_precedence_defaults_file_env_flags(tmp_path: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[daemon]\ninterval_s = 2\n[impacts]\npue = 1.3\n[region]\nzone = 'FR'\n")
    env = {**BASE_ENV, "CARBOND_IMPACTS_PUE": "1.4", "CARBOND_REGION": "DE"}
    r = load_settings(cfg, {"region.zone": "US"}, env=env)
    assert r.settings.daemon.interval_s == 2.0 and r.origins["daemon.interval_s"] == f"file {cfg}"
    assert r.settings.impacts.pue == 1.4 and r.origins["impacts.pue"] == "env CARBOND_IMPACTS_PUE"
    assert r.settings.region.zone == "US" and r.origins["region.zone"] == "flag --region"


def test_config_from_environment_variable(tmp_path: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[daemon]\ninterval_s = 3\n")
    r = load_settings(env={**BASE_ENV, "CARBOND_CONFIG": str(cfg)})
    assert r.settings.daemon.interval_s == 3.0 and r.config_path == cfg


def test_int_in_toml_is_a_float_setting_but_bool_is_not(tmp_path: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[impacts]\npue = true\n")
    with pytest.raises(ConfigError, match=r"\[impacts\] pue: expected a number"):
        load_settings(cfg, env=BASE_ENV)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[daemon]\ninterval_s = 0\n", "must be greater than 0"),
        ("[impacts]\npue = 0.9\n", "must be 0 .from the zone. or 1.0 or greater"),
        ("[attribution]\nidle_policy = 'fair'\n", "must be one of proportional, unattributed"),
        ("[sensors]\nnvml = 'maybe'\n", "expected true or false"),
        ("[daemon]\nsimulate_gpus = 1.5\n", "expected an integer"),
        ("[daemon]\nhost = 3\n", "expected a string"),
        ("daemon = 3\n", "must be a table"),
        ("[sensors]\ncpu_idle_fraction = 2\n", "between 0 and 1"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, body: str, message: str):
    cfg = tmp_path / "c.toml"
    cfg.write_text(body)
    with pytest.raises(ConfigError, match=message):
        load_settings(cfg, env=BASE_ENV)


def test_bool_from_environment():
    assert load_settings(env={**BASE_ENV, "CARBOND_SENSORS_NVML": "off"}).settings.sensors.nvml is False
    assert load_settings(env={**BASE_ENV, "CARBOND_SENSORS_NVML": "YES"}).settings.sensors.nvml is True


def test_token_file_is_read_and_redacted(tmp_path: Path):
    tok = tmp_path / "token"
    tok.write_text("abc123\n")
    r = load_settings(env={**BASE_ENV, "CARBOND_STORE_TOKEN_FILE": str(tok)})
    assert r.settings.store.token == "abc123"
    shown = dict((p, v) for p, v, _ in r.effective())
    assert shown["store.token"] == "***"


def test_missing_token_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="token_file"):
        load_settings(env={**BASE_ENV, "CARBOND_STORE_TOKEN_FILE": str(tmp_path / "none")})


def test_systemd_and_xdg_paths():
    assert default_store_url({"STATE_DIRECTORY": "/var/lib/carbond:/other"}) == "sqlite:///var/lib/carbond/carbond.db"
    assert default_store_url({"XDG_DATA_HOME": "/x/data"}) == "sqlite:///x/data/carbond/carbond.db"
    assert default_socket_path({"RUNTIME_DIRECTORY": "/run/carbond"}) == "/run/carbond/carbond.sock"
    assert default_socket_path({"XDG_RUNTIME_DIR": "/run/user/1000"}) == "/run/user/1000/carbond.sock"


def test_every_spec_has_unique_env_names_and_valid_default():
    names = [n for s in SPECS for n in s.env_names]
    assert len(names) == len(set(names))
    load_settings(env=BASE_ENV)  # every default passes its own validator
