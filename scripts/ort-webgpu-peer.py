#!/usr/bin/env python3
"""onnxruntime's WebGPU execution provider beside `lookalike bench`, on the same adapter.

ORT WebGPU (Dawn: Vulkan on Linux, Metal, D3D12) is one of the GPU peers the project means
to beat. This runs the ResNet50 that lookalike runs (the ONNX graph of
tests/reference/onnx_reference.py, built from the same safetensors file) and a matmul
1024^3, every node on the WebGPU provider (CPU fallback disabled), timed as lookalike's
bench times them: each ResNet50 run hands a host batch to the session and gets the
features back; warm-up runs first. It also reports how far the WebGPU features are from
onnxruntime's CPU provider (relative L2), so a fast but wrong run shows.

Prints one JSON line per result, as soon as it is measured.

    python3 -m venv target/ortweb-venv
    target/ortweb-venv/bin/pip install onnxruntime-webgpu numpy onnx safetensors
    lookalike weights random --seed 0 -o /tmp/w0.safetensors
    target/ortweb-venv/bin/python scripts/ort-webgpu-peer.py --weights /tmp/w0.safetensors [--quick]

FLOPs count a multiply-add as two (8.17 GFLOP of convolutions per 224x224 image, as
lookalike counts them).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
from peer_timing import RESNET50_224_FLOPS, median_secs


def session(ort, model, provider, constant_folding=True):
    # The onnx package may write a newer IR version than this onnxruntime reads; the graph
    # uses nothing newer than IR 8 (opset 17).
    model.ir_version = min(model.ir_version, 8)
    opts = ort.SessionOptions()
    if provider != "CPUExecutionProvider":
        # Every node on the named provider: a silent CPU fallback would time the wrong thing.
        opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    # A graph of constants would otherwise be computed once, at load, on the CPU.
    disabled = [] if constant_folding else ["ConstantFolding"]
    return ort.InferenceSession(model.SerializeToString(), opts, providers=[provider], disabled_optimizers=disabled)


def emit(ort, kind, row):
    print(json.dumps({"peer": f"onnxruntime-webgpu {ort.__version__}", kind: row}), flush=True)


def resnet50(ort, weights, batches, reps):
    from onnx_reference import build_model
    from safetensors.numpy import load_file

    start = time.perf_counter()
    model = build_model(load_file(weights))
    gpu = session(ort, model, "WebGpuExecutionProvider")
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224), dtype=np.float32)
    gpu.run(None, {"input": x})
    emit(ort, "cold_start_ms", (time.perf_counter() - start) * 1e3)
    cpu = session(ort, model, "CPUExecutionProvider")
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224), dtype=np.float32)
        features = gpu.run(None, {"input": x})[0]
        expected = cpu.run(None, {"input": x})[0]
        rel_l2 = float(np.linalg.norm(features - expected) / np.linalg.norm(expected))
        secs = median_secs(reps, lambda: gpu.run(None, {"input": x}))
        emit(ort, "resnet50", {"device": "onnxruntime-webgpu", "batch": batch, "resolution": 224,
                               "img_per_s": batch / secs,
                               "gflop_per_s": batch * RESNET50_224_FLOPS / secs / 1e9,
                               "rel_l2_vs_ort_cpu": rel_l2})


def matmul(ort, reps):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = 1024
    rng = np.random.default_rng(2)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    # The operands live in the graph (uploaded once) and the product is summed on the GPU, so
    # a run moves 4 bytes: close to lookalike's submit-and-wait timing. The sum reads 4 MB,
    # microseconds on a GPU beside the product's 2.1 GFLOP. (This package's Python API cannot
    # place inputs on the WebGPU device.)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"]),
         helper.make_node("ReduceSum", ["c"], ["total"], keepdims=0)],
        "matmul", [], [helper.make_tensor_value_info("total", TensorProto.FLOAT, [])],
        initializer=[numpy_helper.from_array(a, "a"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    gpu = session(ort, model, "WebGpuExecutionProvider", constant_folding=False)
    for _ in range(3):
        gpu.run(None, {})
    secs = median_secs(reps, lambda: gpu.run(None, {}))
    total = float(gpu.run(None, {})[0])
    expected = float((a.astype(np.float64) @ b.astype(np.float64)).sum())
    emit(ort, "matmul", {"device": "onnxruntime-webgpu", "m": n, "n": n, "k": n,
                         "gflop_per_s": 2 * n**3 / secs / 1e9,
                         "sum": total, "sum_float64": expected})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="ResNet50 safetensors (torchvision names)")
    p.add_argument("--quick", action="store_true", help="batch 1 and 8 only")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--only", choices=["resnet50", "matmul"])
    args = p.parse_args()
    import onnxruntime as ort

    if "WebGpuExecutionProvider" not in ort.get_available_providers():
        sys.exit(f"this onnxruntime ({ort.__version__}) has no WebGPU provider: pip install onnxruntime-webgpu")
    if args.only != "matmul":
        # Batch 32 (the ResNet50 target's) before 8, in case a lent GPU's time runs out.
        resnet50(ort, args.weights, [1, 8] if args.quick else [1, 32, 8], args.reps)
    if args.only != "resnet50":
        matmul(ort, max(args.reps, 10))


if __name__ == "__main__":
    main()
