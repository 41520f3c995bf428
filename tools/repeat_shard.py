"""Writes a copy of an llm.c token shard in which every block of N tokens is followed by itself:
[b0 ; b0 ; b1 ; b1 ; ...] (a trailing partial block is dropped). A model trained on it learns
in-context copying, which KVzip's reconstruction objective presupposes (docs/results.md, "Fast KVzip study and eviction").

    /usr/bin/python3 tools/repeat_shard.py IN.bin OUT.bin --block 1024
"""

import argparse

import numpy as np

HEADER_INTS = 256
FORMATS = {20240520: (1, np.uint16), 20240801: (7, np.uint32)}  # magic: (version, token type)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--block", type=int, required=True)
    a = ap.parse_args()
    if a.block < 1:
        raise SystemExit("--block must be >= 1")
    header = np.fromfile(a.input, dtype=np.int32, count=HEADER_INTS)
    if header.size != HEADER_INTS or int(header[0]) not in FORMATS:
        raise SystemExit(f"{a.input}: not an llm.c token shard (bad magic)")
    version, dtype = FORMATS[int(header[0])]
    if int(header[1]) != version:
        raise SystemExit(f"{a.input}: version {int(header[1])} does not match magic {int(header[0])}")
    tokens = np.fromfile(a.input, dtype=dtype, offset=HEADER_INTS * 4)
    if tokens.size != int(header[2]):
        raise SystemExit(f"{a.input}: header says {int(header[2])} tokens, file holds {tokens.size}")
    n = tokens.size // a.block
    blocks = tokens[: n * a.block].reshape(n, a.block)
    out = np.concatenate([blocks, blocks], axis=1).reshape(-1)
    header = header.copy()
    header[2] = out.size
    with open(a.output, "wb") as f:
        header.tofile(f)
        out.astype(dtype).tofile(f)
    print(f"{a.output}: {n} blocks of {a.block} tokens, each repeated: {out.size} tokens")


if __name__ == "__main__":
    main()
