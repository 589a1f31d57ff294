#!/bin/sh
# carbond as a service on this machine, writing to InfluxDB: the steps of docs/deployment.md ("Single host"),
# runnable as they are. Run as root from a checkout of carbond:
#
#   scripts/quickstart-service.sh --store influxdb+v1://influx.example:8086/carbond --region DE
#
# Steps: 1 install carbond in a virtual environment (PREFIX, default /opt/carbond); 2 install the carbond
# user (sysusers.d), the unit and /etc/carbond/carbond.toml (secrets in /etc/carbond/carbond.env);
# 3 `carbond store init` (InfluxDB database, retention, hourly rollups); 4 start the service; 5 check that
# the daemon answers and that its points reach the store.
#
# Where systemd is not PID 1 (containers, CI) step 4 starts the unit's own ExecStart line in the background
# with the environment systemd would give it (STATE_DIRECTORY, RUNTIME_DIRECTORY, CONFIGURATION_DIRECTORY,
# the unit's Environment= and EnvironmentFile=, and NOTIFY_SOCKET when set), as the invoking user;
# `--stop` stops it. --root installs every file under another directory (a test's scratch root).
#
# Options: --store URL (required)  --region ZONE  --prefix DIR  --root DIR  --source DIR  --no-systemd
#          --stop  --timeout S (step 5, default 120)
# Environment: CARBOND_VENV_ARGS, CARBOND_PIP_ARGS (extra arguments to `python3 -m venv` and `pip install`,
# e.g. an offline mirror), PYTHON (default python3).
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
store="" region="" prefix=/opt/carbond root="" source="$here" use_systemd=auto stop=no timeout=120
while [ $# -gt 0 ]; do
    case "$1" in
        --store) store=$2; shift 2 ;;
        --region) region=$2; shift 2 ;;
        --prefix) prefix=$2; shift 2 ;;
        --root) root=${2%/}; shift 2 ;;
        --source) source=$2; shift 2 ;;
        --no-systemd) use_systemd=no; shift ;;
        --stop) stop=yes; shift ;;
        --timeout) timeout=$2; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "quickstart: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

etc="$root/etc/carbond"
state="$root/var/lib/carbond"
runtime="$root/run/carbond"
unit="$root/etc/systemd/system/carbond.service"
pidfile="$root/run/carbond.pid"
log="$root/var/log/carbond.log"
say() { printf '\n==> %s\n' "$*"; }

if [ "$stop" = yes ]; then
    [ -f "$pidfile" ] || { echo "quickstart: no $pidfile: nothing started without systemd" >&2; exit 1; }
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done  # the daemon flushes every point before it exits
    rm -f "$pidfile"
    echo "carbond (pid $pid) stopped"
    exit 0
fi

[ -n "$store" ] || { echo "quickstart: --store URL is required, e.g. influxdb+v1://localhost:8086/carbond" >&2; exit 2; }
if [ "$use_systemd" = auto ]; then
    if [ -d /run/systemd/system ] && [ -z "$root" ]; then use_systemd=yes; else use_systemd=no; fi
fi

say "1/5 carbond into a virtual environment: $prefix"
"${PYTHON:-python3}" -m venv ${CARBOND_VENV_ARGS:-} "$prefix"
# shellcheck disable=SC2086
"$prefix/bin/pip" install --quiet --disable-pip-version-check ${CARBOND_PIP_ARGS:-} "$source"
"$prefix/bin/carbond" --version

say "2/5 user, unit and configuration"
install -D -m 0644 "$here/deploy/systemd/carbond.sysusers" "$root/usr/lib/sysusers.d/carbond.conf"
install -d -m 0755 "$(dirname "$unit")" "$etc"
sed "s#/opt/carbond#$prefix#g" "$here/deploy/systemd/carbond.service" > "$unit"
chmod 0644 "$unit"
case "$store" in
    *://*@*) secret_store=yes ;;  # a password in the URL: keep it out of the world-readable TOML
    *) secret_store=no ;;
esac
if [ -e "$etc/carbond.toml" ]; then
    echo "keeping the existing $etc/carbond.toml"
else
    {
        echo "# written by scripts/quickstart-service.sh; reference: deploy/carbond.toml, docs/configuration.md"
        if [ "$secret_store" = no ]; then printf '[store]\nurl = "%s"\n' "$store"; fi
        if [ -n "$region" ]; then printf '[region]\nzone = "%s"\n' "$region"; fi
    } > "$etc/carbond.toml"
    chmod 0644 "$etc/carbond.toml"
fi
if [ "$secret_store" = yes ]; then
    (umask 077; printf 'CARBOND_STORE=%s\n' "$store" > "$etc/carbond.env")
    echo "the store URL has a password: it went to $etc/carbond.env (mode 0600, read by systemd only)"
fi
"$prefix/bin/carbond" config check --config "$etc/carbond.toml" > /dev/null

case "$store" in
    influxdb*)
        say "3/5 InfluxDB: database, retention policies, hourly rollups"
        CARBOND_STORE="$store" "$prefix/bin/carbond" store init --config "$etc/carbond.toml" ;;
    *) say "3/5 nothing to initialise for $store" ;;
esac

socket="$runtime/carbond.sock"
if [ "$use_systemd" = yes ]; then
    say "4/5 systemd: carbond.service"
    systemd-sysusers carbond.conf
    systemctl daemon-reload
    systemctl enable --now carbond.service
    socket=/run/carbond/carbond.sock
else
    say "4/5 no systemd here: the unit's ExecStart with the unit's environment, in the background"
    exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
    install -d -m 0750 "$state"
    install -d -m 0755 "$runtime" "$(dirname "$log")"
    (
        # what systemd sets up for this unit: its directories, Environment= and EnvironmentFile=
        export STATE_DIRECTORY="$state" RUNTIME_DIRECTORY="$runtime" CONFIGURATION_DIRECTORY="$etc"
        for assignment in $(sed -n 's/^Environment=//p' "$unit"); do export "${assignment?}"; done
        if [ -f "$etc/carbond.env" ]; then  # NAME=value lines, as systemd reads them (not shell syntax)
            while IFS= read -r line; do
                case "$line" in ''|'#'*) ;; *) export "$line" ;; esac
            done < "$etc/carbond.env"
        fi
        # shellcheck disable=SC2086
        exec $exec_start < /dev/null >> "$log" 2>&1
    ) &
    echo $! > "$pidfile"
    echo "carbond started (pid $(cat "$pidfile")); log $log; stop it with: $0 --root '$root' --stop"
fi

say "5/5 the daemon answers and its points reach $(echo "$store" | sed 's#://[^@/]*@#://***@#')"
deadline=$(( $(date +%s) + timeout ))
until "$prefix/bin/carbond" status --socket "$socket" > /dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "quickstart: the daemon did not answer on $socket within ${timeout}s" >&2
        [ -f "$log" ] && tail -n 30 "$log" >&2
        exit 1
    fi
    sleep 1
done
"$prefix/bin/carbond" status --socket "$socket"
until [ -n "$(CARBOND_STORE="$store" "$prefix/bin/carbond" export --config "$etc/carbond.toml" --measurement host \
              --since -10m 2> /dev/null | head -n 1)" ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "quickstart: no host points in the store within ${timeout}s; see docs/troubleshooting.md" >&2
        exit 1
    fi
    sleep 2
done
echo
echo "OK: carbond is measuring this machine and writing to the store."
echo "Next: Grafana (deploy/grafana, docs/deployment.md#grafana); tag work with carbond track --job NAME -- CMD"
