#!/usr/bin/env bash
# Installs what Comptoir needs on a Debian/Ubuntu machine, only what is missing:
# system packages (as root, with apt-get), then a virtual environment with the project in
# editable mode. Safe to run again: each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# libldap-dev libsasl2-dev: build python-ldap (no Linux wheel on PyPI)
# slapd ldap-utils: the throwaway directory server of the tests
# chromium: the browser of the end-to-end tests (Playwright drives Debian's build)
# xvfb xauth: a virtual screen for the kiosk window tests
# wrk: the load tool of the benchmarks
# dosfstools mtools: a real FAT32 image for the USB bundle tests
# libxcb-icccm4 libxcb-keysyms1: the Qt libraries missing for a real X window (kiosk, shutdown)
# imagemagick: `import -window root`, the kiosk test grabs the real X screen with it
APT_PACKAGES=(libldap-dev libsasl2-dev slapd ldap-utils chromium xvfb xauth wrk dosfstools mtools
    libxcb-icccm4 libxcb-keysyms1 imagemagick)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing system packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        # The tests run their own slapd; keep the package from creating or starting one.
        echo 'slapd slapd/no_configuration boolean true' | debconf-set-selections
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
        echo "setup: missing system packages: ${missing[*]}" >&2
        echo "setup: run as root, or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.comptoir-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing the project and its development tools into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[dev]'
    touch "$stamp"
fi
