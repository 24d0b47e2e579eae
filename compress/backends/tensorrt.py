"""TensorRT engines built through Polygraphy (NVIDIA's maintained driver for TensorRT 10/11), and run
through TensorRT's tensor API with torch CUDA tensors.

Builds are strongly typed only, the one mode both 10.x and 11.x support: precision comes from the ONNX
graph. INT8 is the model's own Q/DQ; FP16 converts the ONNX graph to fp16 with float inputs and
outputs (Polygraphy's `ConvertToFp16`, i.e. onnxconverter-common's `convert_float_to_float16(...,
keep_io_types=True)`). `plan_build` maps our options to Polygraphy's lazy loaders
(`NetworkFromOnnxPath`, `CreateConfig`, `EngineFromNetwork`) without touching TensorRT, so the mapping
is inspectable on any machine; `build_engine` calls them, which needs TensorRT and a GPU.

Engines are tied to the GPU model and the TensorRT version: the engine cache keys by both, plus the
ONNX file's hash and every flag that changes the engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compress.backends.base import Backend, BackendOptions, CudaEventTimer, Session
from compress.errors import BackendError, MissingDependencyError

EXTRA = "pip install 'compress[tensorrt]'"

# How a Q/DQ graph must look for TensorRT (read by `compress.quantize.targets`): symmetric signed INT8,
# weights per channel, activations per tensor; TensorRT fuses Q/DQ itself, so NNCF's placement stays.
INT8_RULES = {"activations_per_tensor": True, "rewrites": (), "signed_only": True, "preset": "performance"}
PRECISIONS = ("auto", "fp16")
OPT_LEVELS = range(0, 6)  # TensorRT's builder optimisation levels (default 3)


def require_polygraphy():
    """Polygraphy's TensorRT and ONNX loaders, or a one-line error naming the extra."""
    try:
        from polygraphy.backend import onnx as pg_onnx
        from polygraphy.backend import trt as pg_trt
    except ImportError:
        raise MissingDependencyError(f"the tensorrt backend needs Polygraphy; {EXTRA}") from None
    return pg_trt, pg_onnx


def require_tensorrt():
    """The `tensorrt` module, or a one-line error naming the extra."""
    try:
        import tensorrt
    except ImportError:
        tensorrt = None
    if not hasattr(tensorrt, "Builder"):  # a folder named tensorrt on sys.path imports as an empty namespace
        raise MissingDependencyError(f"TensorRT is not installed; {EXTRA} (it needs an NVIDIA GPU)")
    return tensorrt


def have_tensorrt() -> bool:
    try:
        require_tensorrt()
    except MissingDependencyError:
        return False
    return True


# ---- options ----------------------------------------------------------------------------------


@dataclass
class ShapeProfile:
    """Min / opt / max shapes of one input for an optimisation profile (`name` None: the only input)."""

    name: str | None
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


_DIMS = re.compile(r"^\d+(x\d+)*$")


def parse_shapes(text: str) -> list[ShapeProfile]:
    """`[NAME=]MIN:OPT:MAX[,NAME=MIN:OPT:MAX...]`, shapes as `1x3x224x224`; one shape fixes all three."""
    profiles: list[ShapeProfile] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        name, _, spec = part.rpartition("=")
        shapes = spec.split(":")
        if len(shapes) == 1:
            shapes *= 3
        if len(shapes) != 3 or not all(_DIMS.match(s) for s in shapes):
            raise BackendError(
                f"--shapes '{part}': expected MIN:OPT:MAX like 1x3x224x224:8x3x224x224:32x3x224x224 (optionally NAME=)"
            )
        lo, mid, hi = (tuple(int(d) for d in s.split("x")) for s in shapes)
        if not len(lo) == len(mid) == len(hi):
            raise BackendError(f"--shapes '{part}': min, opt and max have different ranks")
        if any(d < 1 for d in lo) or not all(a <= b <= c for a, b, c in zip(lo, mid, hi, strict=True)):
            raise BackendError(f"--shapes '{part}': need 1 <= min <= opt <= max in every dimension")
        profiles.append(ShapeProfile(name or None, lo, mid, hi))
    if not profiles:
        raise BackendError("--shapes is empty")
    if len(profiles) > 1 and any(p.name is None for p in profiles):
        raise BackendError(
            f"--shapes '{text}': dimensions are separated by x (1x3x224x224); a comma separates inputs, "
            "and then each must be named (NAME=MIN:OPT:MAX)"
        )
    return profiles


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str | int | None) -> int | None:
    """`4G`, `512M`, `1048576` -> bytes (None stays None: TensorRT's default, the whole device memory)."""
    if text is None or isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise BackendError(f"--workspace '{text}': expected a size like 4G, 512M or a number of bytes")
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise BackendError(f"--workspace '{text}' must be positive")
    return value


@dataclass
class TensorRTBuildConfig:
    """How to build an engine.

    Attributes:
        precision: auto (as the ONNX graph says: fp32, INT8 from its Q/DQ) or fp16 (graph converted
            to fp16, float inputs and outputs kept; Q/DQ stay INT8).
        shapes: optimisation profile, `[NAME=]MIN:OPT:MAX` (`parse_shapes`); needed for dynamic inputs.
        workspace: workspace memory pool limit (`4G`, `512M`, bytes); None: TensorRT's default.
        timing_cache: a tactic timing cache file, loaded when it exists and saved after the build.
        sparse_weights: let 2:4 sparse tactics compete for layers whose weights qualify.
        opt_level: builder optimisation level 0-5 (None: TensorRT's default, 3).
        cache_dir: engine cache folder (None: $COMPRESS_ENGINE_CACHE or ~/.cache/compress/engines).
        use_cache: reuse an engine built before with the same key.
    """

    precision: str = "auto"
    shapes: str | None = None
    workspace: str | int | None = None
    timing_cache: str | None = None
    sparse_weights: bool = False
    opt_level: int | None = None
    cache_dir: str | None = None
    use_cache: bool = True

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise BackendError(f"unknown precision '{self.precision}'; available: {', '.join(PRECISIONS)}")
        if self.opt_level is not None and self.opt_level not in OPT_LEVELS:
            raise BackendError(f"--opt-level {self.opt_level}: TensorRT's levels are 0 to 5")
        if self.shapes is not None:
            parse_shapes(self.shapes)
        parse_bytes(self.workspace)

    def flags(self) -> dict[str, Any]:
        """The settings that change the engine (the timing cache only changes how fast it builds)."""
        return {
            "strongly_typed": True,
            "precision": self.precision,
            "shapes": [asdict(p) for p in parse_shapes(self.shapes)] if self.shapes else None,
            "workspace_bytes": parse_bytes(self.workspace),
            "sparse_weights": self.sparse_weights,
            "builder_optimization_level": self.opt_level,
        }


def engine_cache_key(onnx_sha256: str, gpu: str, trt_version: str, flags: dict[str, Any]) -> str:
    """One key per (model file, GPU model, TensorRT version, engine flags)."""
    blob = json.dumps(
        {"onnx": onnx_sha256, "gpu": gpu, "tensorrt": trt_version, "flags": flags}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def default_cache_dir() -> Path:
    env = os.environ.get("COMPRESS_ENGINE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "compress" / "engines"


# ---- the plan: Polygraphy loaders, built lazily ------------------------------------------------


class WorkspaceLimit:
    """Sets the workspace memory pool on the builder config (a `PostprocessConfig` function: the
    pool type is a TensorRT enum, so it is read only when the build runs)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes

    def __call__(self, builder, network, config) -> None:
        trt = require_tensorrt()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.limit_bytes)


@dataclass
class BuildPlan:
    """What `build_engine` will call. Nothing here has run TensorRT yet."""

    source: Path
    onnx: Path  # the file TensorRT parses (the fp16 copy with precision fp16)
    profiles: list[ShapeProfile]
    flags: dict[str, Any]
    network: Any = None  # polygraphy NetworkFromOnnxPath
    create_config: Any = None  # polygraphy CreateConfig
    config: Any = None  # create_config, or a PostprocessConfig around it
    engine: Any = None  # polygraphy EngineFromNetwork
    timing_cache: Path | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """The plan as JSON-able data (what `compress build --plan-only` prints)."""
        cc = self.create_config
        return {
            "source": str(self.source),
            "parsed_onnx": str(self.onnx),
            "network": {
                "loader": type(self.network).__name__,
                "path": str(self.network.path),
                "strongly_typed": self.network.strongly_typed,
            },
            "config": {
                "loader": type(cc).__name__,
                "profiles": [{n: str(s) for n, s in p.items()} for p in cc.profiles],
                "sparse_weights": cc.sparse_weights,
                "builder_optimization_level": cc.builder_optimization_level,
                "load_timing_cache": cc.timing_cache_path,
                "workspace_bytes": getattr(getattr(self.config, "_func", None), "limit_bytes", None),
            },
            "engine": {"loader": type(self.engine).__name__, "save_timing_cache": self.engine.timing_cache_path},
            "flags": self.flags,
            "notes": self.notes,
        }


def onnx_inputs(path: Path) -> list[tuple[str, list[int | str]]]:
    """The graph inputs of an ONNX file (initializers excluded) and their dims (strings where dynamic)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise BackendError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:200]})") from None
    inits = {i.name for i in model.graph.initializer}
    out = []
    for i in model.graph.input:
        if i.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in i.type.tensor_type.shape.dim]
        out.append((i.name, dims))
    return out


def resolve_profiles(path: Path, shapes: str | None) -> list[ShapeProfile]:
    """Profiles named after the model's inputs and checked against their fixed dimensions."""
    inputs = onnx_inputs(path)
    dynamic = [name for name, dims in inputs if any(not isinstance(d, int) or d <= 0 for d in dims)]
    if shapes is None:
        if dynamic:
            raise BackendError(
                f"{path.name} has dynamic input(s) {', '.join(dynamic)}; pass --shapes MIN:OPT:MAX "
                "(e.g. 1x3x224x224:8x3x224x224:32x3x224x224)"
            )
        return []
    profiles = parse_shapes(shapes)
    by_name = dict(inputs)
    if len(profiles) == 1 and profiles[0].name is None:
        if len(inputs) != 1:
            raise BackendError(f"{path.name} has {len(inputs)} inputs; name each in --shapes (NAME=MIN:OPT:MAX)")
        profiles[0].name = inputs[0][0]
    for p in profiles:
        if p.name not in by_name:
            raise BackendError(f"--shapes names '{p.name}', which is not an input of {path.name}: {', '.join(by_name)}")
        dims = by_name[p.name]
        if len(dims) != len(p.min):
            raise BackendError(f"--shapes for '{p.name}' has rank {len(p.min)} but the input has rank {len(dims)}")
        for axis, d in enumerate(dims):
            if isinstance(d, int) and d > 0 and not p.min[axis] == p.opt[axis] == p.max[axis] == d:
                raise BackendError(f"--shapes for '{p.name}': axis {axis} is fixed at {d} in the model")
    return profiles


def convert_fp16(src: Path, dst: Path, notes: list[str] | None = None) -> Path:
    """The ONNX graph in fp16 with float inputs and outputs (Polygraphy's conversion, onnxconverter-common).

    QuantizeLinear/DequantizeLinear take fp16 scales from opset 19 on, so a Q/DQ graph of a lower opset
    (compress's INT8 graphs are opset 17) is first raised to opset 19 by ONNX's own version converter."""
    import onnx

    _, pg_onnx = require_polygraphy()
    try:
        import onnxconverter_common  # noqa: F401  (what Polygraphy's ConvertToFp16 calls)
    except ImportError:
        raise MissingDependencyError(f"fp16 conversion needs onnxconverter-common; {EXTRA}") from None
    source = src
    if _has_qdq(src):
        opset = next(
            (
                o.version
                for o in onnx.load(str(src), load_external_data=False).opset_import
                if o.domain in ("", "ai.onnx")
            ),
            0,
        )
        if opset < 19:
            source = dst.with_name(dst.stem + ".opset19.onnx")
            _raise_opset(src, source, opset)
            if notes is not None:
                notes.append(f"Q/DQ graph raised from opset {opset} to 19 (onnx.version_converter) for fp16 scales")
    with quiet_polygraphy():
        model = pg_onnx.ConvertToFp16(pg_onnx.OnnxFromPath(str(source)))()
    onnx.save(model, str(dst))
    if source != src:
        source.unlink()
    return dst


def _raise_opset(src: Path, dst: Path, opset: int) -> None:
    import onnx
    from onnx import version_converter

    try:
        model = version_converter.convert_version(onnx.load(str(src)), 19)
        onnx.checker.check_model(model)
    except Exception as e:  # the converter has no adapter for some op, or its result does not check
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise BackendError(
            f"{src.name}: fp16 conversion of a Q/DQ graph needs opset >= 19 (fp16 scales); this one is opset {opset} "
            f"and ONNX's version converter could not raise it ({reason}); build it with --precision auto (INT8 "
            "layers from its Q/DQ, the rest fp32) or re-export at opset 19"
        ) from None
    onnx.save(model, str(dst))


class quiet_polygraphy:
    """Polygraphy logs to stdout at INFO; keep it quiet where compress reports the outcome itself."""

    def __enter__(self):
        from polygraphy.logger import G_LOGGER

        self._severity, self._colors = G_LOGGER.module_severity, G_LOGGER.colors
        G_LOGGER.module_severity = G_LOGGER.CRITICAL
        G_LOGGER.colors = False
        return self

    def __exit__(self, *exc):
        from polygraphy.logger import G_LOGGER

        G_LOGGER.module_severity, G_LOGGER.colors = self._severity, self._colors
        return False


def plan_build(path: str | Path, config: TensorRTBuildConfig, *, work_dir: str | Path) -> BuildPlan:
    """Validate the options and map them to Polygraphy's lazy loaders (fp16: writes the converted
    ONNX into `work_dir`). Needs Polygraphy, not TensorRT."""
    path = Path(path)
    if not path.is_file():
        raise BackendError(f"model file not found: {path}")
    if path.suffix != ".onnx":
        raise BackendError(f"{path}: the tensorrt backend builds from an .onnx file")
    config.validate()
    pg_trt, _ = require_polygraphy()
    profiles = resolve_profiles(path, config.shapes)
    onnx_path, notes = path, []
    if config.precision == "fp16":
        onnx_path = convert_fp16(path, Path(work_dir) / "model.fp16.onnx", notes)
        notes.append("graph converted to fp16 (float I/O kept) before parsing")
    if _has_qdq(path):
        notes.append("INT8 from the model's QuantizeLinear/DequantizeLinear (strongly typed)")
    network = pg_trt.NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
    trt_profiles = [pg_trt.Profile().add(p.name, p.min, p.opt, p.max) for p in profiles]
    flags = config.flags()
    flags["shapes"] = [asdict(p) for p in profiles] or None  # named after the model's inputs
    timing_cache = Path(config.timing_cache) if config.timing_cache else None
    with quiet_polygraphy():
        create = pg_trt.CreateConfig(
            profiles=trt_profiles or None,
            sparse_weights=config.sparse_weights,
            load_timing_cache=str(timing_cache) if timing_cache and timing_cache.is_file() else None,
            builder_optimization_level=config.opt_level,
        )
    workspace = parse_bytes(config.workspace)
    cfg = pg_trt.PostprocessConfig(create, WorkspaceLimit(workspace)) if workspace else create
    engine = pg_trt.EngineFromNetwork(network, cfg, save_timing_cache=str(timing_cache) if timing_cache else None)
    return BuildPlan(
        source=path,
        onnx=onnx_path,
        profiles=profiles,
        flags=flags,
        network=network,
        create_config=create,
        config=cfg,
        engine=engine,
        timing_cache=timing_cache,
        notes=notes,
    )


def _has_qdq(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


# ---- the build ------------------------------------------------------------------------------


def build_engine(path: str | Path, config: TensorRTBuildConfig, *, work_dir: str | Path) -> dict[str, Any]:
    """Build (or take from the cache) the engine for `path`; writes `engine.plan`, `build.log` and
    `layers.json` (engine inspector: per-layer precision and tactic) into `work_dir`."""
    from compress.backends.cuda import gpu_name, require_cuda
    from compress.io import sha256_file

    work = Path(work_dir)
    trt = require_tensorrt()
    require_cuda("building a TensorRT engine")
    plan = plan_build(path, config, work_dir=work)
    gpu = gpu_name()
    key = engine_cache_key(sha256_file(plan.source), gpu, trt.__version__, plan.flags)
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    files = ("engine.plan", "build.log", "layers.json")
    hit = config.use_cache and all((cache / key / f).is_file() for f in files)
    if hit:
        for f in files:
            shutil.copyfile(cache / key / f, work / f)
    else:
        _build(plan, work, trt)
        if config.use_cache:
            (cache / key).mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copyfile(work / f, cache / key / f)
    layers = json.loads((work / "layers.json").read_text())
    return {
        "backend": "tensorrt",
        "tensorrt": trt.__version__,
        "gpu": gpu,
        "cache_key": key,
        "cache_hit": hit,
        "flags": plan.flags,
        "plan": plan.describe(),
        "layers": summarize_layers(layers),
    }


def _build(plan: BuildPlan, work: Path, trt) -> None:
    from polygraphy.logger import G_LOGGER

    previous = G_LOGGER.log_file
    G_LOGGER.log_file = str(work / "build.log")
    try:
        try:
            engine = plan.engine()
        except Exception as e:  # Polygraphy raises PolygraphyException after logging the builder's errors
            last = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
            raise BackendError(
                f"TensorRT could not build {plan.onnx.name}: {last} (see {work / 'build.log'})"
            ) from None
    finally:
        G_LOGGER.log_file = previous
    (work / "engine.plan").write_bytes(bytes(engine.serialize()))
    inspector = engine.create_engine_inspector()
    info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    (work / "layers.json").write_text(info)


def summarize_layers(info: dict[str, Any]) -> dict[str, Any]:
    """Layer count, layers per output precision and per tactic, from the engine inspector's JSON."""
    from collections import Counter

    layers = info.get("Layers", []) if isinstance(info, dict) else []
    precisions: Counter[str] = Counter()
    tactics: Counter[str] = Counter()
    sparse = 0
    for layer in layers:
        if not isinstance(layer, dict):  # profiling verbosity below DETAILED gives names only
            precisions["unknown"] += 1
            continue
        outs = layer.get("Outputs") or [{}]
        precisions[_precision(_datatype(outs[0]))] += 1
        tactic = str(layer.get("TacticName", "") or layer.get("TacticValue", ""))
        if tactic:
            tactics[tactic] += 1
        sparse += "sparse" in tactic.lower()
    return {
        "layers": len(layers),
        "by_precision": dict(precisions.most_common()),
        "sparse_tactics": sparse,
        "top_tactics": dict(tactics.most_common(5)),
    }


def _datatype(tensor: Any) -> str:
    """A tensor's data type as the engine inspector writes it: TensorRT 10.x combines format and type
    in "Format/Datatype" ("Row major linear FP32"), TensorRT 11.x splits them ("Datatype": "Half")."""
    if not isinstance(tensor, dict):
        return "unknown"
    if tensor.get("Datatype") or tensor.get("DataType"):
        return str(tensor.get("Datatype") or tensor.get("DataType"))
    return str(tensor.get("Format/Datatype") or tensor.get("Format/DataType") or "unknown")


# substrings of the inspector's type names, most specific first ("bfloat16" before "float", "float8" before "float")
_PRECISION_KEYS = (
    ("bfloat16", "bf16"),
    ("bf16", "bf16"),
    ("float8", "fp8"),
    ("fp8", "fp8"),
    ("e4m3", "fp8"),
    ("float4", "fp4"),
    ("fp4", "fp4"),
    ("int8", "int8"),
    ("int4", "int4"),
    ("half", "fp16"),
    ("fp16", "fp16"),
    ("float", "fp32"),
    ("fp32", "fp32"),
    ("int32", "int"),
    ("int64", "int"),
    ("bool", "int"),
)


def _precision(dtype: str) -> str:
    low = dtype.lower()
    return next((name for key, name in _PRECISION_KEYS if key in low), "unknown")


# ---- inference: TensorRT's tensor API with torch CUDA tensors ----------------------------------

_TORCH_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
}


class TensorRTSession(Session):
    def __init__(self, path: Path, options: BackendOptions) -> None:
        import torch

        from compress.backends.cuda import require_cuda

        trt = require_tensorrt()
        require_cuda("the tensorrt backend")
        self.trt, self.options, self.path = trt, options, path
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)  # must outlive the engine
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(
                f"{path}: TensorRT {trt.__version__} cannot load this engine (built by another TensorRT version "
                "or for another GPU?); rebuild it with compress build"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1:
            raise BackendError(f"{path}: engines with {len(inputs)} inputs are not supported (need exactly 1)")
        self.input_name = inputs[0]
        self.input_shape = [d if d > 0 else None for d in self.engine.get_tensor_shape(self.input_name)]
        kind = _TORCH_DTYPES.get(self.engine.get_tensor_dtype(self.input_name).name, "float32")
        self.input_dtype = np.dtype("float32" if kind == "bfloat16" else kind)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()

    def _torch_dtype(self, name: str):
        import torch

        kind = self.engine.get_tensor_dtype(name).name
        if kind not in _TORCH_DTYPES:
            raise BackendError(f"{self.path}: tensor '{name}' has type {kind}, which this backend does not map")
        return getattr(torch, _TORCH_DTYPES[kind])

    def _bind(self, xt) -> dict[str, Any]:
        import torch

        ctx = self.context
        if not ctx.set_input_shape(self.input_name, tuple(xt.shape)):
            raise BackendError(f"input shape {tuple(xt.shape)} is outside the engine's optimisation profile")
        ctx.set_tensor_address(self.input_name, xt.data_ptr())
        outs = {}
        for name in self.outputs:
            t = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=self._torch_dtype(name), device="cuda")
            ctx.set_tensor_address(name, t.data_ptr())
            outs[name] = t
        return outs

    def _device_input(self, x: np.ndarray):
        import torch

        return torch.from_numpy(np.ascontiguousarray(x)).to("cuda", self._torch_dtype(self.input_name))

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name; a batch above the profile's maximum runs in slices of that size."""
        self.validate(x)
        limit = self._max_batch()
        if limit and x.shape[0] > limit:
            parts = [self.run_all(x[i : i + limit]) for i in range(0, x.shape[0], limit)]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        xt = self._device_input(x)
        outs = self._bind(xt)
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise BackendError(f"{self.path}: TensorRT failed to run the engine")
        self.stream.synchronize()
        return {k: v.float().cpu().numpy() for k, v in outs.items()}

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.run_all(x)[self.outputs[0]]

    def _max_batch(self) -> int | None:
        if self.input_shape[0] is not None:
            return None  # a fixed batch: validate() has checked it
        try:
            return int(self.engine.get_tensor_profile_shape(self.input_name, 0)[2][0])
        except Exception:  # no profile information: let TensorRT judge the shape
            return None

    def runner(self, x: np.ndarray):
        """One enqueue on device-resident buffers (a CUDA graph's replay with --cuda-graph)."""
        self.validate(x)
        xt = self._device_input(x)
        self._static = xt, self._bind(xt)  # the buffers must live as long as the runner
        ctx, stream, handle = self.context, self.stream, self.stream.cuda_stream
        ctx.execute_async_v3(handle)  # the first enqueue after a shape change does setup work
        self.stream.synchronize()
        if not self.options.cuda_graph:
            return lambda: ctx.execute_async_v3(handle)
        from compress.backends.cuda import graph_replay

        return graph_replay(lambda: ctx.execute_async_v3(handle), stream)[0]

    def timer(self) -> CudaEventTimer:
        return CudaEventTimer(self.stream)

    def info(self) -> dict[str, Any]:
        from compress.backends.cuda import device_info

        return {
            "backend": "tensorrt",
            "version": self.trt.__version__,
            "mode": "execute_async_v3" + (" + cuda graph" if self.options.cuda_graph else ""),
            "timer": "cuda_event",
            "device": device_info(),
        }


class TensorRTBackend(Backend):
    def _load(self, path: Path, options: BackendOptions) -> Session:
        if path.suffix == ".onnx":
            raise BackendError(f"{path}: the tensorrt backend runs engines; build one first with compress build")
        return TensorRTSession(path, options)


BACKEND = TensorRTBackend("tensorrt", (".plan", ".engine"))
