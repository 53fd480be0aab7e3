"""Per-mask-type quality of the pipeline modes, and of the coarse pass's hole rule, on held-out photos.

``python -m benchmarks.pipeline_quality [--photos 2] [--size 1024] [--out benchmarks/results/pipeline-quality]``

Each held-out photo of ``training/configs/glama-small.yaml`` (``data.holdout``) is resized to short
side ``--size`` and centre-cropped square; one mask of each of the seven NTIRE types is drawn at
that size (``training.compare.draw_masks``). Reported: in-hole PSNR (8-bit composites) of

* **coarse fill** (cheap, every photo): the coarse pass alone (short side 256, bilinear upsampling)
  under each hole rule of :func:`glama_deploy.pipeline.scaling.downscale` (``any`` = the old rule),
  with the share of low-res pixels that are holes: this picks the rule;
* **modes** (first ``--photos`` photos): ``full`` frame, ``tiled`` and ``two-stage`` with their
  defaults (cost model on), and two-stage forced to tiles (``full_max_pixels=0``) under the old
  rule ``any`` and the chosen rule, which isolates the coarse pass's effect.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from glama_deploy.bundled import DEFAULT_WEIGHTS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "training" / "configs" / "glama-small.yaml"
DATA = ROOT.parent / "shared" / "data"
RULES = ("any", "majority", "known")


def holdout_photos(config: Path = CONFIG, data: Path = DATA) -> list[Path]:
    """The held-out photos named by ``data.holdout`` of ``config``, found under ``data``."""
    import yaml

    names = yaml.safe_load(config.read_text())["data"]["holdout"]
    found = {p.name: p for p in data.rglob("*.jpg")}
    return [found[n] for n in names if n in found]


def square(path: Path, size: int) -> np.ndarray:
    """(3, size, size) float32 RGB on the 8-bit grid: short side ``size``, centre crop."""
    from export.quantize import square_crop

    return square_crop(path, size)[0]


def psnr_hole(out: np.ndarray, gt: np.ndarray, hole: np.ndarray) -> float:
    """In-hole PSNR (dB) of the 8-bit rounded composite."""
    q = np.clip(np.rint(out * 255), 0, 255) / 255.0
    mse = float(np.mean((q[:, hole] - gt[:, hole]) ** 2))
    return 10 * np.log10(1 / max(mse, 1e-10))


def coarse_rows(engine, photos: list[Path], size: int, coarse_size: int) -> dict:
    """{type: {rule: {"psnr": [...], "hole_share": [...]}}} of the upsampled coarse fill alone."""
    from glama_deploy.pipeline.layout import Rect
    from glama_deploy.pipeline.scaling import downscale
    from glama_deploy.pipeline.two_stage import coarse_pass
    from training.compare import draw_masks

    acc: dict = {}
    for pi, path in enumerate(photos):
        gt = square(path, size)
        for t, (m,) in draw_masks(size, size, 0, pi, 1).items():
            hole, frame = m > 0, Rect(0, size, 0, size)
            for rule in RULES:
                mf = hole.astype(np.float32)
                share = float(downscale(gt, mf, frame, (coarse_size, coarse_size), rule)[1].mean())
                fill = coarse_pass(engine, gt, mf, coarse_size, rule).sample(frame)
                r = acc.setdefault(t, {}).setdefault(rule, {"psnr": [], "hole_share": []})
                r["psnr"].append(psnr_hole(np.where(hole, fill, gt), gt, hole))
                r["hole_share"].append(share)
    return acc


def mode_rows(
    engine, photos: list[Path], size: int, rule: str, tile: int, coarse_size: int, first: int = 0
) -> tuple[dict, dict]:
    """{type: {mode: [psnr...]}} and {mode: seconds} for the pipeline modes."""
    from glama_deploy.pipeline import run
    from training.compare import draw_masks

    modes = {
        "full": dict(mode="full"),
        "tiled": dict(mode="tiled"),
        "two-stage": dict(mode="two-stage"),
        "two-stage tiles, rule any (before)": dict(mode="two-stage", full_max_pixels=0, coarse_rule="any"),
        f"two-stage tiles, rule {rule}": dict(mode="two-stage", full_max_pixels=0, coarse_rule=rule),
    }
    acc: dict = {}
    secs = {k: 0.0 for k in modes}
    for pi, path in enumerate(photos, start=first):
        gt = square(path, size)
        for t, (m,) in draw_masks(size, size, 0, pi, 1).items():
            hole = m > 0
            for label, kw in modes.items():
                kw = dict(kw)
                t0 = time.perf_counter()
                out = run(engine, gt[None], hole[None, None].astype(np.float32), kw.pop("mode"), tile=tile,
                          overlap=tile // 8, coarse_size=coarse_size, **kw)[0]
                secs[label] += time.perf_counter() - t0
                acc.setdefault(t, {}).setdefault(label, []).append(psnr_hole(out, gt, hole))
            print(f"{path.name} {t}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in acc[t].items()), flush=True)
    return acc, secs


def to_markdown(rep: dict) -> str:
    lines = [
        "# Pipeline quality per mask type",
        "",
        f"Bundled model, torch CPU, held-out photos at {rep['size']}x{rep['size']} (short side "
        f"{rep['size']}, centre crop), one mask per type and photo, in-hole PSNR (dB) of 8-bit composites. "
        f"Made by `{rep.get('command', 'python -m benchmarks.pipeline_quality')}`.",
        "",
        f"## Coarse pass alone ({rep['size']} -> {rep['coarse_size']}), {len(rep['coarse_photos'])} photos",
        "",
        "Which low-res pixels are holes: `any` = touching any hole pixel (before), `majority` = more "
        "than half the cell, `known` = the whole cell. Hole share = low-res pixels fed to the model as hole.",
        "",
        "| type | " + " | ".join(f"{r} PSNR | {r} hole share" for r in RULES) + " |",
        "|---|" + "---|---|" * len(RULES),
    ]
    for t, by in rep["coarse"].items():
        cells = [f"{np.mean(by[r]['psnr']):.2f} | {100 * np.mean(by[r]['hole_share']):.0f}%" for r in RULES]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    if rep.get("modes"):
        labels = list(next(iter(rep["modes"].values())))
        lines += ["", f"## Modes at {rep['mode_size']}x{rep['mode_size']}, {len(rep['mode_photos'])} photos "
                  f"(tile {rep['tile']}, coarse short side {rep['mode_coarse_size']})", "",
                  "| type | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for t, by in rep["modes"].items():
            lines.append(f"| {t} | " + " | ".join(f"{np.mean(by[k]):.2f}" for k in labels) + " |")
        mean = {k: np.mean([np.mean(by[k]) for by in rep["modes"].values()]) for k in labels}
        lines.append("| **mean** | " + " | ".join(f"**{mean[k]:.2f}**" for k in labels) + " |")
        lines.append("| seconds | " + " | ".join(f"{rep['seconds'][k]:.0f}" for k in labels) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--size", type=int, default=1024, help="short side (then centre-cropped square)")
    ap.add_argument("--coarse-photos", type=int, default=8, help="photos for the coarse-rule table")
    ap.add_argument("--photos", type=int, default=1, help="photos for the modes table (0 = skip)")
    ap.add_argument("--first", type=int, default=0, help="first held-out photo of the modes table")
    ap.add_argument("--rule", default="known", choices=RULES, help="the rule compared with 'any'")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--coarse-size", type=int, default=256)
    ap.add_argument("--mode-size", type=int, help="size of the modes table (default --size); with "
                    "--tile and --coarse-size scaled alike it keeps the ratios of the full-size run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pipeline-quality")
    args = ap.parse_args(argv)
    from glama_deploy.engines import create_engine

    engine = create_engine("torch", str(args.weights), threads=args.threads)
    photos = holdout_photos()
    if not photos:
        print(f"error: no held-out photos under {DATA}", file=sys.stderr)
        return 2
    cmd = " ".join(["python -m benchmarks.pipeline_quality", *(argv if argv is not None else sys.argv[1:])])
    rep: dict = {"command": cmd, "size": args.size, "coarse_size": args.coarse_size, "tile": args.tile,
                 "weights": args.weights.name, "coarse_photos": [p.name for p in photos[: args.coarse_photos]]}
    rep["coarse"] = coarse_rows(engine, photos[: args.coarse_photos], args.size, args.coarse_size)
    if args.photos:
        mphotos = photos[args.first : args.first + args.photos]
        rep["mode_photos"] = [p.name for p in mphotos]
        rep["mode_size"] = msize = args.mode_size or args.size
        rep["mode_coarse_size"] = mcs = max(16, args.coarse_size * msize // args.size)
        rep["modes"], rep["seconds"] = mode_rows(
            engine, mphotos, msize, args.rule, args.tile, mcs, args.first
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rep, indent=1))
    args.out.with_suffix(".md").write_text(to_markdown(rep))
    print(to_markdown(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
