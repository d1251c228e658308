"""Single-core GEMM throughput of the native kernels (every ISA) next to PyTorch on the same shapes.

Runs the C++ benchmark `bench_kernels` (built with the native tests: `make test-native`) and times
torch in this process right after it, all on one thread, and prints GOP/s (2*M*N*K / time) with
ratios to torch. Times are the best of many short batches: the machine is shared, the least
disturbed batch is the closest to the kernel's speed (the JSON also keeps the medians).

    python benchmarks/bench_kernels.py [--min-time 0.5] [--shapes 128,1536,384 1,1536,384]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from mlfs_edge.report import markdown_table

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "build" / "native" / "bench_kernels"


def build_bench() -> None:
    if BENCH.exists():
        return
    print("building bench_kernels (cmake, build/native) ...", file=sys.stderr)
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(ROOT / "build/native"), "-DMLFS_BUILD_TESTS=ON",
                    "-DMLFS_BUILD_PYTHON=OFF", "-DCMAKE_BUILD_TYPE=Release"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(ROOT / "build/native"), "--target", "bench_kernels", "-j", "2"],
                   check=True, stdout=subprocess.DEVNULL)


def time_torch(fn, min_time: float) -> tuple[float, float]:
    """(best, median) seconds per call, batches of ~0.5 ms, like bench_kernels.cpp."""
    fn()
    batch = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        if time.perf_counter() - t0 > 5e-4 or batch > 1 << 20:
            break
        batch *= 2
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < 5 or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - t0) / batch)
    samples.sort()
    return samples[0], samples[len(samples) // 2]


def torch_rows(m: int, n: int, k: int, min_time: float) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=gen)
    w = torch.randn(n, k, generator=gen) * 0.05
    ops = 2.0 * m * n * k
    rows = []

    def add(kernel: str, fn) -> None:
        try:
            best, median = time_torch(fn, min_time)
        except RuntimeError as err:  # e.g. _int_mm's shape limits on CPU
            print(f"torch {kernel} M={m} N={n} K={k}: not available ({str(err).splitlines()[0]})", file=sys.stderr)
            return
        rows.append({"kernel": kernel, "isa": "torch", "M": m, "N": n, "K": k, "us_best": best * 1e6,
                     "us_median": median * 1e6, "gops": ops / best * 1e-9, "gops_median": ops / median * 1e-9})

    with torch.inference_mode():
        wt = w.t().contiguous()
        add("gemm_f32", lambda: torch.matmul(x, wt))
        qlinear = torch.ao.nn.quantized.dynamic.Linear(k, n, dtype=torch.qint8)
        qlinear.set_weight_bias(torch.quantize_per_channel(w, w.abs().amax(1) / 127, torch.zeros(n, dtype=torch.long),
                                                           0, torch.qint8), None)
        add("quantize+gemm_i8", lambda: qlinear(x))
        xq = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=gen)
        wq = torch.randint(-127, 128, (k, n), dtype=torch.int8, generator=gen)
        add("gemm_i8", lambda: torch._int_mm(xq, wq))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds of timing per kernel and ISA")
    parser.add_argument("--shapes", nargs="+", default=["128,1536,384", "1,1536,384", "128,384,1536"],
                        help="M,N,K triples (MiniLM: QKV/MLP-in K=384, MLP-out K=1536)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "kernels.json")
    args = parser.parse_args()

    build_bench()
    torch.set_num_threads(1)
    proc = subprocess.run([str(BENCH), "--min-time", str(args.min_time), *args.shapes], check=True,
                          capture_output=True, text=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    for shape in args.shapes:
        m, n, k = (int(v) for v in shape.split(","))
        rows += torch_rows(m, n, k, args.min_time)

    torch_gops = {(r["kernel"], r["M"], r["N"], r["K"]): r["gops"] for r in rows if r["isa"] == "torch"}
    table = []
    for r in rows:
        ref = torch_gops.get((r["kernel"], r["M"], r["N"], r["K"]))
        r["vs_torch"] = round(r["gops"] / ref, 2) if ref else None
        table.append({"kernel": r["kernel"], "isa": r["isa"], "MxNxK": f'{r["M"]}x{r["N"]}x{r["K"]}',
                      "us (best)": f'{r["us_best"]:.1f}', "GOP/s (best)": f'{r["gops"]:.1f}',
                      "GOP/s (median)": f'{r["gops_median"]:.1f}',
                      "x torch": "" if ref is None else f'{r["vs_torch"]:.2f}'})
    print(markdown_table(table))
    result = {"rows": rows, "cpu": platform.processor() or platform.machine(), "threads": 1,
              "torch": torch.__version__, "note": "GOP/s = 2*M*N*K / best-of-batches time; one thread; "
              "torch rows timed in the same run right after the native ones"}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, args.json)  # atomic
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
