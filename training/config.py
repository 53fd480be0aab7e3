"""Run configuration: dataclasses loaded from YAML (``training/configs/*.yaml``) with CLI overrides.

A YAML file mirrors :class:`RunConfig`; every key must name a field (unknown keys are an error
that lists the valid ones). Overrides use dotted paths and are typed by the dataclass field::

    python -m training.train --config training/configs/glama-tiny.yaml \\
        --set loss.ffl=2 --set optim.batch_size=8 --set data.holdout=[a.jpg,b.jpg]

Values are parsed as YAML scalars/lists (``true``, ``1e-3``, ``[a, b]``, ``null``) and then
checked against the field's type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from training.losses import LossConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
MODES = ("inpaint", "refine")


class ConfigError(ValueError):
    """A bad config file or override; the message names the file/key and the problem."""


@dataclass
class ModelConfig:
    name: str = "tiny"  # a glama_deploy.model CONFIGS name: tiny, small, lama-fourier, big-lama
    disc_ndf: int = 64  # PatchGAN width (LaMa: 64); smaller makes CPU runs of `tiny` affordable
    disc_layers: int = 4
    # Fine-tuning: start G from these weights (our .safetensors, or an official LaMa / big-lama
    # best.ckpt); D too when a .ckpt holds `discriminator.*` tensors of this D's shapes, else D starts
    # fresh. Optimizers and step start anew; ignored when resuming (the checkpoint has everything).
    init_weights: str = ""
    # Generator fields that replace those of the named config, e.g. {ngf: 32, prefill: true}
    # (any field of glama_deploy.model.GeneratorConfig except name); recorded in the weights.
    arch: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    # Image folder(s), each searched recursively (jpg, png, ...). Required: there is no default,
    # so a run never trains on whatever lies below the current directory.
    root: Union[str, list[str]] = ""  # noqa: UP007 - runtime-inspected type
    holdout: list[str] = field(default_factory=list)  # file names (or relative paths) kept for validation
    # Never trained on and not validated on either: a test set kept apart for the final evaluation.
    exclude: list[str] = field(default_factory=list)
    crop: int = 256  # training crop side (multiple of 8)
    # Random downscale of big images before cropping, so a crop sees more context: the scale is
    # drawn log-uniformly in [max(min_scale, crop / short_side), 1].
    min_scale: float = 0.5
    hflip: bool = True
    cache_images: bool = True  # keep decoded images (uint8) in memory; fine for small folders
    num_workers: int = 0


@dataclass
class MasksConfig:
    policy: Union[str, dict[str, float]] = "general"  # noqa: UP007 - runtime-inspected type
    val_per_type: int = 1  # validation masks per (held-out image, mask type)
    val_seed: int = 1234  # the validation mask set is fixed by this seed
    val_size: int = 256  # held-out images are resized/center-cropped to this square


@dataclass
class OptimConfig:
    lr_g: float = 1e-3
    lr_d: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0  # max global grad norm for G and for D; 0 = off
    batch_size: int = 4  # per process


@dataclass
class TrainConfig:
    steps: int = 1000
    mode: str = "inpaint"  # "inpaint" or "refine"
    amp: bool = False  # mixed precision; used only on CUDA
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch.set_num_threads; 0 = leave torch's default
    seed: int = 0
    log_every: int = 10
    image_every: int = 200
    ckpt_every: int = 200
    # Also keep checkpoints/step-<N>.pt every this many steps (0 = only last.pt): for comparing
    # runs at equal steps and picking a checkpoint after the fact.
    keep_every: int = 0
    val_every: int = 200
    time_budget_min: float = 0.0  # stop (checkpoint + export) after this many minutes; 0 = no limit
    # Before export, re-estimate the generator's BatchNorm running statistics as a plain average over
    # this many training-distribution batches (0 = export the running averages as trained). With
    # small batches and a mix of very different mask types (General Mask), the momentum-0.1 running
    # averages follow the last few batches and make eval-mode outputs noisy from step to step.
    bn_recalib_batches: int = 0
    out_dir: str = "runs/default"
    export_name: str = "generator.safetensors"


@dataclass
class RefineConfig:
    coarse_weights: str = ""  # frozen coarse generator (safetensors); required in refine mode
    coarse_factor: int = 4  # coarse model runs at crop / coarse_factor


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    masks: MasksConfig = field(default_factory=MasksConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # Local path of the HRF perceptual network (ADE20k ResNet50-dilated encoder). Empty/null = the
    # perceptual loss is OFF (logged and written into the exported weights' metadata).
    perceptual_weights: Union[str, None] = None  # noqa: UP007
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def data_roots(self) -> list[str]:
        """``data.root`` as a list of folders (it may be one string or a list)."""
        r = self.data.root
        return [r] if isinstance(r, str) else list(r)

    def generator_config(self, **overrides: Any):
        """The generator's config: ``model.name`` with ``model.arch`` and ``overrides`` applied."""
        from glama_deploy.model import GeneratorConfig, get_config

        fields = {f.name for f in dataclasses.fields(GeneratorConfig)} - {"name"}
        bad = sorted(set(self.model.arch) - fields)
        if bad:
            raise ConfigError(f"model.arch: unknown generator field(s) {', '.join(bad)}; valid: "
                              f"{', '.join(sorted(fields))}")
        try:
            return get_config(self.model.name, **{**self.model.arch, **overrides})
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model.arch: {e}") from None

    def validate(self) -> RunConfig:
        if self.train.mode not in MODES:
            raise ConfigError(f"train.mode must be one of {MODES}, got {self.train.mode!r}")
        if self.data.crop % 8:
            raise ConfigError(f"data.crop must be a multiple of 8, got {self.data.crop}")
        if self.masks.val_size % 8:
            raise ConfigError(f"masks.val_size must be a multiple of 8, got {self.masks.val_size}")
        if self.train.mode == "refine":
            f = self.refine.coarse_factor
            if f < 1 or (self.data.crop // f) % 8 or self.data.crop % f:
                raise ConfigError(f"refine.coarse_factor {f}: crop {self.data.crop} / factor must be an "
                                  "integer multiple of 8")
            if not self.refine.coarse_weights:
                raise ConfigError("train.mode=refine needs refine.coarse_weights (a coarse generator)")
        if self.optim.batch_size < 1 or self.train.steps < 0:
            raise ConfigError("optim.batch_size must be >= 1 and train.steps >= 0")
        if len(self.optim.betas) != 2:
            raise ConfigError(f"optim.betas must have two values, got {self.optim.betas}")
        try:  # re-run the section checks after --set overrides (setattr bypasses __post_init__)
            LossConfig(**dataclasses.asdict(self.loss))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"loss: {e}") from None
        from glama_deploy.model import CONFIGS
        from training.masks import make_policy

        if self.model.name not in CONFIGS:
            raise ConfigError(f"model.name {self.model.name!r} unknown; known: {', '.join(CONFIGS)}")
        self.generator_config()  # checks model.arch
        if self.loss.perceptual == "hrf" and self.loss.pl > 0 and not self.perceptual_weights:
            raise ConfigError(
                "loss.perceptual=hrf (the paper's HRF perceptual loss) needs perceptual_weights=PATH to "
                "ade20k-resnet50dilated-ppm_deepsup/encoder_epoch_20.pth; without that file, name the "
                "substitute (--set loss.perceptual=recon) or switch the term off (--set loss.perceptual=off)")
        try:
            make_policy(self.masks.policy)
        except ValueError as e:
            raise ConfigError(f"masks.policy: {e}") from None
        return self


# --------------------------------------------------------------------------- typed conversion

def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to type ``tp`` (dataclass, Union/Optional, list, dict, scalar)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for section {tp.__name__}, got {value!r}")
        return _build(tp, value, where)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: null is not allowed (expected {_type_name(tp)})")
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} does not fit {_type_name(tp)}")
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1] or (Any,)
        if isinstance(value, (list, tuple)):
            return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if origin is dict:
        kt, vt = typing.get_args(tp) or (Any, Any)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # YAML 1.1 reads off/on/no/yes as booleans
            raise ConfigError(f"{where}: YAML read this as {str(value).lower()} (from off/on/no/yes?); "
                              f"quote it, e.g. \"off\"")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"{where or 'top level'}: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"valid keys: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # a section's own checks (e.g. LossConfig.__post_init__)
        raise ConfigError(f"{where or 'top level'}: {e}") from None


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build a validated config from a nested dict (as written in checkpoints).

    Checkpoints written before ``loss.perceptual`` existed ran without the HRF term unless they had
    weights; they resume as they ran (``off``)."""
    data = dict(data or {})
    loss = dict(data.get("loss") or {})
    if "perceptual" not in loss and not data.get("perceptual_weights"):
        loss["perceptual"] = "off"
        data["loss"] = loss
    return _build(RunConfig, data, "").validate()


def resolve_config_path(path: str | Path) -> Path:
    """A path, or a bare name of a file in ``training/configs`` (with or without ``.yaml``)."""
    p = Path(path)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / p.name, CONFIG_DIR / f"{p.name}.yaml"):
        if cand.is_file():
            return cand
    known = ", ".join(sorted(q.stem for q in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"{path}: config file not found (bundled configs: {known})")


def apply_override(cfg: RunConfig, assignment: str) -> RunConfig:
    """Apply one ``dotted.key=value`` override in place, typed by the target field."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. loss.ffl=2")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.split(".")
    obj: Any = cfg
    for i, part in enumerate(parts):
        path = ".".join(parts[: i + 1])
        if not dataclasses.is_dataclass(obj):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i])} is not a section")
        names = [f.name for f in dataclasses.fields(obj)]
        if part not in names:
            raise ConfigError(f"--set {key}: unknown key {path!r}; valid keys here: {', '.join(names)}")
        if i == len(parts) - 1:
            tp = _hints(type(obj))[part]
            if tp is str:  # a string field takes the text as given: "off" must not become YAML's false
                value = raw.strip()
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                    value = value[1:-1]
            setattr(obj, part, _coerce(value, tp, path))
        else:
            obj = getattr(obj, part)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (or defaults when ``path`` is None) and apply ``--set`` overrides."""
    data: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        p = resolve_config_path(path)
        where = str(p)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections")
    try:
        cfg = _build(RunConfig, data, "")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    for o in overrides or []:
        apply_override(cfg, o)
    return cfg.validate()


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
