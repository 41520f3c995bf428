"""tests/tools/logitdump against the float64 reference (tests/py/reference_model.py) on a small
kvtrain-trained checkpoint (GQA, 3 optimizer steps), the tool the SmolLM2 parity
(tools/hf/smollm2_parity.py) relies on.

Run by CTest as `/usr/bin/python3 tests/py/test_logitdump.py` with KVT_BUILD_DIR (where kvtrain and
tests/logitdump were built). Checks: logits [T, V] per position within 1e-4 of max |logit|; the
per-row losses of `rows` within 1e-5 nats; greedy generation through the KV cache equal to the
reference's argmax on the growing prefix, and each step's logits within the same tolerance; a
text file of ids gives the same logits as the safetensors input; a token id out of range is a
one-line error.
"""

import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import reference_model as ref  # noqa: E402

BUILD_DIR = os.environ.get("KVT_BUILD_DIR", os.path.join(ROOT, "build"))
KVTRAIN = os.path.join(BUILD_DIR, "kvtrain")
LOGITDUMP = os.path.join(BUILD_DIR, "tests", "logitdump")
REL_TOL = 1e-4   # max |Δlogit| per position / max |logit| of that position
LOSS_TOL = 1e-5  # nats per token
N_GEN = 12


def checkpoint_reference(path):
    """(RefConfig, float64 params) read from a kvtrain HDF5 checkpoint with h5py (MHA/GQA/MQA)."""
    import h5py
    import yaml
    with h5py.File(path, "r") as f:
        raw = f["config"][()]
        if isinstance(raw, np.ndarray):
            raw = raw.reshape(-1)[0]
        m = yaml.safe_load(raw.decode() if isinstance(raw, bytes) else str(raw))["model"]
        params = {n: torch.from_numpy(np.array(ds[()], dtype=np.float64)) for n, ds in f["model"].items()}
    cfg = ref.RefConfig(vocab_size=m["vocab_size"], d_model=m["d_model"], n_layers=m["n_layers"],
                        n_heads=m["n_heads"], n_kv_heads=m.get("n_kv_heads") or m["n_heads"], d_ff=m["d_ff"],
                        rope_theta=float(m["rope_theta"]), norm_eps=float(m["norm_eps"]),
                        tie_embeddings=m["tie_embeddings"], max_seq_len=m["max_seq_len"])
    cfg.check()
    return cfg, params


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    return p


def write_ids(path, tensors):
    """A safetensors file of I32 tensors (the minimal writer the reader in reference_model reads)."""
    import json
    import struct
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype="<i4").tobytes()
        header[name] = {"dtype": "I32", "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-(8 + len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def max_ratio(got, want):
    """Worst per-position max |Δ| / max |want| over rows of [T, V]."""
    d = np.abs(got.astype(np.float64) - want).max(axis=-1)
    return float((d / np.abs(want).max(axis=-1)).max())


class LogitdumpVsReference(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for exe in (KVTRAIN, LOGITDUMP):
            if not os.path.exists(exe):
                raise AssertionError(f"{exe} not found (set KVT_BUILD_DIR to the build directory)")
        cls.tmp = tempfile.TemporaryDirectory(prefix="kvt_logitdump_")
        t = cls.tmp.name
        words = "the lord said unto moses and his people went into land of light water earth day".split()
        r = np.random.default_rng(3)
        with open(os.path.join(t, "text.txt"), "w") as f:
            for _ in range(600):
                f.write(" ".join(words[i] for i in r.integers(0, len(words), 12)) + ".\n")
        run([KVTRAIN, "prepare", "--input", os.path.join(t, "text.txt"), "--out", os.path.join(t, "data"),
             "--vocab-size", "320", "--val-block", "0"])
        sets = ["model.vocab_size=320", "model.d_model=64", "model.n_layers=2", "model.n_heads=4",
                "model.n_kv_heads=2", "model.max_seq_len=64", "train.steps=3", "train.batch_size=4",
                "train.seq_len=32", "train.eval_every=0", "train.warmup_steps=1", "train.lr=1e-2",
                f"data.train={t}/data/*train*.bin", f"data.val={t}/data/*val*.bin",
                f"data.tokenizer={t}/data/tokenizer.model", f"output.dir={t}/run",
                "output.checkpoint_every=3"]
        cmd = [KVTRAIN, "train", "--config", os.path.join(ROOT, "configs", "tiny.yaml")]
        for s in sets:
            cmd += ["--set", s]
        run(cmd, env={**os.environ, "OMP_NUM_THREADS": "2"})
        cls.ckpt = os.path.join(t, "run", "ckpt_00000003.h5")
        cls.cfg, cls.params = checkpoint_reference(cls.ckpt)
        g = np.random.default_rng(11)
        V = cls.cfg.vocab_size
        cls.tokens = g.integers(0, V, 40).astype(np.int32)
        cls.rows = g.integers(0, V, (2, 33)).astype(np.int32)
        cls.prompt = g.integers(0, V, 7).astype(np.int32)
        ids = os.path.join(t, "ids.safetensors")
        write_ids(ids, {"tokens": cls.tokens, "rows": cls.rows, "prompt": cls.prompt})
        out = os.path.join(t, "out.safetensors")
        run([LOGITDUMP, "--checkpoint", cls.ckpt, "--tokens", ids, "--out", out, "--generate", str(N_GEN),
             "--threads", "2"])
        cls.dump, cls.meta = ref.read_safetensors(out)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def ref_logits(self, ids):
        with torch.no_grad():
            return ref.forward(self.cfg, self.params, torch.tensor(np.asarray(ids), dtype=torch.long)[None])[0].numpy()

    def test_logits(self):
        got = self.dump["logits"]
        self.assertEqual(got.shape, (len(self.tokens), self.cfg.vocab_size))
        want = self.ref_logits(self.tokens)
        self.assertGreater(np.abs(want).max(), 0.5)  # trained weights, not a near-zero init
        self.assertLessEqual(max_ratio(got, want), REL_TOL)
        np.testing.assert_array_equal(self.dump["tokens"], self.tokens)

    def test_losses(self):
        got = self.dump["loss"]
        self.assertEqual(got.shape, (2,))
        for n, row in enumerate(self.rows):
            logits = torch.from_numpy(self.ref_logits(row[:-1]))
            want = F.cross_entropy(logits, torch.from_numpy(row[1:].astype(np.int64))).item()
            self.assertLess(abs(got[n] - want), LOSS_TOL, f"row {n}: {got[n]} vs {want}")

    def test_greedy_through_the_cache(self):
        gen, gl = self.dump["generated"], self.dump["gen_logits"]
        self.assertEqual(gen.shape, (N_GEN,))
        self.assertEqual(gl.shape, (N_GEN, self.cfg.vocab_size))
        prefix = list(self.prompt)
        for i in range(N_GEN):
            want = self.ref_logits(prefix)[-1]
            self.assertLessEqual(max_ratio(gl[i:i + 1], want[None]), REL_TOL, f"step {i}")
            top2 = np.sort(want)[-2:]
            if top2[1] - top2[0] < 1e-4:  # a near tie: fp32 may pick either; stop comparing
                break
            self.assertEqual(int(gen[i]), int(np.argmax(want)), f"step {i}")
            self.assertEqual(int(gen[i]), int(np.argmax(gl[i])))
            prefix.append(int(gen[i]))

    def test_text_ids_file(self):
        t = self.tmp.name
        path = os.path.join(t, "ids.txt")
        with open(path, "w") as f:
            f.write(" ".join(str(x) for x in self.tokens) + "\n")
        out = os.path.join(t, "text_out.safetensors")
        run([LOGITDUMP, "--checkpoint", self.ckpt, "--tokens", path, "--out", out, "--threads", "2"])
        d, _ = ref.read_safetensors(out)
        np.testing.assert_array_equal(d["logits"], self.dump["logits"])

    def test_bad_id_is_one_line_error(self):
        t = self.tmp.name
        path = os.path.join(t, "bad.txt")
        with open(path, "w") as f:
            f.write(f"1 2 {self.cfg.vocab_size}\n")
        p = subprocess.run([LOGITDUMP, "--checkpoint", self.ckpt, "--tokens", path, "--out",
                            os.path.join(t, "bad.safetensors")], capture_output=True, text=True)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertIn(f"token id {self.cfg.vocab_size} outside [0, {self.cfg.vocab_size})", p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
