"""What the peer scripts (cpu-peers.py, ort-webgpu-peer.py) share: the median timer and
the FLOP count they report against."""
import time

RESNET50_224_FLOPS = 8_174_272_512  # convolutions only, ShapeWalk::resnet50(224, 224).flops


def median_secs(reps, run):
    """Median seconds of `reps` calls of `run`, after one untimed warm-up call."""
    run()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
