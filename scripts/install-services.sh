#!/usr/bin/env bash
# Installs the real servers the test-suite starts (idempotent; cached by apt).
set -euo pipefail

have_pg() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }

if ! have_pg; then
    echo "installing PostgreSQL from Debian packages..."
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq postgresql >/dev/null
fi
have_pg && echo "PostgreSQL: $(ls -d /usr/lib/postgresql/*/bin | tail -1)"
