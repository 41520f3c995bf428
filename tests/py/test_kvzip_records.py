"""tools/kvzip_records.py: a study's records packed and unpacked byte for byte, the same bytes for the
same records, nothing but records packed, the gates' weights digest (the same for the same weights,
another for one changed weight), and bad input refused with OUT left as it was.

    /usr/bin/python3 tests/py/test_kvzip_records.py
"""

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("KVT_SOURCE_DIR", os.path.join(HERE, "..", ".."))
TOOL = os.path.join(SRC, "tools", "kvzip_records.py")

RECORDS = {
    "eval_base/meta.json": {"policies": ["full", "gates"], "keeps": [0.3]},
    "eval_base/ctx_00000.json": {"context": 0, "results": [{"policy": "full", "keep": 1.0, "reconstruction_nll": 0.17}]},
    "eval_base/ctx_00001.json": {"context": 1, "results": [{"policy": "gates", "keep": 0.3, "reconstruction_nll": 0.19}]},
    "eval_recon_0.3_gates_40_a/meta.json": {"policies": ["gates"], "keeps": [0.3]},
    "eval_recon_0.3_gates_40_a/ctx_00040.json": {"context": 40, "results": []},
    "memory.json": [{"keep": 1.0, "kv_alloc_bytes": 188743680}],
    "gates/metrics.jsonl": "{\"kind\": \"train\", \"step\": 1}\n",
    "gates/config.yaml": "gates:\n  steps: 5000\n",
}
NOT_RECORDS = ["eval_base/ctx_00002.json.tmp", "eval_gate_free.log", "gates/ckpt_00005000.h5", "summary.json",
               "eval_base/notes.txt"]


def write_gates(path, k_scale=1.0, utc="2026-12-04T19:57:00Z"):
    """A small gates-like HDF5 file: weights under /model, a time stamp and optimizer state beside."""
    import h5py
    import numpy as np

    with h5py.File(path, "w") as f:
        f["model/gates.0.k_proj.weight"] = (np.arange(48 * 8, dtype=np.float32).reshape(48, 8) * k_scale)
        f["model/gates.0.bias"] = np.full((3, 3), -1.5, dtype=np.float32)
        f["model/gates.1.sinks"] = np.linspace(0, 1, 3 * 4 * 4, dtype=np.float32).reshape(3, 4, 4)
        f["meta/utc_time"] = utc
        f["optimizer/m/gates.0.bias"] = np.zeros((3, 3), dtype=np.float32)


def run(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True)


def make_study(out):
    for name, body in RECORDS.items():
        path = os.path.join(out, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(body if isinstance(body, str) else json.dumps(body))
    for name in NOT_RECORDS:
        with open(os.path.join(out, name), "w") as f:
            f.write("not a record")
    write_gates(os.path.join(out, "gates", "gates.h5"))


def tree(d):
    """{relative path: bytes} of every file under d."""
    got = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                got[os.path.relpath(p, d).replace(os.sep, "/")] = fh.read()
    return got


def digest(path):
    r = run("digest", path)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def blob(path):
    with open(path, "rb") as f:
        return f.read()


def write_tar(path, members):
    """A .tar.xz of (name, bytes or None for a symlink) members."""
    with tarfile.open(path, "w:xz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


class KvzipRecords(unittest.TestCase):
    def setUp(self):
        self.t = tempfile.TemporaryDirectory()
        self.d = self.t.name
        self.out = os.path.join(self.d, "study")
        make_study(self.out)
        self.archive = os.path.join(self.d, "docs", "data", "records.tar.xz")

    def tearDown(self):
        self.t.cleanup()

    def pack(self):
        r = run("pack", self.out, self.archive)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_round_trip_is_byte_exact_and_only_records(self):
        self.pack()
        with tarfile.open(self.archive, "r:xz") as tar:
            self.assertEqual(tar.getnames(), sorted(list(RECORDS) + ["gates/weights.sha256"]))
        back = os.path.join(self.d, "restored", "study")
        r = run("unpack", self.archive, back)
        self.assertEqual(r.returncode, 0, r.stderr)
        want = {k: v for k, v in tree(self.out).items() if k in RECORDS}
        want["gates/weights.sha256"] = (digest(os.path.join(self.out, "gates", "gates.h5")) + "\n").encode()
        self.assertEqual(tree(back), want)
        # no staging directory left beside OUT, no temporary files beside the archive
        self.assertEqual(os.listdir(os.path.dirname(back)), ["study"])
        self.assertEqual(os.listdir(os.path.dirname(self.archive)), ["records.tar.xz"])
        # a restored study packs to the same bytes (its digest file is made anew, not doubled)
        write_gates(os.path.join(back, "gates", "gates.h5"), utc="2027-01-01T00:00:00Z")
        again = os.path.join(self.d, "again.tar.xz")
        self.assertEqual(run("pack", back, again).returncode, 0)
        self.assertEqual(blob(again), blob(self.archive))

    def test_digest_is_of_the_weights(self):
        a, b, c = (os.path.join(self.d, n) for n in ("a.h5", "b.h5", "c.h5"))
        write_gates(a)
        write_gates(b, utc="2030-01-01T00:00:00Z")  # another time stamp: the same weights
        write_gates(c, k_scale=1.0 + 2 ** -20)      # one weight's last bits differ
        self.assertEqual(digest(a), digest(b))
        self.assertNotEqual(blob(a), blob(b))
        self.assertNotEqual(digest(a), digest(c))
        self.assertRegex(digest(a), "^[0-9a-f]{64}$")
        with open(os.path.join(self.d, "not.h5"), "wb") as f:
            f.write(b"not hdf5")
        r = run("digest", os.path.join(self.d, "not.h5"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not.h5: not a readable HDF5 file", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)

    def test_same_records_same_bytes(self):
        self.pack()
        first = blob(self.archive)
        for name in RECORDS:  # other mtimes, same contents
            os.utime(os.path.join(self.out, name), (1e9, 1e9))
        self.pack()
        self.assertEqual(blob(self.archive), first)
        with open(os.path.join(self.out, "eval_base", "ctx_00003.json"), "w") as f:
            f.write('{"context": 3, "results": []}')
        self.pack()
        self.assertNotEqual(blob(self.archive), first)

    def test_refuses_to_overwrite_records(self):
        self.pack()
        before = tree(self.out)
        r = run("unpack", self.archive, self.out)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("already holds study records", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)
        self.assertEqual(tree(self.out), before)

    def test_refuses_foreign_members(self):
        for bad in (("../escape.json", b"{}"), ("/abs/meta.json", b"{}"), ("eval_x/../../x.json", b"{}"),
                    ("eval_x/run.sh", b"rm -rf /"), ("eval_x/ctx_00001.json", None)):
            with self.subTest(member=bad[0]):
                path = os.path.join(self.d, "bad.tar.xz")
                write_tar(path, [("eval_x/meta.json", b"{}"), bad])
                dest = os.path.join(self.d, "dest_bad")
                r = run("unpack", path, dest)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn("is not a study record", r.stderr)
                self.assertFalse(os.path.exists(dest))
                self.assertFalse(os.path.exists(os.path.join(self.d, "escape.json")))
                self.assertEqual([n for n in os.listdir(self.d) if n.startswith(".kvzip_unpack")], [])

    def test_damaged_archive(self):
        self.pack()
        data = blob(self.archive)
        for name, body in (("truncated", data[: len(data) // 2]), ("garbage", b"not an xz file"),
                           ("flipped", data[:40] + bytes([data[40] ^ 0xFF]) + data[41:]),
                           # inside the compressed records and in the stream's check: xz's own errors
                           ("flipped_mid", data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0x55]) +
                            data[len(data) // 2 + 1:]),
                           ("flipped_end", data[:-20] + bytes([data[-20] ^ 0x01]) + data[-19:])):
            with self.subTest(damage=name):
                path = os.path.join(self.d, name + ".tar.xz")
                with open(path, "wb") as f:
                    f.write(body)
                dest = os.path.join(self.d, "dest_" + name)
                r = run("unpack", path, dest)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(path, r.stderr)
                self.assertEqual(len(r.stderr.strip().splitlines()), 1)
                self.assertFalse(os.path.exists(dest) and os.listdir(dest))
                self.assertEqual([n for n in os.listdir(self.d) if n.startswith(".kvzip_unpack")], [])

    def test_any_flipped_byte_is_refused(self):
        """One flipped bit anywhere, header, records, index or footer: refused, nothing unpacked."""
        self.pack()
        data = blob(self.archive)
        for pos in sorted({int(i * (len(data) - 1) / 23) for i in range(24)} | {len(data) - 1}):
            with self.subTest(pos=pos):
                path = os.path.join(self.d, "flip.tar.xz")
                with open(path, "wb") as f:
                    f.write(data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1:])
                dest = os.path.join(self.d, f"dest_flip_{pos}")
                r = run("unpack", path, dest)
                self.assertNotEqual(r.returncode, 0, f"byte {pos} of {len(data)}")
                self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
                self.assertFalse(os.path.exists(dest) and os.listdir(dest))

    def test_missing_archive(self):
        dest = os.path.join(self.d, "dest_missing")
        r = run("unpack", os.path.join(self.d, "nowhere.tar.xz"), dest)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("nowhere.tar.xz: no such file", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)
        self.assertFalse(os.path.exists(dest) and os.listdir(dest))

    def test_nothing_to_pack(self):
        empty = os.path.join(self.d, "empty")
        os.makedirs(empty)
        r = run("pack", empty, self.archive)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no study records", r.stderr)
        self.assertFalse(os.path.exists(self.archive))
        self.assertFalse(os.path.exists(self.archive + ".tmp"))
        os.makedirs(os.path.join(empty, "eval"))
        with open(os.path.join(empty, "eval", "meta.json"), "w") as f:
            f.write("{}")
        r = run("pack", empty, self.archive)  # records without gates: packed, no digest
        self.assertEqual(r.returncode, 0, r.stderr)
        with tarfile.open(self.archive, "r:xz") as tar:
            self.assertEqual(tar.getnames(), ["eval/meta.json"])


if __name__ == "__main__":
    unittest.main()
