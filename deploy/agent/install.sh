#!/usr/bin/env bash
# Install the LiftWatch agent on Raspberry Pi OS (Debian bookworm) from this source tree.
#
#   sudo deploy/agent/install.sh [--config FILE]
#
# Creates the system user `liftwatch` (in group dialout, for the RS-485 adapter), a venv in
# /opt/liftwatch/venv (linked as /opt/liftwatch/current, which the updater switches), the
# updater's own venv /opt/liftwatch/updater, /etc/liftwatch/agent.toml (from --config, or the example if none is
# there yet; an existing config is never overwritten), the data dir /var/lib/liftwatch,
# the FTDI latency udev rule, and the systemd units; then enables and starts both.
# Safe to run again to upgrade.
set -euo pipefail

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
config=""
while (($#)); do
    case "$1" in
        --config) config="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo)" >&2; exit 1; }

src="$(cd "$(dirname "$0")/../.." && pwd)"
prefix=/opt/liftwatch

apt-get install -y -qq python3 python3-venv
getent group liftwatch >/dev/null || groupadd --system liftwatch
id liftwatch >/dev/null 2>&1 || useradd --system --gid liftwatch --groups dialout \
    --home-dir /var/lib/liftwatch --no-create-home --shell /usr/sbin/nologin liftwatch
usermod -a -G dialout liftwatch

install -d -m 0755 "$prefix"
[ -x "$prefix/venv/bin/python" ] || python3 -m venv "$prefix/venv"
"$prefix/venv/bin/pip" install --quiet --upgrade "$src[agent,mqtt]"
# The first version the updater can switch back to; later ones go to versions/ (updates.md).
[ -e "$prefix/current" ] || ln -s "$prefix/venv" "$prefix/current"
[ -x "$prefix/updater/bin/python" ] || python3 -m venv "$prefix/updater"
"$prefix/updater/bin/pip" install --quiet --upgrade "$src[agent]"

install -d -m 0750 -o root -g liftwatch /etc/liftwatch
if [ -n "$config" ]; then
    install -m 0640 -o root -g liftwatch "$config" /etc/liftwatch/agent.toml
elif [ ! -e /etc/liftwatch/agent.toml ]; then
    install -m 0640 -o root -g liftwatch "$src/deploy/agent/agent.example.toml" /etc/liftwatch/agent.toml
    echo "install.sh: wrote the example config; edit /etc/liftwatch/agent.toml, then"
    echo "            liftwatch-agent check-config /etc/liftwatch/agent.toml"
fi
install -d -m 0750 -o liftwatch -g liftwatch /var/lib/liftwatch

install -m 0644 "$src/deploy/agent/99-liftwatch-serial.rules" /etc/udev/rules.d/
udevadm control --reload-rules && udevadm trigger --subsystem-match=usb-serial || true

for unit in liftwatch-agent.service liftwatch-updater.service; do
    install -m 0644 "$src/deploy/agent/$unit" /etc/systemd/system/
    systemd-analyze verify "/etc/systemd/system/$unit"
done
systemctl daemon-reload
systemctl enable --now liftwatch-agent.service liftwatch-updater.service
systemctl --no-pager status liftwatch-agent.service || true
