"""tools/r_lazyload.py (the reader of Jane Austen's novels for tools/prepare_kvzip_text.sh) on
synthetic R lazy-load databases: character vectors read back (format 2 and 3, NA, UTF-8), other
objects skipped, and malformed input (truncated at every byte, garbage, a wrong type inside a
vector, a length past the end, random byte flips) answered by RdbError naming the file, never by
another exception.

    /usr/bin/python3 tests/py/test_r_lazyload.py
"""

import os
import random
import struct
import sys
import tempfile
import unittest
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("KVT_SOURCE_DIR", os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tools"))
from r_lazyload import RdbError, string_vectors  # noqa: E402


def serialize(obj_body, version=3):
    """XDR serialization: header, then the object's bytes."""
    head = b"X\n" + struct.pack(">III", version, 0x40200, 0x30500)
    if version == 3:
        head += struct.pack(">I", 5) + b"UTF-8"
    return head + obj_body


def strsxp(strings):
    body = struct.pack(">iI", 16, len(strings))
    for s in strings:
        if s is None:
            body += struct.pack(">ii", 9, -1)
        else:
            b = s.encode("utf-8")
            body += struct.pack(">ii", 9 | (1 << 15), len(b)) + b
    return body


def record(blob):
    return struct.pack(">I", len(blob)) + zlib.compress(blob)


class RLazyLoad(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "Rdata.rdb")

    def tearDown(self):
        self.dir.cleanup()

    def write(self, data):
        with open(self.path, "wb") as f:
            f.write(data)

    def good(self):
        return (record(serialize(strsxp(["EMMA", "", "By Jane Austen", None, "café"])))
                + record(serialize(struct.pack(">iI", 14, 0)))  # a REALSXP: skipped
                + record(serialize(strsxp(["PERSUASION"]), version=2)))

    def test_reads_character_vectors(self):
        self.write(self.good())
        self.assertEqual(string_vectors(self.path),
                         [["EMMA", "", "By Jane Austen", "", "café"], ["PERSUASION"]])
        self.write(b"")
        self.assertEqual(string_vectors(self.path), [])

    def test_malformed_input_is_an_error_naming_the_file(self):
        data = self.good()
        ends, i = set(), 0   # cut at a record's end, the file is whole records: not malformed
        while i < len(data):
            z = zlib.decompressobj()
            z.decompress(data[i + 4:])
            i = len(data) - len(z.unused_data)
            ends.add(i)
        cases = {f"truncated at {n}": data[:n] for n in range(1, len(data)) if n not in ends}
        cases["garbage"] = b"\x00\x00\x00\x10not zlib at all"
        cases["wrong length"] = struct.pack(">I", 999) + zlib.compress(serialize(strsxp(["a"])))
        cases["not XDR"] = record(b"A\n" + serialize(strsxp(["a"]))[2:])
        cases["format 4"] = record(serialize(strsxp(["a"]), version=3).replace(b"X\n\x00\x00\x00\x03", b"X\n\x00\x00\x00\x04", 1))
        bad = serialize(strsxp(["a"]))
        cases["non-string in a vector"] = record(bad[:-9] + struct.pack(">ii", 14, 1) + b"a")
        cases["string past the end"] = record(bad[:-5] + struct.pack(">i", 1000) + b"a")
        rng = random.Random(7)
        for k in range(300):
            b = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            cases[f"fuzz {k}"] = bytes(b)
        errors = 0
        for name, d in cases.items():
            with self.subTest(name):
                self.write(d)
                try:
                    out = string_vectors(self.path)
                except RdbError as e:
                    errors += 1
                    self.assertIn(self.path, str(e))
                    self.assertNotIn("\n", str(e))
                    continue
                # a flip inside the strings' bytes can still parse: then it is lists of strings
                self.assertTrue(name.startswith("fuzz"), name)
                self.assertTrue(all(isinstance(s, str) for v in out for s in v))
        self.assertGreater(errors, len(data) - len(ends))


if __name__ == "__main__":
    unittest.main()
