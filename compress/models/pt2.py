"""`torch.export` programs (`.pt2`) opened without running code from the archive.

`torch.export.load` can run code from a crafted file in three ways: it unpickles weights, constants
and sample inputs (with `weights_only=False`, or by falling back to it), it evaluates every symbolic
shape string with `sympy.sympify` (which calls `eval`), and graph nodes name their targets as dotted
paths resolved by `getattr` from `torch` (`torch.os.system` is such a path). So before the archive
reaches torch, `inspect_archive` reads it from memory and refuses, unless the user trusts it:

* any pickled member that `torch.load(weights_only=True)` would not accept, and every custom or
  opaque object (these load through the full unpickler by design);
* a shape expression with anything but numbers, symbol names and sympy's arithmetic constructors;
* a node target other than `torch.ops.NAMESPACE.OP[.OVERLOAD]`, a `torch.sym_*` helper, or a plain
  arithmetic function of `operator` or `math`;
* module imports named by the file (pytree `default_factory_module`, `__enum__` objects).

The checked bytes are the ones handed to torch, so nothing can change between check and load.
"""

from __future__ import annotations

import io
import json
import logging
import re
import tokenize
import warnings
import zipfile
from pathlib import Path
from typing import Any

from torch import nn

from compress.errors import ModelError

_TRUST = "pass --trust-code only if you trust its origin"

# sympy constructors and torch's shape functions that shape strings legitimately use
_SYMPY_NAMES = {
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "Piecewise", "ceiling", "floor", "oo", "zoo",
    "true", "false", "True", "False", "None", "S", "Half", "One", "Zero", "NegativeOne", "Infinity",
    "NegativeInfinity", "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "IntTrueDiv", "FloatTrueDiv", "ToFloat", "TruncToInt", "TruncToFloat",
    "RoundToInt", "RoundDecimal", "Identity", "IsNonOverlappingAndDenseIndicator", "LShift", "RShift",
    "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or", "OpaqueUnaryFn_sqrt", "PowByNatural", "FloatPow",
    # keyword arguments of Symbol(...)
    "positive", "negative", "integer", "real", "nonnegative", "nonpositive", "finite", "zero", "evaluate",
}  # fmt: skip
_SYMBOL_NAME = re.compile(r"^[a-z]{1,3}\d+$")  # s0, u12, ps3
_STRING = re.compile(r"^'[A-Za-z_][A-Za-z0-9_]*'$")
_SHAPE_OPS = {"+", "-", "*", "/", "//", "%", "**", "(", ")", ",", "=", "==", "!=", "<", "<=", ">", ">=", "&", "|", "~"}
_OPERATOR_OK = {
    "getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "eq", "ne",
    "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert", "lshift", "rshift", "matmul",
}  # fmt: skip
_MATH_OK = {"ceil", "floor", "sqrt", "trunc", "log", "exp", "pow", "fabs", "log2", "log10", "sin", "cos", "tanh"}
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_TARGET_OK = re.compile(rf"^(torch\.ops\.{_IDENT}\.{_IDENT}(\.{_IDENT})?|torch\._?sym_{_IDENT}|torch\._assert\w*)$")


def is_export_archive(path: Path) -> bool:
    """True for a zip written by `torch.export.save` (new or legacy layout)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()[:2000]
    return any(n.endswith("/archive_format") or n.endswith("serialized_exported_program.json") for n in names)


def inspect_archive(data: bytes, where: str) -> list[str]:
    """Every reason loading `data` could run code; empty when it is plain tensors, JSON and ATen ops."""
    import torch

    reasons: list[str] = []
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ModelError(f"{where}: not a torch.export archive (not a zip file)") from None
    with archive:
        members = {n: n.rsplit("/", 1)[-1] for n in archive.namelist()}
        raw_tensor_files = _raw_tensor_files(archive, reasons)
        for name in members:
            if name.endswith("/"):
                continue
            body = archive.read(name)
            if name.endswith(".json"):
                _check_json(body, name, reasons)
            elif name in raw_tensor_files or name.rsplit("/", 1)[-1] in _PLAIN_MEMBERS:
                continue
            elif _looks_pickled(body):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # torch warns about pickle protocols
                        torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
                except Exception:
                    reasons.append(f"{name} holds pickled Python objects")
    return reasons


_PLAIN_MEMBERS = {"archive_format", "archive_version", "version", "byteorder", "serialization_id"}


def _raw_tensor_files(archive: zipfile.ZipFile, reasons: list[str]) -> set[str]:
    """Members that the payload configs declare as raw tensor bytes (read with torch.frombuffer)."""
    raw: set[str] = set()
    for name in archive.namelist():
        if not name.endswith("_config.json") or "/data/" not in name:
            continue
        folder = name.rsplit("/", 1)[0]
        try:
            config = json.loads(archive.read(name)).get("config", {})
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            continue  # _check_json reports it
        for fqn, meta in config.items() if isinstance(config, dict) else ():
            if not isinstance(meta, dict):
                continue
            path_name = str(meta.get("path_name", ""))
            if path_name.startswith(("custom_obj", "opaque_obj")):
                reasons.append(f"constant '{str(fqn)[:60]}' is a Python object ({path_name[:40]})")
            elif not meta.get("use_pickle", False):
                raw.add(f"{folder}/{path_name}")
    return raw


def _looks_pickled(body: bytes) -> bool:
    return body[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or body[:4] == b"PK\x03\x04"


def _check_json(body: bytes, name: str, reasons: list[str]) -> None:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        reasons.append(f"{name} is not valid JSON")
        return
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__enum__" in node or "default_factory_module" in node:
                reasons.append(f"{name} names a Python module to import")
            for key, value in node.items():
                if key == "expr_str" and isinstance(value, str) and not _safe_shape_expr(value):
                    reasons.append(f"{name}: shape expression '{value[:40]}' is not plain arithmetic")
                elif key == "target" and isinstance(value, str) and not _safe_target(value):
                    reasons.append(f"{name}: graph node calls '{value[:60]}', which is not an ATen operator")
                elif (
                    isinstance(value, str) and value[:1] in "{[" and ("__enum__" in value or "default_factory" in value)
                ):
                    reasons.append(f"{name} names a Python module to import")
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


def _safe_shape_expr(text: str) -> bool:
    if "__" in text or len(text) > 10_000:
        return False
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return False
    for tok in tokens:
        if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT):
            continue
        if tok.type == tokenize.NUMBER:
            continue
        if tok.type == tokenize.NAME and (tok.string in _SYMPY_NAMES or _SYMBOL_NAME.match(tok.string)):
            continue
        if tok.type == tokenize.STRING and _STRING.match(tok.string):
            continue
        if tok.type == tokenize.OP and tok.string in _SHAPE_OPS:
            continue
        return False
    return True


def _safe_target(target: str) -> bool:
    if _TARGET_OK.match(target):
        return True
    module, _, name = target.partition(".")
    if module == "_operator":
        return name in _OPERATOR_OK
    if module == "math":
        return name in _MATH_OK
    return False


def load_exported_program(path: Path, *, trust_code: bool = False):
    """The `ExportedProgram` in `path`, refused if opening it could run code and the user did not trust it."""
    import torch

    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror})") from None
    if not trust_code:
        reasons = inspect_archive(data, str(path))
        if reasons:
            more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
            raise ModelError(f"{path}: loading this torch.export archive could run code: {reasons[0]}{more}; {_TRUST}")
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # torch logs its own traceback for a bad archive
    try:
        return torch.export.load(io.BytesIO(data))
    except Exception as e:  # torch.export.load raises many types for a bad file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ModelError(f"{path}: unreadable torch.export archive ({first})") from None
    finally:
        logger.setLevel(level)


def read_extra(path: Path, name: str) -> dict[str, Any]:
    """A JSON file stored beside the program (`extra/NAME`), or {} when there is none."""
    with zipfile.ZipFile(path) as z:
        hits = [n for n in z.namelist() if n.endswith(f"/extra/{name}")]
        if not hits:
            return {}
        try:
            value = json.loads(z.read(hits[0]))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ModelError(f"{path}: extra/{name} is not valid JSON") from None
    return value if isinstance(value, dict) else {}


class ExportedModule(nn.Module):
    """An exported program's graph as a trainable module.

    `ExportedProgram.module()` refuses `.train()` and `.eval()`; this wrapper flips the training flag
    of the graph's batch-norm and dropout calls instead, so every technique can use it like any network.
    """

    def __init__(self, graph_module: nn.Module) -> None:
        super().__init__()
        self.graph = graph_module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.graph(*args, **kwargs)
        except AssertionError as e:  # the program's own input guards (shape ranges fixed at export)
            if "Guard failed" not in str(e) and "Expected input" not in str(e):
                raise
            raise ModelError(f"the exported program refuses this input: {' '.join(str(e).split())[:160]}") from None

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode
        _set_graph_training(self.graph, mode)
        return self


def _set_graph_training(graph_module: nn.Module, mode: bool) -> None:
    import torch

    aten = torch.ops.aten
    positions = {aten.batch_norm.default: 5, aten.dropout.default: 2}
    changed = False
    for node in graph_module.graph.nodes:
        pos = positions.get(node.target)
        if pos is not None and len(node.args) > pos and node.args[pos] != mode:
            node.args = (*node.args[:pos], mode, *node.args[pos + 1 :])
            changed = True
    if changed:
        graph_module.recompile()
    object.__setattr__(graph_module, "training", mode)


def save_exported_program(model: Any, path: Path) -> Path:
    """Write a network that no registry can rebuild (a `.pt2` or trusted pickle, then compressed) as a
    `torch.export` archive with the compress metadata beside it; it reloads without pickle."""
    import torch

    from compress.io import atomic_write_bytes

    if not model.input_shape:
        raise ModelError(f"cannot save {model.name}: its input shape is unknown (give --input-shape)")
    module = model.module.graph if isinstance(model.module, ExportedModule) else model.module
    was_training = model.module.training
    model.module.eval()
    example = torch.zeros(2, *model.input_shape)
    try:  # a dynamic batch axis, within whatever range the graph itself allows
        program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},), strict=False)
    except Exception:  # some graphs specialise the batch size; a static program still saves the network
        try:
            program = torch.export.export(module, (example[:1],), strict=False)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ModelError(f"cannot save {model.name} as a torch.export program ({first})") from None
    finally:
        model.module.train(was_training)
    meta = {
        "input_shape": list(model.input_shape),
        "task": model.task,
        "history": model.history,
        "preprocessing": model.preprocessing,
    }
    buf = io.BytesIO()
    torch.export.save(program, buf, extra_files={"compress.json": json.dumps(meta, default=str)})
    return atomic_write_bytes(Path(path), buf.getvalue())
