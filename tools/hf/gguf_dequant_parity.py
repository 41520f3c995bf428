#!/usr/bin/env python3
"""Dequantization parity with gguf-py (docs/design.md, "Importing models"): kvtrain's
data/gguf_quant.h against gguf.quants.dequantize, bit for bit.

  python tools/hf/gguf_dequant_parity.py --ggufdequant build/tests/ggufdequant [--work DIR] [--seed S]

Writes one GGUF file (gguf.GGUFWriter, raw quantized bytes) with a tensor per type:
  F16, BF16      all 65536 bit patterns (zeros, subnormals, infinities and NaNs included)
  Q4_0 Q4_1 Q8_0 4096 blocks of random bytes          [64, 2048]
  Q4_K Q5_K Q6_K 1024 super-blocks of random bytes    [32, 8192]
  Q8_0_3d        a 3-D Q8_0 tensor [2, 3, 64] (the order of dimensions)
In the quantized blocks every fp16 scale field (d; m of Q4_1; dmin of Q4_K/Q5_K) is replaced by a
finite half of random sign and magnitude 2^u, u uniform in [-20, 4] (subnormal halves included):
random bytes there would make NaN/inf blocks. Runs ggufdequant on the file, dequantizes the same
bytes with gguf-py, and compares the float32 bit patterns. Prints one line per tensor (type,
values, bit mismatches, max |diff| over the finite values) and exits 1 on any mismatch.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import gguf
import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as QT
from safetensors.numpy import load_file

# Byte offsets of the fp16 scale fields inside one block.
SCALE_FIELDS = {QT.Q4_0: [0], QT.Q4_1: [0, 2], QT.Q8_0: [0], QT.Q4_K: [0, 2], QT.Q5_K: [0, 2],
                QT.Q6_K: [208]}


def random_halves(rng, n):
    """n finite halves: random sign, magnitude 2^u with u ~ U[-20, 4] (rounded to half)."""
    mag = np.exp2(rng.uniform(-20.0, 4.0, size=n))
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    h = (sign * mag).astype(np.float16)
    assert np.all(np.isfinite(h))
    return h.view(np.uint8).reshape(n, 2)


def quant_blocks(rng, qtype, rows, blocks_per_row):
    """Random blocks of qtype, fp16 scale fields set finite: uint8 [rows, blocks_per_row * size]."""
    _, type_size = GGML_QUANT_SIZES[qtype]
    n = rows * blocks_per_row
    b = rng.integers(0, 256, size=(n, type_size), dtype=np.uint8)
    for off in SCALE_FIELDS[qtype]:
        b[:, off:off + 2] = random_halves(rng, n)
    return b.reshape(rows, blocks_per_row * type_size)


def make_cases(rng):
    """{name: (qtype, uint8 bytes with the tensor's shape, last dimension in bytes)}."""
    every_half = np.arange(65536, dtype=np.uint16).view(np.uint8).reshape(256, 512)
    cases = {"f16": (QT.F16, every_half), "bf16": (QT.BF16, every_half.copy())}
    for qt in (QT.Q4_0, QT.Q4_1, QT.Q8_0):
        cases[qt.name.lower()] = (qt, quant_blocks(rng, qt, 64, 64))
    for qt in (QT.Q4_K, QT.Q5_K, QT.Q6_K):
        cases[qt.name.lower()] = (qt, quant_blocks(rng, qt, 32, 32))
    cases["q8_0_3d"] = (QT.Q8_0, quant_blocks(rng, QT.Q8_0, 6, 2).reshape(2, 3, -1))
    return cases


def write_gguf(path, cases):
    w = gguf.GGUFWriter(path, "llama")
    for name, (qt, raw) in cases.items():
        w.add_tensor(name, raw, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ggufdequant", required=True, help="path of tests/tools/ggufdequant")
    ap.add_argument("--work", default=None, help="directory for the files (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=20240607)
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="kvt_dequant_")
    os.makedirs(work, exist_ok=True)
    gguf_path = os.path.join(work, "dequant.gguf")
    out_path = os.path.join(work, "dequant_kvtrain.safetensors")

    cases = make_cases(np.random.default_rng(a.seed))
    write_gguf(gguf_path, cases)
    proc = subprocess.run([a.ggufdequant, "--gguf", gguf_path, "--out", out_path],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"ggufdequant failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    ours = load_file(out_path)

    # Read back through gguf-py's reader too, so both sides dequantize the bytes in the file.
    reader = gguf.GGUFReader(gguf_path)
    failed = False
    print(f"gguf_dequant_parity: gguf-py {gguf_version()}, numpy {np.__version__}, seed {a.seed}")
    print(f"{'tensor':9} {'type':5} {'values':>8} {'bit mismatches':>15} {'NaNs':>6} {'max |diff|':>11}")
    for t in reader.tensors:
        ref = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32, copy=False)
        got = ours[t.name]
        if got.shape != ref.shape:
            print(f"{t.name}: shape {got.shape} (kvtrain) != {ref.shape} (gguf-py)")
            failed = True
            continue
        rb, gb = ref.view(np.uint32), got.view(np.uint32)
        mism = int(np.count_nonzero(rb != gb))
        fin = np.isfinite(ref) & np.isfinite(got)
        diff = float(np.max(np.abs(ref[fin].astype(np.float64) - got[fin]))) if fin.any() else 0.0
        nans = int(np.count_nonzero(np.isnan(ref)))
        print(f"{t.name:9} {t.tensor_type.name:5} {ref.size:8d} {mism:15d} {nans:6d} {diff:11.3g}")
        failed |= mism != 0
    print("gguf_dequant_parity:", "FAIL" if failed else "PASS (every value bit-identical)")
    sys.exit(1 if failed else 0)


def gguf_version():
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    main()
