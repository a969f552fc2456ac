"""Summary of a GPU suite run against issue 19's goals: RESULTS_DIR/gpu-suite-<gpu>.md.

    python benchmarks/gpu_report.py RESULTS_DIR [--gpu nvidia-h200] [--out FILE]

Reads what ``benchmarks/gpu_suite.sh`` left in RESULTS_DIR (it runs this as its last step):
``gpu-suite-status.txt`` (each step's rc and seconds), ``gpu-info.txt``,
``pipelines-<gpu>.md`` and ``profile-{dali,torch}-<gpu>.json``. Writes the goal table (first bar,
moonshot, measured, met) and the step list; a figure whose file is missing reads "not run".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def pipelines_row(text: str, preset: str, loader: str) -> tuple[float, str] | None:
    """(median img/s, "vs torch" cell) of a row of pipelines.py's table."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[2].startswith(preset) and cells[3] == loader:
            return float(cells[4].split()[0]), cells[5]
    return None


def profile_figures(r: dict) -> dict:
    variants = {v["compiled"]: v for v in r["step"]["variants"]}
    speedup = None
    if True in variants and False in variants:  # --compile both: eager time over compiled time
        speedup = variants[False]["step_s"]["median"] / variants[True]["step_s"]["median"]
    used = r["step"]["variants"][r["step"]["used"]]["compiled"]  # the faster, run end to end
    return {"e2e": r["end_to_end"]["images_per_s"]["median"],
            "step_used": "compiled" if used else "eager (faster here)",
            "wait": r["end_to_end"]["wait_fraction"]["median"],
            "loader": r["loader"]["images_per_s"]["median"], "speedup": speedup,
            "elapsed": r["elapsed_s"], "verdict": r["verdict"]["text"]}


def met(ok: bool | None) -> str:
    return "not run" if ok is None else ("yes" if ok else "no")


def goal_rows(results: Path, gpu: str) -> list[str]:
    rows = []
    table = results / f"pipelines-{gpu}.md"
    swav = pipelines_row(table.read_text(), "swav", "dali") if table.exists() else None
    if swav:
        ratio = float(swav[1].rstrip("x"))
        measured, first, moon = (f"{swav[0]:,.0f} img/s, {swav[1]} torchvision", ratio >= 3,
                                 swav[0] >= 5000 and ratio >= 5)
    else:
        measured, first, moon = "not run", None, None
    rows.append(f"| DALI GPU multi-crop (2 x 224 + 6 x 96), images/s | >= 3x torchvision with 16 "
                f"workers | >= 5,000 img/s and >= 5x | {measured} | {met(first)} / {met(moon)} |")
    profiles = {}
    for loader in ("dali", "torch"):
        path = results / f"profile-{loader}-{gpu}.json"
        profiles[loader] = profile_figures(json.loads(path.read_text())) if path.exists() else None
    p = profiles["dali"]
    if p:
        rows += [
            f"| SwAV ResNet-50 multi-crop, bf16 + compile, DALI loader, images/s | measured, "
            f"input wait <= 10% | >= 2,000 img/s, input wait <= 5% | {p['e2e']:,.0f} img/s, "
            f"wait {100 * p['wait']:.0f}%, step {p['step_used']} | {met(p['wait'] <= 0.10)} / "
            f"{met(p['e2e'] >= 2000 and p['wait'] <= 0.05)} |",
            "| compiled vs eager step | >= 1.2x | >= 1.3x | "
            + (f"{p['speedup']:.2f}x | {met(p['speedup'] >= 1.2)} / {met(p['speedup'] >= 1.3)} |"
               if p["speedup"] else "not measured | not run / not run |"),
            f"| `fastssl profile` on the GPU (DALI) | <= 120 s with a verdict | | "
            f"{p['elapsed']:.0f} s, {p['verdict'].split(':')[0]} | {met(p['elapsed'] <= 120)} |",
        ]
    else:
        rows.append("| SwAV ResNet-50 (DALI loader), compiled vs eager, profile time | | | "
                    "not run | not run |")
    t = profiles["torch"]
    rows.append("| same with the torchvision loader (comparison), images/s | | | "
                + (f"{t['e2e']:,.0f} img/s, wait {100 * t['wait']:.0f}%, loader alone "
                   f"{t['loader']:,.0f} img/s | |" if t else "not run | |"))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path)
    p.add_argument("--gpu", default="", help="name in the file names (default: from them)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    gpu = a.gpu or next((f.stem.removeprefix("profile-dali-") for f in
                         sorted(a.results.glob("profile-dali-*.json"))), "")
    if not gpu:
        p.error("--gpu is needed: no profile-dali-<gpu>.json in the results")
    status = a.results / "gpu-suite-status.txt"
    info = a.results / "gpu-info.txt"
    lines = [f"# GPU suite run ({gpu})", "",
             "Written by `benchmarks/gpu_report.py` from the files beside it.", "",
             "| figure | first bar | moonshot | measured | met (bar / moonshot) |",
             "|---|---|---|---|---|", *goal_rows(a.results, gpu), "",
             "Machine and steps (`gpu-info.txt`, `gpu-suite-status.txt`: rc 124 = hit its "
             "limit, rc 5 = pytest selected no test):", "", "```",
             info.read_text().strip() if info.exists() else "gpu-info.txt missing",
             "",
             status.read_text().strip() if status.exists() else "gpu-suite-status.txt missing",
             "```", ""]
    out = a.out or a.results / f"gpu-suite-{gpu}.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
