"""Benchmark: DTW paths for DTW-SSID (paper A.2), the hand-written closed-end dynamic program that `dtw_path`
replaced against dtw-python's symmetric1 path (the same path), and the open-end alignment of `readings`.

    OMP_NUM_THREADS=1 python -m benchmarks.bench_dtw [--repeats 20]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from extrapolation.dtw import dtw_path, open_end_path


def hand_written(c: np.ndarray) -> list[tuple[int, int]]:
    """The pure-Python DTW of `extrapolation.dtw` before dtw-python (ties: diagonal, then (i-1,j))."""
    n1, n2 = c.shape
    acc = np.full((n1 + 1, n2 + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n1 + 1):
        for j in range(1, n2 + 1):
            acc[i, j] = c[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    i, j = n1, n2
    path = [(i - 1, j - 1)]
    while (i, j) != (1, 1):
        i, j = min([(i - 1, j - 1), (i - 1, j), (i, j - 1)], key=lambda ij: acc[ij])
        path.append((i - 1, j - 1))
    return path[::-1]


def ms(fn, c, repeats):
    fn(c)  # warm-up
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn(c)
        times.append(time.perf_counter() - tic)
    return 1e3 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    repeats = parser.parse_args().repeats
    rng = np.random.default_rng(0)
    print(f"median of {repeats}, ms | hand-written | dtw-python closed | ratio | dtw-python open end | same path")
    for shape in ((100, 55), (300, 55)):
        c = rng.random(shape)
        hand, lib, oe = ms(hand_written, c, repeats), ms(dtw_path, c, repeats), ms(open_end_path, c, repeats)
        same = hand_written(c) == dtw_path(c)
        print(f"{shape[0]} x {shape[1]:<12} | {hand:12.2f} | {lib:17.2f} | {hand / lib:5.1f} | {oe:19.2f} | {same}")


if __name__ == "__main__":
    main()
