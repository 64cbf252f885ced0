#!/usr/bin/env python3
"""Independent ResNet50 feature reference: an ONNX graph run by onnxruntime (CPU).

A development tool and a CI check (.ci/peer-checks), not run by cargo. It
rebuilds torchvision's ResNet50 (v1.5: the stride sits on the 3x3 conv) feature
extractor from a safetensors state dict with torchvision names, straight from
torchvision's definition and independently of lookalike's own code, then checks
lookalike's features against it.

Needs only PyPI packages:  pip install numpy safetensors onnx onnxruntime

Usage:
    lookalike weights random --seed 5 -o w.safetensors
    lookalike embed --weights w.safetensors --input-npy x.npy -o gpu.npy
    lookalike embed --weights w.safetensors --input-npy x.npy -o cpu.npy --cpu
    python3 tests/reference/onnx_reference.py --weights w.safetensors --input x.npy \\
        --compare gpu.npy --compare cpu.npy [--output ort.npy] [--ort-disable-optimizations]

x.npy is N x 3 x H x W float32 (NCHW, already normalised); features are N x 2048.
For each compared file it prints, per image, the relative L2 error ||a-b||/||b||
(b = onnxruntime), the same for batch-centred features (the batch mean row
subtracted from both; needs N >= 2), and the max abs difference. It exits 1 if any
per-image relative L2 exceeds --tol (1e-4) or any centred one exceeds
--tol-centred (1e-3).

Why centred: with random weights the batch mean carries ~99.99% of each feature
vector's norm, so raw relative errors hide errors in the part that tells images
apart. Two fp32 onnxruntime paths (fused vs unfused) differ by ~1e-7 raw and a
few 1e-5 centred; a correct fp32 port should land near that.

--tap NAME (e.g. "layer2.0", "stem", "maxpool") makes the graph stop at that
tensor and writes it (NCHW) to --output instead of the features: useful to find
the layer where a port diverges.
"""
import argparse
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

BN_EPS = 1e-5
# (stage, planes, blocks, stride of the first block)
STAGES = [(1, 64, 3, 1), (2, 128, 4, 2), (3, 256, 6, 2), (4, 512, 3, 2)]


class GraphBuilder:
    """Accumulates ONNX nodes and initializers taken from a torchvision state dict."""

    def __init__(self, weights):
        self.w = weights
        self.nodes, self.inits, self.used = [], [], set()

    def param(self, name):
        if name not in self.used:
            self.used.add(name)
            self.inits.append(numpy_helper.from_array(
                np.ascontiguousarray(self.w[name], dtype=np.float32), name))
        return name

    def node(self, op, inputs, out, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x, prefix, stride=1):
        w = self.w[prefix + ".weight"]
        k = w.shape[2]
        return self.node("Conv", [x, self.param(prefix + ".weight")], prefix + ".out",
                         kernel_shape=[k, k], strides=[stride, stride],
                         pads=[k // 2] * 4)  # 7x7 pad 3, 3x3 pad 1, 1x1 pad 0

    def bn(self, x, prefix):
        ins = [x] + [self.param(f"{prefix}.{p}")
                     for p in ("weight", "bias", "running_mean", "running_var")]
        return self.node("BatchNormalization", ins, prefix + ".out", epsilon=BN_EPS)

    def relu(self, x):
        return self.node("Relu", [x], x + ".relu")


def bottleneck(g, x, prefix, stride, has_downsample):
    out = g.relu(g.bn(g.conv(x, prefix + ".conv1"), prefix + ".bn1"))
    out = g.relu(g.bn(g.conv(out, prefix + ".conv2", stride), prefix + ".bn2"))
    out = g.bn(g.conv(out, prefix + ".conv3"), prefix + ".bn3")
    identity = x
    if has_downsample:
        identity = g.bn(g.conv(x, prefix + ".downsample.0", stride), prefix + ".downsample.1")
    return g.node("Relu", [g.node("Add", [out, identity], prefix + ".add")], prefix)


def build_model(weights, tap=None):
    """ResNet50 up to the 2048-d pooled features, or up to the tensor named `tap`."""
    g = GraphBuilder(weights)
    taps = {}
    x = g.relu(g.bn(g.conv("input", "conv1", stride=2), "bn1"))
    taps["stem"] = x
    x = g.node("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
    taps["maxpool"] = x
    for stage, _planes, blocks, stride in STAGES:
        for i in range(blocks):
            x = bottleneck(g, x, f"layer{stage}.{i}", stride if i == 0 else 1, i == 0)
            taps[x] = x
    x = g.node("GlobalAveragePool", [x], "avgpool")
    x = g.node("Flatten", [x], "features", axis=1)
    taps["features"] = x
    if tap and tap not in taps:
        sys.exit(f"unknown --tap {tap!r}; one of: {', '.join(taps)}")
    out = taps[tap] if tap else x
    out_shape = ["N", 2048] if out == "features" else ["N", "C", "h", "w"]
    graph = helper.make_graph(
        g.nodes, "resnet50_features",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
        initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run_ort(model, x, disable_optimizations=False):
    opts = ort.SessionOptions()
    if disable_optimizations:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def rel_l2_rows(a, b):
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


def compare(name, a, b, tol, tol_centred):
    """Prints the error report for features `a` against reference `b`; True if within tolerances."""
    if a.shape != b.shape:
        print(f"{name}: shape {a.shape} != reference {b.shape}")
        return False
    a, b = a.astype(np.float64), b.astype(np.float64)
    raw = rel_l2_rows(a, b)
    ok = bool(np.all(raw <= tol)) and np.all(np.isfinite(a))
    print(f"{name}:")
    print(f"  max abs diff      {np.abs(a - b).max():.3e}  (max |ref| {np.abs(b).max():.3e})")
    print(f"  rel L2 per image  {' '.join(f'{e:.3e}' for e in raw)}  (tol {tol:g})")
    if a.shape[0] >= 2:
        ac, bc = a - a.mean(0), b - b.mean(0)
        cen = rel_l2_rows(ac, bc)
        ok = ok and bool(np.all(cen <= tol_centred))
        print(f"  centred rel L2    {' '.join(f'{e:.3e}' for e in cen)}  (tol {tol_centred:g})")
        print(f"  centred (batch)   {np.linalg.norm(ac - bc) / np.linalg.norm(bc):.3e}")
    else:
        print("  centred rel L2    n/a (batch of 1)")
    print(f"  {'OK' if ok else 'FAIL'}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", required=True, help="ResNet50 safetensors (torchvision names)")
    ap.add_argument("--input", required=True, help="N x 3 x H x W float32 .npy (NCHW)")
    ap.add_argument("--compare", action="append", default=[], help="N x 2048 .npy to check")
    ap.add_argument("--output", help="write onnxruntime's result here (.npy)")
    ap.add_argument("--tap", help="stop at this tensor (stem, maxpool, layerL.i, features)")
    ap.add_argument("--ort-disable-optimizations", action="store_true",
                    help="run ORT with graph optimisations off (no Conv+BN fusion)")
    ap.add_argument("--tol", type=float, default=1e-4, help="per-image relative L2 tolerance")
    ap.add_argument("--tol-centred", type=float, default=1e-3,
                    help="batch-centred per-image relative L2 tolerance")
    args = ap.parse_args()

    weights = load_file(args.weights)
    x = np.load(args.input)
    if x.ndim != 4 or x.shape[1] != 3:
        sys.exit(f"input must be N x 3 x H x W, got {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    ref = run_ort(build_model(weights, args.tap), x, args.ort_disable_optimizations)
    print(f"onnxruntime {ort.__version__}: input {x.shape} -> {ref.shape}"
          f"{' (optimisations off)' if args.ort_disable_optimizations else ''}")
    if args.output:
        np.save(args.output, ref)
    ok = True
    for path in args.compare:
        ok &= compare(path, np.load(path), ref, args.tol, args.tol_centred)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
