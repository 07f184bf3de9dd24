"""Benchmark: DTW paths for DTW-SSID (paper A.2), the hand-written closed-end dynamic program that `dtw_path`
replaced against dtw-python's symmetric1 path (the same path), and the open-end alignment of `readings`.

    OMP_NUM_THREADS=1 python -m benchmarks.bench_dtw [--repeats 20]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from extrapolation.dtw import dtw_path, open_end_path, reference_dtw_path


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
        hand, lib, oe = ms(reference_dtw_path, c, repeats), ms(dtw_path, c, repeats), ms(open_end_path, c, repeats)
        same = reference_dtw_path(c) == dtw_path(c)
        print(f"{shape[0]} x {shape[1]:<12} | {hand:12.2f} | {lib:17.2f} | {hand / lib:5.1f} | {oe:19.2f} | {same}")


if __name__ == "__main__":
    main()
