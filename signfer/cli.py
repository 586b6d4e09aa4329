"""The ``signfer`` command: each subcommand parses its arguments and calls one library function.

``get_parser()`` returns the parser unparsed so it can be tested.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from signfer import __version__
from signfer.errors import SignferError


def _die(msg: str) -> int:
    print(f"signfer: error: {msg}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------- arguments

def _dataset_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("dataset")
    g.add_argument("--dataset", choices=["feph", "folder", "manifest"], required=required,
                   help="adapter: FePh download, class folders, or a path,label[,group] CSV")
    g.add_argument("--root", required=required, help="dataset folder (the CSV file for a manifest)")
    g.add_argument("--split", help="folder datasets with train/validation/test: which split ('all' for all)")
    g.add_argument("--keep-multilabel", action="store_true",
                   help="FePh: keep multi-label faces (one row per label) instead of skipping them")
    g.add_argument("--keep-none", action="store_true", help="FePh: keep the 'none' class")
    g.add_argument("--crop-faces", nargs="?", const="default", default=None, metavar="DETECTOR",
                   help="images are frames, not face crops: detect and crop the face "
                        "(optionally name the detector; see `signfer detectors`)")


def _load_table(args):
    from signfer.data import load_dataset

    opts = {}
    if args.dataset == "feph":
        opts = {"keep_multilabel": args.keep_multilabel, "keep_none": args.keep_none}
    elif args.keep_multilabel or args.keep_none:
        raise SignferError("--keep-multilabel and --keep-none apply to --dataset feph only")
    if args.split:
        if args.dataset != "folder":
            raise SignferError("--split applies to --dataset folder only")
        opts["split"] = args.split
    table = load_dataset(args.dataset, os.path.expanduser(args.root), **opts)
    if table.skipped is not None and len(table.skipped):
        reasons = table.skipped["reason"].str.split("(").str[0].str.strip().value_counts()
        print(f"skipped {len(table.skipped)} row(s): "
              + ", ".join(f"{n} {r}" for r, n in reasons.items())
              + " (`signfer data summary` lists them)", file=sys.stderr)
    return table, {"kind": args.dataset, "root": str(Path(args.root).expanduser().resolve()), **opts}


def _crop(args) -> str | None:
    if not args.crop_faces:
        return None
    from signfer.faces import DEFAULT_DETECTOR

    return DEFAULT_DETECTOR if args.crop_faces == "default" else args.crop_faces


def _train_args(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    # for grids, None means "as the grid file says" (else the built-in default)
    p.add_argument("--folds", type=int, default=5 if defaults else None,
                   help="K of the K-fold cross-validation (default 5)")
    p.add_argument("--seed", type=int, default=0 if defaults else None,
                   help="fixes folds and training randomness (default 0)")
    p.add_argument("--input-size", type=int, default=None,
                   help="input side in pixels for ImageNet and random inits (default 224; a checkpoint, "
                        "like the default built-in FER model, brings its own: 64)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override a training setting, e.g. --set epochs=5 --set lr=1e-4 "
                        "(see signfer.config.TrainConfig)")
    p.add_argument("--out", required=True, help="run folder; re-running resumes it")


def _video_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default=None, help="default: the built-in mobilenetv2-fer")
    p.add_argument("--detector", default=None, help="see `signfer detectors` (default: yunet)")
    p.add_argument("--every", type=int, help="keep every N-th frame")
    p.add_argument("--fps", type=float, help="keep frames at most F per second")
    p.add_argument("--detect-every", type=int, default=1, metavar="N",
                   help="detect the face on every N-th kept frame, reuse its box in between "
                        "(faster; default 1: every kept frame)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])


# ---------------------------------------------------------------- commands

def cmd_data_summary(args) -> int:
    table, _ = _load_table(args)
    print(table.summary())
    return 0


def cmd_cv(args) -> int:
    from signfer.config import RunSpec, TrainConfig, from_dict, parse_overrides, parse_techniques, technique_label
    from signfer.experiments.grid import IMAGENET_INPUT_SIZE, Grid, default_init

    table, ds = _load_table(args)
    train = from_dict(TrainConfig, parse_overrides(args.set), "--set")
    t = parse_techniques(args.techniques)
    init = args.init or default_init(args.arch)
    spec = RunSpec(args.name or technique_label(t), args.arch, init, t, train)
    grid = Grid((spec,), folds=args.folds, seed=args.seed,
                input_size=args.input_size or IMAGENET_INPUT_SIZE, train=train)
    return _run_and_report(args, table, ds, grid)


def _run_and_report(args, table, dataset: dict, grid) -> int:
    from signfer.experiments.runner import run_grid
    from signfer.metrics.report import summary_table, write_report

    results = run_grid(table, grid, args.out, crop_faces=_crop(args), dataset=dataset)
    report = write_report(args.out)
    print(summary_table(results).to_string())
    print(f"\nreport: {report}")
    return 0


def cmd_grid(args) -> int:
    from signfer.config import parse_overrides
    from signfer.experiments.grid import named_grid

    table, ds = _load_table(args)
    settings = {"folds": args.folds, "seed": args.seed, "input_size": args.input_size,
                "train": parse_overrides(args.set)}
    if args.archs:
        if args.grid != "paper":
            raise SignferError("--archs applies to --grid paper; a grid file lists its own archs")
        settings["archs"] = tuple(args.archs.split(","))
    return _run_and_report(args, table, ds, named_grid(args.grid, **settings))


def cmd_report(args) -> int:
    from signfer.metrics.report import load_results, summary_table, write_report

    path = write_report(args.run)
    print(summary_table(load_results(args.run)).to_string())
    print(f"\nreport: {path}")
    return 0


def cmd_pretrain(args) -> int:
    from signfer.training.pretrain import PretrainConfig, pretrain

    if args.dataset != "folder":
        raise SignferError("pretrain reads a folder dataset with train/ and validation/ splits")
    cfg = PretrainConfig(arch=args.arch, init=args.init, input_size=args.input_size, epochs=args.epochs,
                         lr=args.lr, batch_size=args.batch_size, shift=args.shift, rotate=args.rotate,
                         scale=args.scale, cutmix=args.cutmix, teachers=tuple(args.teacher),
                         distill_weight=args.distill_weight, seed=args.seed)
    command = "signfer " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    stem = pretrain(os.path.expanduser(args.root), args.out, cfg, command=command,
                    max_epochs_this_run=args.max_epochs_this_run, device=args.device,
                    time_limit_s=None if args.time_limit is None else 60 * args.time_limit)
    print(f"checkpoint: {stem}.safetensors" if stem else "stopped early; re-run the same command to resume")
    return 0


def cmd_models(args) -> int:
    from signfer.models.checkpoint import builtin_models, load_checkpoint
    from signfer.models.registry import ARCHS

    models = builtin_models()
    if not models:
        print("no built-in FER models are installed")
    for name in models:
        _, meta = load_checkpoint(name)
        size = models[name].with_suffix(".safetensors").stat().st_size / 1e6
        print(f"{name}\n  arch {meta.arch}, input {meta.input_size}px, {size:.1f} MB\n"
              f"  labels {', '.join(meta.labels)}\n  mean {meta.mean} std {meta.std}\n"
              f"  trained on {meta.training_data}\n  validation accuracy {meta.val_accuracy}\n"
              f"  command: {meta.command}")
        for teacher in meta.extra.get("teachers", []):
            print(f"  distilled from {teacher['name']} as it was then (validation accuracy "
                  f"{teacher['val_accuracy']})")
        parent = meta.extra.get("init_from")
        while parent:  # the chain of models it was pre-trained from, back to ImageNet
            print(f"  started from {parent['name']} as it was then (validation accuracy "
                  f"{parent['val_accuracy']}), made by: {parent['command']}")
            parent = parent.get("init_from")
    print("\narchitectures: " + ", ".join(
        f"{a.name}{' (ImageNet weights)' if a.weights_package else ''}" for a in ARCHS.values()))
    return 0


def cmd_evaluate(args) -> int:
    from signfer.inference.predict import evaluate_model

    table, _ = _load_table(args)
    m = evaluate_model(table, args.model, crop_faces=_crop(args), backend=args.backend)
    print(f"{args.model} on {table.name} ({m['n']} faces): accuracy {m['accuracy']:.4f}, "
          f"macro-F1 {m['macro_f1']:.4f}, {m['faces_per_s']:.0f} faces/s")
    for c, v in m["per_class"].items():
        print(f"  {c:<10} recall {v['recall']:.3f}  precision {v['precision']:.3f}  n {v['support']}")
    if m.get("unmapped"):
        print(f"note: dataset classes the model does not know (never predicted): {m['unmapped']}")
    return 0


def cmd_predict(args) -> int:
    from signfer.inference.predict import predict_images

    df = predict_images(args.images, args.model, detector=args.detector, backend=args.backend)
    if args.format == "json":
        print(df.to_json(orient="records", indent=2))
    else:
        print(df.to_csv(index=False, float_format="%.4f"), end="")
    return 0


def cmd_annotate(args) -> int:
    from signfer.inference.predict import annotate_command

    return annotate_command(args)


def cmd_suggest(args) -> int:
    from signfer.inference.predict import suggest_command

    return suggest_command(args)


def cmd_from_elan(args) -> int:
    from signfer.data.elan import manifest_from_elan
    from signfer.faces import DEFAULT_DETECTOR, create_detector

    path = manifest_from_elan(args.eaf, tier=args.tier, out_csv=args.out,
                              detector=create_detector(args.detector or DEFAULT_DETECTOR),
                              size=args.size, per_segment=args.per_segment, video=args.video)
    print(f"manifest: {path}")
    return 0


def cmd_export_onnx(args) -> int:
    from signfer.export.onnx import export_onnx

    path, diff = export_onnx(args.model, args.out)
    print(f"wrote {path} (max |logit diff| vs PyTorch: {diff:.2e})")
    return 0 if diff < 1e-4 else _die(f"ONNX parity check failed: {diff:.2e} >= 1e-4")


def cmd_detectors(args) -> int:
    from signfer.faces import DEFAULT_DETECTOR, DETECTORS

    for name, spec in DETECTORS.items():
        print(f"{name}{' (default)' if name == DEFAULT_DETECTOR else ''}: {spec}")
    return 0


def cmd_demo(args) -> int:
    from signfer.demo import run_demo

    run_demo(args.out, data=args.data, folds=args.folds)
    return 0


# ---------------------------------------------------------------- parser

def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="signfer", description="Facial-expression recognition in sign-language video: "
        "fine-tune FER-pretrained CNNs, cross-validate them, annotate videos for ELAN.")
    p.add_argument("--version", action="version", version=f"signfer {__version__}")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: all cores)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    s = data.add_parser("summary", help="per-class counts, groups, and every skipped row")
    _dataset_args(s)
    s.set_defaults(func=cmd_data_summary)
    s = data.add_parser("from-elan", help="ELAN tiers + their videos -> a training manifest")
    s.add_argument("eaf", nargs="+")
    s.add_argument("--tier", required=True)
    s.add_argument("--out", required=True, help="manifest CSV to write")
    s.add_argument("--detector")
    s.add_argument("--size", type=int, default=None, help="side of the saved face crops")
    s.add_argument("--per-segment", type=int, default=5, help="frames sampled in each annotation")
    s.add_argument("--video", help="the video (one EAF) or a folder to find linked videos in")
    s.set_defaults(func=cmd_from_elan)

    s = sub.add_parser("cv", help="K-fold cross-validation of one configuration")
    _dataset_args(s)
    s.add_argument("--arch", default="mobilenetv2")
    s.add_argument("--init", help="random, imagenet, a built-in model or a checkpoint (default: the built-in FER model)")
    s.add_argument("--techniques", default="ft,ip,hf", help="any of ft,head,hf,cw,ws,ip,he; 'none' = zero-shot")
    s.add_argument("--name", help="configuration name in the results (default from the techniques)")
    _train_args(s)
    s.set_defaults(func=cmd_cv)

    s = sub.add_parser("grid", help="a grid of configurations on identical folds")
    _dataset_args(s)
    s.add_argument("--grid", default="paper", help="'paper' or a YAML file")
    s.add_argument("--archs", help="paper grid: comma-separated architectures")
    _train_args(s, defaults=False)
    s.set_defaults(func=cmd_grid)

    s = sub.add_parser("report", help="results.md, paired tests and plots for a run folder")
    s.add_argument("run")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("pretrain", help="pre-train a general FER model (train/ + validation/)")
    _dataset_args(s)
    s.add_argument("--arch", default="mobilenetv2")
    s.add_argument("--init", default="imagenet")
    s.add_argument("--input-size", type=int, default=64)
    s.add_argument("--epochs", type=int, default=20)
    s.add_argument("--lr", type=float, default=2e-3)
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--shift", type=int, default=4, help="random translation, in pixels of the input size")
    s.add_argument("--rotate", type=float, default=0.0, help="random rotation, up to this many degrees")
    s.add_argument("--scale", type=float, default=0.0, help="random zoom, e.g. 0.1 for 0.9x to 1.1x")
    s.add_argument("--cutmix", type=float, default=0.0, metavar="P", help="CutMix a batch with probability P")
    s.add_argument("--teacher", action="append", default=[], metavar="MODEL",
                   help="distil from this model (a built-in name or a checkpoint; repeat for an ensemble)")
    s.add_argument("--distill-weight", type=float, default=0.8, metavar="W",
                   help="targets = W x the teachers' probabilities + (1 - W) x the labels (default 0.8)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto", help="'auto' (a CUDA GPU if there is one), 'cpu' or 'cuda'")
    s.add_argument("--max-epochs-this-run", type=int, help="stop after this many epochs (resume later)")
    s.add_argument("--time-limit", type=float, metavar="MINUTES",
                   help="stop before an epoch would end after this many minutes and write the best "
                        "epoch so far (re-run to resume)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_pretrain)

    s = sub.add_parser("models", help="list the built-in FER models and architectures")
    s.set_defaults(func=cmd_models)
    s = sub.add_parser("detectors", help="list the face detectors")
    s.set_defaults(func=cmd_detectors)

    s = sub.add_parser("evaluate", help="accuracy of a model on a labelled dataset (no training)")
    _dataset_args(s)
    s.add_argument("--model", required=True)
    s.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("predict", help="label and probabilities for face images")
    s.add_argument("images", nargs="+")
    s.add_argument("--model", default=None, help="default: the first built-in model")
    s.add_argument("--detector", default=None,
                   help="find and crop the face first (for full images); default: images are face crops")
    s.add_argument("--format", choices=["csv", "json"], default="csv")
    s.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("annotate", help="per-frame expressions of videos: CSV, ELAN, timeline")
    _video_args(s)
    s.add_argument("--smooth", type=int, default=1, help="moving-average window over frames")
    s.add_argument("--min-duration", type=float, default=0.0, help="shortest ELAN segment, seconds")
    s.add_argument("--overlay", action="store_true", help="also write an MP4 with box and label")
    s.set_defaults(func=cmd_annotate)

    s = sub.add_parser("suggest", help="the most uncertain frames, as an ELAN tier to annotate first")
    _video_args(s)
    s.add_argument("--n", type=int, default=50, help="how many frames to suggest per video")
    s.add_argument("--method", choices=["entropy", "margin"], default="entropy")
    s.set_defaults(func=cmd_suggest)

    exp = sub.add_parser("export", help="export a model").add_subparsers(dest="export_command", required=True)
    s = exp.add_parser("onnx", help="ONNX export with a parity check against PyTorch")
    s.add_argument("model")
    s.add_argument("--out")
    s.set_defaults(func=cmd_export_onnx)

    s = sub.add_parser("demo", help="the main job end to end on a generated set (or --data)")
    s.add_argument("--out", default="demo_out")
    s.add_argument("--data", help="a FePh folder to use instead of the generated set")
    s.add_argument("--folds", type=int, default=3)
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except SignferError as e:
        return _die(str(e))
    except KeyboardInterrupt:
        return _die("interrupted; finished folds are saved, re-run the same command to resume")


if __name__ == "__main__":
    sys.exit(main())
