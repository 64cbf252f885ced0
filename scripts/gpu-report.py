#!/usr/bin/env python3
"""Turns the files of a GPU machine's run (`bash .gpu/run.sh`, see scripts/gpu-bench) into the
Markdown tables BENCHMARKS.md keeps: ResNet50, matmul and k-NN beside PyTorch, burn-wgpu
and ORT WebGPU on the same card, as ratios; the per-stage times and top-k's share of the
scan; the issue's targets, met or not; and the tuning `lookalike tune` chose, ready to copy
into `Tuning::for_adapter`. Files that are missing (a step that timed out) are said so.

    python3 scripts/gpu-report.py OUT_DIR [--date YYYY-MM-DD]

Standard library only.
"""
import argparse
import datetime
import json
import os

TARGET_IMG_PER_S_B32 = 2000.0  # ResNet50 224 fp32 batch 32 (issue 4)
TARGET_KNN_1M_F16_MS = 3.0  # 1M x 2048 f16, one query, top-k included
TARGET_TOPK_SHARE = 0.10  # top-k for k <= 100, against the scan


def load_json(out, name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read().strip()
    # The bench prints one object; stray lines before it (if any) are not JSON.
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                pass
    return None


def load_lines(out, name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return None
    rows = []
    with open(path) as f:
        for line in f:
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return rows


def fmt(x, digits=1):
    return "—" if x is None else f"{x:,.{digits}f}"


def ratio(a, b):
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the folder run.sh wrote ($OUT, as fetched)")
    p.add_argument("--date", default=datetime.date.today().isoformat())
    args = p.parse_args()
    out = args.out

    bench = load_json(out, "lookalike.json")
    coop = load_json(out, "coop.json")
    tune = load_json(out, "tune.json")
    torch_rows = load_lines(out, "torch.jsonl")
    burn = load_lines(out, "burn.jsonl")
    ortweb = load_lines(out, "ortweb.jsonl")
    missing = [n for n, v in [("lookalike.json", bench), ("coop.json", coop), ("tune.json", tune),
                              ("torch.jsonl", torch_rows), ("burn.jsonl", burn), ("ortweb.jsonl", ortweb)] if v is None]

    adapter = (bench or coop or {}).get("adapter", {})
    card = next((r["device"] for r in torch_rows or [] if "torch" in r), adapter.get("name", "?"))
    print(f"## {args.date} — {card}, {adapter.get('backend', '?')} ({adapter.get('driver', '?')} {adapter.get('driver_info', '')})\n")
    if missing:
        print(f"Missing (a step failed or timed out): {', '.join(missing)}.\n")
    if bench:
        print(f"Cold start {fmt(bench.get('cold_start_ms'), 0)} ms; launch shapes {json.dumps(bench['tuning']['chosen'])} "
              f"({bench['tuning']['source']}).\n")
    # bench checks every GPU result it times against the CPU reference's: figures of wrong
    # results are not figures.
    for name, report in (("lookalike.json", bench), ("coop.json", coop)):
        checks = (report or {}).get("checks")
        if checks is None:
            continue
        if checks["passed"]:
            print(f"{name}: every f32 GPU result matches the CPU reference's (matrix-unit rows carry their distance from the f32 path).\n")
        else:
            print(f"**{name}: GPU results differ from the CPU reference** — do not record its figures as valid:\n")
            print("\n".join(f"- {f}" for f in checks["failures"]) + "\n")

    # ResNet50: lookalike times upload + forward + read-back; PyTorch times the forward on
    # device-resident input (CUDA events); burn and ORT WebGPU are timed as lookalike.
    def ours(batch, kernel, source=bench):
        rows = [r for r in (source or {}).get("resnet50", []) if r["batch"] == batch and r["device"] == "gpu" and r.get("kernel") == kernel]
        return max((r["img_per_s"] for r in rows), default=None)

    def torch_img(batch, mode):
        return next((r["img_per_s"] for r in torch_rows or [] if r.get("what") == "resnet50_features" and r["batch"] == batch and r["mode"] == mode), None)

    def peer_img(rows, batch):
        return next((r["resnet50"]["img_per_s"] for r in rows or [] if "resnet50" in r and r["resnet50"]["batch"] == batch), None)

    print("### ResNet50 224, images per second\n")
    rows = []
    for batch in (1, 8, 32):
        f32 = ours(batch, "fma-f32")
        units = ours(batch, "coop-f16", coop)
        strict, tf32, fp16 = (torch_img(batch, m) for m in ("fp32_strict", "fp32_tf32", "fp16"))
        b, o = peer_img(burn, batch), peer_img(ortweb, batch)
        rows.append([batch, fmt(f32), fmt(units), fmt(strict), fmt(tf32), fmt(fp16), fmt(b), fmt(o),
                     ratio(f32, strict), ratio(units, fp16), ratio(f32, b), ratio(f32, o)])
    print(table(["batch", "lookalike f32", "lookalike matrix units (f16)", "PyTorch fp32", "PyTorch TF32", "PyTorch fp16",
                 "burn-wgpu", "ORT WebGPU", "f32 / PyTorch fp32", "units / PyTorch fp16", "f32 / burn", "f32 / ORT WebGPU"], rows))
    print("\nlookalike, burn and ORT WebGPU: host batch in, features back; PyTorch: input on the GPU, CUDA events.\n")

    print("### matmul 1024³, GFLOP/s\n")
    def kernel_name(r):
        name = {"fma-f32": "lookalike f32 (FMA)", "cpu-f32": "lookalike CPU reference", "coop-f16": "lookalike matrix units (f16)"}
        tiles = r.get("tiles")
        return name.get(r.get("kernel"), r.get("kernel", "?")) + (f" {tiles['sg_rows']}x{tiles['sg_cols']} subgroups, tile_k {tiles['tile_k']}" if tiles else "")

    # coop.json repeats the f32 and CPU rows: only its matrix-unit rows are new.
    mm = [(kernel_name(r), r["gflop_per_s"]) for r in (bench or {}).get("matmul", [])]
    mm += [(kernel_name(r), r["gflop_per_s"]) for r in (coop or {}).get("matmul", []) if r.get("kernel") == "coop-f16"]
    mm += [("burn-wgpu", r["matmul"]["gflop_per_s"]) for r in burn or [] if "matmul" in r]
    mm += [("ORT WebGPU", r["matmul"]["gflop_per_s"]) for r in ortweb or [] if "matmul" in r]
    print(table(["what", "GFLOP/s"], [[name, fmt(g)] for name, g in mm]) + "\n")

    print("### k-NN scan, top-10\n")
    knn_rows = []
    for r in (bench or {}).get("knn", []) + [r for r in (coop or {}).get("knn", []) if r.get("kernel") == "coop-f16"]:
        t = next((t for t in torch_rows or [] if t.get("what") == "knn_scan" and t["n"] == r["n"] and t["queries"] == r["queries"]
                  and t["dtype"].endswith("16" if r["dtype"] == "f16" else "32")), None)
        device = r["device"] + (" (matrix units)" if r.get("kernel") == "coop-f16" else "")
        knn_rows.append([f"{r['n']:,}", r["dtype"], r["queries"], device, fmt(r["ms"], 2), fmt(r["gb_per_s"]),
                         fmt(t["ms"], 2) if t and r["device"] == "gpu" else "—", ratio(t["ms"], r["ms"]) if t and r["device"] == "gpu" else "—"])
    print(table(["rows", "dtype", "queries", "device", "ms", "GB/s", "PyTorch ms", "PyTorch ms / lookalike ms"], knn_rows))
    print("\nPyTorch's scan: 1M rows, 1 and 256 queries (matmul + topk); rows without a match are left blank.\n")

    training = (bench or {}).get("training")
    if training:
        print("### Metric learning: training steps and embedding (recipe batch: 20 images a step)\n")
        rows = [["x".join(map(str, r["input"])), fmt(r["gflop_per_step"] * 1e3, 0), fmt(r["gpu_steps_per_s"]),
                 fmt(r["gpu_steps_per_s"] * r["gflop_per_step"]), fmt(r["cpu_steps_per_s"]), fmt(r["gpu_embed_img_per_s"], 0),
                 fmt(r["cpu_embed_img_per_s"], 0)] for r in training]
        print(table(["input", "MFLOP/step", "GPU steps/s", "GPU GFLOP/s", "CPU twin steps/s", "GPU embed img/s",
                     "CPU embed img/s"], rows))
        print("\nTarget: ≥ 1,000 GPU steps/s at 28x28x1.\n")

    stages = (bench or {}).get("stages_ms")
    if stages:
        print("### Stages of one query (ms)\n")
        print(table(list(stages), [[fmt(v, 3) for v in stages.values()]]) + "\n")
        parts = (bench or {}).get("topk_k100_parts_ms")
        if parts:
            print("Top-100 of the same scores by step (ms): " + ", ".join(f"{k.replace('_', ' ')} {fmt(v, 3)}" for k, v in parts.items()) + ".\n")

    print("### Targets\n")
    checks = []
    b32 = ours(32, "fma-f32")
    checks.append(["ResNet50 fp32 batch 32 ≥ 2,000 img/s", fmt(b32), "—" if b32 is None else ("met" if b32 >= TARGET_IMG_PER_S_B32 else "not met")])
    scan = next((r["ms"] for r in (bench or {}).get("knn", []) if r["device"] == "gpu" and r["n"] == 1_000_000 and r["dtype"] == "f16" and r["queries"] == 1), None)
    checks.append(["1M x 2048 f16, one query, ≤ 3 ms with top-k", fmt(scan, 2), "—" if scan is None else ("met" if scan <= TARGET_KNN_1M_F16_MS else "not met")])
    if stages and stages.get("score"):
        for k, ms in (("10", stages.get("topk")), ("100", (bench or {}).get("topk_k100_ms"))):
            share = None if ms is None else ms / stages["score"]
            checks.append([f"top-{k} ≤ 10% of the scan (one chunk)", "—" if share is None else f"{100 * share:.1f}%",
                           "—" if share is None else ("met" if share <= TARGET_TOPK_SHARE else "not met")])
    print(table(["target", "measured", ""], checks) + "\n")

    if tune:
        chosen = tune["report"]["tuning"]
        print(f"### `lookalike tune --batch {tune['report']['options']['batch']}`\n")
        print(f"Convolutions {fmt(tune.get('conv_ms_table'), 2)} ms with the built-in table, {fmt(tune.get('conv_ms_tuned'), 2)} ms tuned.")
        for why in tune["report"].get("rejected", []):
            print(f"- **rejected** (its result differs from the CPU reference's): {why}")
        topk = tune["report"].get("topk", [])
        if topk:
            print("Top-k (k 10 + k 100, ms): " + ", ".join(f"{t['workgroup']}: {t['k10_ms'] + t['k100_ms']:.3f}" for t in topk) + ".")
        gemv = chosen["gemv"]
        cols = chosen["min_cols_for_8x8"]
        print("\nFor `Tuning::for_adapter`:\n")
        print("```rust")
        print(f"Self {{ gemv: GemvTiles {{ workgroup: {gemv['workgroup']}, lanes: {gemv['lanes']} }}, "
              f"min_cols_for_8x8: {'None' if cols is None else f'Some({cols})'}, min_groups_for_8x8: {chosen['min_groups_for_8x8']}, "
              f"topk_workgroup: {chosen['topk_workgroup']}, ..Self::default() }}")
        print("```")


if __name__ == "__main__":
    main()
