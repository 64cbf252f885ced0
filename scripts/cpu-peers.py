#!/usr/bin/env python3
"""The CPU peers that `lookalike bench` is compared with, timed on this machine.

onnxruntime (CPU execution provider, all graph optimisations) runs the same ResNet50 as
lookalike (the ONNX graph of tests/reference/onnx_reference.py, built from a safetensors
file); faiss-cpu IndexFlatIP runs the exact inner-product k-NN scan. Prints one JSON object
shaped like `lookalike bench --json` (resnet50 and knn rows) so the two can be set side by
side.

    pip install numpy safetensors onnx onnxruntime faiss-cpu
    cargo run --release -- weights random --seed 0 -o /tmp/w0.safetensors
    python3 scripts/cpu-peers.py --weights /tmp/w0.safetensors [--quick]

FLOPs count a multiply-add as two (8.17 GFLOP of convolutions per 224x224 image, as
lookalike counts them);
GB/s count the bytes of the reference matrix read per scan.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
from peer_timing import RESNET50_224_FLOPS, median_secs


def bench_ort(weights, batches, reps):
    import onnxruntime as ort
    from onnx_reference import build_model
    from safetensors.numpy import load_file

    model = build_model(load_file(weights))
    sess = ort.InferenceSession(model.SerializeToString(), ort.SessionOptions(),
                                providers=["CPUExecutionProvider"])
    rows = []
    for batch in batches:
        x = np.random.default_rng(1).standard_normal((batch, 3, 224, 224), dtype=np.float32)
        secs = median_secs(reps, lambda: sess.run(None, {"input": x}))
        rows.append({"device": "onnxruntime-cpu", "version": ort.__version__, "batch": batch,
                     "resolution": 224, "img_per_s": batch / secs,
                     "gflop_per_s": batch * RESNET50_224_FLOPS / secs / 1e9})
    return rows


def bench_faiss(n, d, k, queries_list, reps):
    import faiss

    rng = np.random.default_rng(2)
    refs = rng.standard_normal((n, d), dtype=np.float32)
    refs /= np.linalg.norm(refs, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(d)
    index.add(refs)
    rows = []
    for q in queries_list:
        queries = refs[rng.integers(0, n, q)] + 0.01
        secs = median_secs(reps, lambda: index.search(queries, k))
        rows.append({"device": "faiss-cpu IndexFlatIP", "version": faiss.__version__, "n": n, "d": d,
                     "queries": q, "k": k, "dtype": "f32", "ms": secs * 1e3,
                     "gb_per_s": n * d * 4 / secs / 1e9})
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="ResNet50 safetensors (torchvision names)")
    p.add_argument("--quick", action="store_true", help="batch 1 and 8 only, fewer repetitions")
    p.add_argument("--knn-rows", type=int, default=100_000)
    args = p.parse_args()
    reps = 3 if args.quick else 7
    out = {
        "threads": os.cpu_count(),
        "resnet50": bench_ort(args.weights, [1, 8] if args.quick else [1, 8, 32], reps),
        "knn": bench_faiss(args.knn_rows, 2048, 10, [1, 64], reps),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
