"""Host memory bandwidth, measured: a short multi-threaded copy (STREAM "Copy") with numpy.

numpy's ``copyto`` releases the GIL, so one thread per core streams its own pair of buffers. Each
copy reads and writes the buffer once, so it moves 2 x its size, as STREAM counts it. Buffers are
far larger than any last-level cache, and the best round is kept (first touches and other tenants
only slow a round down).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from profiles.units import MiB

DEFAULT_SECONDS = 3.0
BUFFER_BYTES = 64 * MiB  # per thread and per buffer: well past the largest L3 slice per core
MAX_THREADS = 16


@dataclass
class BenchResult:
    bytes_per_s: int
    threads: int
    buffer_bytes: int
    rounds: int
    seconds: float
    method: str = "numpy copyto, best round, 2 x bytes per copy (STREAM Copy)"

    def to_dict(self) -> dict:
        return asdict(self)


def measure_ram_bandwidth(seconds: float = DEFAULT_SECONDS, threads: Optional[int] = None,
                          buffer_bytes: int = BUFFER_BYTES, budget_bytes: Optional[int] = None,
                          progress: Optional[Callable[[float], None]] = None) -> BenchResult:
    """Measure for about ``seconds``; ``progress`` gets the fraction done (0..1) after every round.

    ``budget_bytes`` caps the memory the buffers may take (2 per thread), e.g. to stay inside a
    cgroup limit.
    """
    import numpy as np

    threads = threads or min(os.cpu_count() or 1, MAX_THREADS)
    if budget_bytes is not None:
        buffer_bytes = max(4 * MiB, min(buffer_bytes, budget_bytes // (2 * threads)))
    n = buffer_bytes // 8
    sources = [np.ones(n, dtype=np.float64) for _ in range(threads)]
    targets = [np.zeros(n, dtype=np.float64) for _ in range(threads)]
    for t, s in zip(targets, sources):  # fault the pages in before timing
        np.copyto(t, s)

    best = 0.0
    rounds = 0
    stop = False
    go = threading.Barrier(threads + 1)
    done_round = threading.Barrier(threads + 1)

    def worker(i: int) -> None:
        try:
            while True:
                go.wait()
                if stop:
                    return
                np.copyto(targets[i], sources[i])
                done_round.wait()
        except threading.BrokenBarrierError:
            return

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for th in pool:
        th.start()
    start = time.perf_counter()
    try:
        while True:
            t0 = time.perf_counter()
            go.wait()
            done_round.wait()
            elapsed = time.perf_counter() - t0
            rounds += 1
            if elapsed > 0:
                best = max(best, 2 * buffer_bytes * threads / elapsed)
            spent = time.perf_counter() - start
            if progress is not None:
                progress(min(spent / seconds, 1.0))
            if spent >= seconds and rounds >= 3:
                break
    finally:
        stop = True
        go.abort()  # wakes idle workers; a worker mid-copy finds done_round broken and returns
        done_round.abort()
        for th in pool:
            th.join(timeout=5)
    return BenchResult(bytes_per_s=int(best), threads=threads, buffer_bytes=buffer_bytes, rounds=rounds,
                       seconds=round(time.perf_counter() - start, 3))
