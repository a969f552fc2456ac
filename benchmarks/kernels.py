"""Loss kernel benchmark: eager reference vs torch.compile(reference) vs fused Triton.

    python benchmarks/kernels.py [--quick] [--cases moco_v2,simclr] [--out benchmarks/results]

Times forward, backward and forward+backward (median and 20/80 % quantiles), the peak memory of
forward+backward above the inputs, and the fraction of the FLOP/byte floor reached, at the sizes
of the papers. On a GPU, for all three backends: wall time per call (triton.testing.do_bench),
device time and kernel launches of one forward+backward (torch.profiler), the same step replayed
as a CUDA graph, and torch.cuda peak memory. On CPU: the reference paths only (eager and
compiled), wall-clock timing and the peak resident memory above the inputs (sampled every
millisecond). ``--dry-run`` runs every case once on the meta device (shapes only, seconds): a
check of the script's plumbing that writes nothing. Prints a markdown table and writes
``<out>/kernels-<device>.md``.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import os
import platform
import re
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import fastssl.kernels as K
from fastssl.kernels import reference as R


@dataclass
class Case:
    name: str
    fn: str  # public function in fastssl.kernels
    shape: str
    make: object  # (device, dtype) -> (args tuple, kwargs dict); grads on the tensor args
    flops: float  # forward+backward FLOPs of a non-materialising kernel (see FLOOR_NOTE)
    bytes_: float  # forward+backward minimum HBM traffic in bytes, per element size 1
    backward: bool = True


FLOOR_NOTE = (
    "Floor = max(FLOPs / peak FLOP/s, bytes / peak bandwidth), forward+backward. FLOPs: "
    "InfoNCE/NT-Xent 2·rows·cols·D per matmul, 3 matmuls with a queue without gradient (logits, "
    "recomputed logits, dQ) and 4 in-batch (+dK); Barlow min(8N²D Gram form, 6ND² C form); "
    "Sinkhorn memory-bound: read scores once, write Q once. Bytes: inputs read twice "
    "(forward, backward), gradients written once."
)


def _randn(*shape, device, dtype, grad=True):
    return torch.randn(*shape, device=device, dtype=dtype).requires_grad_(grad)


def _cases() -> list[Case]:
    def moco_v2(device, dtype, b=256, n=65536, d=128):
        queue = torch.nn.functional.normalize(torch.randn(n, d, device=device), dim=1).to(dtype)
        return (_randn(b, d, device=device, dtype=dtype), _randn(b, d, device=device, dtype=dtype),
                queue), {"temperature": 0.2}

    def pair(n, d, **kw):
        return lambda device, dtype: ((_randn(n, d, device=device, dtype=dtype),
                                       _randn(n, d, device=device, dtype=dtype)), kw)

    def swav(device, dtype, b=4096, k=3000):
        scores = torch.nn.functional.normalize(torch.randn(b, 128, device=device), dim=1)
        protos = torch.nn.functional.normalize(torch.randn(k, 128, device=device), dim=1)
        return ((scores @ protos.T).to(dtype),), {"eps": 0.05, "iters": 3}

    return [
        Case("moco_v2", "info_nce", "B=256, queue 65536, D=128", moco_v2,
             3 * 2 * 256 * 65536 * 128, 2 * 65536 * 128 + 6 * 256 * 128),
        Case("moco_v3", "info_nce", "B=4096 in-batch, D=256", pair(4096, 256, temperature=0.2),
             4 * 2 * 4096 * 4096 * 256, 6 * 4096 * 256),
        Case("simclr", "nt_xent", "2N=8192, D=128", pair(4096, 128, temperature=0.5),
             4 * 2 * 8192 * 8192 * 128, 6 * 8192 * 128),
        Case("barlow_2048", "barlow_twins_loss", "N=2048, D=8192", pair(2048, 8192, lambd=0.0051),
             min(8 * 2048**2 * 8192, 6 * 2048 * 8192**2), 6 * 2048 * 8192),
        Case("barlow_256", "barlow_twins_loss", "N=256, D=8192", pair(256, 8192, lambd=0.0051),
             min(8 * 256**2 * 8192, 6 * 256 * 8192**2), 6 * 256 * 8192),
        Case("swav_sinkhorn", "sinkhorn_knopp", "B=4096, K=3000, 3 iters", swav,
             3 * 2 * 5 * 4096 * 3000, 2 * 4096 * 3000, backward=False),
    ]


# (dense bf16 FLOP/s, tf32 FLOP/s, bytes/s) by device-name substring; unknown devices get no floor.
PEAKS = {"H200": (989e12, 494e12, 4.8e12), "H100": (989e12, 494e12, 3.35e12),
         "A100": (312e12, 156e12, 2.0e12)}


def _peaks(device_name: str):
    for key, peaks in PEAKS.items():
        if key in device_name:
            return peaks
    return None


class _RssPeak:
    """Peak resident memory above the level at entry, sampled every millisecond (CPU)."""

    def __enter__(self):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back so the baseline is low
        except OSError:
            pass
        self.base = self.peak = self._rss()
        self.stop = False
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()
        self.delta = max(self.peak - self.base, 0)

    def _poll(self):
        while not self.stop:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _zero_grads(args):
    for a in args:
        if isinstance(a, torch.Tensor):
            a.grad = None


def _time(fn, device, reps: int, warmup: int):
    """(median, q20, q80) milliseconds."""
    if device.type == "cuda":
        import triton.testing

        return tuple(triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8], warmup=25, rep=100))
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    q = statistics.quantiles(times, n=5) if len(times) > 1 else [times[0]] * 4
    return statistics.median(times), q[0], q[3]


def _loss_fn(case: Case, mode: str):
    if mode == "triton":
        fn = getattr(K, case.fn)
        return lambda *a, **kw: fn(*a, backend="triton", **kw)
    ref = getattr(R, case.fn)
    return torch.compile(ref) if mode == "compiled" else ref


def _profile(full) -> tuple[float, int]:
    """(device milliseconds, kernel launches) of one call of ``full`` on the GPU."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        full()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return sum(e.time_range.elapsed_us() for e in kernels) / 1e3, len(kernels)


def _graph_ms(full) -> float | None:
    """Median ms of ``full`` captured once as a CUDA graph and replayed (None if it cannot be
    captured, e.g. a host sync inside)."""
    import triton.testing

    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up outside the capture (allocator, compilation)
                full()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            full()
        return float(triton.testing.do_bench(graph.replay, warmup=25, rep=100))
    except Exception as exc:  # reported in the table as n/a
        print(f"CUDA graph capture failed: {type(exc).__name__}: {exc}", flush=True)
        return None


def run_case(case: Case, mode: str, device, dtype, reps: int, warmup: int) -> dict:
    args, kwargs = case.make(device, dtype)
    fn = _loss_fn(case, mode)
    row = {"case": case.name, "shape": case.shape, "mode": mode, "dtype": str(dtype)[6:]}
    compile_t0 = time.perf_counter()
    out = fn(*args, **kwargs)  # warm-up (and compilation) outside the timings
    if case.backward:
        out.backward()
    row["first_call_s"] = time.perf_counter() - compile_t0

    def forward():
        return fn(*args, **kwargs)

    def full():
        _zero_grads(args)
        o = fn(*args, **kwargs)
        if case.backward:
            o.backward()

    # backward = full - forward (timing a retained graph's backward is not allowed for compiled
    # functions with donated buffers, and on CPU it would cost another long run)
    row["fwd"] = _time(forward, device, reps, warmup)
    _zero_grads(args)
    if device.type == "cuda":
        row["full"] = _time(full, device, reps, warmup)
        row["device_ms"], row["launches"] = _profile(full)
        row["graph_ms"] = _graph_ms(full)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        full()
        torch.cuda.synchronize()
        row["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:  # CPU runs are long: the timed full runs also give the memory peak
        with _RssPeak() as peak:
            row["full"] = _time(full, device, reps, warmup)
        row["peak_mib"] = peak.delta / 2**20
    row["bwd"] = (row["full"][0] - row["fwd"][0],) * 3 if case.backward else None
    if not case.backward:
        row["full"] = row["fwd"]
    return row


def _fmt_t(t) -> str:
    if t is None:
        return "–"
    return f"{t[0]:.3f}" if t[1] == t[2] else f"{t[0]:.3f} ({t[1]:.3f}–{t[2]:.3f})"


def _opt(row: dict, key: str) -> str:
    value = row.get(key)
    return "n/a" if value is None else f"{value:.3f}"


def render(rows, cases, device_name, device, header_extra) -> str:
    peaks = _peaks(device_name) if device.type == "cuda" else None
    by_case = {c.name: c for c in cases}
    lines = [
        f"# Loss kernels on {device_name}",
        "",
        *header_extra,
        "",
        "Times in ms: median (20 %–80 % quantiles); bwd = fwd+bwd − fwd medians. `vs compiled` = "
        "compiled-reference fwd+bwd time / this fwd+bwd time (>1 is faster). Device ms and "
        "launches: one fwd+bwd under torch.profiler; CUDA graph ms: the same step replayed as "
        "a graph (GPU only). Floor: % of the roofline floor reached (fwd+bwd wall time). Peak = "
        "memory of one forward+backward above the inputs"
        + (" (CUDA allocator)." if device.type == "cuda" else " (peak RSS delta, sampled 1 ms)."),
        "",
        "| case | shape | backend | dtype | fwd | bwd | fwd+bwd | vs compiled | device ms "
        "| launches | CUDA graph ms | peak MiB | floor | GFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    compiled = {r["case"]: r["full"][0] for r in rows if r["mode"] == "compiled"}
    for r in rows:
        case = by_case[r["case"]]
        full_ms = r["full"][0]
        speed = f"{compiled[r['case']] / full_ms:.2f}×" if r["case"] in compiled else "–"
        floor = "n/a"
        if peaks is not None:
            flops_peak = peaks[0] if r["dtype"] in ("bfloat16", "float16") else peaks[1]
            elt = 2 if r["dtype"] in ("bfloat16", "float16") else 4
            floor_s = max(case.flops / flops_peak, case.bytes_ * elt / peaks[2])
            floor = f"{floor_s * 1e3 / full_ms:.0%}"
        lines.append(
            f"| {r['case']} | {r['shape']} | {r['mode']} | {r['dtype']} | {_fmt_t(r['fwd'])} "
            f"| {_fmt_t(r['bwd'])} | {_fmt_t(r['full'])} | {speed} | {_opt(r, 'device_ms')} "
            f"| {r.get('launches', 'n/a')} | {_opt(r, 'graph_ms')} | {r['peak_mib']:.0f} "
            f"| {floor} | {case.flops / full_ms / 1e6:.1f} |"
        )
    lines += ["", FLOOR_NOTE, ""]
    return "\n".join(lines)


def dry_run(cases: list[Case]) -> str:
    """Each case's reference forward+backward on meta tensors (no data, no compute)."""
    meta = torch.device("meta")
    for case in cases:
        args, kwargs = case.make(meta, torch.float32)
        out = getattr(K, case.fn)(*args, backend="torch", **kwargs)
        if case.backward:
            out.backward()
        print(f"{case.name:14s} ok (meta: {case.shape})", flush=True)
    return "dry run: no table written"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CPU: one timed run per measurement")
    parser.add_argument("--cases", default="", help="comma-separated subset of case names")
    parser.add_argument("--modes", default="", help="comma-separated subset of eager,compiled,"
                        "triton (default: all available)")
    parser.add_argument("--dtype", default="", help="bfloat16|float16|float32 (default: bf16 on "
                        "GPU, fp32 on CPU; Sinkhorn scores always fp32)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--dry-run", action="store_true", help="every case once on the meta "
                        "device (shapes only): checks the script, writes nothing")
    args = parser.parse_args(argv)
    if args.dry_run:
        return dry_run([c for c in _cases() if not args.cases or c.name in args.cases.split(",")])

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cases = [c for c in _cases() if not args.cases or c.name in args.cases.split(",")]
    modes = ["eager", "compiled"] + (["triton"] if device.type == "cuda" else [])
    if args.modes:
        modes = [m for m in modes if m in args.modes.split(",")]
    dtype = getattr(torch, args.dtype) if args.dtype else (
        torch.bfloat16 if device.type == "cuda" else torch.float32)
    reps, warmup = (1, 0) if args.quick else (5, 1)  # CPU only; do_bench on GPU
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name()
    else:
        device_name = f"CPU ({platform.processor() or platform.machine()}, "
        device_name += f"{torch.get_num_threads()} threads)"

    header = [
        f"torch {torch.__version__}, "
        + (f"triton {__import__('triton').__version__}, " if K.dispatch.HAS_TRITON else "")
        + f"{'quick' if args.quick else 'full'} run ({reps} timed repeats on CPU), "
        + datetime.date.today().isoformat() + ".",
    ]
    if device.type == "cpu":
        header.append("CPU: reference paths only (the Triton kernels need a GPU to be timed); "
                      "GFLOP/s counts the FLOPs of the fused algorithm.")
    slug = "cpu" if device.type == "cpu" else re.sub(r"[^a-z0-9]+", "-", device_name.lower())
    out = Path(args.out) / f"kernels-{slug.strip('-')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)

    rows = []
    for case in cases:
        for mode in modes:
            case_dtype = torch.float32 if case.fn == "sinkhorn_knopp" else dtype
            t0 = time.perf_counter()
            try:
                row = run_case(case, mode, device, case_dtype, reps, warmup)
            except Exception as exc:  # e.g. out of memory: report, keep the other rows
                print(f"{case.name:14s} {mode:8s} FAILED: {type(exc).__name__}: {exc}", flush=True)
                continue
            rows.append(row)
            print(f"{case.name:14s} {mode:8s} full {_fmt_t(row['full'])} ms, peak "
                  f"{row['peak_mib']:.0f} MiB, first call {row['first_call_s']:.1f} s, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            # written after every row, so a run cut short by a timeout still leaves its table
            out.write_text(render(rows, cases, device_name, device, header))
    table = render(rows, cases, device_name, device, header)
    print(table)
    out.write_text(table)
    print(f"wrote {out}")
    return str(out)


if __name__ == "__main__":
    main()
