#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run the whole test suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# System peers the tests talk to: a real OpenSSH server, Debian's adb client, and headless chromium with its
# WebDriver (the browser test of `nnf report`); qemu-user-static, binfmt-support and debootstrap for the
# emulated aarch64 device (tests marked arm64, scripts/arm64_device.sh).
if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ] || ! command -v adb >/dev/null 2>&1 \
    || ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 \
    || [ ! -x /usr/bin/qemu-aarch64-static ] || ! command -v update-binfmts >/dev/null 2>&1 \
    || ! command -v debootstrap >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssh-server openssh-client adb \
    chromium chromium-driver qemu-user-static binfmt-support debootstrap >/dev/null
fi

python3 -m venv .venv
# torch is pinned in the same command so no other package can pull a CUDA build.
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0 -e '.[all,dev]'
# The codebase checks itself: lint (incl. stale noqa, complexity) and types of the public API.
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
