#!/usr/bin/env bash
# Build the documentation site (guides + API reference) into build/site, strictly: any warning
# (broken link, unresolved reference to an edgert name, malformed docstring) fails the build.
# Needs the `docs` extra (Sphinx, MyST); bin/test's venv has it.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m sphinx -W --keep-going -n -q -b html docs "${1:-build/site}"
