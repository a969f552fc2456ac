"""``fastssl profile``: is this pretraining run input-bound or compute-bound, by how much, and
what to change.

Takes the options of ``fastssl train`` (it builds the same ``Run`` through
``fastssl.train.setup``) plus its own, then measures, in about ``--budget`` seconds:

1. loader alone: images/s of ``run.loader`` after warm-up (and, for the torchvision loader, the
   per-sample cost of each operator; for DALI, its executor statistics where exposed);
2. step alone: ``fastssl.train.train_step`` on synthetic device-resident batches of the loader's
   shapes (eager and compiled with ``--compile both``);
3. end to end: the real loop, with the time blocked in the loader's ``next``, while sampling
   CPU / GPU use;
4. optionally the loader against its worker count (``--sweep``) and a torch.profiler trace.

The measurements live in ``fastssl.profiling.measure``; the verdict, suggestions, table, JSON
schema and plot in ``fastssl.profiling.report`` (schema documented in docs/profile.md).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import sys
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fastssl import distributed
from fastssl.batch import Batch
from fastssl.config import Config, ConfigError, coerce, load_preset, parse_overrides
from fastssl.methods import options_help, resolve_config
from fastssl.pipelines import available_loaders, build_train_loader
from fastssl.profiling import host, measure, operators, report
from fastssl.train import Run, setup

log = logging.getLogger("fastssl.profile")

HELP = """usage: fastssl profile [train options] [--repeats N] [--warmup N] [--steps N]
                       [--compile auto|on|off|both] [--sweep [workers|loaders|all]]
                       [--budget SECONDS]
                       [--json OUT.json] [--plot OUT.png] [--trace DIR]

Measures the loader alone, the training step alone (synthetic batches already on the device)
and the real loop end to end, then prints whether the run is input-bound or compute-bound,
by how much, and what to change. Train options (--method, --data, --loader, --workers,
--batch_size, --backbone, --crop_size, --local_crops, --config PRESET, ...) are those of
`fastssl train`.

  --repeats N      repeats of each measurement (consecutive windows: median, min..max; default 3)
  --warmup N       batches / steps run untimed before the windows (default 2)
  --steps N        at most N batches / steps per window (default 20; --budget may cut it)
  --compile both   time the step eager and compiled; the faster one runs end to end
  --sweep [workers|loaders|all]
                   workers (a bare --sweep): loader throughput against workers (DALI: threads)
                   1, 2, 4, ... cores; loaders: end to end with every available loader (also
                   done unasked when the loader may be what limits the run)
  --budget S       seconds the measurements aim for: windows and repeats are cut to fit
                   (at least one of each; default 60)
  --json OUT.json  every number (schema: docs/profile.md)
  --plot OUT.png   bar chart of loader / step / end-to-end throughput (+ sweep curve)
  --trace DIR      torch.profiler chrome trace of a few end-to-end steps (TensorBoard, Perfetto)
"""


@dataclass
class Options:
    repeats: int = 3
    warmup: int = 2
    steps: int = 20
    compile: str = "auto"  # auto | on | off: as the run; both: eager and compiled
    sweep: str = ""  # workers | loaders | all (a bare --sweep: workers)
    budget: float = 60.0
    json: str = ""
    plot: str = ""
    trace: str = ""


def parse(tokens: list[str]) -> tuple[Options, Config]:
    """Split profile options from train options; resolve the train config as ``fastssl train``."""
    overrides = parse_overrides(tokens)
    values = {}
    for name, typ in typing.get_type_hints(Options).items():
        if name != "compile" and name in overrides:
            values[name] = coerce(f"--{name}", overrides.pop(name), typ)
    if overrides.get("compile") == "both":
        overrides["compile"] = "off"  # the run is built eager; the compiled variant is added
        values["compile"] = "both"
    opts = Options(**values)
    for key in ("repeats", "steps"):
        if getattr(opts, key) < 1:
            raise ConfigError(f"profile option '--{key}' must be >= 1")
    if opts.warmup < 0:
        raise ConfigError("profile option '--warmup' must be >= 0")
    preset = load_preset(overrides.pop("config")) if "config" in overrides else None
    cfg = resolve_config(preset, overrides)
    if opts.compile != "both":
        opts.compile = cfg.compile
    opts.sweep = {"true": "workers"}.get(opts.sweep, opts.sweep)
    if opts.sweep not in ("", "workers", "loaders", "all"):
        raise ConfigError(f"profile option '--sweep': {opts.sweep!r} is not one of workers, "
                          "loaders, all")
    return opts, cfg


@dataclass
class Budget:
    """Seconds per timed window and deadlines, as shares of ``--budget``."""

    opts: Options
    start: float = dataclasses.field(default_factory=time.perf_counter)

    def window(self, share: float) -> float:  # seconds per timed window for a phase's share
        return self.opts.budget * share / self.opts.repeats

    def deadline(self, share: float) -> float:  # repeats stop after this cumulative share
        return self.start + self.opts.budget * share

    @property
    def counts(self) -> dict[str, int]:
        return {"warmup": self.opts.warmup, "steps": self.opts.steps,
                "repeats": self.opts.repeats}


def loader_phase(run: Run, budget: Budget, say: Callable[[str], None]) -> tuple[dict, Batch]:
    """The loader alone, its per-operator costs and DALI's executor statistics."""
    cfg, device, name, specs = run.cfg, run.device, run.loader_name, run.loader.spec.views
    say(f"loader alone ({name}, {cfg.workers} workers)")
    loader, sample = measure.time_loader(run.loader, device, **budget.counts,
                                         window_s=budget.window(0.25),
                                         deadline=budget.deadline(0.3))
    loader.update(name=name, workers=cfg.workers, batch_size=cfg.batch_size // run.world,
                  batches_per_epoch=len(run.loader), operators=None,
                  dali_executor_statistics=None)
    say("loader operators")
    try:
        if name == "torch":
            loader["operators"] = operators.torch_operator_costs(run.index.train.paths, specs)
        elif name == "dali":  # (memory: whole-batch tensor ops, timed as 'loader alone')
            from fastssl.profiling.dali_ops import dali_operator_costs  # DALI: optional

            loader["operators"] = dali_operator_costs(
                run.index.train.paths, specs, device.type, device_index=device.index or 0)
            loader["dali_executor_statistics"] = operators.dali_executor_statistics(run.loader)
    except Exception as e:  # noqa: BLE001 - a breakdown failing must not lose the profile
        log.warning("per-operator breakdown failed: %s", e)
    return loader, sample


def step_phase(run: Run, opts: Options, budget: Budget, sample: Batch,
               counter: measure.StepCounter, say: Callable[[str], None]) -> tuple[list, int, Run]:
    """The step alone (eager and / or compiled); returns the variants, the index of the faster
    one and the run that uses it."""
    eager = getattr(run.forward, "_orig_mod", run.forward)  # torch.compile keeps the original
    if opts.compile == "both":
        forwards = [(False, eager), (True, torch.compile(eager))]
    else:
        forwards = [(run.forward is not eager, run.forward)]
    variants = []
    for compiled, forward in forwards:
        say(f"step alone ({'compiled' if compiled else 'eager'})")
        m = measure.time_step(measure.with_forward(run, forward), sample, counter,
                              **budget.counts, window_s=budget.window(0.25 / len(forwards)),
                              deadline=budget.deadline(0.6), compiled=compiled)
        variants.append({"compiled": compiled, **m})
    used = max(range(len(variants)), key=lambda i: variants[i]["images_per_s"]["median"])
    return variants, used, measure.with_forward(run, forwards[used][1])


def compare_loaders(run: Run, budget: Budget, counter: measure.StepCounter,
                    say: Callable[[str], None]) -> list[dict]:
    """End-to-end img/s of every other available loader on the same views (a few steps each)."""
    others = [n for n in available_loaders(run.loader.spec) if n != run.loader_name]
    say(f"end to end with the other loaders ({', '.join(others)})")
    rows = []
    for name in others:
        loader = build_train_loader(name, run.loader.spec)
        m = measure.end_to_end(dataclasses.replace(run, loader=loader, loader_name=name),
                               counter, warmup=budget.opts.warmup, steps=budget.opts.steps,
                               repeats=1, window_s=budget.window(0.2) * budget.opts.repeats
                               / max(1, len(others)))
        rows.append({"name": name, "end_to_end_images_per_s": m["images_per_s"]["median"],
                     "wait_fraction": m["wait_fraction"]["median"]})
        del loader
    return rows


def profile(run: Run, opts: Options, say: Callable[[str], None] = lambda msg: None) -> dict:
    """Every measurement, the verdict and suggestions, as the ``--json`` document."""
    cfg, device = run.cfg, run.device
    budget = Budget(opts)
    created = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    counter = measure.StepCounter()
    loader, sample = loader_phase(run, budget, say)
    variants, used, run_used = step_phase(run, opts, budget, sample, counter, say)
    del sample

    say("end to end")
    with host.HostSampler(device) as sampler:
        e2e = measure.end_to_end(run_used, counter, **budget.counts,
                                 window_s=budget.window(0.35), deadline=budget.deadline(0.95))
    e2e.update(sampler.result())
    verdict = report.verdict(loader["images_per_s"]["median"],
                             variants[used]["images_per_s"]["median"],
                             e2e["images_per_s"]["median"], e2e["wait_fraction"]["median"])

    sweep = None
    if opts.sweep in ("workers", "all"):
        counts = measure.worker_counts(host.cores_available())
        say(f"sweep over {counts}")
        sweep = measure.sweep(
            lambda w: build_train_loader(run.loader_name,
                                         dataclasses.replace(run.loader.spec, workers=w)),
            device, counts, warmup=opts.warmup, steps=opts.steps, window_s=budget.window(0.25))
    loaders = None
    if opts.sweep in ("loaders", "all") or report.loader_may_matter(verdict, device.type):
        loaders = compare_loaders(run_used, budget, counter, say)
    trace = None
    if opts.trace:
        say("trace")
        trace = measure.trace(run_used, counter, opts.trace)

    r = {
        "schema_version": 2, "created": created, "config": cfg.to_dict(),
        "options": {"repeats": opts.repeats, "warmup": opts.warmup, "steps": opts.steps,
                    "compile": opts.compile, "sweep": opts.sweep, "budget_s": opts.budget},
        "host": host.describe(device), "loader": loader,
        "step": {"variants": variants, "used": used}, "end_to_end": e2e, "sweep": sweep,
        "loaders": loaders, "trace": trace, "verdict": verdict,
    }
    r["suggestions"] = report.suggestions(r)
    r["elapsed_s"] = time.perf_counter() - budget.start
    return r


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(f"{HELP}\n{options_help(argv)}")
        return 0
    t0 = time.perf_counter()
    opts, cfg = parse(argv)
    run = setup(cfg, loader_stats=True)
    say = (lambda msg: print(f"profile: {msg} ...", file=sys.stderr, flush=True)) \
        if run.rank == 0 else (lambda msg: None)
    try:
        r = profile(run, opts, say)
    finally:
        if run.ddp:
            distributed.shutdown()
    if run.rank != 0:
        return 0
    r["elapsed_s"] = time.perf_counter() - t0  # including setup (data scan, model build)
    errors = report.validate(r)
    if errors:  # a bug in fastssl, not in the user's run: say so, still print the results
        log.warning("profile JSON does not match its schema: %s", "; ".join(errors[:5]))
    if opts.json:
        Path(opts.json).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.json).write_text(json.dumps(r, indent=2) + "\n")
    if opts.plot:
        Path(opts.plot).parent.mkdir(parents=True, exist_ok=True)
        report.plot(r, opts.plot)
    print(report.format_report(r), flush=True)
    print(f"profiled in {r['elapsed_s']:.0f} s", file=sys.stderr)
    return 0
