# tools/hf/venv_env.sh — sourced by the tools/hf/*.sh parity wrappers: PY is the python of the
# venv tools/py_venv.sh makes (or reuses).
PY="$(bash "$ROOT/tools/py_venv.sh")"
