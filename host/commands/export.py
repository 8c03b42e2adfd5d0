"""``nnf export``: turn a compact model dir into a deployable artifact, verified in its device runtime."""

from __future__ import annotations

import argparse
from pathlib import Path

from host.commands.options import add_format_arg, add_json_arg, check_out
from host.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a compact model dir to TorchScript / torch.export / ONNX / TFLite",
        description=(
            "Export a compact model dir (spec.json + model.safetensors, from `nnf generate`) to a file a "
            "device runtime loads, check it in that runtime against PyTorch (max abs diff <= 1e-4 for "
            "float32), and write FILE.json next to it (source spec, input shapes, exporter versions, "
            "sha256). Suffixes: .pt TorchScript, .pt2 torch.export, .onnx ONNX, .tflite TFLite."
        ),
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="compact model directory")
    add_format_arg(p, required=True)
    p.add_argument("--out", metavar="FILE", help="artifact path (default MODEL_DIR/model[.int8].SUFFIX)")
    p.add_argument("--int8", action="store_true",
                   help="int8 post-training quantisation (onnx, tflite) calibrated on --calibration inputs")
    p.add_argument("--calibration", type=int, default=None, metavar="N",
                   help="calibration samples for --int8 (default 64)")
    p.add_argument("--verify-samples", type=int, default=32, metavar="N",
                   help="inputs the export is compared with PyTorch on (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration/verification inputs (default 0)")
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from host.cli import print_json
    from host.exports.formats import check_installed, get_format
    from host.exports.model_dir import export_model_dir

    if args.calibration is not None and not args.int8:
        raise ConfigError("--calibration only applies with --int8 (float32 exports need no calibration)")
    calibration = 64 if args.calibration is None else args.calibration
    if calibration < 1:
        raise ConfigError(f"--calibration must be at least 1, got {calibration}")
    if args.verify_samples < 1:
        raise ConfigError(f"--verify-samples must be at least 1, got {args.verify_samples}")
    check_installed(get_format(args.format))
    if args.out is not None:
        check_out(args.out, directory=False)
    result = export_model_dir(
        args.model_dir, args.format, args.out, int8=args.int8, calibration_samples=calibration,
        verify_samples=args.verify_samples, seed=args.seed,
    )
    if args.json:
        print_json(result.to_json())
        return 0
    v = result.verification
    print(f"wrote {result.path} ({result.format}, {result.precision}, {result.size_bytes} bytes, "
          f"sha256 {result.sha256[:16]}...) in {result.export_seconds:.2f} s; metadata in {result.sidecar}")
    if v is not None:
        line = (f"checked in {v.runtime} on {v.samples} inputs ({v.input_source}): max abs diff "
                f"{v.max_abs_diff:.3g}, top-1 agreement {v.top1_agreement:.3f}")
        if v.tolerance is not None:
            line += f" (<= {v.tolerance:g}: {'ok' if v.passed else 'FAILED'})"
        if v.accuracy_drop is not None:
            line += (f"; task accuracy {v.accuracy_reference:.4f} (PyTorch) -> {v.accuracy_artifact:.4f} "
                     f"(export), drop {v.accuracy_drop:+.4f}")
        print(line)
    return 0


# ---- hooks for `nnf generate --format` (generate writes MODEL_DIR, then calls these) ---------------------


def add_format_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--format`` / ``--int8`` / ``--calibration`` to another command (``nnf generate``)."""
    add_format_arg(parser, help="also export the generated model to OUT/model.SUFFIX in this format (checked in "
                                "its runtime; see `nnf export --help`)")
    parser.add_argument("--int8", action="store_true", help="with --format onnx|tflite: int8 post-training quantisation")
    parser.add_argument("--calibration", type=int, default=None, metavar="N",
                        help="calibration samples for --int8 (default 64, from the task space's val split)")


def check_format_arguments(args: argparse.Namespace) -> int | None:
    """Validate the :func:`add_format_arguments` flags before any work; returns the calibration size."""
    from host.exports.formats import check_combination, check_installed, get_format

    fmt = getattr(args, "format", None)
    int8 = bool(getattr(args, "int8", False))
    calibration = getattr(args, "calibration", None)
    if fmt is None:
        if int8 or calibration is not None:
            raise ConfigError("--int8/--calibration need --format onnx or --format tflite")
        return None
    if calibration is not None and not int8:
        raise ConfigError("--calibration only applies with --int8 (float32 exports need no calibration)")
    check_combination(None, get_format(fmt), int8)
    check_installed(get_format(fmt))
    n = 64 if calibration is None else calibration
    if n < 1:
        raise ConfigError(f"--calibration must be at least 1, got {n}")
    return n


def export_after_generate(args: argparse.Namespace, model_dir: str | Path) -> dict | None:
    """Export ``model_dir`` as asked by :func:`add_format_arguments`'s flags; None without ``--format``."""
    from host.exports.model_dir import export_model_dir

    n = check_format_arguments(args)
    if n is None:
        return None
    return export_model_dir(model_dir, args.format, int8=bool(args.int8), calibration_samples=n).to_json()


def export_line(exported: dict) -> str:
    """One human line for an export result (``ExportResult.to_json()``), as `nnf generate` prints it."""
    v = exported.get("verification") or {}
    line = (f"{exported['path']}  ({exported['format']}, {exported['precision']}, {exported['size_bytes']:,} bytes; "
            f"max abs diff {v.get('max_abs_diff', float('nan')):.3g} in {v.get('runtime', '?')}")
    if v.get("accuracy_reference") is not None:
        line += (f"; task accuracy {v['accuracy_reference']:.4f} PyTorch vs {v['accuracy_artifact']:.4f} export "
                 f"on {v['samples']} test images")
    return line + ")"
