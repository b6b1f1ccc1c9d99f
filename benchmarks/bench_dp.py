"""Benchmark of the FSD / LCS kernels: forward + backward time and peak extra memory, as a Markdown table.

Three implementations of the same recursions, all on P = 16 pairs of float32 (P, M, M) inputs:

* ``ours``: ``ftcl_plugin.functional`` (anti-diagonal wavefront, analytic backward, float64 table).
* ``ours+lengths``: the same call with ``lengths_a`` / ``lengths_b`` given (all equal to M, so the work is the
  same): the cost of the padded path, which the selectors' output takes.
* ``autograd``: the same wavefront differentiated by plain autograd (``ftcl_plugin._reference``).
* ``release``: a loop written to mirror the authors' release (MengyuanChen21/CVPR2022-FTCL, commit cf607d6,
  ``utils/ftcl_criterion.py`` and ``utils/net_utils.py``), re-implemented from its description: per pair,
  per cell, through autograd, float32; FSD rebuilds the whole (L+1)^2 table for every cell
  (``assign2Tensor``), LCS writes ``C[i, j] = ...`` in place into a table that requires grad, with a
  Python ``if`` on the threshold test and Python ``max`` (one device sync per cell on a GPU). Run only
  where it is feasible (it is O(L^4)).

Every case runs in its own subprocess, so its memory is isolated: "peak MB" is the growth of the process's
resident-set high-water mark (``VmHWM`` in ``/proc/self/status``) during one forward + backward, measured
after a small warm-up and with the inputs already allocated. It counts everything the process touches
(table, autograd graph, gradients, allocator slack), torch's allocations included, which ``tracemalloc``
cannot see. Times are medians over repeats (20 up to 30x30, 5 above, 3 for the release loop) of wall-clock time (``perf_counter``); CPU time of the process is
reported beside them because on a shared machine wall time also measures the neighbours' load.

Usage::

    python benchmarks/bench_dp.py                 # the full table (a few minutes on 2 CPU cores)
    python benchmarks/bench_dp.py --sizes 5 30    # a subset
    python benchmarks/bench_dp.py --device cuda   # on a GPU (memory column: torch.cuda.max_memory_allocated)
"""

from __future__ import annotations

import os

# torch's default OpenMP wait policy spins idle threads, which makes tiny ops slow on a busy 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftcl_plugin import _reference, functional  # noqa: E402

PAIRS = 16
SIZES = (5, 30, 128, 750)
GAMMA = 0.1        # FSD smoothing (the paper's gamma = 10)
THRESHOLD = 0.92   # LCS threshold (the paper's tau)
# the release-style loop is O(L^4): measured feasible sizes only (FSD 30x30 would take minutes per run)
RELEASE_SIZES = {"fsd": (5,), "lcs": (5, 30)}
IMPLS = ("ours", "ours+lengths", "autograd", "release")


# ------------------------------------------------------------------------------------------------
# the release-style loops (written from a description of the authors' release, not from its code)
# ------------------------------------------------------------------------------------------------


def _assign(table: torch.Tensor, i: int, j: int, value: torch.Tensor) -> torch.Tensor:
    # rebuilds the whole table to set one cell, as the release's assign2Tensor does
    mask = torch.zeros_like(table)
    mask[i, j] = 1.0
    return table * (1.0 - mask) + value * mask


def release_fsd(match: torch.Tensor, insert: torch.Tensor) -> torch.Tensor:
    scores = []
    for p in range(match.shape[0]):
        mu, g = match[p], insert[p]
        rows, cols = mu.shape
        table = mu.new_zeros(rows + 1, cols + 1)
        for i in range(1, rows + 1):
            for j in range(1, cols + 1):
                options = torch.stack((table[i - 1, j - 1], g[i - 1, j - 1] + table[i - 1, j],
                                       g[i - 1, j - 1] + table[i, j - 1]))
                top = options.max()
                best = GAMMA * torch.log(torch.exp((options - top) / GAMMA).sum()) + top
                table = _assign(table, i, j, mu[i - 1, j - 1] + best)
        scores.append(table[rows, cols])
    return torch.stack(scores)


def release_lcs(similarity: torch.Tensor) -> torch.Tensor:
    lengths = []
    for p in range(similarity.shape[0]):
        c = similarity[p]
        rows, cols = c.shape
        table = c.new_zeros(rows + 1, cols + 1)
        for i in range(1, rows + 1):
            for j in range(1, cols + 1):
                if c[i - 1, j - 1] > THRESHOLD:
                    table[i, j] = table[i - 1, j - 1] + c[i - 1, j - 1]
                else:
                    table[i, j] = max(table[i - 1, j], table[i, j - 1])
        lengths.append(table[rows, cols])
    return torch.stack(lengths)


# ------------------------------------------------------------------------------------------------
# one case, in its own process
# ------------------------------------------------------------------------------------------------


def _inputs(kernel: str, size: int, device: torch.device) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(size)
    shape = (PAIRS, size, size)
    if kernel == "fsd":  # cosine-valued residuals
        tensors = [torch.rand(shape, generator=generator) * 2 - 1 for _ in range(2)]
    else:  # similarities in [0, 1], ~8% above the threshold
        tensors = [torch.rand(shape, generator=generator)]
    return [t.to(device).requires_grad_(True) for t in tensors]


def _full(x: torch.Tensor) -> torch.Tensor:
    """(P,) lengths equal to the padded size: the padded code path with the unpadded amount of work."""
    return torch.full((x.shape[0],), x.shape[1], dtype=torch.int64, device=x.device)


def _function(kernel: str, impl: str):
    if kernel == "fsd":
        return {"ours": lambda m, g: functional.fsd_similarity(m, g, gamma=GAMMA),
                "ours+lengths": lambda m, g: functional.fsd_similarity(m, g, gamma=GAMMA, lengths_a=_full(m),
                                                                       lengths_b=_full(m)),
                "autograd": lambda m, g: _reference.fsd_wavefront_autograd(m, g, gamma=GAMMA),
                "release": release_fsd}[impl]
    return {"ours": lambda c: functional.lcs_length(c, threshold=THRESHOLD, strict=True),
            "ours+lengths": lambda c: functional.lcs_length(c, threshold=THRESHOLD, strict=True,
                                                            lengths_a=_full(c), lengths_b=_full(c)),
            "autograd": lambda c: _reference.lcs_wavefront_autograd(c, THRESHOLD, strict=True),
            "release": release_lcs}[impl]


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _sync(device: torch.device) -> None:
    if device.type != "cpu":
        torch.cuda.synchronize(device)


def run_case(kernel: str, impl: str, size: int, repeats: int, device: torch.device) -> dict:
    fn = _function(kernel, impl)
    fn(*_inputs(kernel, 2, device)).sum().backward()  # warm-up: lazy initialisation is not the kernel's
    inputs = _inputs(kernel, size, device)
    # memory of one forward + backward (the gradients of the inputs included)
    if device.type == "cpu":
        before = _rss_kib("VmRSS")
        fn(*inputs).sum().backward()
        peak_mb = (_rss_kib("VmHWM") - before) / 1024
    else:
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn(*inputs).sum().backward()
        peak_mb = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    walls, cpus, backwards, backward_cpus = [], [], [], []
    for _ in range(repeats):
        for x in inputs:
            x.grad = None
        _sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn(*inputs).sum()
        _sync(device)
        middle, middle_cpu = time.perf_counter(), time.process_time()
        out.backward()
        _sync(device)
        end, end_cpu = time.perf_counter(), time.process_time()
        walls.append(end - wall)
        cpus.append(end_cpu - cpu)
        backwards.append(end - middle)
        backward_cpus.append(end_cpu - middle_cpu)
    return {"kernel": kernel, "impl": impl, "size": size, "wall": statistics.median(walls),
            "cpu": statistics.median(cpus), "backward": statistics.median(backwards),
            "backward_cpu": statistics.median(backward_cpus), "peak_mb": peak_mb,
            "repeats": repeats}


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------


def _repeats(impl: str, size: int) -> int:
    if impl == "release":
        return 3
    return 5 if size >= 128 else 20


def _spawn(kernel: str, impl: str, size: int, device: str, timeout: float) -> dict | None:
    command = [sys.executable, __file__, "--case", kernel, impl, str(size), "--device", device]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1e3:.1f}" if seconds < 10 else f"{seconds * 1e3:.0f}"


def _ratio(num: float | None, den: float | None) -> str:
    return "n/a" if num is None or den is None else f"{num / den:.1f}x"


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per case before it is dropped")
    parser.add_argument("--case", nargs=3, metavar=("KERNEL", "IMPL", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.case:
        kernel, impl, size = args.case[0], args.case[1], int(args.case[2])
        print(json.dumps(run_case(kernel, impl, size, _repeats(impl, size), device)))
        return 0

    load_before = _load()
    results: dict[tuple[str, str, int], dict | None] = {}
    for kernel in ("fsd", "lcs"):
        for size in args.sizes:
            for impl in IMPLS:
                if impl == "release" and size not in RELEASE_SIZES[kernel]:
                    continue
                results[kernel, impl, size] = _spawn(kernel, impl, size, args.device, args.timeout)

    def get(kernel: str, impl: str, size: int, key: str) -> float | None:
        found = results.get((kernel, impl, size))
        return None if found is None else found[key]

    cpu_name = platform.processor() or platform.machine()
    print(f"P = {PAIRS} pairs, M = N, float32 inputs, forward + backward; torch {torch.__version__}, "
          f"device {args.device}, {os.cpu_count()} CPUs ({cpu_name}), {torch.get_num_threads()} torch threads; "
          f"load average before/after: {load_before} / {_load()}. Times: median wall ms (CPU ms).\n")
    print("| kernel | M=N | ours ms | ours bwd ms | ours peak MB | ours+lengths ms | ours+lengths bwd ms "
          "| ours+lengths peak MB | autograd ms | autograd bwd ms | autograd peak MB "
          "| release ms | release peak MB | autograd/ours | bwd autograd/ours | release/ours |")
    print("|---" * 16 + "|")
    for kernel in ("fsd", "lcs"):
        for size in args.sizes:
            cells = [kernel.upper(), str(size)]
            for impl in IMPLS:
                wall, cpu = get(kernel, impl, size, "wall"), get(kernel, impl, size, "cpu")
                cells.append("n/a" if wall is None else f"{_ms(wall)} ({_ms(cpu)})")
                if impl != "release":
                    backward, backward_cpu = get(kernel, impl, size, "backward"), get(kernel, impl, size, "backward_cpu")
                    cells.append("n/a" if backward is None else f"{_ms(backward)} ({_ms(backward_cpu)})")
                peak = get(kernel, impl, size, "peak_mb")
                cells.append("n/a" if peak is None else f"{peak:.0f}")
            ours = get(kernel, "ours", size, "wall")
            cells.append(_ratio(get(kernel, "autograd", size, "wall"), ours))
            cells.append(_ratio(get(kernel, "autograd", size, "backward"), get(kernel, "ours", size, "backward")) + " ("
                         + _ratio(get(kernel, "autograd", size, "backward_cpu"), get(kernel, "ours", size, "backward_cpu"))
                         + ")")
            cells.append(_ratio(get(kernel, "release", size, "wall"), ours))
            print("| " + " | ".join(cells) + " |")

    print("\nTargets:")
    paper_ours = [get("fsd", "ours", 5, "wall"), get("lcs", "ours", 30, "wall")]
    paper_release = [get("fsd", "release", 5, "wall"), get("lcs", "release", 30, "wall")]
    if None not in paper_ours + paper_release:
        speedup = sum(paper_release) / sum(paper_ours)
        print(f"- FSD 5x5 + LCS 30x30 (paper settings): {speedup:.0f}x faster than the release-style loop "
              f"(target >= 100x): {'met' if speedup >= 100 else 'MISSED'}")
    big = ("fsd", "ours", 750)
    if results.get(big):
        wall, cpu, peak = get(*big, "wall"), get(*big, "cpu"), get(*big, "peak_mb")
        print(f"- FSD 750x750 forward+backward: {wall:.2f} s wall, {cpu:.2f} s CPU (target <= 1.5 s): "
              f"wall {'met' if wall <= 1.5 else 'MISSED'}, CPU {'met' if cpu <= 1.5 else 'MISSED'}; "
              f"peak {peak:.0f} MB (target <= 300 MB): {'met' if peak <= 300 else 'MISSED'}")
        if results.get(("fsd", "autograd", 750)):
            ratio = get("fsd", "autograd", 750, "backward") / get(*big, "backward")
            ratio_cpu = get("fsd", "autograd", 750, "backward_cpu") / get(*big, "backward_cpu")
            print(f"- analytic backward vs autograd at 750: {ratio:.2f}x wall, {ratio_cpu:.2f}x CPU "
                  f"(target >= 1.3x): wall {'met' if ratio >= 1.3 else 'MISSED'}, "
                  f"CPU {'met' if ratio_cpu >= 1.3 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
