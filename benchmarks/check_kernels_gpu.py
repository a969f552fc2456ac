"""GPU correctness check of the fused loss kernels against the float64 reference.

    python benchmarks/check_kernels_gpu.py [--out RESULTS_DIR]

Fresh random inputs on every run (seeded from the clock, seed printed), several sizes including
odd ones and the benchmark sizes, bf16 and fp32, poisoned (NaN-filled) kernel outputs. Error =
‖out − ref‖ / ‖ref‖ for the loss and every gradient, the reference computed in float64 on the
same (rounded) inputs. Thresholds: fp32 1e-3 (Triton's float32 dot runs in tf32, which lands
near 3e-4), bf16/fp16 1e-2; NaN never passes. Writes ``kernels-check-<device>.md``; exit code 1
if anything fails.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import traceback
from pathlib import Path

os.environ["FASTSSL_KERNELS_POISON"] = "1"
os.environ.setdefault("FASTSSL_AUTOTUNE", "0")  # one tile config: correctness, fewer compiles

import torch  # noqa: E402

import fastssl.kernels as K  # noqa: E402
from fastssl.kernels import reference as R  # noqa: E402

THRESHOLD = {torch.float32: 1e-3, torch.bfloat16: 1e-2, torch.float16: 1e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all():
        return float("inf")
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def check(name, fn, ref_fn, inputs, grads, dtype):
    """Run fn on dtype copies and ref_fn on float64 copies; return {quantity: rel error}."""
    xs = [x.to(dtype).clone().requires_grad_(g) for x, g in zip(inputs, grads, strict=True)]
    refs = [x.to(dtype).double().requires_grad_(g) for x, g in zip(inputs, grads, strict=True)]
    out = fn(*xs)
    want = ref_fn(*refs)
    errors = {"value": rel_err(out, want)}
    if any(grads):
        upstream = torch.rand((), device=out.device) + 0.5
        (out * upstream).backward()
        (want * upstream.double()).backward()
        for i, (x, r) in enumerate(zip(xs, refs, strict=True)):
            if grads[i]:
                errors[f"grad{i}"] = rel_err(x.grad, r.grad) if x.grad is not None else float("inf")
    if out.is_cuda:
        torch.cuda.synchronize()
    return errors


def specs(dev):
    def randn(*shape):
        return torch.randn(*shape, device=dev)

    info = lambda tau: (lambda q, k, queue=None: K.info_nce(q, k, queue, temperature=tau,
                                                            backend="triton"))
    info_ref = lambda tau: (lambda q, k, queue=None: R.info_nce(q, k, queue, tau))
    # each distinct (width, dtype, variant) compiles the kernels once: keep the list short
    for b, n, d in [(256, 65536, 128), (37, 1000, 24)]:
        yield (f"info_nce queue B={b} N={n} D={d}", info(0.2), info_ref(0.2),
               [randn(b, d), randn(b, d), randn(n, d)], [True, True, False])
    for b, d, tau in [(4096, 256, 0.2), (1000, 64, 0.01)]:
        yield (f"info_nce in-batch B={b} D={d} tau={tau}", info(tau), info_ref(tau),
               [randn(b, d), randn(b, d)], [True, True])
    for n, d in [(4096, 128), (333, 96)]:
        yield (f"nt_xent 2N={2 * n} D={d}",
               lambda a, b: K.nt_xent(a, b, temperature=0.5, backend="triton"),
               lambda a, b: R.nt_xent(a, b, 0.5), [randn(n, d), randn(n, d)], [True, True])
    for n, d in [(256, 8192), (2048, 1024), (100, 300), (1000, 700)]:
        z1 = randn(n, d) * 2 + 1
        z2 = randn(n, d) + 0.5 * z1
        yield (f"barlow_twins N={n} D={d}",
               lambda a, b: K.barlow_twins_loss(a, b, lambd=0.0051, backend="triton"),
               lambda a, b: R.barlow_twins_loss(a, b, 0.0051), [z1, z2], [True, True])
    for b, k, scale in [(4096, 3000, 1.0), (37, 101, 1.0), (512, 300, 20.0)]:
        scores = torch.nn.functional.normalize(randn(b, 128), dim=1)
        scores = scores @ torch.nn.functional.normalize(randn(k, 128), dim=1).T * scale
        # |scores/eps| > ~700 underflows the reference's exp: compare with the log-domain form
        ref = (lambda s: R.sinkhorn_knopp(s, 0.05, 3)) if scale == 1.0 else _log_sinkhorn
        yield (f"sinkhorn B={b} K={k} |s/eps|<={20 * scale:g}",
               lambda s: K.sinkhorn_knopp(s, eps=0.05, iters=3, backend="triton"),
               ref, [scores], [False])


def _log_sinkhorn(scores, eps=0.05, iters=3):
    """float64 log-domain Sinkhorn for scores where exp(scores/eps) overflows the reference."""
    s = scores.double() / eps
    f = torch.zeros(s.shape[0], dtype=s.dtype, device=s.device)
    for _ in range(iters):
        g = -torch.logsumexp(s + f[:, None], dim=0)
        f = -torch.logsumexp(s + g[None, :], dim=1)
    return torch.exp(s + g[None, :] + f[:, None])


def check_compile(dev) -> str:
    q = torch.randn(512, 128, device=dev, requires_grad=True)
    k = torch.randn(512, 128, device=dev, requires_grad=True)
    fn = torch.compile(lambda a, b: K.nt_xent(a, b, backend="triton")
                       + K.barlow_twins_loss(a, b, backend="triton"), fullgraph=True)
    out = fn(q, k)
    out.backward()
    want = K.nt_xent(q, k, backend="torch") + K.barlow_twins_loss(q, k, backend="torch")
    return f"{rel_err(out, want):.2e}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--cpu-smoke", action="store_true", help="check this script on CPU in "
                        "Triton's interpreter (TRITON_INTERPRET=1), small sizes only")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        dev, name = torch.device("cpu"), "cpu-interpreter-smoke"
    elif torch.cuda.is_available():
        dev, name = torch.device("cuda"), torch.cuda.get_device_name()
    else:
        print("no CUDA device: nothing to check (the CPU interpreter tests live in tests/kernels)")
        return 0
    seed = int(time.time()) % 2**31
    torch.manual_seed(seed)
    lines = [f"# Kernel check on {name}", "",
             f"torch {torch.__version__}, seed {seed}. Error = ‖out − ref‖/‖ref‖ vs float64; "
             "thresholds fp32 1e-3 (tf32 dot), bf16 1e-2.", "",
             "| check | dtype | value | gradients | ok |", "|---|---|---|---|---|"]
    failed = 0
    # bf16 tl.dot is wrong in the interpreter, so the smoke run checks fp32 only
    for dtype in (torch.float32,) if args.cpu_smoke else (torch.float32, torch.bfloat16):
        for label, fn, ref_fn, inputs, grads in specs(dev):
            if args.cpu_smoke and max(x.numel() for x in inputs) > 40_000:
                continue
            try:
                errs = check(label, fn, ref_fn, inputs, grads, dtype)
                ok = all(e <= THRESHOLD[dtype] for e in errs.values())
                grad_txt = ", ".join(f"{k} {v:.1e}" for k, v in errs.items() if k != "value")
                row = f"| {label} | {str(dtype)[6:]} | {errs['value']:.1e} | {grad_txt or '–'} "
            except Exception as exc:  # report and go on: one broken kernel must not hide others
                traceback.print_exc()
                ok, row = False, f"| {label} | {str(dtype)[6:]} | error: {type(exc).__name__} | "
            failed += not ok
            lines.append(row + f"| {'yes' if ok else '**NO**'} |")
            print(lines[-1], flush=True)
    try:
        if not args.cpu_smoke:
            lines += ["", f"torch.compile(fullgraph=True) nt_xent + barlow: error "
                      f"{check_compile(dev)}"]
    except Exception as exc:
        traceback.print_exc()
        failed += 1
        lines += ["", f"torch.compile(fullgraph=True) failed: {type(exc).__name__}: {exc}"]
    lines += ["", f"{failed} failing check(s).", ""]
    text = "\n".join(lines)
    print(text)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    out = Path(args.out) / f"kernels-check-{slug}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
