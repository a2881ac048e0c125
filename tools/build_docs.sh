#!/usr/bin/env bash
# Build the documentation site (guides + API reference) into build/site (or $1), strictly: any
# warning (a broken link, an unresolved reference to an edgert name, a malformed docstring, a
# public name without a docstring) fails the build. Uses the repository's .venv (made on first use
# with the `docs` extra, like bin/test); -E re-reads every page, so a warning is never hidden by
# an up-to-date page of an earlier build.
set -euo pipefail
source "$(dirname "$0")/../bin/_venv.sh"
cd "$repo"
exec python -m sphinx -E -W --keep-going -n -q -b html docs "${1:-build/site}"
