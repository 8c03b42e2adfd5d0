"""Export benchmark: every backbone x every artifact format, checked and timed side by side on CPU.

    python benchmarks/exports.py [--json] [--size small|full] [--no-int8] [--rounds 15]

For each backbone a compact model is extracted from the supernet at random ~50 % gates (BN statistics
and biases randomised so the kept constants matter; one gated layer entirely off, so a zero-width block
is in every model). It is exported to TorchScript (.pt), torch.export (.pt2), ONNX (.onnx, opset 18)
and TFLite (.tflite, litert-torch), float32, plus int8 ONNX / TFLite unless --no-int8. Each artifact is
loaded in its device runtime and compared with the PyTorch model on 16 inputs (max abs diff), and the
median batch-1 latency of all of them and of eager PyTorch is measured interleaved in one process, one
thread each (torch.set_num_threads(1), ORT intra_op_num_threads=1, LiteRT num_threads=1).

--numvqa-checkpoint PATH: instead, the int8 *task accuracy* drop of NumVQA models generated from a
checkpoint, on --samples balanced test images per task (JSON: {"<task> @ <limit>": {"<format>":
{"accuracy_reference", "accuracy_artifact", "accuracy_drop", "top1_agreement", "max_abs_diff"}}}).

--size small (default): resnet_numvqa (BasicBlock, 1x56x56), bottleneck_tiny, mobilenetv2_tiny,
vit_tiny (3x32x32). --size full: resnet18, resnet50, mobilenetv2, vit_s16 at 224x224 (slow to convert).

JSON (last line): {"<backbone>": {"<format>": {"max_abs_diff", "size_bytes", "export_seconds",
"median_latency_us", "median_cpu_us", "eager_latency_us", "eager_cpu_us", "latency_ratio_vs_eager",
"cpu_ratio_vs_eager", "top1_agreement"}}}  (median_latency_us: wall clock; median_cpu_us: thread CPU time)
("<format>" also "onnx-int8", "tflite-int8").
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import _util
import numpy as np
import torch

from host.exports import FORMATS, InputSet, export_artifact, load_runner
from host.extraction import extract
from host.gates import random_gates
from host.supernets import build_supernet

CONFIGS = {
    "small": {"resnet_basic": "resnet_numvqa", "resnet_bottleneck": "bottleneck_tiny",
              "mobilenetv2": "mobilenetv2_tiny", "vit": "vit_tiny"},
    "full": {"resnet_basic": "resnet18", "resnet_bottleneck": "resnet50", "mobilenetv2": "mobilenetv2",
             "vit": "vit_s16"},
}
INT8_FORMATS = ("onnx", "tflite")


def time_side_by_side(fns: dict, *, warmup: int, rounds: int, runs_per_round: int) -> tuple[dict, dict]:
    """Median wall seconds and median thread-CPU seconds per call, interleaved round by round.

    With one thread every runtime computes in the calling thread (torch.set_num_threads(1), ORT
    intra_op_num_threads=1, LiteRT num_threads=1), so thread CPU time is the compute time without the
    time the OS spent running other processes (this machine is shared and oversubscribed).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(runs_per_round):
                c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
                fn()
                t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
                wall[name].append((t1 - t0) * 1e-9)
                cpu[name].append((c1 - c0) * 1e-9)
    return ({k: statistics.median(v) for k, v in wall.items()}, {k: statistics.median(v) for k, v in cpu.items()})


def perturb(net: torch.nn.Module, gen: torch.Generator) -> None:
    """Trained-looking BN statistics / biases instead of the init's identities."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.2 - 0.1)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
            elif isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm)) and m.bias is not None:
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.2 - 0.1)


def compact_for(config: str, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    net = build_supernet(config).eval()
    perturb(net, gen)
    gates = random_gates(net.gate_layout(), 0.5, generator=gen)
    gates[1] = torch.zeros_like(gates[1])  # a zero-width block: a constant added to the residual
    return extract(net, gates)


def bench_backbone(config: str, work: Path, int8: bool, rounds: int, runs: int) -> dict[str, dict]:
    compact = compact_for(config)
    shape = compact.spec.input_shape
    gen = torch.Generator().manual_seed(1)
    verify = InputSet(torch.randn(16, *shape, generator=gen), None, "gaussian N(0,1), 16 samples")
    calib = InputSet(torch.randn(32, *shape, generator=gen), None, "gaussian N(0,1), 32 samples")
    jobs = [(f, False) for f in FORMATS] + ([(f, True) for f in INT8_FORMATS] if int8 else [])
    rows: dict[str, dict] = {}
    runners = {}
    for fmt, q in jobs:
        key = fmt + ("-int8" if q else "")
        out = work / f"{config}{'.int8' if q else ''}{FORMATS[fmt].suffix}"
        res = export_artifact(compact, fmt, out, int8=q, calibration=calib if q else None, verify=verify)
        v = res.verification
        rows[key] = {
            "max_abs_diff": v.max_abs_diff,
            "top1_agreement": v.top1_agreement,
            "size_bytes": res.size_bytes,
            "export_seconds": round(res.export_seconds, 3),
        }
        runners[key] = load_runner(out, threads=1)
    x = verify.inputs[:1].contiguous()
    xn = x.numpy()

    def eager() -> object:
        with torch.inference_mode():
            return compact(x)

    fns = {"eager": eager} | {k: (lambda r=r: r(xn)) for k, r in runners.items()}
    wall, cpu = time_side_by_side(fns, warmup=5, rounds=rounds, runs_per_round=runs)
    for key, row in rows.items():
        row["median_latency_us"] = round(wall[key] * 1e6, 1)
        row["median_cpu_us"] = round(cpu[key] * 1e6, 1)
        row["eager_latency_us"] = round(wall["eager"] * 1e6, 1)
        row["eager_cpu_us"] = round(cpu["eager"] * 1e6, 1)
        row["latency_ratio_vs_eager"] = round(wall[key] / wall["eager"], 3)
        row["cpu_ratio_vs_eager"] = round(cpu[key] / cpu["eager"], 3)
    model = {"config": config, "params": compact.spec.params(), "macs": compact.spec.macs(),
             "input_shape": list(shape), "activation_ratio": round(compact.spec.activation_ratio, 4)}
    return rows, model


def bench_task_accuracy(checkpoint: Path, requests: list[tuple[str, float]], samples: int, calibration: int,
                        work: Path) -> dict[str, dict]:
    """int8 task accuracy drop of generated NumVQA models (real test images, labels from the task space)."""
    from host.exports.inputs import task_inputs_for
    from host.generate import ModelFactory

    factory = ModelFactory.load(space="numvqa", checkpoint=checkpoint)
    out: dict[str, dict] = {}
    for task, limit in requests:
        compact, summary = factory.generate(task, limit)
        verify = task_inputs_for(compact, samples, seed=1, split="test")
        calib = task_inputs_for(compact, calibration, seed=0, split="val")
        rows: dict[str, dict] = {"_request": {"activation_limit": limit, "activation_ratio": summary["activation_ratio"],
                                              "samples": samples, "calibration": calibration}}
        for fmt, q in (("onnx", False), ("onnx", True), ("tflite", False), ("tflite", True)):
            dest = work / f"acc{'.int8' if q else ''}{FORMATS[fmt].suffix}"
            v = export_artifact(compact, fmt, dest, int8=q, calibration=calib if q else None, verify=verify).verification
            rows[fmt + ("-int8" if q else "")] = {
                "accuracy_reference": v.accuracy_reference, "accuracy_artifact": v.accuracy_artifact,
                "accuracy_drop": v.accuracy_drop, "top1_agreement": v.top1_agreement, "max_abs_diff": v.max_abs_diff,
            }
        key = f"{task} @ {limit:g}"
        out[key] = rows
        print(f"\n{key} (activation ratio {summary['activation_ratio']:.3f}; {samples} test images, "
              f"int8 calibrated on {calibration} val images)")
        print(f"  {'format':<13}{'acc PyTorch':>12}{'acc export':>11}{'drop':>8}{'top1 agree':>11}{'max abs diff':>14}")
        for k, r in rows.items():
            if not k.startswith("_"):
                print(f"  {k:<13}{r['accuracy_reference']:>12.4f}{r['accuracy_artifact']:>11.4f}"
                      f"{r['accuracy_drop']:>+8.4f}{r['top1_agreement']:>11.4f}{r['max_abs_diff']:>14.3g}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--size", choices=list(CONFIGS), default="small")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 ONNX/TFLite exports")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    ap.add_argument("--runs", type=int, default=10, help="runs per format per round")
    ap.add_argument("--backbones", default=",".join(CONFIGS["small"]), help="comma-separated subset")
    ap.add_argument("--numvqa-checkpoint", type=Path, default=None,
                    help="instead: int8 task-accuracy drop of models generated from this NumVQA checkpoint")
    ap.add_argument("--requests", default="at least one 0@1.0,at least one 5@1.0,at least two even@0.3",
                    help="with --numvqa-checkpoint: TASK@LIMIT,... to generate")
    ap.add_argument("--samples", type=int, default=400, help="with --numvqa-checkpoint: test images per task")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.numvqa_checkpoint is not None:
        requests = [(r.rsplit("@", 1)[0], float(r.rsplit("@", 1)[1])) for r in args.requests.split(",")]
        with tempfile.TemporaryDirectory(prefix="nnf-bench-exports-") as tmp:
            acc = bench_task_accuracy(args.numvqa_checkpoint, requests, args.samples, 64, Path(tmp))
        _util.emit(acc, args.json, name="exports_task_accuracy")
        return
    result: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="nnf-bench-exports-") as tmp:
        for backbone in args.backbones.split(","):
            config = CONFIGS[args.size][backbone]
            rows, model = bench_backbone(config, Path(tmp), not args.no_int8, args.rounds, args.runs)
            result[backbone] = rows
            print(f"\n{backbone} ({config}: {model['params']} params, {model['macs']} MACs, input "
                  f"{model['input_shape']}, activation ratio {model['activation_ratio']})")
            print(f"  {'format':<14}{'max abs diff':>14}{'top1 agree':>11}{'size KiB':>10}{'export s':>10}"
                  f"{'wall us':>10}{'vs eager':>9}{'cpu us':>10}{'vs eager':>9}")
            for key, r in rows.items():
                print(f"  {key:<14}{r['max_abs_diff']:>14.3g}{r['top1_agreement']:>11.3f}"
                      f"{r['size_bytes'] / 1024:>10.1f}{r['export_seconds']:>10.2f}"
                      f"{r['median_latency_us']:>10.1f}{r['latency_ratio_vs_eager']:>9.3f}"
                      f"{r['median_cpu_us']:>10.1f}{r['cpu_ratio_vs_eager']:>9.3f}")
            first = next(iter(rows.values()))
            print(f"  {'eager PyTorch':<14}{'':>45}{first['eager_latency_us']:>10.1f}{1.0:>9.3f}"
                  f"{first['eager_cpu_us']:>10.1f}{1.0:>9.3f}")
    print(f"\n(torch {torch.__version__}, numpy {np.__version__}, 1 thread, batch 1, {args.rounds} rounds x "
          f"{args.runs} runs interleaved)")
    _util.emit(result, args.json)


if __name__ == "__main__":
    main()
