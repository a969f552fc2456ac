"""What ``fastssl profile`` concludes and prints: the verdict, suggestions derived from the
numbers, the terminal table, the ``--json`` schema (with a small validator) and the plot."""

from __future__ import annotations

import math

from fastssl.profiling.schema import SCHEMA, validate

__all__ = ["SCHEMA", "format_report", "plot", "suggestions", "validate", "verdict"]

# -- verdict thresholds ---------------------------------------------------------------------
INPUT_WAIT = 0.20  # the step blocked in the loader's next() >= 20% of the time: input-bound
MARGIN = 1.25  # loader-alone vs step-alone throughput ratio that counts as a clear difference
SOME_WAIT = 0.05  # a compute-bound run that still waits this much gets a suggestion

def verdict(loader_ips: float, step_ips: float, e2e_ips: float, wait: float) -> dict:
    ratio = loader_ips / step_ips
    nums = (f"the loader supplies {loader_ips:,.0f} img/s, the step consumes {step_ips:,.0f} "
            f"img/s; the step waits for input {wait:.0%} of the time "
            f"(end to end {e2e_ips:,.0f} img/s)")
    speedup = step_ips / e2e_ips
    if wait >= INPUT_WAIT or ratio < 1 / MARGIN:
        bound, text = "input", f"input-bound: {nums}; free input would make it up to " \
                               f"{speedup:.1f}x faster"
    elif ratio > MARGIN:
        bound, text = "compute", f"compute-bound: {nums}; the loader has {ratio:.1f}x headroom"
    else:
        bound, text = "balanced", f"balanced: {nums}; neither side is {MARGIN}x faster"
    return {"bound": bound, "text": text, "loader_images_per_s": loader_ips,
            "step_images_per_s": step_ips, "end_to_end_images_per_s": e2e_ips,
            "wait_fraction": wait, "potential_speedup": speedup}


_OP_ADVICE = {
    "decode (PIL)": "decoding dominates: the DALI GPU loader decodes with nvJPEG on the GPU; "
                    "storing images pre-resized to the crop scale also helps",
    "GaussianBlur": "on the DALI GPU loader the blur runs on the GPU",
    "ColourJitter": "on the DALI GPU loader colour jitter runs on the GPU",
    "RandomResizedCrop": "on the DALI GPU loader the crop runs on the GPU",
    "decode (CPU)": "decoding dominates: on a GPU machine DALI decodes with nvJPEG ('mixed')",
    "gaussian_blur": "the blur is the costliest op: on a GPU machine it runs on the GPU; a "
                     "smaller blur probability or kernel also cuts it",
}


def loader_may_matter(v: dict, device_type: str) -> bool:
    """Whether another loader may run faster: the loader alone is within 2x of the step, or on
    the CPU the two compete for the cores (end to end well below both alone)."""
    L, S, E = v["loader_images_per_s"], v["step_images_per_s"], v["end_to_end_images_per_s"]
    return L < 2 * S or (device_type == "cpu" and E < 0.8 * min(L, S))


def _loader_suggestion(r: dict) -> list[str]:
    """The fastest other loader when it beats this run end to end by 10% or more."""
    if not r.get("loaders"):
        return []
    best = max(r["loaders"], key=lambda x: x["end_to_end_images_per_s"])
    E = r["verdict"]["end_to_end_images_per_s"]
    if best["end_to_end_images_per_s"] < 1.1 * E:
        return []
    return [f"use --loader {best['name']}: {best['end_to_end_images_per_s']:,.0f} img/s end to "
            f"end against {E:,.0f} with --loader {r['loader']['name']} (measured on the same "
            f"views; fastssl train --loader {best['name']} ...)"]


def suggestions(r: dict) -> list[str]:
    """Concrete changes derived from the measured numbers (most useful first)."""
    v = r["verdict"]
    out: list[str] = _loader_suggestion(r)
    if v["bound"] in ("input", "balanced"):
        out += _input_suggestions(r)
    if v["bound"] == "compute" and v["wait_fraction"] >= SOME_WAIT:
        out += _waiting_suggestions(r)
    if v["bound"] in ("compute", "balanced"):
        out += _compute_suggestions(r)
    out += _contention_suggestions(r)
    return out


def _context(r: dict) -> tuple[dict, bool, int, int, str, str]:
    """The verdict, whether a GPU ran the step, cores, workers, loader name and worker unit."""
    host, ld = r["host"], r["loader"]
    name = ld["name"]
    return (r["verdict"], host["device"].startswith("cuda"), host["cpu_cores_available"],
            ld["workers"], name, "threads" if name == "dali" else "workers")


def _input_suggestions(r: dict) -> list[str]:
    """The loader cannot keep up: a faster loader, more workers, less per-sample work."""
    out: list[str] = []
    v, gpu, cores, workers, name, unit = _context(r)
    cfg, host, ld = r["config"], r["host"], r["loader"]
    L, E = v["loader_images_per_s"], v["end_to_end_images_per_s"]
    if name == "torch" and gpu:
        out.append(f"switch to the DALI GPU loader (--loader dali): decoding and augmentation "
                   f"move from {workers} CPU workers to the GPU")
    elif name == "torch" and host["dali"]:
        out.append("try --loader dali: DALI's CPU pipeline is usually faster than torchvision "
                   "workers, and on a GPU machine its GPU operators take the work off the CPU")
    elif name == "dali" and not gpu:
        out.append("DALI runs on the CPU here; on a GPU machine its mixed decoder and GPU "
                   "operators take the augmentation off the CPU")
    if r["sweep"]:
        best = max(r["sweep"], key=lambda p: p["images_per_s"])
        if best["workers"] != workers and best["images_per_s"] > 1.1 * L:
            out.append(f"raise --workers to {best['workers']}: the sweep measured "
                       f"{best['images_per_s']:,.0f} img/s against {L:,.0f} with {workers}")
    elif workers < cores:
        out.append(f"raise --workers (now {workers} {unit}, {cores} cores available); "
                   "--sweep measures the loader at each count")
    if workers >= cores:
        out.append(f"the loader already has {workers} {unit} for {cores} cores: more only "
                   "helps with more cores; cut per-sample work instead")
    views = cfg.get("global_crops", 2) + cfg.get("local_crops", 0)
    if cfg.get("local_crops", 0) > 0:
        fewer = cfg["local_crops"] // 2
        out.append(f"lower the crop count: each sample makes {views} views; --local_crops "
                   f"{fewer} makes {views - cfg['local_crops'] + fewer}")
    ops = ld.get("operators") or []
    if ops and ops[0]["share"] >= 0.25:
        op = ops[0]
        advice = _OP_ADVICE.get(op["name"], "it is the operator to move to the GPU (DALI)")
        out.append(f"{op['name']} takes {op['share']:.0%} of the loader's per-sample CPU time "
                   f"({op['ms_per_sample']:.2f} ms/sample): {advice}")
    epoch_s = ld["batches_per_epoch"] * ld["batch_size"] / E
    first = ld["first_batch_s"]["median"]
    if first > 0.05 * epoch_s:
        out.append(f"each epoch pays {first:.1f} s to start the loader ({first / epoch_s:.0%} "
                   f"of a {epoch_s:.0f} s epoch): use longer epochs (the torchvision loader "
                   "already keeps its workers across epochs)")
    return out


def _waiting_suggestions(r: dict) -> list[str]:
    """Compute-bound, yet the step still waits for input part of the time."""
    v, _, _, workers, name, _ = _context(r)
    in_process = workers == 0 and name == "torch"
    why = ("with --workers 0 every batch is loaded in the training process, between steps"
           if in_process else "start-up at epoch boundaries or uneven batches")
    return [f"the step still waits for input {v['wait_fraction']:.0%} of the time: {why}"
            + ("; --workers 1 or more overlaps loading with the step" if in_process else "")]


def _compute_suggestions(r: dict) -> list[str]:
    """The step is the limit: compilation, batch size, device, loader headroom."""
    out: list[str] = []
    v, gpu, _, workers, _, unit = _context(r)
    host, e2e = r["host"], r["end_to_end"]
    L, S = v["loader_images_per_s"], v["step_images_per_s"]
    step = r["step"]["variants"][r["step"]["used"]]
    variants = r["step"]["variants"]
    if len(variants) == 2:
        eager, comp = variants
        gain = comp["images_per_s"]["median"] / eager["images_per_s"]["median"]
        if gain > 1.1:
            out.append(f"use --compile on: the compiled step is {gain:.2f}x faster (after a "
                       f"one-off {comp['first_step_s'] or 0:.0f} s compilation)")
        elif gain < 0.9:
            out.append(f"use --compile off: the compiled step is {1 / gain:.2f}x slower here")
    elif not step["compiled"]:
        out.append("try --compile on (--compile both measures the compiled step)")
    total = host["gpu_memory_total_bytes"]
    if gpu and step["peak_memory_bytes"] and total and step["peak_memory_bytes"] < total / 2:
        peak = step["peak_memory_bytes"] / 2**30
        out.append(f"raise --batch_size: the step peaks at {peak:.1f} GiB of "
                   f"{total / 2**30:.0f} GiB")
    util = e2e.get("gpu_utilisation_percent")
    if gpu and util is not None and util < 70 and v["bound"] == "compute":
        out.append(f"GPU utilisation is only {util:.0f}% although the loader keeps up: the "
                   "step is launch-bound; a larger --batch_size or --compile on helps")
    if not gpu:
        out.append("the step runs on the CPU: a GPU, a smaller --backbone or --crop_size are "
                   "the ways to more img/s")
    if v["bound"] == "compute" and L / S > 2 and workers > 1:
        fewer = max(1, math.ceil(workers * MARGIN * S / L))
        if fewer < workers:
            out.append(f"the loader has {L / S:.1f}x headroom: --workers {fewer} would keep up "
                       f"and free {unit} for other work")
    return out


def _contention_suggestions(r: dict) -> list[str]:
    """On the CPU, end to end well below both parts alone: they share the cores."""
    v, gpu, cores, _, _, _ = _context(r)
    e2e = r["end_to_end"]
    L, S, E = v["loader_images_per_s"], v["step_images_per_s"], v["end_to_end_images_per_s"]
    if gpu or E >= 0.8 * min(L, S):
        return []
    used, busy = e2e.get("cpu_cores_used"), e2e.get("system_cpu_cores_busy")
    return [f"end to end ({E:,.0f} img/s) is well below both the loader ({L:,.0f}) and "
            f"the step ({S:,.0f}) alone: they compete for {cores} CPU cores"
            + (f" (this run used {used:.1f}" if used is not None else "")
            + (f", the machine {busy:.1f})" if busy is not None and used is not None
               else ")" if used is not None else "")]


# -- terminal table --------------------------------------------------------------------------
def _fmt(s: dict, unit: str, scale: float = 1.0, digits: int = 0) -> tuple[str, str]:
    f = f"{{:,.{digits}f}}"
    return (f"{f.format(s['median'] * scale)} {unit}",
            f"{f.format(s['min'] * scale)} .. {f.format(s['max'] * scale)}")


def format_report(r: dict) -> str:
    ld, e2e, host = r["loader"], r["end_to_end"], r["host"]
    unit = "threads" if ld["name"] == "dali" else "workers"
    rows = [("loader alone", f"({ld['name']}, {ld['workers']} {unit})", ld["images_per_s"],
             "img/s", 1, 0, ld["repeats"]),
            ("", "batches/s", ld["batches_per_s"], "", 1, 2, ld["repeats"]),
            ("", "first batch (start-up)", ld["first_batch_s"], "s", 1, 2, 1)]
    for i, var in enumerate(r["step"]["variants"]):
        tag = "compiled" if var["compiled"] else "eager"
        tag += " *" if i == r["step"]["used"] and len(r["step"]["variants"]) > 1 else ""
        rows.append(("step alone", f"({tag})", var["images_per_s"], "img/s", 1, 0,
                     var["repeats"]))
        rows.append(("", "time per step", var["step_s"], "ms", 1000, 1, var["repeats"]))
    rows += [("end to end", "", e2e["images_per_s"], "img/s", 1, 0, e2e["repeats"]),
             ("", "waiting for input", e2e["wait_fraction"], "%", 100, 0, e2e["repeats"])]
    lines = [f"{'measurement':<42} {'median':>14} {'min .. max':>22} {'n':>3}"]
    for a, b, s, u, scale, digits, n in rows:
        med, spread = _fmt(s, u, scale, digits)
        lines.append(f"{(a + ' ' + b).strip() if a else '  ' + b:<42} {med:>14} {spread:>22} "
                     f"{n:>3}")
    host_line = (f"host: {host['cpu_cores_available']} cores available"
                 + (f", {e2e['cpu_cores_used']:.1f} used by this run"
                    if e2e["cpu_cores_used"] is not None else "")
                 + (f" ({e2e['system_cpu_cores_busy']:.1f} busy machine-wide)"
                    if e2e["system_cpu_cores_busy"] is not None else "")
                 + f"; device {host['device_name']}")
    if e2e["gpu_utilisation_percent"] is not None:
        host_line += f"; GPU utilisation {e2e['gpu_utilisation_percent']:.0f}%"
    step = r["step"]["variants"][r["step"]["used"]]
    if step["peak_memory_bytes"] is not None:
        total = host["gpu_memory_total_bytes"] or 0
        host_line += f"; step peak memory {step['peak_memory_bytes'] / 2**30:.2f} of " \
                     f"{total / 2**30:.0f} GiB"
    lines += ["", host_line]
    if ld.get("operators"):
        lines += ["", f"{'loader operator (alone, one thread, per sample)':<42} {'ms':>8} "
                      f"{'share':>7}"]
        lines += [f"  {o['name']:<40} {o['ms_per_sample']:>8.3f} {o['share']:>7.0%}"
                  for o in ld["operators"]]
    if ld.get("dali_executor_statistics"):
        lines += ["", "DALI executor statistics (output memory per operator, bytes):"]
        for op, st in ld["dali_executor_statistics"].items():
            real = st.get("real_memory_size") or st.get("max_real_memory_size")
            lines.append(f"  {op:<40} {sum(real) if isinstance(real, list) else real!s:>12}")
    if r.get("sweep"):
        lines += ["", f"{'sweep: ' + unit:<42} {'img/s':>14} {'first batch s':>22}"]
        lines += [f"  {p['workers']:<40} {p['images_per_s']:>14,.0f} {p['first_batch_s']:>22.2f}"
                  for p in r["sweep"]]
    if r.get("loaders"):
        lines += ["", f"{'other loaders, end to end':<42} {'img/s':>14} {'waiting':>22}"]
        lines += [f"  {x['name']:<40} {x['end_to_end_images_per_s']:>14,.0f} "
                  f"{x['wait_fraction']:>22.0%}" for x in r["loaders"]]
    if r.get("trace"):
        lines += ["", f"trace: {r['trace']}"]
    lines += ["", r["verdict"]["text"]]
    lines += [f"  - {s}" for s in r["suggestions"]]
    return "\n".join(lines)


def plot(r: dict, path: str) -> None:
    """Bar chart of loader vs step vs end-to-end throughput (+ the sweep curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ld = r["loader"]
    bars = [(f"loader\n({ld['name']})", ld["images_per_s"], "tab:blue")]
    for var in r["step"]["variants"]:
        bars.append((f"step\n({'compiled' if var['compiled'] else 'eager'})",
                     var["images_per_s"], "tab:orange"))
    bars.append(("end to end", r["end_to_end"]["images_per_s"], "tab:green"))
    sweep = r.get("sweep")
    fig, axes = plt.subplots(1, 2 if sweep else 1, figsize=(10 if sweep else 6, 4),
                             squeeze=False)
    ax = axes[0][0]
    med = [b[1]["median"] for b in bars]
    err = [[m - b[1]["min"] for m, b in zip(med, bars, strict=True)],
           [b[1]["max"] - m for m, b in zip(med, bars, strict=True)]]
    ax.bar([b[0] for b in bars], med, yerr=err, color=[b[2] for b in bars], capsize=4)
    ax.set_ylabel("images / s")
    ax.set_title(r["verdict"]["bound"] + "-bound" if r["verdict"]["bound"] != "balanced"
                 else "balanced")
    if sweep:
        ax2 = axes[0][1]
        ax2.plot([p["workers"] for p in sweep], [p["images_per_s"] for p in sweep], "o-",
                 label=f"loader ({ld['name']})")
        ax2.axhline(r["verdict"]["step_images_per_s"], color="tab:orange", ls="--",
                    label="step alone")
        ax2.set_xlabel("threads" if ld["name"] == "dali" else "workers")
        ax2.set_ylabel("images / s")
        ax2.set_xscale("log", base=2)
        ax2.set_xticks([p["workers"] for p in sweep], [str(p["workers"]) for p in sweep])
        ax2.set_ylim(bottom=0)
        ax2.legend()
        ax2.set_title("loader scaling")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
