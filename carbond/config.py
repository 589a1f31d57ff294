"""Settings: typed, frozen, loaded from defaults < TOML file < ``CARBOND_*`` env < flags.

Every setting is declared once in :data:`SPECS` (section, key, type, default, env names,
whether it is secret, and a validator). :func:`load_settings` resolves each one and
remembers where its value came from, which ``carbond config check`` prints.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carbond.errors import ConfigError, UsageError

DEFAULT_CONFIG_PATH = Path("/etc/carbond/carbond.toml")
IDLE_POLICIES = ("proportional", "unattributed")
LOG_LEVELS = ("debug", "info", "warning", "error")


# --- the settings -------------------------------------------------------------------------


@dataclass(frozen=True)
class DaemonSettings:
    interval_s: float
    host: str
    socket: str
    log_level: str
    simulate_gpus: int


@dataclass(frozen=True)
class StoreSettings:
    url: str
    flush_interval_s: float
    token: str
    token_file: str
    timeout_s: float
    ca_file: str
    spool_path: str
    spool_max_bytes: int
    create_database: bool
    drain_timeout_s: float


@dataclass(frozen=True)
class RegionSettings:
    zone: str
    intensity_g_per_kwh: float  # 0 = use the zone's table value


@dataclass(frozen=True)
class IntensitySettings:
    provider: str
    zone: str
    series_file: str
    series_basis: str
    api_url: str
    token: str
    emission_factor_type: str
    marginal: str
    marginal_zone: str
    watttime_username: str
    watttime_password: str
    marginal_api_url: str
    timeout_s: float
    refresh_s: float


@dataclass(frozen=True)
class ImpactSettings:
    pue: float
    wue_site_l_per_kwh: float
    wue_source_l_per_kwh: float
    gpu_embodied_kg: float
    gpu_lifetime_years: float
    host_embodied_kg: float
    host_lifetime_years: float


@dataclass(frozen=True)
class SensorSettings:
    nvml: bool
    rapl_root: str
    cpu_tdp_w: float  # 0 = from the table by model name
    cpu_idle_fraction: float
    ram_w_per_gb: float


@dataclass(frozen=True)
class AttributionSettings:
    idle_policy: str


@dataclass(frozen=True)
class PrometheusSettings:
    listen: str  # "HOST:PORT" of the /metrics endpoint; empty = off


@dataclass(frozen=True)
class Settings:
    daemon: DaemonSettings
    store: StoreSettings
    region: RegionSettings
    intensity: IntensitySettings
    impacts: ImpactSettings
    sensors: SensorSettings
    attribution: AttributionSettings
    prometheus: PrometheusSettings
    reports: tuple[Any, ...] = ()  # carbond.reports.schedule.ReportJob, from [[reports]] tables


SECTIONS: dict[str, type] = {
    "daemon": DaemonSettings,
    "store": StoreSettings,
    "region": RegionSettings,
    "intensity": IntensitySettings,
    "impacts": ImpactSettings,
    "sensors": SensorSettings,
    "attribution": AttributionSettings,
    "prometheus": PrometheusSettings,
}


# --- defaults that depend on the environment ----------------------------------------------


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("STATE_DIRECTORY"):  # systemd StateDirectory=, may list several
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local/share")
    return Path(base) / "carbond"


def default_store_url(env: Mapping[str, str] | None = None) -> str:
    return f"sqlite://{(default_state_dir(env) / 'carbond.db').resolve()}"


SYSTEM_SOCKET = Path("/run/carbond/carbond.sock")  # the system service's (deploy/systemd/carbond.service)


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$CONFIGURATION_DIRECTORY/carbond.toml`` under systemd (user units: ~/.config/carbond), else /etc/carbond."""
    env = os.environ if env is None else env
    if env.get("CONFIGURATION_DIRECTORY"):  # systemd ConfigurationDirectory=
        return Path(env["CONFIGURATION_DIRECTORY"].split(":")[0]) / "carbond.toml"
    return DEFAULT_CONFIG_PATH


def default_socket_path(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    if env.get("RUNTIME_DIRECTORY"):  # systemd RuntimeDirectory=
        return str(Path(env["RUNTIME_DIRECTORY"].split(":")[0]) / "carbond.sock")
    if SYSTEM_SOCKET.is_socket():  # a running system service wins over a per-user path: one daemon per machine
        return str(SYSTEM_SOCKET)
    if env.get("XDG_RUNTIME_DIR"):
        return str(Path(env["XDG_RUNTIME_DIR"]) / "carbond.sock")
    if Path("/run/carbond").is_dir():
        return "/run/carbond/carbond.sock"
    return f"/tmp/carbond-{os.getuid()}/carbond.sock"


# --- validators ---------------------------------------------------------------------------


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else "must be 0 or greater"


def _auto_or_at_least_one(v: float) -> str | None:
    return None if v == 0 or v >= 1 else "must be 0 (from the zone) or 1.0 or greater (1.0 = no facility overhead)"


def _fraction(v: float) -> str | None:
    return None if 0 <= v <= 1 else "must be between 0 and 1"


def _choice(options: tuple[str, ...]) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        return None if v in options else f"must be one of {', '.join(options)}"

    return check


def _store_url(v: str) -> str | None:
    from carbond.store.urls import parse_store_url

    try:
        parse_store_url(v)
    except UsageError as exc:
        return str(exc)
    return None


def _listen(v: str) -> str | None:
    if not v:
        return None
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return "must be HOST:PORT (e.g. 127.0.0.1:9464, [::1]:9464 or :9464 for every address), or empty to turn it off"
    if host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
        return "an IPv6 address must be in brackets, e.g. [::1]:9464"
    return None


def _zone(v: str) -> str | None:
    from carbond.intensity import load_table

    try:
        load_table().lookup(v)
    except UsageError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Spec:
    section: str
    key: str
    type: type
    default: Any  # a value, or a callable taking the environment
    help: str
    env: tuple[str, ...] = ()
    flag: str = ""
    secret: bool = False
    check: Callable[[Any], str | None] | None = None

    @property
    def path(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def env_names(self) -> tuple[str, ...]:
        return (f"CARBOND_{self.section.upper()}_{self.key.upper()}", *self.env)


SPECS: tuple[Spec, ...] = (
    Spec("daemon", "interval_s", float, 1.0, "seconds between ticks", ("CARBOND_INTERVAL",), "--interval", check=_positive),
    Spec("daemon", "host", str, lambda env: socket.gethostname(), "host tag on every point"),
    Spec("daemon", "socket", str, default_socket_path, "Unix socket of the daemon", ("CARBOND_SOCKET",), "--socket"),
    Spec("daemon", "log_level", str, "info", "logging level", check=_choice(LOG_LEVELS)),
    Spec("daemon", "simulate_gpus", int, 0, "add N simulated GPUs (demos, load tests)", (), "--simulate-gpus", check=_non_negative),
    Spec("store", "url", str, default_store_url, "where points go", ("CARBOND_STORE",), "--store", check=_store_url),
    Spec("store", "flush_interval_s", float, 10.0, "seconds between journal flushes into the store", check=_positive),
    Spec("store", "token", str, "", "InfluxDB v2 token", ("CARBOND_INFLUXDB_TOKEN",), secret=True),
    Spec("store", "token_file", str, "", "file holding the InfluxDB v2 token"),
    Spec("store", "timeout_s", float, 10.0, "timeout of one InfluxDB request", check=_positive),
    Spec("store", "ca_file", str, "", "PEM bundle to verify an https InfluxDB with (empty: the system's CAs)"),
    Spec("store", "spool_path", str, "", "durable spool in front of InfluxDB (empty: STATE_DIR/spool/<url key>.db)"),
    Spec("store", "spool_max_bytes", int, 268435456, "disk budget of the spool; past it the oldest points are dropped",
         check=_positive),
    Spec("store", "create_database", bool, False, "create the InfluxDB database when a write finds it missing (404)"),
    Spec("store", "drain_timeout_s", float, 10.0, "at stop, how long delivery may try to empty the spool", check=_positive),
    Spec("region", "zone", str, "WORLD", "grid zone for the intensity table", ("CARBOND_REGION",), "--region", check=_zone),
    Spec("region", "intensity_g_per_kwh", float, 0.0, "fixed intensity overriding the table (0 = table)", check=_non_negative),
    Spec("intensity", "provider", str, "table", "where intensity comes from: table, series, electricitymaps, ukci, watttime",
         check=_choice(("table", "series", "electricitymaps", "ukci", "watttime"))),
    Spec("intensity", "zone", str, "", "the provider's own zone id (empty: from [region] zone)"),
    Spec("intensity", "series_file", str, "", "CSV of timestamped intensities for the series provider"),
    Spec("intensity", "series_basis", str, "lifecycle", "basis of the series file's values",
         check=_choice(("lifecycle", "direct"))),
    Spec("intensity", "api_url", str, "", "base URL override for the provider's API"),
    Spec("intensity", "token", str, "", "Electricity Maps auth-token", ("CARBOND_ELECTRICITYMAPS_TOKEN",), secret=True),
    Spec("intensity", "emission_factor_type", str, "lifecycle", "Electricity Maps emission factor type",
         check=_choice(("lifecycle", "direct"))),
    Spec("intensity", "marginal", str, "", "marginal intensity provider: empty or watttime", check=_choice(("", "watttime"))),
    Spec("intensity", "marginal_zone", str, "", "WattTime region, e.g. CAISO_NORTH"),
    Spec("intensity", "watttime_username", str, "", "WattTime user name", ("CARBOND_WATTTIME_USERNAME",)),
    Spec("intensity", "watttime_password", str, "", "WattTime password", ("CARBOND_WATTTIME_PASSWORD",), secret=True),
    Spec("intensity", "marginal_api_url", str, "", "base URL override for WattTime"),
    Spec("intensity", "timeout_s", float, 10.0, "timeout of one provider HTTP request", check=_positive),
    Spec("intensity", "refresh_s", float, 300.0, "seconds between provider refreshes", check=_positive),
    Spec("impacts", "pue", float, 0.0, "power usage effectiveness (0: the cloud region's published PUE, else 1.56)",
         (), "--pue", check=_auto_or_at_least_one),
    Spec("impacts", "wue_site_l_per_kwh", float, 1.8, "on-site water use per IT kWh", check=_non_negative),
    Spec("impacts", "wue_source_l_per_kwh", float, 0.0, "water consumed per kWh generated (0: the zone's country figure)",
         check=_non_negative),
    Spec("impacts", "gpu_embodied_kg", float, 0.0, "embodied kgCO2e per GPU (0: by GPU model)", check=_non_negative),
    Spec("impacts", "gpu_lifetime_years", float, 0.0, "years a GPU is in service (0: with the GPU model's figure)",
         check=_non_negative),
    Spec("impacts", "host_embodied_kg", float, 2500.0, "embodied kgCO2e of the server without GPUs", check=_non_negative),
    Spec("impacts", "host_lifetime_years", float, 6.0, "years the server is in service", check=_positive),
    Spec("sensors", "nvml", bool, True, "read NVIDIA GPUs through NVML"),
    Spec("sensors", "rapl_root", str, "/sys/class/powercap", "powercap tree for RAPL counters"),
    Spec("sensors", "cpu_tdp_w", float, 0.0, "CPU package TDP in W (0 = from the table by model name)", check=_non_negative),
    Spec("sensors", "cpu_idle_fraction", float, 0.3, "idle power as a fraction of TDP in the CPU model", check=_fraction),
    Spec("sensors", "ram_w_per_gb", float, 0.375, "RAM power model, W per GB installed", check=_non_negative),
    Spec("attribution", "idle_policy", str, "proportional", "how idle power is shared among runs", check=_choice(IDLE_POLICIES)),
    Spec("prometheus", "listen", str, "", "HOST:PORT to serve Prometheus /metrics on (empty: off)", check=_listen),
)
SPECS_BY_PATH = {s.path: s for s in SPECS}
FLAG_DESTS = {s.flag.lstrip("-").replace("-", "_"): s for s in SPECS if s.flag}


@dataclass(frozen=True)
class Resolved:
    settings: Settings
    origins: Mapping[str, str]  # "daemon.interval_s" -> "default" | "file F" | "env X" | "flag --x"
    config_path: Path | None

    def effective(self, redact: bool = True) -> list[tuple[str, Any, str]]:
        """(path, value, origin) for every setting, secrets redacted."""
        rows = []
        for spec in SPECS:
            value = getattr(getattr(self.settings, spec.section), spec.key)
            if redact and spec.secret and value:
                value = "***"
            rows.append((spec.path, value, self.origins[spec.path]))
        return rows


# --- loading ------------------------------------------------------------------------------


def _shown(spec: Spec, raw: Any) -> str:
    """How a value may appear in an error message: secrets and URL passwords hidden."""
    if spec.secret:
        return "'***'"
    if isinstance(raw, str) and "://" in raw and "@" in raw:
        scheme, rest = raw.split("://", 1)
        return repr(f"{scheme}://***@{rest.rsplit('@', 1)[1]}")
    return repr(raw)


def _coerce(spec: Spec, raw: Any, where: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: expected {expected}, got {_shown(spec, raw)}")

    if spec.type is bool:
        if isinstance(raw, bool):
            value: Any = raw
        elif isinstance(raw, str) and raw.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            value = raw.strip().lower() in ("1", "true", "yes", "on")
        else:
            raise bad("true or false")
    elif spec.type is int:
        if isinstance(raw, bool):
            raise bad("an integer")
        if isinstance(raw, int):
            value = raw
        elif isinstance(raw, str):
            try:
                value = int(raw.strip())
            except ValueError:
                raise bad("an integer") from None
        else:
            raise bad("an integer")
    elif spec.type is float:
        if isinstance(raw, bool):
            raise bad("a number")
        if isinstance(raw, int | float):
            value = float(raw)
        elif isinstance(raw, str):
            try:
                value = float(raw.strip())
            except ValueError:
                raise bad("a number") from None
        else:
            raise bad("a number")
        if value != value or value in (float("inf"), float("-inf")):
            raise bad("a finite number")
    else:
        if not isinstance(raw, str):
            raise bad("a string")
        value = raw
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise ConfigError(f"{where}: {problem} (got {_shown(spec, raw)})")
    return value


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} is not readable: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML (UTF-8): {exc}") from exc
    except RecursionError:
        raise ConfigError(f"config file {path} nests too deeply to be a carbond config") from None
    known_keys = {}
    for spec in SPECS:
        known_keys.setdefault(spec.section, set()).add(spec.key)
    for section, body in data.items():
        if section == "reports":  # [[reports]] tables: checked by carbond.reports.schedule.parse_reports
            continue
        if section not in known_keys:
            raise ConfigError(
                f"config file {path}: unknown section [{section}]; valid sections: {', '.join(known_keys)}"
            )
        if not isinstance(body, dict):
            raise ConfigError(f"config file {path}: [{section}] must be a table")
        for key in body:
            if key not in known_keys[section]:
                import difflib

                close = difflib.get_close_matches(key, sorted(known_keys[section]), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ConfigError(
                    f"config file {path}: unknown key {key!r} in [{section}]{hint} "
                    f"(valid: {', '.join(sorted(known_keys[section]))})"
                )
    return data


def load_settings(
    config: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Resolved:
    """Resolve every setting. ``flags`` maps a setting path (``"store.url"``) to a value."""
    env = dict(os.environ if env is None else env)
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    for path in flags:
        if path not in SPECS_BY_PATH:
            raise ConfigError(f"unknown setting {path!r}")

    explicit = config or env.get("CARBOND_CONFIG")
    config_path: Path | None = None
    file_data: dict[str, Any] = {}
    if explicit:
        config_path = Path(explicit)
        file_data = _read_file(config_path)
    elif default_config_path(env).is_file():
        config_path = default_config_path(env)
        file_data = _read_file(config_path)

    values: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    origins: dict[str, str] = {}
    for spec in SPECS:
        if spec.path in flags:
            value = _coerce(spec, flags[spec.path], f"{spec.flag or spec.path}")
            origin = f"flag {spec.flag}" if spec.flag else "argument"
        elif any(name in env for name in spec.env_names):
            name = next(n for n in spec.env_names if n in env)
            value = _coerce(spec, env[name], f"environment {name}")
            origin = f"env {name}"
        elif spec.key in file_data.get(spec.section, {}):
            value = _coerce(spec, file_data[spec.section][spec.key], f"config file {config_path}: [{spec.section}] {spec.key}")
            origin = f"file {config_path}"
        else:
            value = spec.default(env) if callable(spec.default) else spec.default
            origin = "default"
        values[spec.section][spec.key] = value
        origins[spec.path] = origin

    store = values["store"]
    if not store["token"] and store["token_file"]:
        try:
            store["token"] = Path(store["token_file"]).read_text().strip()
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the path, or not UTF-8
            raise ConfigError(f"[store] token_file {store['token_file']!r}: {getattr(exc, 'strerror', None) or exc}") from exc
        origins["store.token"] = f"file {store['token_file']}"

    reports: tuple[Any, ...] = ()
    if file_data.get("reports") is not None:
        from carbond.reports.schedule import parse_reports

        reports = parse_reports(file_data["reports"], where=f"config file {config_path}: [[reports]]")
    settings = Settings(**{name: cls(**values[name]) for name, cls in SECTIONS.items()}, reports=reports)
    return Resolved(settings=settings, origins=origins, config_path=config_path)
