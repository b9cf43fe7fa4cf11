#!/usr/bin/python3
"""Markdown for the README's performance section, from the JSON files bench/run_all.sh writes.

Usage: report.py RESULTS_DIR   (prints the markdown; missing results are left out)
Reads tape.json, train.json, wgan.json, inference.json, compile.json and the text output of
bench_gemm (gemm.txt, gemm_skylakex.txt, gemm_threads2.txt) when present.
"""
import json
import os
import sys


def load(d, name):
    p = os.path.join(d, name)
    if not os.path.exists(p):
        return None
    try:
        with open(p) as f:
            return json.load(f)
    except ValueError as e:
        print("report.py: %s: %s" % (p, e), file=sys.stderr)
        return None


def us(s):
    return "%.1f" % (s * 1e6)


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "."
    out = []
    machine = None
    for name in ("train.json", "wgan.json", "tape.json", "inference.json"):
        j = load(d, name)
        if j and "machine" in j:
            machine = j["machine"]
            break
    out.append("## Performance\n")
    out.append("Every figure below comes from a program in `bench/` (`bench/run_all.sh` runs them all and prints this "
               "section). Single thread; medians of repeated samples; peers run side by side in the same run, "
               "PyTorch (`/usr/bin/python3`, Debian's `python3-torch`, one thread) both as installed and tuned "
               "(`OPENBLAS_CORETYPE=SkylakeX`, glibc malloc thresholds raised with `GLIBC_TUNABLES`, and both); "
               "every ratio is against PyTorch's fastest setting.")
    if machine:
        out.append("Machine: %s, tapir ISA path %s." % (machine.get("cpu", "?"), machine.get("isa", "?")))
    mp = os.path.join(d, "machine.txt")
    if os.path.exists(mp):
        out.append("")
        out.append("```")
        out.append(open(mp).read().rstrip())
        out.append("```")
    out.append("")

    for fname, regime in (("train.json", "16 batches in turn, the regime of real training"),
                          ("train_same.json", "one batch reused: the long-run regime, subnormal gradients")):
        t = load(d, fname)
        if not t:
            continue
        out.append("### Higgs MLP training step (Adam, BCE with logits; %s; load average %s; %s time)\n"
                   % (regime, t.get("load", "?"), t.get("clock", "?").replace("_", " ")))
        out.append("| model | batch | tapir [us] | best PyTorch [us] (setting) | speedup | target | heap allocations per step |")
        out.append("|---|---:|---:|---|---:|---|---:|")
        for r in t["results"]:
            best = r.get("torch_best")
            bt = r["torch_s"][best]["median"] if best else None
            tgt = r.get("target")
            met = ""
            if tgt and "speedup" in r:
                met = ">= %gx: %s" % (tgt, "met" if r["speedup"] >= tgt else "missed")
            out.append("| 3x%d ReLU | %d | %s | %s | %s | %s | %d |" % (
                r["hidden"], r["batch"], us(r["tapir_s"]["median"]),
                ("%s (%s)" % (us(bt), best)) if best else "-",
                ("%.2fx" % r["speedup"]) if "speedup" in r else "-", met or "-", r["heap_allocations_per_step"]))
        out.append("\nPeak RSS of the whole tapir benchmark process (all networks, optimisers and tapes alive): %.1f MiB.\n"
                   % t["peak_rss_mib"])

    w = load(d, "wgan.json")
    if w:
        out.append("### WGAN-GP of examples/wgan_gp (5 critic steps with gradient penalty + 1 generator step, batch 128)\n")
        out.append("| path | median [ms] | min [ms] | max [ms] |")
        out.append("|---|---:|---:|---:|")
        out.append("| tapir | %.2f | %.2f | %.2f |" % (w["tapir_s"]["median"] * 1e3, w["tapir_s"]["min"] * 1e3, w["tapir_s"]["max"] * 1e3))
        for label, s in w.get("torch_s", {}).items():
            out.append("| PyTorch %s (%s) | %.2f | %.2f | %.2f |" % (w.get("torch", ""), label, s["median"] * 1e3, s["min"] * 1e3, s["max"] * 1e3))
        if "speedup" in w:
            out.append("\ntapir is %.2fx faster than PyTorch at its best (target >= 1.3x: %s); %d heap allocations per 5+1 step, "
                       "peak RSS %.1f MiB.\n" % (w["speedup"], "met" if w["speedup"] >= 1.3 else "missed",
                                                 w["heap_allocations_per_step"], w["peak_rss_mib"]))

    tp = load(d, "tape.json")
    if tp:
        out.append("### Tape overhead (one op on a one-element tensor, forward + backward)\n")
        line = "tapir %.1f ns per op" % tp["tape_op_ns"]["median"]
        if "torch_tape_op_ns" in tp:
            line += ", PyTorch %s %.1f ns: %.1fx (target >= 20x: %s)" % (
                tp["torch_tape_op_ns"].get("version", ""), tp["torch_tape_op_ns"]["median"], tp["speedup"],
                "met" if tp["speedup"] >= 20 else "missed")
        out.append(line + ".\n")

    inf = load(d, "inference.json")
    if inf:
        out.append("### Inference (per event)\n")
        out.append("| model | path | batch 1 [us] | batched [ns] |")
        out.append("|---|---|---:|---:|")
        for r in inf["results"]:
            for p in r["paths"]:
                b1, bb = p.get("batch1_s"), p.get("batched_s_per_event")
                out.append("| %s | %s | %s | %s |" % (r["model"], p["path"], "%.3f" % (b1 * 1e6) if b1 is not None else "-",
                                                      "%.1f" % (bb * 1e9) if bb is not None else "-"))
        out.append("")

    for name, title in (("gemm_skylakex.txt", "GEMM (OpenBLAS with OPENBLAS_CORETYPE=SkylakeX)"), ("gemm.txt", "GEMM (OpenBLAS as installed)"),
                        ("gemm_threads2.txt", "GEMM, two threads each (speed-up over each library's own one thread)")):
        p = os.path.join(d, name)
        if os.path.exists(p):
            out.append("### %s\n" % title)
            out.append("```")
            out.append(open(p).read().rstrip())
            out.append("```\n")

    c = load(d, "compile.json")
    if c:
        out.append("### Compile time at -O2 (%s; compiler CPU time, median of %d)\n" % (c["compiler"], c["repeats"]))
        out.append("| file includes | median [s] | target |")
        out.append("|---|---:|---|")
        for key, label, tgt in (("tapir_hpp_s", "`<tapir/tapir.hpp>`", 2.0), ("deploy_hpp_s", "`<tapir/deploy/deploy.hpp>`", 0.5)):
            m = c[key]["median"]
            out.append("| %s | %.2f | < %g s: %s |" % (label, m, tgt, "met" if m < tgt else "missed"))
        cs = c.get("course_s")
        if cs:
            for key, label in (("include", "course classifier, include/, header-only"),
                               ("include_extern", "course classifier, include/, `TAPIR_EXTERN_TEMPLATES`"),
                               ("single", "course classifier, single header, header-only"),
                               ("single_extern", "course classifier, single header, `TAPIR_EXTERN_TEMPLATES`")):
                m = cs[key]["median"]
                out.append("| %s | %.2f | < 5 s: %s |" % (label, m, "met" if m < 5.0 else "missed"))
            out.append("| (once per program: `TAPIR_INSTANTIATE_KERNELS` file) | %.2f | |" % cs["kernels_once"])
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
