"""The Fast KVzip study's records, kept with the docs so that a run outlives its machine.

    python3 tools/kvzip_records.py pack OUT ARCHIVE [--gates FILE]
    python3 tools/kvzip_records.py unpack ARCHIVE OUT [--gates FILE]

pack: the records of the study directory OUT (tools/kvzip_study.sh's OUT) into ARCHIVE, a .tar.xz:
every OUT/eval*/meta.json and OUT/eval*/ctx_NNNNN.json (one per evaluated context), OUT/memory.json
and the gates' OUT/gates/config.yaml and OUT/gates/metrics.jsonl. Nothing else (logs, temporary
files, gate checkpoints). Members are sorted, with mtime 0 and owner 0, so the same records give
the same bytes. --gates FILE copies OUT/gates/gates.h5 to FILE too (kept apart from the archive:
it changes only when the gates are retrained). Both are written to a temporary name and renamed.

unpack: the reverse, into OUT, which must not hold records yet (nothing is overwritten); with
--gates FILE, FILE becomes OUT/gates/gates.h5. A study resumed on OUT (tools/kvzip_study.sh,
RESTORE=1) then runs only what the records lack. Members that are not such records (another name,
an absolute path, "..", a link) are refused, and a damaged archive is an error; either way OUT is
left as it was.
"""

import argparse
import io
import os
import re
import shutil
import sys
import tarfile
import tempfile

MEMBER = re.compile(r"^(eval[A-Za-z0-9_.-]*/(meta\.json|ctx_[0-9]+\.json)|memory\.json|gates/(config\.yaml|metrics\.jsonl))$")


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
    """Calls write(file) on path.tmp, then renames it to path; removes path.tmp on any error."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def pack(out, archive, gates=None):
    names = records(out)
    if not names:
        raise Error(f"{out}: no study records (eval*/meta.json, eval*/ctx_*.json) to pack")

    def write(f):
        with tarfile.open(fileobj=f, mode="w:xz", format=tarfile.PAX_FORMAT) as tar:
            for name in names:
                with open(os.path.join(out, name), "rb") as src:
                    data = src.read()
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))

    os.makedirs(os.path.dirname(os.path.abspath(archive)), exist_ok=True)
    write_atomic(archive, write)
    if gates:
        src = os.path.join(out, "gates", "gates.h5")
        if not os.path.isfile(src):
            raise Error(f"{src}: no gates to keep (--gates {gates})")
        with open(src, "rb") as s:
            write_atomic(gates, lambda f: shutil.copyfileobj(s, f))
    print(f"kvzip_records: packed {len(names)} files of {out} into {archive}" + (f", gates into {gates}" if gates else ""))


def unpack(archive, out, gates=None):
    have = records(out) if os.path.isdir(out) else []
    if have:
        raise Error(f"{os.path.join(out, have[0])}: {out} already holds study records; unpack only into a "
                    f"directory without them")
    if gates and os.path.exists(os.path.join(out, "gates", "gates.h5")):
        raise Error(f"{os.path.join(out, 'gates', 'gates.h5')}: exists; not overwritten")
    if gates and not os.path.isfile(gates):
        raise Error(f"{gates}: no such gates file")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=".kvzip_unpack.", dir=parent)  # in OUT's file system: renames
    try:
        try:
            with tarfile.open(archive, mode="r:xz") as tar:
                members = tar.getmembers()
                for m in members:
                    if not m.isfile() or not MEMBER.match(m.name):
                        raise Error(f"{archive}: member {m.name!r} is not a study record; nothing unpacked")
                for m in members:
                    dst = os.path.join(stage, m.name)
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    with tar.extractfile(m) as src, open(dst, "wb") as f:
                        shutil.copyfileobj(src, f)
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:  # lzma.LZMAError is an OSError
            raise Error(f"{archive}: not a readable .tar.xz ({type(e).__name__}: {e}); nothing unpacked")
        if not members:
            raise Error(f"{archive}: holds no records; nothing unpacked")
        if gates:
            os.makedirs(os.path.join(stage, "gates"), exist_ok=True)
            shutil.copyfile(gates, os.path.join(stage, "gates", "gates.h5"))
        moved = [m.name for m in members] + (["gates/gates.h5"] if gates else [])
        for name in moved:  # nothing here clashes (checked above): each rename adds a file
            dst = os.path.join(out, name)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(os.path.join(stage, name), dst)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print(f"kvzip_records: unpacked {len(members)} files of {archive} into {out}" + (f", gates from {gates}" if gates else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="OUT's records -> ARCHIVE")
    p.add_argument("out")
    p.add_argument("archive")
    p.add_argument("--gates", help="copy OUT/gates/gates.h5 here too")
    u = sub.add_parser("unpack", help="ARCHIVE -> OUT (which holds no records)")
    u.add_argument("archive")
    u.add_argument("out")
    u.add_argument("--gates", help="this gates file becomes OUT/gates/gates.h5")
    a = ap.parse_args()
    try:
        if a.cmd == "pack":
            pack(a.out, a.archive, a.gates)
        else:
            unpack(a.archive, a.out, a.gates)
    except (Error, OSError) as e:
        sys.exit(f"kvzip_records: {e}")


if __name__ == "__main__":
    main()
