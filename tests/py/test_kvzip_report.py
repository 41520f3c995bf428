"""tools/kvzip_report.py on synthetic study records with known values (plain python3; CTest runs it
with Debian's python3): the means, the paired standard errors, the claim verdicts (holds, fails,
unresolved, not run), the figures, and a study with pieces missing.

    /usr/bin/python3 tests/py/test_kvzip_report.py
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("KVT_SOURCE_DIR", os.path.join(HERE, "..", ".."))
REPORT = os.path.join(SRC, "tools", "kvzip_report.py")
N = 40
KEEPS = [0.5, 0.3, 0.2]


def dump(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f)


def read(path):
    with open(path) as f:
        return f.read()


def noise(i, scale):
    """Deterministic noise, mean exactly 0 over pairs of contexts."""
    return scale * (1 if i % 2 == 0 else -1) * (1 + (i // 2) % 3)


def result(policy, keep, rec, cont, needle, freecopy=None):
    return {"policy": policy, "keep": keep, "entries_kept": int(1000 * keep), "entries_total": 1000,
            "kv_bytes_kept": 1, "kv_alloc_bytes": 1, "kv_peak_bytes": 1, "reconstruction_nll": rec,
            "copy_prefix": int(100 * keep), "continuation_nll": cont, "needle_correct": needle,
            "needle_output": "48213" if needle else "0", "seconds": 1.0,
            "prefill_seconds": 1.0 if policy != "full" else 0.9,
            "gate_seconds": 0.005 if policy == "gates" else 0.0, "freecopy": freecopy}


def make_study(out, gates_rec_offset=0.01, needle_miss=None, memory=True, freecopy=True, metrics=True,
               snapkv_noise=0.002):
    """Full NLL 1 + per-context spread; gates = full + offset (+ tiny noise); kvzip = full + 0.005;
    snapkv = gates + zero-mean noise; streaming = gates - 0.5; random = full + 1."""
    os.makedirs(os.path.join(out, "eval"))
    meta = {"checkpoint": "smollm2.h5", "gates": "gates.h5", "data": "eval_*.bin", "context": 1024,
            "continuation": 64, "policies": ["full", "kvzip", "gates", "snapkv", "streaming", "random"],
            "keeps": KEEPS, "tasks": ["reconstruction", "continuation", "needle", "freecopy"], "generate": 512,
            "freecopy_contexts": 4, "freecopy_keeps": [0.3], "threads": 2, "kvtrain": "test"}
    dump(meta, os.path.join(out, "eval", "meta.json"))
    for i in range(N):
        full = 1.0 + 0.3 * math.sin(i)
        cont = 2.0 + 0.2 * math.cos(i)
        fc = lambda rate: ({"generated": 512, "copy_prefix": int(512 * rate), "match_rate": rate,
                            "decode_seconds": 2.0, "decode_gate_seconds": 0.02, "evictions": 3}
                           if freecopy and i < 4 else None)
        rs = [result("full", 1.0, full, cont, True, fc(0.9))]
        for k in KEEPS:
            g = full + gates_rec_offset + noise(i, 0.001)
            miss = needle_miss is not None and k == 0.3 and i == needle_miss
            rs.append(result("gates", k, g, cont + 0.01, not miss, fc(0.8) if k == 0.3 else None))
            rs.append(result("kvzip", k, full + 0.005, cont + 0.005, True))
            rs.append(result("snapkv", k, g + noise(i, snapkv_noise), cont + 0.02, True))
            rs.append(result("streaming", k, g - 0.5, cont + 0.1, i % 2 == 0, fc(0.5) if k == 0.3 else None))
            rs.append(result("random", k, full + 1.0, cont + 1.0, i % 4 == 0, fc(0.1) if k == 0.3 else None))
        rec = {"context": i, "tokens": 1024, "depth": [0.1, 0.5, 0.9][i % 3], "needle_position": 100,
               "answer": "48213", "no_context": {"needle_correct": i == 0, "needle_output": "1"},
               "oracle_seconds": 2.0, "results": rs}
        dump(rec, os.path.join(out, "eval", f"ctx_{i:05d}.json"))
    if memory:
        dump([{"policy": "gates", "keep": k, "context": 4096, "entries_kept": int(k * 368640),
                    "entries_total": 368640, "kv_alloc_bytes": int(k * 2 ** 27), "kv_peak_bytes": int(k * 2 ** 27),
                    "vmhwm_bytes": 2 ** 30} for k in (1.0, 0.5, 0.3, 0.2, 0.1)],
                  os.path.join(out, "memory.json"))
    if metrics:
        os.makedirs(os.path.join(out, "gates"))
        with open(os.path.join(out, "gates", "metrics.jsonl"), "w") as f:
            for s in (1, 2):
                f.write(json.dumps({"kind": "train", "step": s, "loss": 0.5 / s, "lr": 0.2, "tokens_seen": 1024 * s,
                                    "tokens_per_s": 1000.0, "step_time_s": 1.0}) + "\n")
            f.write(json.dumps({"kind": "eval", "step": 2, "val_loss": 0.3, "accuracy": 0.97, "recall": 0.8,
                                "target_density": 0.05, "target_mean": 0.01, "contexts": 16,
                                "tokens_seen": 2048}) + "\n")
        with open(os.path.join(out, "gates", "config.yaml"), "w") as f:
            f.write('gates:\n  steps: 2\n  lr: 0.2\n  optimizer: sgd\n  schedule: kvzip\n  context: 1024\n'
                    '  repeat_prompt: "\\nRepeat\\n"\n')


def study_dir(out, name, policies, keeps, tasks):
    """Another study directory OUT/name with its meta.json (one thread); returns its path."""
    d = os.path.join(out, name)
    os.makedirs(d)
    dump({"policies": policies, "keeps": keeps, "tasks": tasks, "threads": 1}, os.path.join(d, "meta.json"))
    return d


def run_report(out, docs):
    p = subprocess.run([sys.executable, REPORT, out, "--docs", docs], capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"kvzip_report.py failed:\n{p.stdout}\n{p.stderr}")
    return json.loads(read(os.path.join(out, "summary.json"))), read(os.path.join(docs, "kvzip_smollm2.md"))


def paired_expected(a, b):
    d = [x - y for x, y in zip(a, b)]
    m = sum(d) / len(d)
    return m, math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1) / len(d))


class KvzipReport(unittest.TestCase):
    def test_known_values_and_verdicts(self):
        with tempfile.TemporaryDirectory() as t:
            out, docs = os.path.join(t, "run"), os.path.join(t, "docs")
            make_study(out)
            s, md = run_report(out, docs)
            self.assertEqual(s["contexts"], N)
            # (b): gates - kvzip = 0.005 + noise, paired SE from the noise alone
            full = [1.0 + 0.3 * math.sin(i) for i in range(N)]
            g = [f + 0.01 + noise(i, 0.001) for i, f in enumerate(full)]
            m, se = paired_expected(g, [f + 0.005 for f in full])
            b = s["b_close_to_kvzip"]["per_keep"]["0.30"]
            self.assertAlmostEqual(b["mean"], m, places=9)
            self.assertAlmostEqual(b["se"], se, places=9)
            self.assertEqual(b["n"], N)
            self.assertEqual(b["verdict"], "holds")
            self.assertEqual(s["b_close_to_kvzip"]["verdict"], "holds")
            # (a) at keep 0.3: reconstruction +0.01 (SE ~3e-4), needle identical -> holds; no 0.4
            a = s["a_near_lossless_30_40"]
            self.assertEqual(list(a["per_keep"]), ["0.3"])
            self.assertEqual(a["verdict"], "holds")
            self.assertAlmostEqual(a["per_keep"]["0.3"]["reconstruction_nll"]["mean"], 0.01, places=9)
            self.assertEqual(a["per_keep"]["0.3"]["needle"]["mean"], 0.0)
            # (c): random +1 behind -> holds; streaming (gates - 0.5) -> fails; snapkv (zero-mean) -> unresolved
            c = s["c_ahead_of_baselines"]["per_keep"]
            for k in ("0.50", "0.30", "0.20"):
                self.assertEqual(c[f"random@{k}"]["verdict"], "holds")
                self.assertEqual(c[f"streaming@{k}"]["verdict"], "fails")
                self.assertEqual(c[f"snapkv@{k}"]["verdict"], "unresolved")
                self.assertAlmostEqual(c[f"streaming@{k}"]["mean"], 0.5, places=9)
                self.assertAlmostEqual(c[f"snapkv@{k}"]["mean"], 0.0, places=9)
            self.assertEqual(s["c_ahead_of_baselines"]["verdict"], "fails")
            # (d): 0.005 / 1.0 of prefill, 0.02 / 2.0 of decode
            d = s["d_gate_overhead"]
            self.assertAlmostEqual(d["prefill_share"], 0.005, places=9)
            self.assertAlmostEqual(d["decode_share"], 0.01, places=9)
            self.assertEqual(d["verdict"], "holds")
            # random's paired SE of reconstruction is 0 (a constant +1), streaming's is the noise's:
            # the largest paired SE is snapkv's
            self.assertTrue(s["all_paired_se_le_0.02"])
            self.assertLess(s["max_paired_se"], 0.02)
            self.assertEqual(s["paired_se_above_0.02"], [])
            self.assertNotIn("above 0.02", md)
            # gates' and kvzip's alone: gates' reconstruction noise (kvzip and the continuations are
            # constant offsets)
            full_ = [1.0 + 0.3 * math.sin(i) for i in range(N)]
            _, se_g = paired_expected([f + 0.01 + noise(i, 0.001) for i, f in enumerate(full_)], full_)
            self.assertAlmostEqual(s["max_paired_se_gates_kvzip"], se_g, places=9)
            self.assertGreater(s["max_paired_se"], s["max_paired_se_gates_kvzip"])
            # of the claims' differences: gates - snapkv's zero-mean noise is the largest
            g_ = [f + 0.01 + noise(i, 0.001) for i, f in enumerate(full_)]
            _, se_c = paired_expected(g_, [x + noise(i, 0.002) for i, x in enumerate(g_)])
            self.assertAlmostEqual(s["max_paired_se_claims"], se_c, places=9)
            # the tables: full's mean ± SE, and gates' paired difference in the reconstruction table
            fm = sum(full) / N
            fse = math.sqrt(sum((x - fm) ** 2 for x in full) / (N - 1) / N)
            self.assertIn(f"| full | 1.00 | {N} | {fm:.4f} ± {fse:.4f} |", md)
            gm = sum(g) / N
            gse = math.sqrt(sum((x - gm) ** 2 for x in g) / (N - 1) / N)
            m, se = paired_expected(g, full)
            self.assertIn(f"| gates | 0.30 | {N} | {gm:.4f} ± {gse:.4f} ({m:+.4f} ± {se:.4f}) |", md)
            # needle: binomial SE of random (1 in 4 correct), the ceiling and the floor
            self.assertIn(f"{100 * 0.25:.1f}% ± {100 * math.sqrt(0.25 * 0.75 / N):.1f}", md)
            self.assertIn("Full-cache ceiling: 100.0% ± 0.0", md)
            self.assertIn(f"no-context floor (the question without the context): {100 / N:.1f}%", md)
            self.assertIn("| gates | 1.00 | 4096 |", md)
            self.assertIn("## Claims", md)
            self.assertIn("recall of the true top 30% 0.8000", md)
            for name in ("reconstruction", "continuation", "needle", "freecopy"):
                png = os.path.join(docs, "figures", f"kvzip_{name}.png")
                self.assertTrue(os.path.getsize(png) > 1000, png)
                with open(png, "rb") as f:
                    self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_fails_and_unresolved(self):
        with tempfile.TemporaryDirectory() as t:
            # gates 0.2 nats behind full: (a) fails; (b) |gates - kvzip| = 0.195 fails
            out, docs = os.path.join(t, "run"), os.path.join(t, "docs")
            make_study(out, gates_rec_offset=0.2)
            s, _ = run_report(out, docs)
            self.assertEqual(s["a_near_lossless_30_40"]["per_keep"]["0.3"]["reconstruction_nll"]["verdict"], "fails")
            self.assertEqual(s["a_near_lossless_30_40"]["verdict"], "fails")
            self.assertEqual(s["b_close_to_kvzip"]["verdict"], "fails")
            # one needle miss in 40 at keep 0.3: -2.5 points ± 2.5 -> unresolved
            out2 = os.path.join(t, "run2")
            make_study(out2, needle_miss=7)
            s, _ = run_report(out2, docs)
            n = s["a_near_lossless_30_40"]["per_keep"]["0.3"]["needle"]
            self.assertAlmostEqual(n["mean"], -1 / N, places=9)
            self.assertAlmostEqual(n["se"], math.sqrt((1 / N) * (1 - 1 / N) * N / (N - 1) / N), places=9)
            self.assertEqual(n["verdict"], "unresolved")
            self.assertEqual(s["a_near_lossless_30_40"]["verdict"], "unresolved")
            # snapkv's reconstruction spread 100x: its paired SE (and only its) above 0.02, named
            out3 = os.path.join(t, "run3")
            make_study(out3, snapkv_noise=0.2)
            s, md = run_report(out3, docs)
            full = [1.0 + 0.3 * math.sin(i) for i in range(N)]
            snap = [f + 0.01 + noise(i, 0.001) + noise(i, 0.2) for i, f in enumerate(full)]
            _, se = paired_expected(snap, full)
            # ... and so is that of gates - snapkv, the difference claim (c) rests on
            _, se_c = paired_expected([f + 0.01 + noise(i, 0.001) for i, f in enumerate(full)], snap)
            above = s["paired_se_above_0.02"]
            self.assertEqual([(a["policy"], a["keep"], a["task"], a["n"]) for a in above],
                             [("gates − snapkv", k, "reconstruction", N) for k in KEEPS] +
                             [("snapkv", k, "reconstruction", N) for k in KEEPS])
            for a in above:
                self.assertAlmostEqual(a["se"], se_c if a["policy"].startswith("gates") else se, places=9)
            self.assertAlmostEqual(s["max_paired_se_claims"], se_c, places=9)
            self.assertFalse(s["all_paired_se_le_0.02"])
            self.assertIn(f"above 0.02: gates − snapkv@0.50 reconstruction {se_c:.4f} (n = {N}); ", md)
            self.assertIn(f"; snapkv@0.50 reconstruction {se:.4f} (n = {N})", md)

    def test_pools_study_directories(self):
        with tempfile.TemporaryDirectory() as t:
            out, docs = os.path.join(t, "run"), os.path.join(t, "docs")
            make_study(out)
            # a second directory: needles of full and gates on 9 more contexts (all wrong for gates at
            # 0.3), and context 0 again with other values, which the first directory's record beats
            extra = study_dir(out, "eval_needles", ["full", "gates"], [0.3, 0.1], ["needle"])
            for i in [0] + list(range(N, N + 9)):
                rs = [result("full", 1.0, None, None, True)] + [
                    result("gates", k, None, None, i == 0) for k in (0.3, 0.1)]
                if i == 0:
                    rs[0]["reconstruction_nll"] = 99.0
                dump({"context": i, "tokens": 1024, "depth": [0.1, 0.5, 0.9][i % 3], "no_context":
                      {"needle_correct": False, "needle_output": "1"}, "results": rs},
                     os.path.join(extra, f"ctx_{i:05d}.json"))
            # a full-cache-only directory: its keeps are 1.0 whatever --keep said
            only_full = study_dir(out, "eval_full", ["full"], [0.3], ["needle"])
            dump({"context": 0, "tokens": 1024, "depth": 0.1, "results": [result("full", 1.0, 50.0, None, False)]},
                 os.path.join(only_full, "ctx_00000.json"))
            s, md = run_report(out, docs)
            self.assertEqual(s["contexts"], N + 9)
            self.assertIn("`eval_full`: 1 contexts (0–0); policies full; keeps 1.0; tasks needle", md)
            self.assertNotIn("50.0000", md)   # eval's own context 0 comes first
            n = s["a_near_lossless_30_40"]["per_keep"]["0.3"]["needle"]
            self.assertEqual(n["n"], N + 9)
            self.assertAlmostEqual(n["mean"], -9 / (N + 9), places=9)
            # reconstruction still pairs over the first directory's N contexts, its context 0 kept
            self.assertEqual(s["a_near_lossless_30_40"]["per_keep"]["0.3"]["reconstruction_nll"]["n"], N)
            self.assertEqual(s["b_close_to_kvzip"]["per_keep"]["0.30"]["n"], N)
            self.assertIn(f"| full | 1.00 | {N} | ", md)
            self.assertIn(f"| gates | 0.10 | 10 | ", md)   # only in eval_needles: 10 needles
            self.assertIn(f"| gates | 0.30 | {N + 9} | ", md)
            self.assertIn(f"`eval_needles`: 10 contexts (0–{N + 8}); policies full, gates; keeps 0.3, 0.1; "
                          f"tasks needle; 1 thread(s)", md)
            self.assertIn("keep ratios 0.5, 0.3, 0.2, 0.1", md)
            self.assertIn("`eval`: 40 contexts (0–39); policies full, kvzip, gates", md)
            self.assertNotIn("99.0", md)

    def test_pools_fields_of_one_condition(self):
        # contexts N..N+4: full's reconstruction in one directory, its needles in a later one (name
        # order), gates' reconstruction in a third: each field of a result from the first directory
        # where it is not null, so full pairs with gates on N + 5 contexts and keeps its needles
        with tempfile.TemporaryDirectory() as t:
            out, docs = os.path.join(t, "run"), os.path.join(t, "docs")
            make_study(out)
            extra = list(range(N, N + 5))
            for name, policy, keep, rec, needle in [("eval_full_more", "full", 1.0, 1.0, None),
                                                     ("eval_full_needles", "full", 1.0, None, False),
                                                     ("eval_gates_more", "gates", 0.3, 1.5, None)]:
                d = study_dir(out, name, [policy], [keep], ["x"])
                for i in extra:
                    dump({"context": i, "tokens": 1024, "depth": [0.1, 0.5, 0.9][i % 3],
                          "results": [result(policy, keep, rec, None, needle)]}, os.path.join(d, f"ctx_{i:05d}.json"))
            s, md = run_report(out, docs)
            r = s["a_near_lossless_30_40"]["per_keep"]["0.3"]["reconstruction_nll"]
            self.assertEqual(r["n"], N + 5)
            full = [1.0 + 0.3 * math.sin(i) for i in range(N)] + [1.0] * 5
            gates = [f + 0.01 + noise(i, 0.001) for i, f in enumerate(full[:N])] + [1.5] * 5
            m, se = paired_expected(gates, full)
            self.assertAlmostEqual(r["mean"], m, places=9)
            self.assertAlmostEqual(r["se"], se, places=9)
            # full's needles: N right in eval, 5 wrong from eval_full_needles beside eval_full_more's nulls
            self.assertIn(f"| full | 1.00 | {N + 5} | ", md)
            self.assertIn(f"Full-cache ceiling: {100 * N / (N + 5):.1f}%", md)

    def test_keeps_of_the_gates_alone_leave_the_comparisons_alone(self):
        # gates at keep 0.4 with no baseline there: (b) and (c) compare the keeps both have and
        # still hold; (a) also judges keep 0.4
        with tempfile.TemporaryDirectory() as t:
            out, docs = os.path.join(t, "run"), os.path.join(t, "docs")
            make_study(out)
            d = study_dir(out, "eval_gates_extra", ["gates"], [0.4], ["x"])
            for i in range(N):
                full = 1.0 + 0.3 * math.sin(i)
                dump({"context": i, "tokens": 1024, "depth": [0.1, 0.5, 0.9][i % 3],
                      "results": [result("gates", 0.4, full + 0.005, 2.0, True)]}, os.path.join(d, f"ctx_{i:05d}.json"))
            s, md = run_report(out, docs)
            self.assertEqual(sorted(s["b_close_to_kvzip"]["per_keep"]), ["0.20", "0.30", "0.50"])
            self.assertEqual(s["b_close_to_kvzip"]["verdict"], "holds")
            self.assertEqual(len(s["c_ahead_of_baselines"]["per_keep"]), 9)
            self.assertNotIn("snapkv@0.40", s["c_ahead_of_baselines"]["per_keep"])
            a4 = s["a_near_lossless_30_40"]["per_keep"]["0.4"]["reconstruction_nll"]
            self.assertAlmostEqual(a4["mean"], 0.005, places=9)
            self.assertEqual(a4["verdict"], "holds")
            self.assertIn("| gates | 0.40 | 40 | ", md)

    def test_figures_plot_paired_differences(self):
        # full alone on 5 more contexts with a far other loss: its plain mean moves, the figure's
        # points (paired over the contexts each policy shares with full) do not
        sys.path.insert(0, os.path.join(SRC, "tools"))
        import kvzip_report
        with tempfile.TemporaryDirectory() as t:
            out = os.path.join(t, "run")
            make_study(out)
            d = study_dir(out, "eval_full_more", ["full"], [1.0], ["reconstruction"])
            for i in range(N, N + 5):
                dump({"context": i, "tokens": 1024, "depth": 0.1, "results": [result("full", 1.0, 9.0, None, None)]},
                     os.path.join(d, f"ctx_{i:05d}.json"))
            _, _, cond, _ = kvzip_report.load(out)
            full, series = kvzip_report.figure_series(cond, "reconstruction_nll", "mean", diff=True)
            self.assertEqual(full, (0.0, 0.0))
            full_rec = [1.0 + 0.3 * math.sin(i) for i in range(N)]
            m, se = paired_expected([f + 0.005 for f in full_rec], full_rec)
            k = dict((x, (y, e)) for x, y, e in series["kvzip"])
            self.assertAlmostEqual(k[0.3][0], m, places=9)
            self.assertAlmostEqual(k[0.3][1], se, places=9)
            plain, _ = kvzip_report.figure_series(cond, "reconstruction_nll", "mean")
            self.assertGreater(plain[0], 1.5)   # the extra contexts pull the plain mean of full up

    def test_missing_pieces(self):
        with tempfile.TemporaryDirectory() as t:
            out, docs = os.path.join(t, "run"), os.path.join(t, "docs")
            make_study(out, memory=False, freecopy=False, metrics=False)
            s, md = run_report(out, docs)
            self.assertIn("### Memory (one process per keep ratio, gates)\n\nnot run", md)
            self.assertIn("### Free copy: match rate (share of the generated tokens that match the context)\n\nnot run", md)
            self.assertIn("### Gate training\n\nnot run", md)
            self.assertIsNone(s["d_gate_overhead"]["decode_share"])
            self.assertTrue(os.path.exists(os.path.join(docs, "figures", "kvzip_freecopy.png")))
            # a record that is not one: a one-line error naming the file
            bad = os.path.join(out, "eval", "ctx_09999.json")
            dump({"results": [{"keep": 0.3}]}, bad)
            p = subprocess.run([sys.executable, REPORT, out, "--docs", docs], capture_output=True, text=True)
            self.assertNotEqual(p.returncode, 0)
            self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
            self.assertIn(bad, p.stderr)
            os.remove(bad)
            # nothing evaluated at all
            empty, docs2 = os.path.join(t, "empty"), os.path.join(t, "docs2")
            os.makedirs(empty)
            s, md = run_report(empty, docs2)
            self.assertEqual(s["contexts"], 0)
            for claim in ("a_near_lossless_30_40", "b_close_to_kvzip", "c_ahead_of_baselines", "d_gate_overhead"):
                self.assertEqual(s[claim]["verdict"], "not run", claim)
            for name in ("reconstruction", "continuation", "needle", "freecopy"):
                self.assertTrue(os.path.exists(os.path.join(docs2, "figures", f"kvzip_{name}.png")))


if __name__ == "__main__":
    unittest.main()
