"""The CI regression gate: an interleaved A/B latency comparison plus deterministic gates.

`run_check(baseline, candidate, config, data=...)` loads both ONNX models into one process on the same
backend, feeds them the same seeded input and times them alternately in rounds (A B, B A, A B, ...:
the order flips every round so neither model always runs second, warm). The statistics live in
`compress.check.stats`. Alongside, gates that do not fluctuate: the task metric on the fixed validation
split (through the deployed model), parameters, MACs, size on disk and structural expectations
(still INT8, still N:M sparse). Each gate has its own threshold and is reported; a threshold of None
reports the figure without gating it.

`compare_bench_json(baseline, candidate, config)` compares two saved bench results instead, and
refuses unless both were measured on a machine with the same fingerprint.

Exit codes (`CheckResult.exit_code`): 0 pass, 1 fail, 3 inconclusive (2 is the CLI's usage error).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compress.check.stats import (
    FAIL,
    INCONCLUSIVE,
    MIN_ROUNDS,
    PASS,
    SKIPPED,
    LatencyVerdict,
    compare_rounds,
    compare_summaries,
)
from compress.errors import CompressError, DataError, RecipeError

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_INCONCLUSIVE = 3
EXIT_CODES = {PASS: EXIT_PASS, FAIL: EXIT_FAIL, INCONCLUSIVE: EXIT_INCONCLUSIVE}


@dataclass
class CheckConfig:
    """Thresholds and the latency design of a check. A threshold of None reports without gating.

    Attributes:
        rounds: interleaved rounds (each round times baseline and candidate once, order alternating).
        iters: calls timed per model per round (its median is the round's figure).
        min_round_s: each model's share of a round also lasts at least this long (tiny models).
        warmup: untimed calls before each model's share of a round.
        warmup_s: untimed warm-up of each model before the first round.
        max_slowdown: allowed latency slowdown, 0.10 = 10%.
        confidence: confidence level of the slowdown interval (rank test at 1 - confidence).
        paired: decide on per-round ratios (Wilcoxon) rather than the ratio of medians (Mann-Whitney U).
        n_boot: bootstrap resamples.
        max_accuracy_drop: allowed drop of the task's primary metric, in percentage points for accuracy
            (0.5 = half a point) and in the metric's own unit otherwise (dB for PSNR).
        max_params_increase, max_macs_increase, max_size_increase: allowed relative increase (0.1 = 10%).
        expect_int8: the candidate must keep INT8 (Q/DQ) layers: at least one, and no fewer than the baseline.
        expect_sparsity: N:M pattern (e.g. "2:4") the candidate must keep, same rule as expect_int8.
        backend, device, threads: runtime for latency and accuracy (threads 0: one per physical core).
        batch_size: batch of the latency input.
        eval_batch_size: batch of the accuracy evaluation.
        seed: the latency input and the bootstrap depend on it.
        min_top1_agreement: the candidate's top-1 predictions must match the reference's (the
            baseline unless a reference model is given) on at least this share of the validation
            inputs (0.99 = 99%); labels are not needed (`compress.bench.fidelity`).
        output_atol, output_rtol: the output-tolerance gate (what `compress compare` checks): every
            output element of the candidate must lie within atol or rtol of the baseline's on the same
            inputs (the data's validation split, else seeded random ones); None: no such gate.
    """

    rounds: int = 20
    iters: int = 20
    min_round_s: float = 0.05
    warmup: int = 3
    warmup_s: float = 0.3
    max_slowdown: float | None = 0.10
    confidence: float = 0.95
    paired: bool = True
    n_boot: int = 4000
    max_accuracy_drop: float | None = 0.5
    max_params_increase: float | None = 0.10
    max_macs_increase: float | None = 0.10
    max_size_increase: float | None = 0.10
    expect_int8: bool = False
    expect_sparsity: str | None = None
    backend: str = "onnxruntime"
    device: str = "cpu"
    threads: int = 0
    batch_size: int = 1
    eval_batch_size: int = 64
    seed: int = 0
    min_top1_agreement: float | None = None
    output_atol: float | None = None
    output_rtol: float = 1e-3

    def __post_init__(self) -> None:
        if self.rounds < MIN_ROUNDS:
            raise ValueError(f"rounds must be at least {MIN_ROUNDS}, got {self.rounds}")
        if self.iters < 1:
            raise ValueError(f"iters must be at least 1, got {self.iters}")
        if not 0.5 < self.confidence < 1.0:
            raise ValueError(f"confidence must be between 0.5 and 1, got {self.confidence}")
        for name in (
            "max_slowdown",
            "max_accuracy_drop",
            "max_params_increase",
            "max_macs_increase",
            "max_size_increase",
        ):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        if self.min_top1_agreement is not None and not 0.0 <= self.min_top1_agreement <= 1.0:
            raise ValueError(
                f"min_top1_agreement must be between 0 and 1 (or 0% and 100%), got {self.min_top1_agreement}"
            )
        if self.expect_sparsity is not None:
            from compress.check.structure import parse_nm

            parse_nm(self.expect_sparsity)


@dataclass
class Gate:
    """One gate's outcome: its figures, threshold and verdict."""

    name: str
    status: str
    message: str
    baseline: Any = None
    candidate: Any = None
    change: float | None = None
    threshold: float | str | None = None
    unit: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckResult:
    """Every gate, the latency verdict, and the context needed to trust them."""

    status: str
    gates: list[Gate]
    latency: LatencyVerdict | None
    baseline: str
    candidate: str
    config: dict[str, Any]
    environment: dict[str, Any]
    runtime: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    mode: str = "models"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def gate(self, name: str) -> Gate:
        return next(g for g in self.gates if g.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "mode": self.mode,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "gates": [g.to_dict() for g in self.gates],
            "latency": self.latency.to_dict() if self.latency else None,
            "config": self.config,
            "environment": self.environment,
            "runtime": self.runtime,
            "seconds": self.seconds,
        }


def overall(gates: list[Gate]) -> str:
    """FAIL if any gate fails, else INCONCLUSIVE if any is, else PASS (skipped gates do not count)."""
    statuses = {g.status for g in gates}
    if FAIL in statuses:
        return FAIL
    if INCONCLUSIVE in statuses:
        return INCONCLUSIVE
    return PASS


def run_check(
    baseline_path: str | Path,
    candidate_path: str | Path,
    config: CheckConfig | None = None,
    *,
    data: Any = None,
    reference: Any = None,
) -> CheckResult:
    """Compare a candidate ONNX model against a baseline: latency (interleaved A/B) and deterministic gates.

    Args:
        baseline_path, candidate_path: the two model files.
        config: thresholds and latency design.
        data: a DataBundle; gives the input shape and the fixed evaluation set (its val split). Without
            it the accuracy gate is skipped and the models need a static input shape.
        reference: a `compress.bench.fidelity.Reference` for the fidelity gate (default: the baseline).
    """
    from compress.backends import get_backend
    from compress.backends.base import BackendOptions
    from compress.env import environment

    config = config or CheckConfig()
    start = time.perf_counter()
    paths = {"baseline": Path(baseline_path), "candidate": Path(candidate_path)}
    for role, p in paths.items():
        if not p.is_file():
            raise CompressError(f"{role} model not found: {p}")
    backend = get_backend(config.backend)
    options = BackendOptions(config.device, config.threads)
    sessions = {role: backend.load(p, options) for role, p in paths.items()}
    sample_shape = _sample_shape(sessions, paths, data)
    if config.min_top1_agreement is not None and (data is None or data.task != "classification"):
        raise DataError("--min-top1-agreement needs classification --data: it compares predicted classes")
    gates: list[Gate] = []

    verdict = None
    if config.max_slowdown is not None:
        verdict = measure_ab(sessions["baseline"], sessions["candidate"], sample_shape, config)
        gates.append(
            Gate(
                "latency",
                verdict.decision,
                verdict.reason + (f"; {verdict.advice}" if verdict.advice else ""),
                baseline=verdict.baseline_median_ms,
                candidate=verdict.candidate_median_ms,
                change=verdict.slowdown - 1.0,
                threshold=config.max_slowdown,
                unit="ms",
            )
        )
    else:
        gates.append(Gate("latency", SKIPPED, "latency not gated (no max_slowdown)"))

    gates.append(_accuracy_gate(sessions, data, config))
    fidelity = fidelity_gate(sessions, data, config, reference)
    if fidelity is not None:
        gates.append(fidelity)
    if config.output_atol is not None:
        gates.append(output_gate(paths, sample_shape, data, config))
    gates.extend(static_gates(paths["baseline"], paths["candidate"], sample_shape, config))
    return CheckResult(
        status=overall(gates),
        gates=gates,
        latency=verdict,
        baseline=str(paths["baseline"]),
        candidate=str(paths["candidate"]),
        config=asdict(config),
        environment=environment(),
        runtime=sessions["baseline"].info(),
        seconds=time.perf_counter() - start,
        mode="models",
    )


def output_gate(paths: dict[str, Path], sample_shape, data, config: CheckConfig) -> Gate:
    """The two models' outputs on the same inputs, within --output-atol / --output-rtol (as `compare`)."""
    from compress.compare import CompareConfig, compare

    cfg = CompareConfig(
        backends=(config.backend, config.backend),
        device=config.device,
        atol=config.output_atol,
        rtol=config.output_rtol,
        input_shape=tuple(sample_shape) if sample_shape else None,
        seed=config.seed,
    )
    result = compare(paths["baseline"], paths["candidate"], cfg, data=data)
    worst_name, worst = max(result["outputs"].items(), key=lambda kv: kv[1]["abs"]["max"])
    status = PASS if result["passed"] else FAIL
    message = (
        f"output '{worst_name}': max |diff| {worst['abs']['max']:.3g}, "
        f"{worst['failed_share']:.1%} of elements outside atol {cfg.atol:g} / rtol {cfg.rtol:g} "
        f"({result['inputs']['samples']} {result['inputs']['source']} inputs)"
    )
    return Gate("outputs", status, message, candidate=worst["abs"]["max"], threshold=cfg.atol)


def measure_ab(base_session, cand_session, sample_shape: tuple[int, ...], config: CheckConfig) -> LatencyVerdict:
    """Time two sessions alternately in rounds on the same seeded input and decide on the slowdown."""
    times = interleaved_times(base_session, cand_session, sample_shape, config)
    return compare_rounds(
        times[0],
        times[1],
        max_slowdown=config.max_slowdown or 0.0,
        confidence=config.confidence,
        n_boot=config.n_boot,
        seed=config.seed,
        paired=config.paired,
    )


def interleaved_times(
    base_session, cand_session, sample_shape: tuple[int, ...], config: CheckConfig
) -> list[list[np.ndarray]]:
    """Per-call times (seconds) of two sessions timed alternately in rounds on the same seeded input:
    [baseline rounds, candidate rounds]."""
    from compress.bench.latency import LatencyConfig, measure

    rng = np.random.default_rng(config.seed)
    x = rng.random((config.batch_size, *sample_shape), dtype=np.float32)
    runners = [
        base_session.runner(x.astype(base_session.input_dtype)),
        cand_session.runner(x.astype(cand_session.input_dtype)),
    ]
    warm = LatencyConfig(warmup_iters=10, warmup_s=config.warmup_s, min_iters=1, min_time_s=0.0, max_iters=1)
    for run in runners:
        measure(run, warm)
    per_round = LatencyConfig(
        warmup_iters=config.warmup,
        warmup_s=0.0,
        min_iters=config.iters,
        min_time_s=config.min_round_s,
        max_iters=100_000,
    )
    times: list[list[np.ndarray]] = [[], []]
    for r in range(config.rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for side in order:
            times[side].append(measure(runners[side], per_round))
    return times


def static_gates(
    baseline: Path, candidate: Path, sample_shape: tuple[int, ...] | None, config: CheckConfig
) -> list[Gate]:
    """Params, MACs, size and structure gates from the two ONNX files."""
    from compress.analysis import onnx_summary
    from compress.check.structure import load_onnx, nm_sparsity, onnx_macs, quantized_layers

    if baseline.suffix != ".onnx" or candidate.suffix != ".onnx":
        return [Gate(n, SKIPPED, "only ONNX models have static gates") for n in ("params", "macs", "size")]
    models = {"b": load_onnx(baseline), "c": load_onnx(candidate)}
    sums = {"b": onnx_summary(baseline), "c": onnx_summary(candidate)}
    gates = [
        _increase_gate("params", sums["b"]["params"], sums["c"]["params"], config.max_params_increase, ""),
    ]
    macs = {k: onnx_macs(m, list(sample_shape) if sample_shape else None) for k, m in models.items()}
    if macs["b"]["macs"] is None or macs["c"]["macs"] is None:
        unknown = macs["b"]["unknown"] + macs["c"]["unknown"]
        gates.append(
            Gate(
                "macs",
                SKIPPED,
                f"n/a: shape inference left {unknown} compute node(s) without shapes",
                threshold=config.max_macs_increase,
            )
        )
    else:
        gates.append(_increase_gate("macs", macs["b"]["macs"], macs["c"]["macs"], config.max_macs_increase, ""))
    gates.append(_increase_gate("size", sums["b"]["bytes"], sums["c"]["bytes"], config.max_size_increase, "bytes"))
    if config.expect_int8:
        q = {k: quantized_layers(m) for k, m in models.items()}
        gate = _keep_gate(
            "int8", q["b"]["int8_weights"], q["c"]["int8_weights"], q["c"]["layers"], "INT8 (Q/DQ) layers"
        )
        problems = _qdq_violations(models["c"], config.backend)
        if problems:
            gate.status = FAIL
            gate.message += f"; the candidate's Q/DQ graph breaks {len(problems)} rule(s): {problems[0]}"
        gates.append(gate)
    if config.expect_sparsity:
        s = {k: nm_sparsity(m, config.expect_sparsity) for k, m in models.items()}
        gates.append(
            _keep_gate(
                f"sparsity {config.expect_sparsity}",
                s["b"]["sparse_layers"],
                s["c"]["sparse_layers"],
                s["c"]["eligible_layers"],
                f"{config.expect_sparsity} layers",
            )
        )
    return gates


def _increase_gate(name: str, base: float, cand: float, limit: float | None, unit: str) -> Gate:
    change = (cand - base) / base if base else (0.0 if cand == base else float("inf"))
    text = f"{_fmt(base)} -> {_fmt(cand)} ({change:+.1%})"
    if limit is None:
        return Gate(name, SKIPPED, f"{text}; not gated", base, cand, change, None, unit)
    if change <= limit + 1e-12:
        return Gate(name, PASS, f"{text}, allowed +{limit:.0%}", base, cand, change, limit, unit)
    return Gate(name, FAIL, f"{text} exceeds the allowed +{limit:.0%}", base, cand, change, limit, unit)


def _qdq_violations(model: Any, backend: str) -> list[str]:
    """Rule violations of a Q/DQ graph for the runtime (compress.quantize.qdq), when that checker exists."""
    try:
        from compress.quantize.qdq import check_qdq_model
    except ImportError:
        return []
    target = "tensorrt" if backend == "tensorrt" else "onnxruntime"
    try:
        return list(check_qdq_model(model, target).get("violations", []))
    except CompressError as e:
        return [str(e)]


def _keep_gate(name: str, base: int, cand: int, total: int, what: str) -> Gate:
    text = f"{what}: baseline {base}, candidate {cand} of {total}"
    ok = cand > 0 and cand >= base
    return Gate(
        name,
        PASS if ok else FAIL,
        text + ("" if ok else " (expected at least one and no fewer than baseline)"),
        base,
        cand,
        None,
        "kept",
        "layers",
    )


def _accuracy_gate(sessions: dict[str, Any], data: Any, config: CheckConfig) -> Gate:
    from compress.bench import evaluate_session
    from compress.tasks import get_task

    if data is None:
        return Gate("accuracy", SKIPPED, "no evaluation data given (--data)", threshold=config.max_accuracy_drop)
    if not getattr(data, "labelled", True):
        return Gate(
            "accuracy", SKIPPED, "n/a: the data has no labels; see fidelity", threshold=config.max_accuracy_drop
        )
    task = get_task(data.task)
    metrics = {role: evaluate_session(s, data.val, data.task, config.eval_batch_size) for role, s in sessions.items()}
    return metric_gate(
        task.primary,
        metrics["baseline"],
        metrics["candidate"],
        config.max_accuracy_drop,
        higher_is_better=getattr(task, "higher_is_better", True),
        samples=len(data.val),
    )


def fidelity_gate(sessions: dict[str, Any], data: Any, config: CheckConfig, reference: Any = None) -> Gate | None:
    """The candidate's fidelity to the reference (or the baseline), gated by `min_top1_agreement`.

    Measured when a reference or a threshold is given, or when the data has no labels (then it is
    the only task figure); None otherwise, so a plain check keeps its gates."""
    from compress.bench.fidelity import Reference, measure_fidelity, session_runner

    if data is None or data.task not in ("classification", "denoising"):
        return None
    if reference is None and config.min_top1_agreement is None and getattr(data, "labelled", True):
        return None
    if reference is None:
        reference = Reference("baseline", "onnx", session_runner(sessions["baseline"]))
    figures = measure_fidelity(
        session_runner(sessions["candidate"]), reference, data.val, data.task, batch_size=config.eval_batch_size
    )
    return fidelity_figures_gate(figures, config.min_top1_agreement)


def fidelity_figures_gate(figures: dict[str, Any] | None, limit: float | None) -> Gate:
    """A gate from measured fidelity figures (`compress.bench.fidelity.measure_fidelity`)."""
    if not isinstance(figures, dict) or not any(k in figures for k in ("top1_agreement", "psnr")):
        return Gate("fidelity", SKIPPED, "n/a: no fidelity figures in the candidate's result", threshold=limit)
    ref, n = figures.get("reference", "the reference"), figures.get("samples")
    if "psnr" in figures:
        text = f"PSNR to {ref}'s outputs {figures['psnr']:.2f} dB on {n} samples"
        return Gate("fidelity", SKIPPED, text + "; not gated", None, figures["psnr"], None, None, "dB")
    top1 = float(figures["top1_agreement"])
    text = (
        f"top-1 agreement with {ref} {100 * top1:.2f}% (top-5 {100 * float(figures.get('top5_agreement', 0)):.2f}%, "
        f"KL {float(figures.get('kl_divergence', 0)):.4f}) on {n} samples"
    )
    if limit is None:
        return Gate("fidelity", SKIPPED, text + "; not gated", None, top1, None, None, "agreement")
    ok = top1 >= limit - 1e-12
    verdict = f", required >= {100 * limit:.2f}%" if ok else f" is below the required {100 * limit:.2f}%"
    return Gate("fidelity", PASS if ok else FAIL, text + verdict, None, top1, None, limit, "agreement")


def metric_gate(
    primary: str,
    base: dict[str, Any],
    cand: dict[str, Any],
    limit: float | None,
    *,
    higher_is_better: bool = True,
    samples: int | None = None,
) -> Gate:
    """Gate the drop of the primary metric; accuracy-like metrics in [0, 1] are compared in points."""
    if primary not in base or primary not in cand:
        return Gate("accuracy", SKIPPED, f"n/a: '{primary}' missing from the results", threshold=limit)
    b, c = float(base[primary]), float(cand[primary])
    scale, unit = (100.0, "points") if primary in ("accuracy", "top5", "top1") else (1.0, primary)
    drop = (b - c) * scale if higher_is_better else (c - b) * scale
    on = f" on {samples} samples" if samples else ""
    text = f"{primary} {b * scale:.2f} -> {c * scale:.2f} (drop {drop:.2f} {unit}{on})"
    if limit is None:
        return Gate("accuracy", SKIPPED, text + "; not gated", b, c, -drop, None, unit)
    ok = drop <= limit + 1e-9
    return Gate(
        "accuracy",
        PASS if ok else FAIL,
        text + (f", allowed {limit}" if ok else f" exceeds the allowed {limit}"),
        b,
        c,
        -drop,
        limit,
        unit,
    )


def _sample_shape(sessions: dict[str, Any], paths: dict[str, Path], data: Any) -> tuple[int, ...]:
    shapes = {role: s.input_shape for role, s in sessions.items()}
    if data is not None:
        want = tuple(int(d) for d in data.input_shape)
        for role, shape in shapes.items():
            for have, need in zip(shape[1:], want, strict=False):
                if isinstance(have, int) and have > 0 and have != need:
                    raise DataError(
                        f"{paths[role].name} expects inputs {shape[1:]} but the data gives {list(want)}; "
                        "set the data's image_size/channels to match"
                    )
        return want
    resolved = {}
    for role, shape in shapes.items():
        if any(not isinstance(d, int) or d <= 0 for d in shape[1:]):
            raise DataError(f"{paths[role].name} has a dynamic input shape {shape}; pass --data to fix it")
        resolved[role] = tuple(shape[1:])
    if resolved["baseline"] != resolved["candidate"]:
        raise DataError(
            f"the models take different inputs: baseline {list(resolved['baseline'])}, "
            f"candidate {list(resolved['candidate'])}"
        )
    return resolved["baseline"]


# --- saved bench results -------------------------------------------------------------------------


def load_bench_json(path: str | Path) -> dict[str, Any]:
    """A saved bench result, with a clear error for a missing or malformed file."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise CompressError(f"bench result not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CompressError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(obj, dict):
        raise CompressError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def bench_fingerprint(result: dict[str, Any]) -> str | None:
    """The machine fingerprint of a saved bench result (stored, or computed from its machine info)."""
    from compress.env import fingerprint

    if isinstance(result.get("fingerprint"), str):
        return result["fingerprint"]
    machine = (result.get("environment") or {}).get("machine") or result.get("machine")
    return fingerprint(machine) if isinstance(machine, dict) else None


def bench_latency(result: dict[str, Any]) -> dict[str, Any] | None:
    lat = result.get("latency")
    if isinstance(lat, dict) and "p50_ms" in lat:
        return lat
    bench = result.get("bench")
    if isinstance(bench, dict):
        return bench_latency(bench)
    return None


def compare_bench_json(baseline: str | Path, candidate: str | Path, config: CheckConfig | None = None) -> CheckResult:
    """Compare two saved bench results; refuses unless both come from the same machine fingerprint."""
    return compare_bench_results(
        load_bench_json(baseline), load_bench_json(candidate), config, names=(str(baseline), str(candidate))
    )


def compare_bench_results(
    baseline: dict[str, Any],
    candidate: dict[str, Any],
    config: CheckConfig | None = None,
    *,
    names: tuple[str, str] = ("baseline", "candidate"),
) -> CheckResult:
    """Compare two bench result mappings (see `compare_bench_json`)."""
    from compress.env import environment

    config = config or CheckConfig()
    start = time.perf_counter()
    results = {"baseline": baseline, "candidate": candidate}
    prints = {role: bench_fingerprint(r) for role, r in results.items()}
    for (role, fp), name in zip(prints.items(), names, strict=True):
        if fp is None:
            raise CompressError(
                f"{role} result {name} records no machine; cannot tell whether its timings are comparable"
            )
    if prints["baseline"] != prints["candidate"]:
        raise CompressError(
            f"refusing to compare timings from different machines: baseline '{prints['baseline']}' "
            f"vs candidate '{prints['candidate']}'; measure both in the same job with "
            "--baseline/--candidate instead"
        )
    gates: list[Gate] = []
    verdict = None
    lat = {role: bench_latency(r) for role, r in results.items()}
    if config.max_slowdown is None:
        gates.append(Gate("latency", SKIPPED, "latency not gated (no max_slowdown)"))
    elif lat["baseline"] is None or lat["candidate"] is None:
        gates.append(Gate("latency", SKIPPED, "n/a: a result has no latency summary"))
    else:
        try:
            verdict = compare_summaries(
                lat["baseline"],
                lat["candidate"],
                max_slowdown=config.max_slowdown,
                confidence=config.confidence,
            )
        except ValueError as e:
            raise CompressError(f"bench results: {e}") from None
        gates.append(
            Gate(
                "latency",
                verdict.decision,
                verdict.reason + (f"; {verdict.advice}" if verdict.advice else ""),
                verdict.baseline_median_ms,
                verdict.candidate_median_ms,
                verdict.slowdown - 1.0,
                config.max_slowdown,
                "ms",
            )
        )
    metrics = {role: r.get("metrics") or (r.get("bench") or {}).get("metrics") or {} for role, r in results.items()}
    primary = next((k for k in ("accuracy", "psnr") if k in metrics["baseline"]), "accuracy")
    gates.append(metric_gate(primary, metrics["baseline"], metrics["candidate"], config.max_accuracy_drop))
    if config.min_top1_agreement is not None:
        fid = candidate.get("fidelity") or (candidate.get("bench") or {}).get("fidelity")
        gates.append(fidelity_figures_gate(fid, config.min_top1_agreement))
    for name, key, limit, unit in (
        ("params", "params", config.max_params_increase, ""),
        ("macs", "macs", config.max_macs_increase, ""),
        ("size", "bytes", config.max_size_increase, "bytes"),
    ):
        vals = {role: _find_figure(r, key) for role, r in results.items()}
        if vals["baseline"] is None or vals["candidate"] is None:
            gates.append(Gate(name, SKIPPED, f"n/a: '{key}' missing from a result", threshold=limit))
        else:
            gates.append(_increase_gate(name, vals["baseline"], vals["candidate"], limit, unit))
    return CheckResult(
        status=overall(gates),
        gates=gates,
        latency=verdict,
        baseline=names[0],
        candidate=names[1],
        config=asdict(config),
        environment=environment(),
        runtime=results["baseline"].get("runtime") or {},
        seconds=time.perf_counter() - start,
        mode="bench-json",
    )


def _find_figure(result: dict[str, Any], key: str) -> float | None:
    for section in (result, result.get("model") or {}, result.get("summary") or {}, result.get("onnx") or {}):
        v = section.get(key) if isinstance(section, dict) else None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def _fmt(v: float) -> str:
    v = float(v)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.4g}"


def config_from_options(options: dict[str, Any]) -> CheckConfig:
    """A CheckConfig from CLI/YAML data with strict key and type checking."""
    from compress.config import from_dict

    try:
        return from_dict(CheckConfig, {k: v for k, v in options.items() if v is not None}, where="check options")
    except ValueError as e:
        raise RecipeError(f"check options: {e}") from None
