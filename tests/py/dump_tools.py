"""Helpers shared by the Python oracle tests to drive kvtrain's dump tools (tests/tools/refdump,
tests/tools/gatedump): the run config they read, and running one with a clear failure message."""

import subprocess

import reference_model as ref


def yaml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


def write_config(path, model, batch_size, seq_len, seed):
    """A run config with the given model keys; data.train is required but the tools read no data."""
    lines = ["model:"] + [f"  {k}: {yaml_value(v)}" for k, v in model.items()]
    lines += ["train:", f"  batch_size: {batch_size}", f"  seq_len: {seq_len}", "  grad_accum: 1",
              f"  seed: {seed}"]
    lines += ["data:", "  train: unused-by-the-dump-tools/*.bin"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def run_dump(cmd, out):
    """Runs a dump tool; returns (tensors, metadata) of the safetensors file `out` it wrote."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd[0]} failed ({proc.returncode}): {' '.join(cmd)}\n"
                             f"{proc.stdout}{proc.stderr}")
    return ref.read_safetensors(out)
