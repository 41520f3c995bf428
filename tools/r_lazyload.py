"""Character vectors out of an R lazy-load database (a package's data/Rdata.rdb), without R.

    from r_lazyload import string_vectors
    string_vectors("janeaustenr/data/Rdata.rdb")  # -> [[line, line, ...], ...]

The file is a run of records, each a 4-byte big-endian length n and then a zlib stream of n bytes
of R's XDR serialization ("X\\n", format 2 or 3; format 3 names its native encoding). A record whose
top object is a character vector (STRSXP of CHARSXP) gives one list of strings (NA as ""); any
other record is skipped. Malformed input raises RdbError naming the file and the byte offset.
(tools/prepare_kvzip_text.sh reads Jane Austen's novels this way; tests/py/test_r_lazyload.py.)
"""

import struct
import zlib

STRSXP, CHARSXP = 16, 9


class RdbError(ValueError):
    pass


def _record_strings(blob):
    """The strings of one serialized object, or None when it is not a character vector."""
    version = struct.unpack(">I", blob[2:6])[0]
    if version not in (2, 3):
        raise ValueError(f"serialization format {version} (2 or 3 expected)")
    o = 14  # "X\n", format, writer's R version, minimal R version
    if version == 3:
        o += 4 + struct.unpack(">I", blob[14:18])[0]  # the native encoding's name
    flags, length = struct.unpack(">iI", blob[o:o + 8])
    if flags & 0xFF != STRSXP:
        return None
    o += 8
    lines = []
    for _ in range(length):
        cflags, clen = struct.unpack(">ii", blob[o:o + 8])
        o += 8
        if cflags & 0xFF != CHARSXP:
            raise ValueError("a character vector holds something else than a string")
        if clen > len(blob) - o:
            raise ValueError(f"a string of {clen} bytes runs past the record's end")
        lines.append("" if clen < 0 else blob[o:o + clen].decode("utf-8", "replace"))
        o += max(clen, 0)
    return lines


def string_vectors(path):
    with open(path, "rb") as f:
        d = f.read()
    i, vectors = 0, []
    while i < len(d):
        try:
            if i + 4 > len(d):
                raise ValueError("truncated record length")
            n = struct.unpack(">I", d[i:i + 4])[0]
            z = zlib.decompressobj()
            blob = z.decompress(d[i + 4:])
            if not z.eof:
                raise ValueError("truncated zlib stream")
            if len(blob) != n or blob[:2] != b"X\n":
                raise ValueError(f"not an XDR serialization of {n} bytes")
            lines = _record_strings(blob)
        except (ValueError, struct.error, zlib.error) as e:
            raise RdbError(f"{path}: record at byte {i}: {e}") from None
        if lines is not None:
            vectors.append(lines)
        i = len(d) - len(z.unused_data)
    return vectors
