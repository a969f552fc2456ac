"""Command line: ``fastssl train | eval | data | profile`` (one entry point).

Every config key is an option: ``--key=value`` or ``--key value`` (see ``fastssl.config``);
``--config PRESET`` loads ``configs/PRESET.yaml`` or a YAML file. Subcommands import their
modules when called, so ``fastssl --help`` answers without loading torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from fastssl.config import ConfigError, load_preset, parse_overrides
from fastssl.data.layout import DataError

USAGE = """usage:
  fastssl train [--config PRESET] [--method NAME] [--data DIR] [--epochs E] [--out OUT]
                [--resume] [--KEY=VALUE ...]
  fastssl eval {knn,linear,rank} --checkpoint CKPT [--data DIR] [--bg_shift only_fg,mixed_rand]
  fastssl finetune [--checkpoint CKPT] [--labels 1%|10%|N] [options]   (fastssl finetune --help)
  fastssl distill --teacher CKPT [--student BACKBONE] [options]        (fastssl distill --help)
  fastssl selftrain [--labels 10%] [--iterations K] [options]         (fastssl selftrain --help)
  fastssl data synth {shapes,digits,av} OUT
  fastssl data prepare-video SRC OUT [options]   (fastssl data prepare-video --help)
  fastssl data masks DIR [options]        (fastssl data masks --help)
  fastssl data backgrounds DIR [options]  (fastssl data backgrounds --help)
  fastssl profile [train options]         (fastssl profile --help)
  fastssl export --checkpoint CKPT --out FILE [--format torch|safetensors]
  fastssl elo search --data DIR --budget N [options]   (fastssl elo search --help)
"""


TRAIN_USAGE = """usage: fastssl train [--config PRESET] [--method NAME] [--KEY=VALUE ...]

Options are the general ones below and those of the chosen method (fastssl train --method NAME
--help lists them); resolution order: defaults -> the method's -> --config PRESET -> options."""


def cmd_train(tokens: list[str]) -> int:
    from fastssl.methods import options_help, resolve_config

    if "-h" in tokens or "--help" in tokens:
        print(f"{TRAIN_USAGE}\n\n{options_help(tokens)}")
        return 0
    from fastssl.train import train

    overrides = parse_overrides(tokens)
    preset = load_preset(overrides.pop("config")) if "config" in overrides else None
    cfg = resolve_config(preset, overrides)
    result = train(cfg)
    if result.stopped_early:
        print(f"stopped at step {result.steps}; resume with: fastssl train --out {cfg.out} "
              "--resume (and the same options)", file=sys.stderr)
        return 143
    print(result.summary(), flush=True)
    return 0


def cmd_eval(argv: list[str]) -> int:
    from fastssl.eval.run import PROTOCOLS, bg_shift_checkpoint, evaluate_checkpoint

    p = argparse.ArgumentParser(prog="fastssl eval")
    p.add_argument("protocol", choices=PROTOCOLS, help="kNN or linear-probe top-1, or rank: "
                   "the effective rank of the training split's features (RankMe; low = collapse)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default=None, help="dataset root (default: the one trained on)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--bg_shift", default="", help="knn on held-out variants built from the "
                   "masks: comma list of only_fg, mixed_same, mixed_rand")
    a = p.parse_args(argv)
    if a.bg_shift:
        if a.protocol != "knn":
            p.error("--bg_shift needs the knn protocol")
        shifts = [s for s in a.bg_shift.split(",") if s]
        res = bg_shift_checkpoint(a.checkpoint, shifts, data=a.data, device=a.device,
                                  workers=a.workers)
        print(" ".join(f"knn_top1[{k}]={v:.2f}" if not k.startswith(("gap", "bg_gap"))
                       else f"{k}={v:+.2f}" for k, v in res.items()))
        return 0

    score = evaluate_checkpoint(a.checkpoint, a.protocol, data=a.data, device=a.device,
                                workers=a.workers)
    print(f"effective_rank={score:.2f}" if a.protocol == "rank" else
          f"{a.protocol}_top1={score:.2f}")
    return 0


def cmd_data(argv: list[str]) -> int:
    if argv[:1] == ["masks"]:
        from fastssl.data.masks import main as masks_main

        return masks_main(argv[1:])
    if argv[:1] == ["backgrounds"]:
        from fastssl.data.backgrounds import main as backgrounds_main

        return backgrounds_main(argv[1:])
    if argv[:1] == ["prepare-video"]:
        from fastssl.data.video import main as prepare_main

        return prepare_main(argv[1:])
    p = argparse.ArgumentParser(prog="fastssl data")
    sub = p.add_subparsers(dest="action", required=True)
    synth = sub.add_parser("synth", help="write an embedded data set in the standard layout")
    synth.add_argument("name", choices=["shapes", "digits", "av"])
    synth.add_argument("out")
    synth.add_argument("--clutter", choices=["low", "high"], default="low",
                       help="shapes: high = smaller shapes on per-image textured backgrounds "
                       "(a background shortcut; 4000 train / 1000 val)")
    sub.add_parser("masks", help="foreground masks for background augmentation "
                                 "(fastssl data masks --help)")
    sub.add_parser("backgrounds", help="foreground-free backgrounds from the masks "
                                       "(fastssl data backgrounds --help)")
    a = p.parse_args(argv)
    from fastssl.data.layout import scan
    from fastssl.data.synth import GENERATORS

    if a.name == "av":
        from fastssl.data.av import synth_av

        out = synth_av(a.out)
    elif a.clutter == "high":
        from fastssl.data.synth import synth_cluttered

        out = synth_cluttered(a.out)
    else:
        out = GENERATORS[a.name](a.out)
    index = scan(out)
    kind = "clips" if a.name == "av" else "images"
    print(f"wrote {a.name} to {out}: {len(index.train)} train / {len(index.val)} val {kind}, "
          f"{len(index.classes)} classes")
    return 0


def cmd_export(argv: list[str]) -> int:
    from fastssl.export import main as export_main

    return export_main(argv)


def cmd_profile(argv: list[str]) -> int:
    from fastssl.profile import main as profile_main

    return profile_main(argv)


def cmd_elo(argv: list[str]) -> int:
    from fastssl.elo.commands import main as elo_main

    return elo_main(argv)


def cmd_semisup(name: str) -> Callable[[list[str]], int]:
    """``fastssl finetune | distill | selftrain`` (fastssl.semisup)."""
    def run(tokens: list[str]) -> int:
        from fastssl.semisup.commands import main as semisup_main

        return semisup_main(name, tokens)
    return run


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "data": cmd_data, "profile": cmd_profile,
            "export": cmd_export, "elo": cmd_elo,
            **{name: cmd_semisup(name) for name in ("finetune", "distill", "selftrain")}}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[argv[0]](argv[1:])
    except (ConfigError, DataError, FileNotFoundError, ValueError) as e:
        print(f"fastssl: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # e.g. a non-finite loss: the message names step and checkpoint
        print(f"fastssl: error: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
