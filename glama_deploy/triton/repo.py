"""Write a Triton model repository for GLaMa (``python -m glama_deploy.triton build-repo``).

Two flavours:
- ``production`` (NGC tritonserver container, onnxruntime + TensorRT backends): ``glama_onnx``
  (platform onnxruntime_onnx), ``glama_trt`` (platform tensorrt_plan) and ``glama_pipeline``.
- ``cpu`` (any tritonserver with the python backend, e.g. the one in nvidia-pytriton):
  ``glama_onnx_py`` (the same model.onnx run by onnxruntime inside a python model) and
  ``glama_pipeline``.
Every generator model has the same tensors (``image`` [N,3,H,W], ``mask`` [N,1,H,W] FP32 ->
``output`` [N,3,H,W], H and W multiples of 8); ``glama_pipeline`` calls the configured one.
The output is a pure function of the options, so a checked-in repository can be rebuilt exactly.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from . import PIPELINE_MODEL

TEMPLATES = Path(__file__).resolve().parent / "models"
FLAVOURS = {"production": ("glama_onnx", "glama_trt", PIPELINE_MODEL), "cpu": ("glama_onnx_py", PIPELINE_MODEL)}
DEFAULT_GENERATOR = {"production": "glama_onnx", "cpu": "glama_onnx_py"}
MODEL_FILES = {"glama_onnx": "model.onnx", "glama_onnx_py": "model.onnx", "glama_trt": "model.plan"}
MODES = ("full", "tiled", "two-stage")


class RepoError(ValueError):
    """Inconsistent build-repo options or missing model files."""


@dataclass
class RepoOptions:
    """Everything a generated repository depends on (see ``build-repo --help``)."""

    flavour: str = "production"
    models: tuple[str, ...] = ()          # default: every model of the flavour
    generator: str = ""                   # model glama_pipeline calls; default per flavour
    refine_generator: str = ""            # two-stage refine pass; default: generator
    max_batch_size: int = 8
    queue_delay_us: int = 2000
    generator_instances: int = 1
    pipeline_instances: int = 2
    generator_kind: str = ""              # gpu | cpu; default gpu (production), cpu (cpu flavour)
    threads: int = 1                      # onnxruntime intra-op threads per generator instance (CPU)
    mode: str = "full"
    tile: int = 512
    overlap: int = 64
    coarse_size: int = 256
    max_side: int = 4096                  # generator (glama_onnx_py) input limit; pipeline: 2x
    max_pixels: int = 4096 * 4096         # generator: batch x H x W per request; pipeline: in mode=full
    trim_after_pixels: int = 1024 * 1024  # glama_onnx_py: give freed memory back after requests this big
    glama_deploy_path: str = ""           # put on sys.path of the python models ("" = installed package)

    def resolved(self) -> RepoOptions:
        if self.flavour not in FLAVOURS:
            raise RepoError(f"unknown flavour {self.flavour!r}; choose one of {sorted(FLAVOURS)}")
        o = RepoOptions(**{**asdict(self), "models": tuple(self.models or FLAVOURS[self.flavour])})
        o.generator = o.generator or DEFAULT_GENERATOR[o.flavour]
        o.refine_generator = o.refine_generator or o.generator
        o.generator_kind = o.generator_kind or ("gpu" if o.flavour == "production" else "cpu")
        known = set(MODEL_FILES) | {PIPELINE_MODEL}
        for m in o.models:
            if m not in known:
                raise RepoError(f"unknown model {m!r}; choose from {sorted(known)}")
        if PIPELINE_MODEL in o.models:
            for g in {o.generator, o.refine_generator}:
                if g not in MODEL_FILES:
                    raise RepoError(f"--generator {g!r} is not a generator model ({sorted(MODEL_FILES)})")
                if g not in o.models:
                    raise RepoError(f"the pipeline calls {g!r}, which is not in the repository ({o.models})")
        if o.generator_kind not in ("gpu", "cpu"):
            raise RepoError(f"generator kind must be gpu or cpu, got {o.generator_kind!r}")
        if o.mode not in MODES:
            raise RepoError(f"mode must be one of {MODES}, got {o.mode!r}")
        for name in ("max_batch_size", "generator_instances", "pipeline_instances", "threads", "tile",
                     "coarse_size", "max_side", "max_pixels"):
            if getattr(o, name) < 1:
                raise RepoError(f"{name} must be >= 1, got {getattr(o, name)}")
        if o.tile % 8 or o.tile > o.max_side:
            raise RepoError(f"tile must be a multiple of 8 and <= max_side ({o.max_side}), got {o.tile}")
        if o.tile < 64:
            raise RepoError(f"tile must be >= 64, got {o.tile}")
        if not 0 <= o.overlap <= o.tile // 4:
            raise RepoError(f"overlap must be in [0, tile/4], got {o.overlap}")
        return o


# -- config.pbtxt writers ------------------------------------------------------------------------
def _params(items: dict[str, object]) -> str:
    return "".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in items.items())


def _tensor(name: str, dtype: str, dims: list[int], optional: bool = False) -> str:
    opt = " optional: true" if optional else ""
    return f'  {{ name: "{name}" data_type: {dtype} dims: [ {", ".join(map(str, dims))} ]{opt} }}'


def _io(inputs: list[str], outputs: list[str]) -> str:
    return "input [\n" + ",\n".join(inputs) + "\n]\noutput [\n" + ",\n".join(outputs) + "\n]\n"


GENERATOR_IO = _io([_tensor("image", "TYPE_FP32", [3, -1, -1]), _tensor("mask", "TYPE_FP32", [1, -1, -1])],
                   [_tensor("output", "TYPE_FP32", [3, -1, -1])])


def _generator_common(o: RepoOptions, kind: str) -> str:
    return (f"max_batch_size: {o.max_batch_size}\n" + GENERATOR_IO
            + f"dynamic_batching {{ max_queue_delay_microseconds: {o.queue_delay_us} }}\n"
            + f"instance_group [ {{ count: {o.generator_instances} kind: KIND_{kind.upper()} }} ]\n")


def config_onnx(o: RepoOptions) -> str:
    params: dict[str, object] = {"glama_role": "generator"}
    if o.generator_kind == "cpu":  # onnxruntime backend threads per instance (CPU instances only)
        params["intra_op_thread_count"] = o.threads
    return ('name: "glama_onnx"\nplatform: "onnxruntime_onnx"\n' + _generator_common(o, o.generator_kind)
            + _params(params))


def config_trt(o: RepoOptions) -> str:
    return ('name: "glama_trt"\nplatform: "tensorrt_plan"\n'
            + _generator_common(o, "gpu")  # TensorRT plans only run on a GPU
            + _params({"glama_role": "generator"}))


def config_onnx_py(o: RepoOptions) -> str:
    return ('name: "glama_onnx_py"\nbackend: "python"\n' + _generator_common(o, o.generator_kind)
            + _params({"glama_role": "generator", "model_filename": "model.onnx", "intra_op_thread_count": o.threads,
                       "max_side": o.max_side, "max_pixels": o.max_pixels, "cpu_memory_arena": "false",
                       "trim_after_pixels": o.trim_after_pixels,
                       "glama_deploy_path": o.glama_deploy_path}))


def config_pipeline(o: RepoOptions) -> str:
    io = _io([_tensor("image", "TYPE_FP32", [1, 3, -1, -1], True), _tensor("mask", "TYPE_FP32", [1, 1, -1, -1], True),
              _tensor("image_hwc", "TYPE_UINT8", [-1, -1, 3], True), _tensor("mask_hw", "TYPE_UINT8", [-1, -1], True)],
             [_tensor("output", "TYPE_FP32", [1, 3, -1, -1]), _tensor("output_hwc", "TYPE_UINT8", [-1, -1, 3])])
    return (f'name: "{PIPELINE_MODEL}"\nbackend: "python"\nmax_batch_size: 0\n' + io
            + f"instance_group [ {{ count: {o.pipeline_instances} kind: KIND_CPU }} ]\n"
            + _params({"glama_role": "pipeline", "generator_model": o.generator, "refine_model": o.refine_generator,
                       "generator_max_batch_size": o.max_batch_size, "tile_batch_size": 2 * o.max_batch_size,
                       "mode": o.mode, "tile": o.tile,
                       "overlap": o.overlap, "coarse_size": o.coarse_size, "max_side": 2 * o.max_side,
                       "full_max_pixels": o.max_pixels,
                       "worker_threads": 2, "glama_deploy_path": o.glama_deploy_path}))


CONFIGS = {"glama_onnx": config_onnx, "glama_trt": config_trt, "glama_onnx_py": config_onnx_py,
           PIPELINE_MODEL: config_pipeline}
PYTHON_MODELS = {"glama_onnx_py": "glama_onnx_py.py", PIPELINE_MODEL: "glama_pipeline.py"}

VERSION_README = """Put the generator here as `{file}` (it is not checked in):
    python -m glama_deploy.triton build-repo --out <repo> {flag} <path>
or copy it by hand. {how}
"""
HOW = {"model.onnx": "Make it with `python -m export.onnx --weights W --out model.onnx`.",
       "model.plan": "Build it on the GPU that serves it, from model.onnx (docs/triton.md, 'TensorRT plan')."}


def _readme(o: RepoOptions, command: str) -> str:
    models = {
        "glama_onnx": "generator, onnxruntime backend (`1/model.onnx`)",
        "glama_trt": "generator, TensorRT backend (`1/model.plan`, built on the serving GPU)",
        "glama_onnx_py": "generator, model.onnx run by onnxruntime in a python model (`1/model.onnx`)",
        PIPELINE_MODEL: f"python model: full / tiled / two-stage on one image, calls `{o.generator}` through BLS",
    }
    lines = ["# GLaMa model repository", "",
             f"Generated by `{command}` (add `--onnx FILE` / `--plan FILE` to copy the model files in).",
             "Do not edit by hand: change the options and rebuild.", ""]
    lines += [f"- `{m}`: {models[m]}" for m in o.models]
    lines += ["", "Model files are not checked in. Tensors, request parameters, serving: docs/triton.md.", ""]
    return "\n".join(lines)


def options_command(o: RepoOptions, out: str = "triton_repo") -> str:
    """The build-repo command line that reproduces ``o`` (model file paths left out)."""
    d = RepoOptions().resolved() if o.flavour == "production" else RepoOptions(flavour=o.flavour).resolved()
    parts = ["python -m glama_deploy.triton build-repo", f"--out {out}"]
    if o.flavour != "production":
        parts.append(f"--flavour {o.flavour}")
    flags = {"models": "--models", "generator": "--generator", "refine_generator": "--refine-generator",
             "max_batch_size": "--max-batch-size", "queue_delay_us": "--queue-delay-us",
             "generator_instances": "--generator-instances", "pipeline_instances": "--pipeline-instances",
             "generator_kind": "--generator-kind", "threads": "--threads", "mode": "--mode", "tile": "--tile",
             "overlap": "--overlap", "coarse_size": "--coarse-size", "max_side": "--max-side",
             "max_pixels": "--max-pixels", "glama_deploy_path": "--glama-deploy-path"}
    for name, flag in flags.items():
        value = getattr(o, name)
        if value != getattr(d, name):
            parts.append(f"{flag} {','.join(value) if isinstance(value, tuple) else value}")
    return " ".join(parts)


def _copy_model_file(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise RepoError(f"{src}: model file not found")
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    side = src.with_name(src.name + ".data")  # ONNX external data keeps the name the model refers to
    if side.is_file():
        shutil.copyfile(side, dst.parent / side.name)


def _check_plan_batch(plan: Path, max_batch_size: int) -> None:
    """Triton refuses a plan whose profile's largest batch is below the config's max_batch_size:
    say so at build time, from the plan's sidecar (written by ``python -m export.tensorrt``)."""
    side = plan.with_name(plan.name + ".json")
    if not side.is_file():
        return
    try:
        plan_max = int(json.loads(side.read_text())["inputs"]["image"]["max"][0])
    except (ValueError, KeyError, IndexError, TypeError):
        raise RepoError(f"{side}: not a TensorRT sidecar written by export.tensorrt") from None
    if plan_max < max_batch_size:
        raise RepoError(f"{plan}: its profile allows batch <= {plan_max} but --max-batch-size is "
                        f"{max_batch_size}; rebuild the plan with --max {max_batch_size}xHxW or pass "
                        f"--max-batch-size {plan_max}")


def build_repo(out: str | os.PathLike, options: RepoOptions | None = None, *, onnx: str | os.PathLike | None = None,
               plan: str | os.PathLike | None = None, out_label: str | None = None) -> list[Path]:
    """Write the repository into ``out`` (created; files it owns are overwritten, others kept).

    ``onnx`` / ``plan``: model files copied to ``<model>/1/model.onnx`` / ``model.plan``; without
    them a README in the version folder says what to put there. Returns the files written.
    """
    o = (options or RepoOptions()).resolved()
    if plan is not None and "glama_trt" in o.models:
        _check_plan_batch(Path(plan), o.max_batch_size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        written.append(path)

    sources = {"model.onnx": onnx, "model.plan": plan}
    for name in o.models:
        write(out / name / "config.pbtxt", CONFIGS[name](o))
        version = out / name / "1"
        if name in PYTHON_MODELS:
            write(version / "model.py", (TEMPLATES / PYTHON_MODELS[name]).read_text())
        if name in MODEL_FILES:
            file = MODEL_FILES[name]
            src = sources[file]
            if src is not None:
                version.mkdir(parents=True, exist_ok=True)
                _copy_model_file(Path(src), version / file)
                written.append(version / file)
            elif not (version / file).exists():
                flag = "--onnx" if file == "model.onnx" else "--plan"
                write(version / "README.md", VERSION_README.format(file=file, flag=flag, how=HOW[file]))
    write(out / "README.md", _readme(o, options_command(o, out_label or str(out))))
    return written


__all__ = ["FLAVOURS", "RepoError", "RepoOptions", "build_repo", "options_command"]
