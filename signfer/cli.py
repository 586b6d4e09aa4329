"""The ``signfer`` command: each subcommand parses its arguments and calls one library function.

``get_parser()`` returns the parser unparsed so it can be tested. Argument
parsing, messages and exit codes live here only; the library functions it
calls (mostly :mod:`signfer.api` and :mod:`signfer.inference.predict`) take
plain arguments and return results.

Exit status: 0 done; 2 bad input (a one-line ``signfer: error:`` message, see
:class:`signfer.errors.SignferError`), including ``annotate`` and ``suggest``
when any of their videos could not be read (the others are still done, and
each failed one gets its own error line); 2 too for usage errors that
argparse reports.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from pathlib import Path

from signfer import __version__
from signfer.errors import EXIT_BAD_INPUT, EXIT_BROKEN_PIPE, SignferError
from signfer.experiments.executors import RAY_INSTALL


def _die(msg: str) -> int:
    print(f"signfer: error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


# ---------------------------------------------------------------- arguments

def _dataset_args(p: argparse.ArgumentParser, required: bool = True, crop: bool = False) -> None:
    g = p.add_argument_group("dataset")
    g.add_argument("--dataset", choices=["feph", "folder", "manifest"], required=required,
                   help="adapter: FePh download, class folders, or a path,label[,group] CSV")
    g.add_argument("--root", required=required, help="dataset folder (the CSV file for a manifest)")
    g.add_argument("--split", help="folder datasets with train/validation/test: which split ('all' for all)")
    g.add_argument("--keep-multilabel", action="store_true",
                   help="FePh: keep multi-label faces (one row per label) instead of skipping them")
    g.add_argument("--keep-none", action="store_true", help="FePh: keep the 'none' class")
    g.add_argument("--signers", action="append", metavar="CORPUS_CSV",
                   help="FePh: group by signer, not by video, from PHOENIX-2014 corpus files "
                        "(id|folder|signer|annotation; repeat for train, dev and test), so that no "
                        "signer is on both sides of a fold")
    g.add_argument("--allow-new-labels", action="store_true",
                   help="manifest: keep labels that are no known class name as classes of their own "
                        "(default: such a label, e.g. a typo, is an error listing the known names)")
    g.add_argument("--crop-faces", nargs="?", const="default", default=None, metavar="DETECTOR",
                   help="images are frames, not face crops: detect and crop the face "
                        "(optionally name the detector; see `signfer detectors`)")
    g.add_argument("--exclude", metavar="LIST",
                   help="leave out the faces on a duplicate list (matched by file name, or by path "
                        "where names repeat): a CSV with a `file` column, as `signfer data duplicates "
                        "--out` writes, or a built-in list: fer2013-validation (FER2013 validation "
                        "faces that also occur in train)")
    if not crop:
        return
    # how faces are cut: one CropSpec, saved with every model trained here
    g.add_argument("--margin", type=float, default=None, metavar="F",
                   help="zoom factor about the face box's centre: the crop side is the box side "
                        "times F (default 1.4; evaluate: the model's own crop, these options change it)")
    g.add_argument("--no-square", action="store_true",
                   help="cut w*F x h*F about the box (squashed to a square) instead of a square of the longer side")
    g.add_argument("--align", action="store_true",
                   help="rotate each face so the eyes are level, from the detector's eye landmarks "
                        "(mtcnn's follow a tilted head best)")
    g.add_argument("--region", default=None, metavar="{full,upper,lower}",
                   help="keep the whole face (default), the rows above the nose (upper) or from it down (lower)")


def _load_table(args):
    from signfer.data import load_dataset

    opts = {}
    if args.dataset == "feph":
        opts = {"keep_multilabel": args.keep_multilabel, "keep_none": args.keep_none}
        if args.signers:  # recorded only when given: older run folders resume as before
            opts["signers"] = sorted({str(Path(f).expanduser().resolve()) for f in args.signers})  # order-free
    elif args.keep_multilabel or args.keep_none or args.signers:
        raise SignferError("--keep-multilabel, --keep-none and --signers apply to --dataset feph only")
    if args.allow_new_labels:  # recorded only when given: older run folders resume as before
        if args.dataset != "manifest":
            raise SignferError("--allow-new-labels applies to --dataset manifest only")
        opts["allow_new_labels"] = True
    if args.split:
        if args.dataset != "folder":
            raise SignferError("--split applies to --dataset folder only")
        opts["split"] = args.split
    if getattr(args, "exclude", None):  # recorded only when given, as above
        opts["exclude"] = args.exclude
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
    from signfer.faces import DEFAULT_DETECTOR, check_detector_name

    name = DEFAULT_DETECTOR if args.crop_faces == "default" else args.crop_faces
    check_detector_name(name)
    return name


def _crop_spec(args, base=None):
    """The crop options applied to ``base`` (default: the default
    :class:`~signfer.faces.crop.CropSpec`); ``None`` when no crop option is given."""
    from dataclasses import replace

    from signfer.faces.crop import DEFAULT_MARGIN, REGIONS, CropSpec

    given = {}
    if args.margin is not None:
        if not args.margin > 0:  # also refuses nan
            raise SignferError(f"--margin must be > 0 (a zoom factor about the face box's centre, "
                               f"e.g. {DEFAULT_MARGIN}), got {args.margin:g}")
        given["margin"] = args.margin
    if args.region is not None:
        if args.region not in REGIONS:
            raise SignferError(f"--region must be one of {', '.join(REGIONS)}, got {args.region!r}")
        given["region"] = args.region
    if args.no_square:
        given["square"] = False
    if args.align:
        given["align"] = True
    if not given:
        return None
    return replace(base() if base else CropSpec(), **given)


def _command_line() -> str:
    """The command as typed, for a checkpoint's metadata."""
    return "signfer " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _preset_arg(p: argparse.ArgumentParser, default: str | None) -> None:
    start = ("from the 160 px FER model when no --init is given; about 17x the time of 'fast'" if default
             else "each row keeps its own start model; about 5x the time of 'fast' from the 64 px models")
    p.add_argument("--preset", default=default, choices=["fast", "accurate"],
                   help=f"training settings: 'fast' (the paper grid's) or 'accurate' ({start}; "
                        "see signfer.training.recipes); --set overrides apply on top"
                        + (f" (default {default})" if default else " (default: the grid's own)"))


def _train_args(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    # for grids, None means "as the grid file says" (else the built-in default)
    _preset_arg(p, "fast" if defaults else None)
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
    p.add_argument("--keep-models", action="store_true",
                   help="also save each fold's model as a checkpoint (runs/<config>/<arch>/fold<k>/model.*)")
    p.add_argument("--redo-damaged", action="store_true",
                   help="run again the folds whose result files are damaged (unreadable, cut short or "
                        "missing), and make a damaged folds.csv again; without it they stop the run")
    p.add_argument("--out", required=True, help="run folder; re-running resumes it")


def _backend_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"],
                   help="auto: ONNX Runtime when installed, else PyTorch")


def _video_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="+", help="video files")
    p.add_argument("--out", required=True, help="folder for the outputs, named after each video's file name")
    p.add_argument("--model", action="append", default=None,
                   help="default: the built-in mobilenetv2-fer; repeat to fuse several models, e.g. an "
                        "upper- and a lower-face model (mean of their probabilities, each also written)")
    p.add_argument("--detector", default=None,
                   help="see `signfer detectors` (default: the one the model's training faces were cut or "
                        "framed with, as `signfer models MODEL` shows; yunet unless it records another)")
    kept = p.add_mutually_exclusive_group()
    kept.add_argument("--every", type=int, metavar="N", help="keep every N-th frame (default: every frame)")
    kept.add_argument("--fps", type=float, metavar="F",
                      help="keep frames at most F per second (default: every frame)")
    p.add_argument("--detect-every", type=int, default=None, metavar="N",
                   help="search the whole of every N-th kept frame for the face and follow it in between "
                        "(see --track; default 10; 1: search every kept frame whole)")
    p.add_argument("--track", default="window", choices=["window", "hold"],
                   help="between whole-frame searches: find the face again in a small window about its "
                        "last box, searching the whole frame where it is lost (window, default), or keep "
                        "the last box (hold: fastest, the box lags a moving face)")
    p.add_argument("--detect-size", type=int, default=None, metavar="PX",
                   help="the detector sees a copy of each frame at most PX pixels long (default 320; "
                        "0: the whole frame); the face is cut from the full-resolution frame")
    _backend_arg(p)
    _ray_args(p, "each video is one Ray task; on a cluster the videos and --out must be on storage "
                 "every node sees")
    p.epilog = ("A video that cannot be read is reported on its own error line and the others are "
                "still done; the exit status is then 2.")


def _ray_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help=f"run on Ray: without ADDRESS a local Ray with this machine's cores, 'auto' the "
                        f"cluster this machine belongs to (`ray start --head`), or ray://HOST:PORT; {what} "
                        f"(needs {RAY_INSTALL})")
    p.add_argument("--ray-task-cpus", type=float, default=1.0, metavar="N",
                   help="with --ray: CPU cores each task declares, and PyTorch threads in it (default 1)")


def _executor(args):
    """The executor ``--ray`` asks for (a local one without it); use it in a ``with``."""
    from signfer.experiments.executors import LocalExecutor, Resources, make_executor

    if not getattr(args, "ray", None):
        return LocalExecutor()
    if not 0 < args.ray_task_cpus < math.inf:
        raise SignferError(f"--ray-task-cpus must be a finite number > 0, got {args.ray_task_cpus:g}")
    if args.ray not in ("local", "auto") and ":" not in args.ray:  # e.g. `--ray clip.mp4` took a video
        raise SignferError(f"--ray takes no ADDRESS, 'auto', ray://HOST:PORT or HOST:PORT, not {args.ray!r} "
                           "(put --ray after the videos)")
    return make_executor(args.ray, resources=Resources(cpus=args.ray_task_cpus))


# ---------------------------------------------------------------- commands

def cmd_data_summary(args) -> int:
    from signfer.data.spec import dataset_crop

    table, _ = _load_table(args)
    print(table.summary())
    if not args.no_duplicates:
        from signfer.data.duplicates import describe, find_duplicates

        dups = find_duplicates(table)
        print("\n".join(describe(dups, table)) + ("\n  `signfer data duplicates` lists them" if len(dups) else ""))
    if args.crop_faces:
        print(f"framing: faces are cut from the images by {_crop(args)} (--crop-faces)")
    elif not args.no_framing:
        # how a model trained on these faces will cut video faces (see `signfer train`)
        dataset_crop(table, None, None, log=print)
    return 0


def cmd_data_duplicates(args) -> int:
    from signfer.data import load_dataset
    from signfer.data.duplicates import describe, find_duplicates, to_list
    from signfer.io import atomic_path

    if args.against and args.dataset != "folder":
        raise SignferError("--against applies to --dataset folder with split folders")
    if args.against and not args.split:
        raise SignferError("--against needs --split: the split whose faces are looked up in it")
    if args.out:
        from signfer.io import check_out_files

        check_out_files([args.out], "duplicate list")  # before hashing every image
    table, ds = _load_table(args)
    other = None
    if args.against:
        other = load_dataset("folder", os.path.expanduser(args.root), split=args.against)
    dups = find_duplicates(table, against=other, max_distance=args.max_distance, mirror=not args.no_mirror)
    listed = to_list(dups, ds["root"])
    if args.out:
        with atomic_path(args.out) as tmp:
            listed.to_csv(tmp, index=False)
    else:
        print(listed.to_csv(index=False), end="")
    print("\n".join(describe(dups, table, other, args.max_distance)), file=sys.stderr)
    if args.out:
        print(f"list: {args.out} (use it with --exclude)", file=sys.stderr)
    return 0


def cmd_cv(args) -> int:
    from signfer.api import cross_validate
    from signfer.config import parse_overrides, parse_techniques
    from signfer.training.recipes import preset, preset_init

    crop = _crop_spec(args)
    train = preset(args.preset, parse_overrides(args.set))
    init = args.init or preset_init(args.preset, args.arch)
    parse_techniques(args.techniques)  # a typo fails before the dataset is read
    table, ds = _load_table(args)
    with _executor(args) as executor:
        cross_validate(table, args.out, arch=args.arch, techniques=args.techniques, init=init,
                       folds=args.folds, seed=args.seed, input_size=args.input_size, train=train,
                       crop=crop, crop_faces=_crop(args), keep_models=args.keep_models,
                       redo_damaged=args.redo_damaged,
                       name=args.name, dataset=ds, command=_command_line(), executor=executor)
    return _report(args.out)


def _report(out) -> int:
    from signfer.metrics.report import load_results, summary_table, write_report

    report = write_report(out)
    # results.csv also holds the configurations run into this folder before, as the report does
    print(summary_table(load_results(out)).to_string())
    print(f"\nreport: {report}")
    return 0


def cmd_grid(args) -> int:
    from signfer.config import parse_overrides
    from signfer.experiments import runner
    from signfer.experiments.grid import named_grid

    crop = _crop_spec(args)
    table, ds = _load_table(args)
    from signfer.training.recipes import PRESETS

    settings = {"folds": args.folds, "seed": args.seed, "input_size": args.input_size,
                "train": {**PRESETS.get(args.preset or "", {}), **parse_overrides(args.set)}}
    if args.archs:
        if args.grid not in ("paper", "paper-original", "dfki2025"):
            raise SignferError("--archs applies to --grid paper, paper-original and dfki2025; "
                               "a grid file lists its own archs")
        settings["archs"] = tuple(args.archs.split(","))
    grid = named_grid(args.grid, **settings)
    from signfer.models.checkpoint import check_input_size

    check_input_size(args.input_size, [spec.init for spec in grid.runs if spec.techniques])
    with _executor(args) as executor:
        runner.run_grid(table, grid, args.out, crop_faces=_crop(args),
                        crop=crop, dataset=ds, keep_models=args.keep_models, command=_command_line(),
                        redo_damaged=args.redo_damaged, executor=executor)
    return _report(args.out)


def cmd_train(args) -> int:
    from signfer.api import finetune
    from signfer.config import parse_overrides, parse_techniques
    from signfer.training.recipes import preset

    crop = _crop_spec(args)
    # --epochs-from alone trains with the settings of that run
    given = args.preset is not None or args.set
    train = preset(args.preset or "accurate", parse_overrides(args.set)) if given or not args.epochs_from else None
    parse_techniques(args.techniques)
    table, _ = _load_table(args)
    stem = finetune(table, args.out, arch=args.arch, init=args.init, techniques=args.techniques, train=train,
                    seed=args.seed, input_size=args.input_size, crop=crop, crop_faces=_crop(args),
                    epochs_from=args.epochs_from, preset_name=args.preset, command=_command_line())
    print(f"checkpoint: {stem}.safetensors + {stem.name}.json")
    return 0


def cmd_report(args) -> int:
    from signfer.metrics.report import load_results, summary_table, write_report

    path = write_report(args.run, html=args.html)
    print(summary_table(load_results(args.run)).to_string())
    print(f"\nreport: {path}" + (f"\nhtml: {path.parent / 'report.html'}" if args.html else ""))
    return 0


#: pretrain's flags that set a PretrainConfig field: (field, type, help). Their
#: defaults are PretrainConfig's, read when the command runs (or its help is
#: shown), so that cli.py repeats none of them and `signfer --help` need not
#: import torch.
PRETRAIN_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("arch", str, "architecture (`signfer models` lists them)"),
    ("init", str, "random, imagenet, a built-in model or a checkpoint"),
    ("input_size", int, "input side in pixels"),
    ("epochs", int, "epochs to train"),
    ("lr", float, "peak learning rate (one-cycle schedule)"),
    ("weight_decay", float, "AdamW weight decay"),
    ("batch_size", int, "images per batch"),
    ("label_smoothing", float, "label smoothing of the loss"),
    ("shift", int, "random translation, in pixels of the input size"),
    ("rotate", float, "random rotation, up to this many degrees"),
    ("scale", float, "random zoom, e.g. 0.1 for 0.9x to 1.1x"),
    ("cutmix", float, "CutMix a batch with this probability"),
    ("distill_weight", float, "with --teacher: targets = W x the teachers' probabilities + (1 - W) x the labels"),
    ("seed", int, "fixes the initialisation, augmentation and batch order"),
    ("select_on", str, "what chooses the epoch: 'validation' (all of it) or 'selection' (its fixed "
                       "selection half; the report half is scored beside it and recorded)"),
)


def cmd_pretrain(args) -> int:
    from signfer.training.pretrain import PretrainConfig, pretrain

    if args.dataset != "folder":
        raise SignferError("pretrain reads a folder dataset with train/ and validation/ splits")
    ignored = [flag for flag, given in (("--split", args.split), ("--keep-multilabel", args.keep_multilabel),
                                         ("--keep-none", args.keep_none), ("--signers", args.signers),
                                         ("--allow-new-labels", args.allow_new_labels),
                                         ("--crop-faces", args.crop_faces)) if given]
    if ignored:
        raise SignferError(f"{', '.join(ignored)}: not for pretrain, which reads the face crops of train/ "
                           "and validation/ as they are")
    if args.max_epochs_this_run is not None and args.max_epochs_this_run < 1:
        raise SignferError(f"--max-epochs-this-run must be >= 1, got {args.max_epochs_this_run}")
    if args.time_limit is not None and not 0 < args.time_limit < math.inf:
        raise SignferError(f"--time-limit must be a finite number of minutes > 0, got {args.time_limit:g}")
    given = {name: getattr(args, name) for name, _, _ in PRETRAIN_FLAGS if getattr(args, name) is not None}
    if args.teacher:
        given["teachers"] = tuple(args.teacher)
    if args.exclude:  # for pretrain: the listed validation faces and their training copies
        given["exclude"] = args.exclude
    try:
        cfg = PretrainConfig(**given)
    except SignferError as e:  # name the option: "--batch-size must be >= 1, got 0"
        name, rest = str(e).split(" ", 1)
        raise SignferError(f"--{name.replace('_', '-')} {rest}") from None
    stem = pretrain(os.path.expanduser(args.root), args.out, cfg, command=_command_line(),
                    max_epochs_this_run=args.max_epochs_this_run, device=args.device,
                    time_limit_s=None if args.time_limit is None else 60 * args.time_limit)
    print(f"checkpoint: {stem}.safetensors" if stem else "stopped early; re-run the same command to resume")
    return 0


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help can show defaults taken from a dataclass
    (``defaults_from``: a callable returning it), imported only when help is asked for."""

    defaults_from = None

    def format_help(self) -> str:
        if self.defaults_from is not None:
            import dataclasses

            defaults = {f.name: f.default for f in dataclasses.fields(self.defaults_from())}
            for action in self._actions:
                if action.dest in defaults and "(default" not in (action.help or ""):
                    action.help = f"{action.help or ''} (default {defaults[action.dest]})".strip()
        return super().format_help()


def _pretrain_config():
    from signfer.training.pretrain import PretrainConfig

    return PretrainConfig


def _provenance_lines(meta) -> list[str]:
    """The teachers and the chain of models it was trained from, back to ImageNet."""
    lines = [f"distilled from {t['name']} as it was then (validation accuracy {t['val_accuracy']})"
             for t in meta.extra.get("teachers", [])]
    parent = meta.extra.get("init_from")
    while parent:
        lines.append(f"started from {parent['name']} as it was then (validation accuracy "
                     f"{parent['val_accuracy']}), made by: {parent['command']}")
        parent = parent.get("init_from")
    return lines


def _model_details(meta) -> list[str]:
    """Everything a checkpoint's metadata says about how to use it and how it was made."""
    from signfer.faces.framing import describe_framing

    spec = meta.spec
    crop = spec.crop
    norm = (f"normalised with mean {list(spec.mean)} std {list(spec.std)}" if spec.mean is not None
            else "pixels fed in [0, 1]")
    framing = (f"framing of its training faces: {describe_framing(crop.framing)}" if crop.framing
               else f"margin {crop.margin:g}, {'square' if crop.square else 'box shape, squashed'}")
    lines = [
        f"arch {meta.arch}, input {meta.input_size} px",
        f"labels (output order): {', '.join(meta.labels)}",
        f"preprocessing: {norm}; histogram equalisation: {spec.equalize or 'none'}",
        (f"crop: detector {crop.detector or 'default'}, {framing}, "
         f"{'eyes levelled' if crop.align else 'not aligned'}, region {crop.region}"),
        f"techniques: {'+'.join(meta.techniques) if meta.techniques else 'none recorded (pre-trained)'}",
        f"trained on: {meta.training_data or 'not recorded'}",
    ]
    if meta.config:
        lines.append("training settings: " + ", ".join(f"{k}={v}" for k, v in meta.config.items()))
    fp = meta.data_fingerprint
    if fp:
        per_class = ", ".join(f"{c} {n}" for c, n in fp.get("per_class", {}).items())
        lines.append(f"data fingerprint: {fp.get('n_samples')} samples ({per_class}), "
                     f"sha256 {fp.get('sha256', '')[:16]}...")
    lines.append(f"validation accuracy: {meta.val_accuracy}" if meta.val_accuracy is not None else
                 "validation accuracy: none (trained on every face, for the epochs "
                 + ("cross-validation chose)" if meta.extra.get("cv") else "set)"))
    if "report_accuracy" in meta.extra:
        seen = meta.extra.get("report_may_be_seen_by")
        lines.append(f"report half accuracy: {meta.extra['report_accuracy']} ({meta.extra.get('report_faces')} "
                     + (f"faces that chose nothing for this model, but not clean: models it starts or learns "
                        f"from may have seen them: {'; '.join(seen)})" if seen else
                        "faces that chose nothing)"))
    cv = meta.extra.get("cv")
    if cv:
        lines.append(f"epochs from cross-validation: {cv.get('epochs')} (median best epoch of "
                     f"{cv.get('folds')} folds of {cv.get('run')}, accuracy {cv.get('accuracy_mean')} "
                     f"± {cv.get('accuracy_sd')})")
    src = meta.extra.get("source")
    if isinstance(src, dict) and src.get("sha256"):  # an imported model (signfer import)
        lines.append(f"imported from {src.get('file')} ({src.get('format')}), sha256 {src['sha256']}")
    lines += _provenance_lines(meta)
    lines.append(f"command: {meta.command or 'not recorded'}")
    lines.append(f"signfer version: {meta.signfer_version or 'not recorded'}")
    return lines


def cmd_models(args) -> int:
    from signfer.models.checkpoint import builtin_models, checkpoint_files, load_meta, resolve_checkpoint
    from signfer.models.registry import ARCHS

    if args.model:
        meta = load_meta(args.model)
        print(f"{args.model} ({resolve_checkpoint(args.model)}.json)")
        print("\n".join(f"  {line}" for line in _model_details(meta)))
        return 0
    models = builtin_models()
    if not models:
        print("no built-in FER models are installed")
    for name in models:
        meta = load_meta(name)
        size = checkpoint_files(models[name])[0].stat().st_size / 1e6
        print(f"{name}\n  arch {meta.arch}, input {meta.input_size}px, {size:.1f} MB\n"
              f"  labels {', '.join(meta.labels)}\n  mean {meta.mean} std {meta.std}\n"
              f"  trained on {meta.training_data}\n  validation accuracy {meta.val_accuracy}\n"
              f"  command: {meta.command}")
        for line in _provenance_lines(meta):
            print(f"  {line}")
    print("\narchitectures: " + ", ".join(
        f"{a.name}{' (ImageNet weights)' if a.weights_package else ''}" for a in ARCHS.values()))
    print("`signfer models NAME_OR_CHECKPOINT` shows one model's preprocessing, data and history")
    return 0


def cmd_evaluate(args) -> int:
    from signfer.inference.predict import evaluate_model
    from signfer.models.checkpoint import load_meta

    # the options change the model's own crop; checked before the model is read
    crop = _crop_spec(args, base=lambda: load_meta(args.model).spec.crop)
    table, _ = _load_table(args)
    with _executor(args) as executor:
        m = evaluate_model(table, args.model, crop_faces=_crop(args), crop=crop, backend=args.backend,
                           halves=args.halves, executor=executor)
    print(f"{args.model} on {table.name} ({m['n']} faces): accuracy {m['accuracy']:.4f}, "
          f"macro-F1 {m['macro_f1']:.4f}, {m['faces_per_s']:.0f} faces/s")
    for half, h in m.get("halves", {}).items():
        print(f"  {half} half ({h['n']} faces): accuracy {h['accuracy']:.4f}, macro-F1 {h['macro_f1']:.4f}")
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


def _print_errors(errors: list[str]) -> int:
    """One ``signfer: error:`` line per video that failed; 2 if any did (the rest were done)."""
    for e in errors:
        print(f"signfer: error: {e}", file=sys.stderr)
    return EXIT_BAD_INPUT if errors else 0


def cmd_annotate(args) -> int:
    from signfer.inference.predict import annotate

    with _executor(args) as executor:
        res = annotate(args.videos, args.out, model=args.model, detector=args.detector, backend=args.backend,
                       every=args.every, fps=args.fps, detect_every=args.detect_every, smooth=args.smooth,
                       min_duration=args.min_duration, overlay=args.overlay, detect_size=args.detect_size,
                       track=args.track, chunk_s=args.chunk, executor=executor, redo=args.redo)
    for video in res.skipped:
        print(f"{video}: annotated before into {args.out} with the same model and settings, skipped "
              "(--redo annotates it again)")
    for r in res.results:
        print(r.summary())
    return _print_errors(res.errors)


def cmd_suggest(args) -> int:
    from signfer.inference.predict import suggest

    with _executor(args) as executor:
        res = suggest(args.videos, args.out, n=args.n, method=args.method, min_gap=args.min_gap, model=args.model,
                      detector=args.detector, backend=args.backend, every=args.every, fps=args.fps,
                      detect_every=args.detect_every, detect_size=args.detect_size, track=args.track,
                      executor=executor)
    for r in res.results:
        apart = f", at least {args.min_gap:g} s apart" if args.min_gap else ""
        print(f"{r.video}: {len(r.table)} frames to annotate first ({args.method}{apart}) -> {r.eaf}")
    return _print_errors(res.errors)


def cmd_from_elan(args) -> int:
    from signfer.data.elan import manifest_from_elan
    from signfer.faces import DEFAULT_DETECTOR, create_detector

    path = manifest_from_elan(args.eaf, tier=args.tier, out_csv=args.out,
                              detector=create_detector(args.detector or DEFAULT_DETECTOR),
                              size=args.size, per_segment=args.per_segment, video=args.video,
                              allow_new_labels=args.allow_new_labels)
    import pandas as pd

    per_video = pd.read_csv(path, dtype=str, keep_default_na=False).groupby("group", sort=False).size()
    print(f"manifest: {path} ({per_video.sum()} face crops: "
          + ", ".join(f"{group} {n}" for group, n in per_video.items()) + ")")
    return 0


def cmd_export_onnx(args) -> int:
    from signfer.export.onnx import export_onnx

    path, diff = export_onnx(args.model, args.out)
    print(f"wrote {path} (max |logit diff| vs PyTorch: {diff:.2e})")
    return 0 if diff < 1e-4 else _die(f"ONNX parity check failed: {diff:.2e} >= 1e-4")


def cmd_import_hsemotion(args) -> int:
    from signfer.models.hsemotion import import_hsemotion

    stem = import_hsemotion(args.file, args.out, trust=args.trust, command=_command_line())
    print(f"checkpoint: {stem}.safetensors + {stem.name}.json (`signfer models {stem}` describes it)")
    return 0


def cmd_detectors(args) -> int:
    from signfer.faces import DEFAULT_DETECTOR, DETECTORS

    for name, spec in DETECTORS.items():
        print(f"{name}{' (default)' if name == DEFAULT_DETECTOR else ''}\n  licence: {spec.licence}\n"
              f"  install: {spec.install}")
    return 0


def cmd_demo(args) -> int:
    from signfer.demo import run_demo

    run_demo(args.out, data=args.data, folds=args.folds)
    return 0


# ---------------------------------------------------------------- parser

def get_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="signfer", description="Facial-expression recognition in sign-language video: "
        "fine-tune FER-pretrained CNNs, cross-validate them, annotate videos for ELAN.")
    p.add_argument("--version", action="version", version=f"signfer {__version__}")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: all cores)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars and no per-epoch lines (results and errors are still printed)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print the per-epoch training lines also where a progress bar is shown "
                        "(bars are drawn only when stderr is a terminal; elsewhere the lines are printed)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    s = data.add_parser("summary", help="per-class counts, groups, every skipped row, and the faces' framing")
    _dataset_args(s)
    s.add_argument("--no-framing", action="store_true",
                   help="skip measuring where the face lies in the images (runs the face detector on 200 of them)")
    s.add_argument("--no-duplicates", action="store_true",
                   help="skip counting exact and near duplicate faces (hashes every image)")
    s.set_defaults(func=cmd_data_summary)
    s = data.add_parser("duplicates", help="exact and near-exact duplicate faces, within a dataset or "
                                           "across splits, as a list for --exclude")
    _dataset_args(s)
    s.add_argument("--against", metavar="SPLIT",
                   help="folder datasets with splits: list the --split faces that occur in this split "
                        "(e.g. --split validation --against train); default: duplicates within the dataset")
    s.add_argument("--max-distance", type=int, default=64, metavar="BITS",
                   help="near duplicates: perceptual hashes differ in at most this many of 256 bits "
                        "(default 64; 0: equal hashes only; -1: exact copies only)")
    s.add_argument("--no-mirror", action="store_true", help="do not match a face with the mirror image of another")
    s.add_argument("--out", metavar="CSV",
                   help="write the list here (file, label, reason, distance, match, match_label; paths "
                        "relative to --root); default: print it")
    s.set_defaults(func=cmd_data_duplicates)
    s = data.add_parser("from-elan", help="ELAN tiers + their videos -> a training manifest")
    s.add_argument("eaf", nargs="+", help="ELAN files, each linked to its video")
    s.add_argument("--tier", required=True, help="the tier whose annotations are expression labels")
    s.add_argument("--out", required=True, help="manifest CSV to write")
    s.add_argument("--detector", help="finds the faces to crop (see `signfer detectors`; default: yunet)")
    s.add_argument("--size", type=int, default=None, help="side of the saved face crops (default 112)")
    s.add_argument("--per-segment", type=int, default=5, help="frames sampled in each annotation (default 5)")
    s.add_argument("--video", help="the video (one EAF) or a folder to find linked videos in")
    s.add_argument("--allow-new-labels", action="store_true",
                   help="keep tier values that are no known class name as classes of their own (default: "
                        "such a value, a typo or the wrong tier, is an error before any video is read)")
    s.set_defaults(func=cmd_from_elan)

    s = sub.add_parser("cv", help="K-fold cross-validation of one configuration")
    _dataset_args(s, crop=True)
    s.add_argument("--arch", default="mobilenetv2", help="see `signfer models` (default: mobilenetv2)")
    s.add_argument("--init", help="random, imagenet, a built-in model or a checkpoint (default: the preset's "
                                  "built-in FER model: 64 px for fast, 160 px for accurate)")
    s.add_argument("--techniques", default="ft,ip,hf", help="any of ft,head,hf,cw,ws,ip,he,hec; 'none' = zero-shot")
    s.add_argument("--name", help="configuration name in the results (default from the techniques)")
    _train_args(s)
    _ray_args(s, "each fold is one Ray task, results are written here as they arrive")
    s.set_defaults(func=cmd_cv)

    s = sub.add_parser("grid", help="a grid of configurations on identical folds")
    _dataset_args(s, crop=True)
    s.add_argument("--grid", default="paper",
                   help="'paper' (default), 'paper-original' (from HSEmotion's checkpoints at 224 px, see the README), "
                        "'dfki2025' (the best row with each step of the DFKI 2025 face pipeline added) "
                        "or a YAML file")
    s.add_argument("--archs", help="paper grids: comma-separated architectures")
    _train_args(s, defaults=False)
    _ray_args(s, "each (configuration, arch, fold) is one Ray task, results are written here as they arrive")
    s.set_defaults(func=cmd_grid)

    s = sub.add_parser("train", help="fine-tune one configuration on a whole dataset -> a checkpoint")
    _dataset_args(s, crop=True)
    s.add_argument("--arch", default=None,
                   help="architecture (default: the --init checkpoint's, else mobilenetv2)")
    s.add_argument("--init", help="random, imagenet, a built-in model or a checkpoint (default: the preset's "
                                  "built-in FER model, 160 px for accurate; with --epochs-from alone, that run's)")
    s.add_argument("--techniques", default="ft,ip,hf",
                   help="any of ft,head,hf,cw,ws,ip,he,hec; must include ft or head (default ft,ip,hf)")
    s.add_argument("--preset", default=None, choices=["fast", "accurate"],
                   help="training settings (see signfer.training.recipes; default: accurate, or with "
                        "--epochs-from the settings of that run); --set overrides apply on top")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override a training setting, e.g. --set epochs=5 (see signfer.config.TrainConfig)")
    s.add_argument("--seed", type=int, default=0, help="fixes the inner split and training randomness (default 0)")
    s.add_argument("--input-size", type=int, default=None,
                   help="input side in pixels for ImageNet and random inits (a checkpoint brings its own)")
    s.add_argument("--epochs-from", metavar="RUN",
                   help="a finished cv or grid run folder of the same configuration: train on all the data "
                        "for the median of its folds' best epochs (default: choose the epoch on an inner "
                        "validation split)")
    s.add_argument("--out", required=True, metavar="MODEL",
                   help="checkpoint to write: MODEL.safetensors + MODEL.json")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("report", help="results.md, paired tests and plots for a run folder")
    s.add_argument("run", help="a cv or grid run folder (its --out)")
    s.add_argument("--html", action="store_true",
                   help="also write report.html: one self-contained page (images inline, no external URL) "
                        "with the tables, tests, figures, learning curves and the resolved config")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("pretrain", help="pre-train a general FER model (train/ + validation/)")
    _dataset_args(s)
    s.defaults_from = _pretrain_config
    for name, kind, text in PRETRAIN_FLAGS:  # defaults: PretrainConfig's (None = not given)
        s.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=text,
                       metavar={"cutmix": "P", "distill_weight": "W"}.get(name, name.upper()))
    s.add_argument("--teacher", action="append", default=[], metavar="MODEL",
                   help="distil from this model (a built-in name or a checkpoint; repeat for an ensemble)")
    s.add_argument("--device", default="auto", help="'auto' (a CUDA GPU if there is one), 'cpu' or 'cuda'")
    s.add_argument("--max-epochs-this-run", type=int, help="stop after this many epochs (resume later)")
    s.add_argument("--time-limit", type=float, metavar="MINUTES",
                   help="stop before an epoch would end after this many minutes and write the best "
                        "epoch so far (re-run to resume)")
    s.add_argument("--out", required=True,
                   help="run folder: its state (re-run to resume) and the checkpoint ARCH-fer.safetensors + .json")
    s.set_defaults(func=cmd_pretrain)

    s = sub.add_parser("models", help="list the built-in FER models and architectures, or describe one model")
    s.add_argument("model", nargs="?", metavar="NAME_OR_CHECKPOINT",
                   help="a built-in model or a checkpoint path: show its labels, preprocessing "
                        "(crop, framing), training data, validation and history")
    s.set_defaults(func=cmd_models)
    s = sub.add_parser("detectors", help="list the face detectors")
    s.set_defaults(func=cmd_detectors)

    s = sub.add_parser("evaluate", help="accuracy of a model on a labelled dataset (no training)")
    _dataset_args(s, crop=True)
    s.add_argument("--model", required=True, help="a built-in model or checkpoint")
    _backend_arg(s)
    s.add_argument("--halves", action="store_true",
                   help="also score the two fixed halves of the faces (by a hash of the file name; copies of "
                        "a face, or a whole group, stay in one half): the selection half, to choose models "
                        "on, and the report half, that nothing chose on")
    _ray_args(s, "the faces are cut here and classified in chunks, one task each")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("predict", help="label and probabilities for face images")
    s.add_argument("images", nargs="+", help="image files")
    s.add_argument("--model", action="append", default=None,
                   help="a built-in model or checkpoint (default: mobilenetv2-fer); repeat it to fuse "
                        "several, e.g. an upper- and a lower-face model (mean of their probabilities)")
    s.add_argument("--detector", default=None,
                   help="find and crop the face first (for full images); default: images are face crops")
    s.add_argument("--format", choices=["csv", "json"], default="csv", help="of the table printed (default: csv)")
    _backend_arg(s)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("annotate", help="per-frame expressions of videos: CSV, ELAN, timeline")
    _video_args(s)
    s.add_argument("--smooth", type=int, default=1,
                   help="moving-average window over frames (default 1: no smoothing; e.g. 5)")
    s.add_argument("--min-duration", type=float, default=0.0,
                   help="shortest ELAN segment in seconds; shorter ones join a neighbour (default 0: none)")
    s.add_argument("--overlay", action="store_true", help="also write an MP4 with box and label")
    s.add_argument("--chunk", type=float, default=None, metavar="SECONDS",
                   help="cut each video into stretches of about SECONDS, one task each (with --ray, a few "
                        "long videos then keep every core busy); the files are the same as without")
    s.add_argument("--redo", action="store_true",
                   help="annotate again the videos done before into --out with the same model and settings "
                        "(by default they are skipped, so a killed run goes on where it stopped)")
    s.set_defaults(func=cmd_annotate)

    s = sub.add_parser("suggest", help="the most uncertain frames, as an ELAN tier to annotate first")
    _video_args(s)
    s.add_argument("--n", type=int, default=50, help="how many frames to suggest per video")
    s.add_argument("--method", choices=["entropy", "margin"], default="entropy",
                   help="entropy of the probabilities (default), or margin between the two likeliest classes")
    s.add_argument("--min-gap", type=float, default=0.5, metavar="SECONDS",
                   help="no two suggested frames closer than this (default 0.5), since neighbouring frames "
                        "look alike; 0 allows neighbours")
    s.set_defaults(func=cmd_suggest)

    exp = sub.add_parser("export", help="export a model").add_subparsers(dest="export_command", required=True)
    s = exp.add_parser("onnx", help="ONNX export with a parity check against PyTorch")
    s.add_argument("model", help="a built-in model or checkpoint")
    s.add_argument("--out", help="NAME.onnx to write, its metadata beside it as NAME.json (default: beside "
                                 "the checkpoint; a built-in model's in the current folder)")
    s.set_defaults(func=cmd_export_onnx)

    imp = sub.add_parser("import", help="import another tool's model as a signfer checkpoint").add_subparsers(
        dest="import_command", required=True)
    s = imp.add_parser("hsemotion", help="HSEmotion's enet_b0_7.pt or mobilenet_7.h5 (the paper's starting models)")
    s.add_argument("file", help="the .pt (pickled timm model) or .h5 (Keras) file")
    s.add_argument("--out", required=True, metavar="MODEL", help="checkpoint to write: MODEL.safetensors + MODEL.json")
    s.add_argument("--trust", action="store_true",
                   help="needed for pickles (.pt): they can run code when loaded; signfer's reader refuses "
                        "to, but the file still comes from outside")
    s.set_defaults(func=cmd_import_hsemotion)

    s = sub.add_parser("demo", help="the main job end to end on a generated set (or --data)")
    s.add_argument("--out", default="demo_out",
                   help="folder for the generated data, the cross-validation run and its report (default: demo_out)")
    s.add_argument("--data", help="a FePh folder to use instead of the generated set")
    s.add_argument("--folds", type=int, default=3, help="cross-validation folds (default: 3)")
    s.set_defaults(func=cmd_demo)
    return p


_FOLDS_KEPT = ("; finished folds are saved, and the fit in progress as of its last saved state: "
               "re-run the same command to resume")
#: What an interrupted command keeps, and how to go on (see each command's resume).
RESUME_HINTS = {
    "cv": _FOLDS_KEPT,
    "grid": _FOLDS_KEPT,
    "train": "; the fit's state is saved every 30 s of training: re-run the same command to resume",
    "pretrain": "; the finished epochs are saved: re-run the same command to resume",
    "annotate": "; the finished videos are kept: re-run the same command to go on with the rest",
}


def _terminate_as_interrupt():
    """Let SIGTERM (``kill``, a batch system's time limit, ``docker stop``) end a command as
    Ctrl-C does: temporary files removed, one line saying what was kept. Returns a
    function that puts the earlier handler back."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    before = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, before)


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.threads is not None and args.threads < 1:
        return _die(f"--threads must be >= 1, got {args.threads}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from signfer import progress

    progress.configure(quiet=args.quiet, verbose=args.verbose)
    restore = _terminate_as_interrupt()
    try:
        return args.func(args)
    except SignferError as e:
        return _die(str(e))
    except KeyboardInterrupt:
        hint = RESUME_HINTS.get(args.command, "")
        if args.command == "annotate" and args.redo:
            hint = "; the finished videos are kept: re-run without --redo to go on with the rest"
        return _die(f"interrupted{hint}")
    except BrokenPipeError:  # the reader left (`signfer models | head -1`): nothing to say, no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that exit's flush is quiet
        return EXIT_BROKEN_PIPE
    except OSError as e:  # a file the checks before the work did not foresee (e.g. a full disk)
        return _die(f"{str(e.filename) + ': ' if e.filename else ''}{e.strerror or e}")
    finally:
        restore()


if __name__ == "__main__":
    sys.exit(main())
