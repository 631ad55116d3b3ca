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

# OpenSSH server for the SFTP tests: the tests run their own sshd (own config, port and keys);
# the system ssh service is not used.
have_sshd() { [ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null 2>&1; }

if ! have_sshd; then
    echo "installing the OpenSSH server from Debian packages..."
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq openssh-server >/dev/null
fi
have_sshd && echo "OpenSSH server: $(/usr/sbin/sshd -V 2>&1 | head -1)"
