#!/usr/bin/env python3
"""Independent reference of lookalike's metric-learning recipe, in Keras 3 on JAX.

  train DATA [--epochs 20] [--steps 1000] [--seed 0]
      Trains the Keras example's convnet on an IDX folder (Fashion-MNIST) with a jitted
      stateless train step (anchor/positive per class, logits / 0.2, sparse softmax CE, Adam
      1e-3), prints per-epoch loss, ms/step and test 10-NN precision / vote accuracy as JSON.
  forward MODEL DATA [--embeddings test.npy]
      Reads a model `lookalike train` wrote (safetensors, parsed by hand) and embeds the
      test split with numpy alone (no lookalike code), printing the same retrieval scores, so
      they can be compared with `lookalike evaluate --json`; with the .npy that
      `lookalike evaluate --embeddings` wrote, also the largest difference between the two
      sets of embeddings.

Needs numpy; `train` also needs jax and keras (KERAS_BACKEND=jax is set here).
"""
import gzip
import json
import os
import struct
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_idx(folder, split):
    def find(stem):
        for name in (stem + ".gz", stem):
            if os.path.exists(os.path.join(folder, name)):
                return os.path.join(folder, name)
        raise SystemExit(f"{folder}: no {stem}[.gz]")
    x = read_idx(find(f"{split}-images-idx3-ubyte"))
    y = read_idx(find(f"{split}-labels-idx1-ubyte"))
    return x[..., None].astype(np.float32) / 255.0, y.astype(np.int64)


def retrieval(emb, labels, k=10):
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    nn = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    same = labels[nn] == labels[:, None]
    votes = np.array([np.bincount(labels[row], minlength=labels.max() + 1).argmax() for row in nn])
    return {"precision_at_10": float(same.mean()), "vote_accuracy_at_10": float((votes == labels).mean()),
            "precision_at_1": float(same[:, 0].mean())}


def train(folder, epochs, steps, seed):
    import jax
    import jax.numpy as jnp
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    x_train, y_train = load_idx(folder, "train")
    x_test, y_test = load_idx(folder, "t10k")
    classes = int(y_train.max()) + 1
    by_class = [np.flatnonzero(y_train == c) for c in range(classes)]

    inputs = keras.Input(shape=x_train.shape[1:])
    x = layers.Conv2D(32, 3, strides=2, activation="relu")(inputs)
    x = layers.Conv2D(64, 3, strides=2, activation="relu")(x)
    x = layers.Conv2D(128, 3, strides=2, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(8)(x)
    model = keras.Model(inputs, layers.UnitNormalization()(x))
    optimizer = keras.optimizers.Adam(learning_rate=1e-3)
    optimizer.build(model.trainable_variables)

    def loss_fn(trainable, non_trainable, anchors, positives):
        a, non_trainable = model.stateless_call(trainable, non_trainable, anchors)
        p, non_trainable = model.stateless_call(trainable, non_trainable, positives)
        logits = a @ p.T / 0.2
        loss = jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.diagonal(logits))
        return loss, non_trainable

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    @jax.jit
    def step(state, anchors, positives):
        trainable, non_trainable, opt_vars = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, anchors, positives)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return loss, (trainable, non_trainable, opt_vars)

    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])
    rng = np.random.default_rng(seed)

    def batch():
        anchors = np.empty((classes,) + x_train.shape[1:], np.float32)
        positives = np.empty_like(anchors)
        for c, idx in enumerate(by_class):
            a, p = rng.choice(idx, 2, replace=False)
            anchors[c], positives[c] = x_train[a], x_train[p]
        return anchors, positives

    loss, state = step(state, *batch())  # compile
    loss.block_until_ready()
    epoch_losses = []
    start = time.perf_counter()
    for _ in range(epochs):
        total = 0.0
        for _ in range(steps):
            loss, state = step(state, *batch())
            total += float(loss)
        epoch_losses.append(total / steps)
        print(f"epoch {len(epoch_losses)}: loss {epoch_losses[-1]:.4f}", file=sys.stderr)
    elapsed = time.perf_counter() - start
    trainable, non_trainable, _ = state
    emb = np.asarray(model.stateless_call(trainable, non_trainable, x_test)[0])
    print(json.dumps({"reference": f"keras {keras.__version__} on jax {jax.__version__} ({jax.devices()[0].platform})",
                      "epochs": [{"epoch": i + 1, "loss": l} for i, l in enumerate(epoch_losses)],
                      "ms_per_step": 1000 * elapsed / (epochs * steps), "steps_per_s": epochs * steps / elapsed,
                      "test": retrieval(emb, y_test)}))


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n, = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, t in header.items():
        assert t["dtype"] == "F32", (name, t["dtype"])
        lo, hi = t["data_offsets"]
        tensors[name] = np.frombuffer(body[lo:hi], dtype="<f4").reshape(t["shape"])
    return tensors, meta


def conv_valid_s2(x, kernel, bias):
    n, h, w, c = x.shape
    kh, kw, _, out = kernel.shape
    oh, ow = (h - kh) // 2 + 1, (w - kw) // 2 + 1
    cols = np.empty((n, oh, ow, kh, kw, c), np.float64)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = x[:, i:i + 2 * oh:2, j:j + 2 * ow:2, :]
    y = cols.reshape(n * oh * ow, -1) @ kernel.reshape(-1, out).astype(np.float64) + bias
    return np.maximum(y, 0).reshape(n, oh, ow, out)


def forward(model_path, folder, embeddings=None):
    t, meta = read_safetensors(model_path)
    assert meta.get("architecture") == "convnet", meta
    x_test, y_test = load_idx(folder, "t10k")
    x = x_test.astype(np.float64)
    for layer in ("conv1", "conv2", "conv3"):
        x = conv_valid_s2(x, t[f"{layer}.kernel"], t[f"{layer}.bias"])
    e = x.mean(axis=(1, 2)) @ t["dense.kernel"] + t["dense.bias"]
    e /= np.sqrt(np.maximum((e * e).sum(axis=1, keepdims=True), 1e-12))
    out = {"reference": "numpy forward (float64)", "test": retrieval(e.astype(np.float32), y_test)}
    if embeddings:
        theirs = np.load(embeddings).astype(np.float64)
        assert theirs.shape == e.shape, (theirs.shape, e.shape)
        out["embeddings"] = {"max_abs_diff": float(np.abs(theirs - e).max()),
                             "relative_l2": float(np.linalg.norm(theirs - e) / np.linalg.norm(e))}
    print(json.dumps(out))


if __name__ == "__main__":
    args = sys.argv[1:]
    opts = {a[2:]: args[i + 1] for i, a in enumerate(args) if a.startswith("--")}
    pos = [a for i, a in enumerate(args) if not a.startswith("--") and (i == 0 or not args[i - 1].startswith("--"))]
    if pos[:1] == ["train"] and len(pos) == 2:
        train(pos[1], int(opts.get("epochs", 20)), int(opts.get("steps", 1000)), int(opts.get("seed", 0)))
    elif pos[:1] == ["forward"] and len(pos) == 3:
        forward(pos[1], pos[2], opts.get("embeddings"))
    else:
        raise SystemExit(__doc__)
