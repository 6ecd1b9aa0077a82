"""edgekd compress: one command from a model to a deployable, profiled bundle."""

from __future__ import annotations

import argparse
import json

HELP = """\
Load a model, run the recipe's passes (distillation, sparsity, pruning, quantization),
export ONNX, build it for each target, check parity with the ONNX reference, measure latency,
and write a bundle (model.onnx, <target>/, manifest.json, golden.npz, eval.npz (at most --eval-samples test
samples), weights.pt (the compressed state_dict), report.json, report.md, plots/training.png). A target file that is
byte-identical to model.onnx is stored once (manifest stored_as).

Sources:
  --model    builtin:digits-student | torchvision:resnet18 | timm:NAME | py:pkg.mod:factory | path.pt | path.pt2 |
             path.onnx (a QDQ file is built as it is with --recipe fp32; a float one takes fp32 or ptq, the INT8
             PTQ of ONNX Runtime's quantizer; see docs/onnx-models.md)
  --teacher  same forms (a trained model; builtin:digits-teacher trains once and is cached)
  --data     builtin:digits | builtin:mnist5k | npz:PATH | imagefolder:DIR | py:pkg.mod:fn | random:3x224x224 |
             synthetic:bn (data-free, synthesized from the teacher's BatchNorm statistics); optional for an .onnx
             model built as it is (golden inputs are then generated from its input spec, as the report says)

Tasks (--task, or [task] in the recipe; docs/tasks.md): classification (default for N x C logits and class-id
labels), sequence-classification, segmentation, token-classification, keypoints, regression, reconstruction,
detection. The task sets each output's KD loss on its class axis (per pixel, per token), the label loss, the
metric the budgets, the report and `edgekd check` use, and the parity rule. A task that does not fit the
model's outputs or the labels is refused before any training, naming the output.

Examples:
  edgekd compress --model builtin:digits-student --teacher builtin:digits-teacher \\
      --data builtin:digits --recipe int8-kd --target cpu --target openvino-cpu --out out/digits
  edgekd compress --model torchvision:resnet18 --data random:3x224x224 --recipe fp32 --target cpu --out out/r18
  edgekd compress --model model.qdq.onnx --data npz:val.npz --target cpu --target fpga-zcu104 --out out/qdq
  edgekd compress --model model.onnx --data npz:calib.npz --recipe ptq --target cpu --target openvino-cpu --out out/ptq

A .pt file is loaded with weights_only=True (it never runs code). A checkpoint may name its own architecture
only as builtin:/torchvision:/timm: (shown in the log); a py: architecture is taken only from --arch /
--teacher-arch. py: sources import and run Python code: name only code you trust. See docs/security.md.
"""


def register(sub: argparse._SubParsersAction) -> None:
    from edgekd.cli import add_quiet, add_recipe

    p = sub.add_parser("compress", help="compress a model and build a bundle for one or more targets",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="student model source (see above)")
    p.add_argument("--arch", help="architecture source for a plain state_dict .pt file")
    p.add_argument("--teacher", help="teacher model source (needed by distillation passes)")
    p.add_argument("--teacher-arch", help="architecture source for a teacher given as a plain state_dict .pt file")
    p.add_argument("--data", help="data source (see above); required unless --model is an .onnx file")
    p.add_argument("--eval-data", metavar="SRC", help="labelled data source every stage and target is evaluated on "
                   "(its test split), e.g. with data-free --data synthetic:bn")
    p.add_argument("--task", metavar="NAME", help="what the outputs mean (see Tasks above) [classification when "
                   "the model has one N x C output and the labels are class ids]")
    add_recipe(p, default="fp32", help="compression recipe: name (edgekd list recipes) or .toml path [fp32]")
    p.add_argument("--set", action="append", dest="overrides", default=[], metavar="PASS.KEY=VALUE",
                   help="override a recipe setting (repeatable), checked like the file: distill.epochs=5, "
                        "quantize.finetune.lr=1e-4, export.opset=17; VALUE is TOML (a bare word is a string); "
                        "of several passes with one name, PASS[N].KEY picks the N-th (from 0). report.json records "
                        "the resolved recipe")
    p.add_argument("--target", action="append", dest="targets", metavar="TARGET",
                   help="target name or .toml path; repeat for several [cpu]")
    p.add_argument("--out", required=True, help="bundle folder to write (replaced atomically)")
    p.add_argument("--seed", type=int, default=0, help="random seed for every pass [0]")
    p.add_argument("--no-weights", action="store_true",
                   help="leave weights.pt (the compressed student's PyTorch state_dict) out of the bundle")
    p.add_argument("--eval-samples", type=int, default=1000, metavar="N",
                   help="at most N test samples go into the bundle's eval.npz, evenly spaced over the test split "
                        "(`edgekd check` judges accuracy on them); the report says when it caps [1000]")
    p.add_argument("--nproc", type=int, default=1, help="training processes (launches torchrun when > 1) [1]")
    p.add_argument("--skip-unavailable", action="store_true", help="skip targets whose backend is unavailable")
    p.add_argument("--no-measure", action="store_true", help="skip latency measurement")
    p.add_argument("--input-names", default=None, metavar="A,B",
                   help="a multi-input model's inputs in forward() order (default: its forward signature); the data "
                        "holds x_<name> per input (docs/multi-input.md)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    add_quiet(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgekd.errors import ConfigError

    if args.nproc < 1:
        raise ConfigError(f"--nproc {args.nproc}: needs at least 1 training process", where="--nproc")
    if args.eval_samples < 1:
        raise ConfigError(f"eval.npz needs at least 1 sample, got {args.eval_samples}", where="--eval-samples")
    from edgekd.compress_report import print_summary
    from edgekd.config import load_recipe
    from edgekd.pipeline import CompressOptions, compress
    from edgekd.status import is_passing

    recipe = load_recipe(args.recipe, args.overrides) if args.overrides else args.recipe  # before any training
    report = compress(args.model, data=args.data, recipe=recipe, targets=args.targets or ["cpu"],
                      teacher=args.teacher, out=args.out, arch=args.arch, teacher_arch=args.teacher_arch,
                      eval_data=args.eval_data, task=args.task,
                      options=CompressOptions(seed=args.seed, skip_unavailable=args.skip_unavailable,
                                              measure=not args.no_measure, nproc=args.nproc,
                                              eval_samples=args.eval_samples, weights=not args.no_weights,
                                              input_names=tuple(n.strip() for n in args.input_names.split(","))
                                              if args.input_names else None))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_summary(report, title=f"edgekd bundle: {args.out}")
    return 0 if all(is_passing(t.get("status")) for t in report["targets"].values()) else 1
