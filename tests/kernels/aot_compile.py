"""Compile every Triton kernel for a Hopper GPU (sm_90) without a GPU: catches what the
interpreter cannot (type errors in compiled mode, unsupported ops, shared memory over budget).

    python tests/kernels/aot_compile.py [--all]

Must run without TRITON_INTERPRET (``test_aot_compile.py`` starts it in a subprocess). Default:
for each kernel variant, configs in order until one fits in shared memory; ``--all``: every
config, more dtypes. A config over the shared-memory budget is "pruned" (the autotuner skips it
at run time); a compile error, or a variant with no fitting config, fails (exit code 1).
"""

from __future__ import annotations

import importlib
import os
import sys
import time

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TARGET = GPUTarget("cuda", 90, 32)
SMEM_LIMIT = 227 * 1024  # H100/H200 shared memory per block
FLOAT_SCALARS = {"scale", "inv_eps", "eps", "lambd"}
DATA_POINTERS = {"Q", "K", "Z1", "Z2", "Z", "DZ", "S"}  # the input dtype; other pointers fp32
POINTERS = {
    "info_nce": {"Q", "K", "COL_SCALE", "LSE_PART", "LSE", "DLSE", "DQ_PART", "DK_PART"},
    "barlow": {"Z1", "Z2", "MEAN", "RSTD", "DIAG", "PART", "GRAM", "DX", "Z", "DZ"},
    "sinkhorn": {"S", "F", "PART", "G", "OUT"},
}


def _compile(jit_fn, dtype: str, constexprs: dict, num_warps: int, num_stages: int):
    pointers = POINTERS[jit_fn.__name__.split("_")[1] if "info" not in jit_fn.__name__
                        else "info_nce"]
    sig = {}
    for name in jit_fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in pointers:
            sig[name] = f"*{dtype}" if name in DATA_POINTERS else "*fp32"
        else:
            sig[name] = "fp32" if name in FLOAT_SCALARS else "i32"
    src = ASTSource(fn=jit_fn, signature=sig, constexprs=constexprs)
    opts = {"num_warps": num_warps, "num_stages": num_stages}
    return triton.compile(src, target=TARGET, options=opts)


def jobs(every_config: bool):
    """Yield lists of alternatives (kernel, dtype, constexprs, warps, stages): each list needs one
    member that compiles within the shared-memory budget, as the autotuner prunes the others."""
    ik = importlib.import_module("fastssl.kernels.info_nce")
    bt = importlib.import_module("fastssl.kernels.barlow_twins")
    sk = importlib.import_module("fastssl.kernels.sinkhorn")
    # smallest pipelined tile first: the default run stops at the first config that fits
    configs = sorted(ik._configs(), key=lambda c: c.kwargs["BLOCK_N"] * c.num_stages)
    variants = [("bf16", 512, False, True), ("fp32", 256, True, False)]  # widest `supports` takes
    if every_config:
        variants.append(("fp16", 64, False, False))
    for kernel in (ik._info_nce_fwd, ik._info_nce_bwd_dq, ik._info_nce_bwd_dk):
        for dtype, block_d, has_cs, diag in variants:
            group = []
            for cfg in configs:
                const = dict(HAS_COL_SCALE=has_cs, EXCLUDE_DIAG=diag, BLOCK_D=block_d, **cfg.kwargs)
                if "FIXED_MAX" in kernel.fn.arg_names:
                    const["FIXED_MAX"] = dtype != "fp32"  # both branches across the dtypes
                group.append((kernel.fn, dtype, const, cfg.num_warps, cfg.num_stages))
            yield group
    for dtype in ("bf16", "fp32") if every_config else ("bf16",):
        tiles = dict(BLOCK_T=bt.BLOCK_T, BLOCK_K=bt.BLOCK_K)
        cols = dict(BLOCK_ROWS=bt.BLOCK_ROWS, BLOCK_COLS=bt.BLOCK_COLS)
        blocks = dict(BLOCK_B=sk.BLOCK_B, BLOCK_K=sk.BLOCK_K)
        yield [(bt._barlow_twins_stats, dtype, cols, 4, 2)]
        yield [(bt._barlow_twins_fwd_gram, dtype, tiles, 4, 2)]
        yield [(bt._barlow_twins_fwd_cc, dtype, tiles, 4, 2)]
        yield [(bt._barlow_twins_bwd, dtype, cols, 4, 2)]
        yield [(sk._sinkhorn_fwd_col, dtype, blocks, 4, 2)]
        yield [(sk._sinkhorn_fwd_row, dtype, dict(WRITE_OUT=w, **blocks), 4, 2) for w in (0, 1)]


def main(argv: list[str]) -> int:
    assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0"), "run without TRITON_INTERPRET"
    every = "--all" in argv
    failures = 0
    for group in jobs(every):
        fits = errors = 0
        for jit_fn, dtype, const, warps, stages in group:
            label = f"{jit_fn.__name__} {dtype} {const} w{warps} s{stages}"
            t0 = time.perf_counter()
            try:
                smem = _compile(jit_fn, dtype, const, warps, stages).metadata.shared
            except Exception as exc:  # a compile error fails whatever the config
                errors += 1
                print(f"FAIL {label}: {type(exc).__name__}: {str(exc)[-1500:]}", flush=True)
                continue
            fit = smem <= SMEM_LIMIT
            fits += fit
            print(f"{'ok    ' if fit else 'pruned'} {label}: smem {smem} B "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
            if fit and not every and "WRITE_OUT" not in const:
                break
        if errors or not fits:
            failures += 1
            if not fits:
                print(f"FAIL {group[0][0].__name__} {group[0][1]}: no config fits", flush=True)
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
