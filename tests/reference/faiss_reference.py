#!/usr/bin/env python3
"""Independent k-NN reference: faiss IndexFlatIP over a lookalike index's embeddings.

A development tool and a CI check (.ci/peer-checks), not run by cargo. It reads the index
file with safetensors (embeddings, and the mean when the index is centred), normalises the
query features the way the index says (subtract the mean, scale to unit length), asks
faiss' exact inner-product scan for the k best rows of each query and checks
`lookalike search --json` against it.

Needs only PyPI packages:  pip install numpy safetensors faiss-cpu

Usage:
    lookalike search INDEX QUERY... -k 10 --json > search.json
    lookalike embed --weights W --resize R --crop C QUERY... -o queries.npy
    python3 tests/reference/faiss_reference.py --index INDEX --queries queries.npy \\
        --search search.json [--tol 1e-5]

R and C are the index's `resize` and `crop` (its metadata), W the weights it was built with.

Per query it checks that
  - lookalike's scores equal faiss' rank by rank, within --tol;
  - each neighbour's score is its exact cosine (float64 over the stored rows), within --tol;
  - both name the same rows, except rows whose score ties the k-th best within --tol
    (either side may keep any of those);
  - equal scores list their rows in ascending order (lookalike's tie rule).
It prints one line per query and exits 1 if any check fails.
"""
import argparse
import json
import sys

import faiss
import numpy as np
from safetensors import safe_open


def load_index(path):
    with safe_open(path, "np") as f:
        rows = f.get_tensor("embeddings").astype(np.float32)
        mean = f.get_tensor("mean").astype(np.float32) if "mean" in f.keys() else None
        meta = f.metadata()
    return rows, mean, meta


def normalise(queries, mean):
    q = queries.astype(np.float64)
    if mean is not None:
        q = q - mean
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def check_query(name, got, faiss_ids, faiss_scores, exact, tol):
    """got: lookalike's [(row, score)], best first. exact: this query's float64 scores."""
    problems = []
    k = len(faiss_ids)
    if len(got) != k:
        problems.append(f"{len(got)} neighbours, faiss has {k}")
        return problems
    for rank, ((row, score), want) in enumerate(zip(got, faiss_scores)):
        if abs(score - want) > tol:
            problems.append(f"rank {rank}: score {score:.7f}, faiss {want:.7f}")
        if abs(score - exact[row]) > tol:
            problems.append(f"rank {rank}: row {row} scored {score:.7f}, its exact cosine is {exact[row]:.7f}")
    for rank in range(1, k):
        (a, sa), (b, sb) = got[rank - 1], got[rank]
        if sa == sb and a > b:
            problems.append(f"ranks {rank - 1}, {rank}: equal scores, rows {a} and {b} not in ascending order")
    kth = min(faiss_scores[-1], got[-1][1])
    ours = {row for row, score in got if score > kth + tol}
    theirs = {int(row) for row, score in zip(faiss_ids, faiss_scores) if score > kth + tol}
    if ours != theirs:
        problems.append(f"rows only lookalike has: {sorted(ours - theirs)}, only faiss: {sorted(theirs - ours)}")
    print(f"  {name}: top {k} {'OK' if not problems else 'FAIL'}"
          f" (best {got[0][1]:.6f}, k-th {got[-1][1]:.6f})")
    for p in problems:
        print(f"    {p}")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", required=True, help="a lookalike index (.safetensors)")
    ap.add_argument("--queries", required=True, help="the queries' raw features, Q x dim .npy")
    ap.add_argument("--search", required=True, help="`lookalike search --json` output for the same queries")
    ap.add_argument("--tol", type=float, default=1e-5, help="absolute score tolerance")
    args = ap.parse_args()

    rows, mean, meta = load_index(args.index)
    queries = np.load(args.queries)
    with open(args.search) as f:
        results = json.load(f)
    if queries.ndim != 2 or queries.shape[1] != rows.shape[1]:
        sys.exit(f"queries must be Q x {rows.shape[1]}, got {queries.shape}")
    if len(results) != len(queries):
        sys.exit(f"{len(results)} search results for {len(queries)} query features")
    k = len(results[0]["neighbors"])

    q = normalise(queries, mean)
    flat = faiss.IndexFlatIP(rows.shape[1])
    flat.add(rows)
    faiss_scores, faiss_ids = flat.search(q.astype(np.float32), k)
    exact = q @ rows.astype(np.float64).T
    print(f"faiss {faiss.__version__} IndexFlatIP: {len(q)} queries over {rows.shape[0]} x {rows.shape[1]}"
          f" ({'centred' if mean is not None else 'not centred'}, {meta.get('count')} rows), k {k}")
    failed = 0
    for i, result in enumerate(results):
        got = [(n["index"], n["score"]) for n in result["neighbors"]]
        failed += bool(check_query(result["query"], got, faiss_ids[i], faiss_scores[i], exact[i], args.tol))
    print(f"faiss-reference: {len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
