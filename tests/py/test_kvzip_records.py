"""tools/kvzip_records.py: a study's records packed and unpacked byte for byte, the same bytes for the
same records, nothing but records packed, and bad input refused with OUT left as it was.

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
GATES = b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4


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
    with open(os.path.join(out, "gates", "gates.h5"), "wb") as f:
        f.write(GATES)


def tree(d):
    """{relative path: bytes} of every file under d."""
    got = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                got[os.path.relpath(p, d).replace(os.sep, "/")] = fh.read()
    return got


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
        self.gates = os.path.join(self.d, "docs", "data", "gates.h5")

    def tearDown(self):
        self.t.cleanup()

    def pack(self):
        r = run("pack", self.out, self.archive, "--gates", self.gates)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_round_trip_is_byte_exact_and_only_records(self):
        self.pack()
        with tarfile.open(self.archive, "r:xz") as tar:
            self.assertEqual(tar.getnames(), sorted(RECORDS))
        self.assertEqual(blob(self.gates), GATES)
        back = os.path.join(self.d, "restored", "study")
        r = run("unpack", self.archive, back, "--gates", self.gates)
        self.assertEqual(r.returncode, 0, r.stderr)
        want = {k: v for k, v in tree(self.out).items() if k in RECORDS or k == "gates/gates.h5"}
        self.assertEqual(tree(back), want)
        # no staging directory left beside OUT, no temporary files beside the archive
        self.assertEqual(os.listdir(os.path.dirname(back)), ["study"])
        self.assertEqual(sorted(os.listdir(os.path.dirname(self.archive))), ["gates.h5", "records.tar.xz"])

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
        # gates only: an OUT with gates.h5 and no records keeps its gates
        other = os.path.join(self.d, "other")
        os.makedirs(os.path.join(other, "gates"))
        with open(os.path.join(other, "gates", "gates.h5"), "wb") as f:
            f.write(b"mine")
        r = run("unpack", self.archive, other, "--gates", self.gates)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("gates.h5: exists", r.stderr)
        self.assertEqual(tree(other), {"gates/gates.h5": b"mine"})

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
                           ("flipped", data[:40] + bytes([data[40] ^ 0xFF]) + data[41:])):
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
        r = run("pack", empty, self.archive, "--gates", self.gates)  # records but no gates.h5
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no gates to keep", r.stderr)
        self.assertFalse(os.path.exists(self.gates))


if __name__ == "__main__":
    unittest.main()
