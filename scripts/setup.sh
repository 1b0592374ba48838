#!/usr/bin/env bash
# One entry point for a fresh machine.
#   scripts/setup.sh serve   install the node and run it on embedded defaults
#   scripts/setup.sh test    install the node, its test tools, and run the tests
# Debian packages come from apt (root or sudo); Python packages from PyPI into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_RUNTIME=(dcmtk)
APT_TEST=(dcmtk dicom3tools prometheus orthanc orthanc-python orthanc-dicomweb chromium)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

venv() {
  if [ ! -x .venv/bin/python ]; then
    python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
  fi
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".$1"
}

case "${1:-}" in
  serve)
    apt_install "${APT_RUNTIME[@]}"
    venv "[cpu]"
    shift
    exec .venv/bin/mvi-node serve "$@"
    ;;
  test)
    apt_install "${APT_TEST[@]}"
    venv "[test,cpu,train]"
    shift
    exec .venv/bin/python -m pytest "$@"
    ;;
  *)
    echo "usage: $0 serve|test [args...]" >&2
    exit 64
    ;;
esac
