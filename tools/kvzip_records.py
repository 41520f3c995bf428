"""The Fast KVzip study's records, kept with the docs so that a run outlives its machine.

    python3 tools/kvzip_records.py pack OUT ARCHIVE
    python3 tools/kvzip_records.py unpack ARCHIVE OUT
    python3 tools/kvzip_records.py digest GATES

pack: the records of the study directory OUT (tools/kvzip_study.sh's OUT) into ARCHIVE, a .tar.xz:
every OUT/eval*/meta.json and OUT/eval*/ctx_NNNNN.json (one per evaluated context), OUT/memory.json,
the gates' OUT/gates/config.yaml and OUT/gates/metrics.jsonl, and gates/weights.sha256, the digest
of OUT/gates/gates.h5's weights (below). Nothing else: not the logs, the temporary files, the gate
checkpoints nor the gates themselves (39 MB with their optimizer state; a restored study trains
them again and checks that they are the same). Members are sorted, with mtime 0 and owner 0, so
the same records give the same bytes; written to ARCHIVE.tmp and renamed.

unpack: the reverse, into OUT, which must not hold records yet (nothing is overwritten). A study
resumed on OUT (tools/kvzip_study.sh, RESTORE=1) then runs only what the records lack. Members
that are not such records (another name, an absolute path, "..", a link) are refused, and a
damaged archive is an error; either way OUT is left as it was.

digest: SHA-256 over the gate weights of a gates file (every dataset under /model, in name order:
its name, dtype, shape and little-endian bytes), so that two trainings compare by their weights,
not by the file's time stamps. Needs h5py.
"""

import argparse
import io
import lzma
import os
import re
import shutil
import sys
import tarfile
import tempfile

MEMBER = re.compile(r"^(eval[A-Za-z0-9_.-]*/(meta\.json|ctx_[0-9]+\.json)|memory\.json|"
                    r"gates/(config\.yaml|metrics\.jsonl|weights\.sha256))$")
DIGEST = "gates/weights.sha256"


class Error(Exception):
    pass


def records(out):
    """The archive's member names found in OUT, sorted."""
    names = []
    for root, dirs, files in os.walk(out):
        dirs.sort()
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), out).replace(os.sep, "/")
            if MEMBER.match(rel) and not os.path.islink(os.path.join(out, rel)):
                names.append(rel)
    return sorted(names)


def write_atomic(path, write):
    """Calls write(file) on path.tmp, then renames it to path; removes path.tmp on any error. A
    failed write (a full disk) is an Error naming the file."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise Error(f"{tmp}: cannot write ({e.strerror or e}); {path} is as it was")
        raise


def gates_digest(path):
    """The hex SHA-256 of a gates file's weights (see digest above)."""
    import hashlib

    import h5py
    import numpy as np

    h = hashlib.sha256()
    try:
        with h5py.File(path, "r") as f:
            if "model" not in f:
                raise Error(f"{path}: no /model group: not a gates file")
            names = []
            f["model"].visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
            for n in sorted(names):
                a = np.ascontiguousarray(f["model"][n][()])
                a = a.astype(a.dtype.newbyteorder("<"), copy=False)
                h.update(f"{n}\0{a.dtype.str}\0{a.shape}\0".encode())
                h.update(a.tobytes())
    except OSError as e:
        raise Error(f"{path}: not a readable HDF5 file ({e})")
    return h.hexdigest()


def pack(out, archive):
    names = records(out)
    if not names:
        raise Error(f"{out}: no study records (eval*/meta.json, eval*/ctx_*.json) to pack")
    files = []
    for name in names:
        if name != DIGEST:  # made anew from the gates below
            with open(os.path.join(out, name), "rb") as src:
                files.append((name, src.read()))
    gates = os.path.join(out, "gates", "gates.h5")
    if os.path.isfile(gates):
        files.append((DIGEST, (gates_digest(gates) + "\n").encode()))
    files.sort()

    def write(f):
        with tarfile.open(fileobj=f, mode="w:xz", format=tarfile.PAX_FORMAT) as tar:
            for name, data in files:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))

    os.makedirs(os.path.dirname(os.path.abspath(archive)), exist_ok=True)
    write_atomic(archive, write)
    print(f"kvzip_records: packed {len(files)} files of {out} into {archive}")


def unpack(archive, out):
    have = records(out) if os.path.isdir(out) else []
    if have:
        raise Error(f"{os.path.join(out, have[0])}: {out} already holds study records; unpack only into a "
                    f"directory without them")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=".kvzip_unpack.", dir=parent)  # in OUT's file system: renames
    try:
        try:
            with open(archive, "rb") as f:  # the whole stream, its index and footer checks too
                raw = lzma.decompress(f.read(), format=lzma.FORMAT_XZ)
            with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
                members = tar.getmembers()
                for m in members:
                    if not m.isfile() or not MEMBER.match(m.name):
                        raise Error(f"{archive}: member {m.name!r} is not a study record; nothing unpacked")
                for m in members:
                    data = tar.extractfile(m).read()  # a record is small; reading and writing apart
                    dst = os.path.join(stage, m.name)  # name the failing side
                    try:
                        os.makedirs(os.path.dirname(dst), exist_ok=True)
                        with open(dst, "wb") as f:
                            f.write(data)
                    except OSError as e:
                        raise Error(f"{dst}: cannot write ({e.strerror or e}); nothing unpacked")
        except FileNotFoundError:
            raise Error(f"{archive}: no such file")
        except (tarfile.TarError, lzma.LZMAError, EOFError, OSError) as e:
            raise Error(f"{archive}: not a readable .tar.xz ({type(e).__name__}: {e}); nothing unpacked")
        if not members:
            raise Error(f"{archive}: holds no records; nothing unpacked")
        for name in (m.name for m in members):  # nothing here clashes (checked above): each rename adds a file
            dst = os.path.join(out, name)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(os.path.join(stage, name), dst)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print(f"kvzip_records: unpacked {len(members)} files of {archive} into {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="OUT's records -> ARCHIVE")
    p.add_argument("out")
    p.add_argument("archive")
    u = sub.add_parser("unpack", help="ARCHIVE -> OUT (which holds no records)")
    u.add_argument("archive")
    u.add_argument("out")
    d = sub.add_parser("digest", help="SHA-256 of a gates file's weights")
    d.add_argument("gates")
    a = ap.parse_args()
    try:
        if a.cmd == "pack":
            pack(a.out, a.archive)
        elif a.cmd == "unpack":
            unpack(a.archive, a.out)
        else:
            print(gates_digest(a.gates))
    except (Error, OSError) as e:
        sys.exit(f"kvzip_records: {e}")


if __name__ == "__main__":
    main()
