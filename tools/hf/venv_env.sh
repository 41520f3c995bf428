# tools/hf/venv_env.sh — sourced by the tools/hf/*.sh parity wrappers: sets PY to the python of
# tools/py_venv.sh, and when that venv lacks accelerate (transformers' GGUF loader needs it),
# installs accelerate and psutil with pip (--no-deps, pinned) into PY_EXTRA [py_extra next to the
# venv: $PY_VENV/../py_extra, default build/py_extra] and puts it on PYTHONPATH.
PY="$(bash "$ROOT/tools/py_venv.sh")"
PY_EXTRA="${PY_EXTRA:-$(dirname "${PY_VENV:-$ROOT/build/py_venv}")/py_extra}"
export PYTHONPATH="$PY_EXTRA${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import accelerate, psutil" >/dev/null 2>&1; then
  echo "# venv_env: installing accelerate into $PY_EXTRA" >&2
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY" -m pip install -q --no-deps --target "$PY_EXTRA" \
    "accelerate==1.15.0" "psutil==7.2.2" >&2
fi
