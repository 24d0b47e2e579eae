"""Run directories: every command with `--out DIR` leaves DIR/manifest.json and its artifacts.

A run is built in `DIR.partial/` and renamed to `DIR` only when it completes, so a finished-looking
directory is always whole. An interrupted run stays in `DIR.partial/` with its training checkpoints,
and `--resume` continues it; `--force` replaces an existing DIR (only once the new run completes).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from compress.env import environment
from compress.errors import RunDirError
from compress.io import atomic_write_json, sha256_file

MANIFEST = "manifest.json"
SCHEMA = "compress.manifest/1"


class RunDir:
    """A run directory under construction.

    Args:
        path: the final directory.
        command: what produced it ("train", "prune", "run", ...).
        force: replace an existing final directory.
        resume: continue an interrupted run left in `path.partial`.
    """

    def __init__(self, path: str | Path, command: str, *, force: bool = False, resume: bool = False) -> None:
        self.path = Path(path)
        self.work = self.path.with_name(self.path.name + ".partial")
        self.command = command
        self.force = force
        self.resumed = False
        if self.path.exists() and not force:
            if resume:
                raise RunDirError(f"{self.path} is already complete; nothing to resume (use --force to redo it)")
            raise RunDirError(f"{self.path} exists; pass --force to replace it")
        if self.work.exists():
            if resume:
                self.resumed = True
            elif force:
                shutil.rmtree(self.work)
            else:
                raise RunDirError(
                    f"an interrupted run is in {self.work}; pass --resume to continue it or --force to start over"
                )
        elif resume:
            raise RunDirError(f"nothing to resume: {self.work} does not exist")
        self.work.mkdir(parents=True, exist_ok=True)
        previous = self.work / MANIFEST
        if self.resumed and previous.exists():
            self.manifest = json.loads(previous.read_text())
        else:
            self.manifest = {
                "schema": SCHEMA,
                "command": command,
                "status": "running",
                "created": _now(),
                "inputs": [],
                "config": {},
                "steps": [],
                "artifacts": {},
                "metrics": {},
            }
        self.save()

    def file(self, name: str) -> Path:
        """Where to write artifact `name` while the run is in progress."""
        p = self.work / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def add_input(self, role: str, spec: str, path: str | Path | None = None) -> None:
        entry: dict[str, Any] = {"role": role, "spec": spec}
        if path is not None and Path(path).is_file():
            entry["path"] = str(Path(path).resolve())
            entry["sha256"] = sha256_file(Path(path))
        self.manifest["inputs"] = [i for i in self.manifest["inputs"] if i["role"] != role] + [entry]

    def add_artifact(self, role: str, name: str) -> None:
        p = self.work / name
        self.manifest["artifacts"][role] = {"path": name, "sha256": sha256_file(p), "bytes": p.stat().st_size}

    def set_config(self, config: dict[str, Any]) -> None:
        self.manifest["config"] = config

    def set_steps(self, steps: list[dict[str, Any]]) -> None:
        self.manifest["steps"] = steps

    def update_metrics(self, metrics: dict[str, Any]) -> None:
        self.manifest["metrics"].update(metrics)

    def save(self) -> None:
        atomic_write_json(self.work / MANIFEST, self.manifest)

    def commit(self) -> Path:
        """Mark the run complete and move it into place."""
        self.manifest["status"] = "complete"
        self.manifest["finished"] = _now()
        self.manifest["environment"] = environment()
        self.save()
        if self.path.exists():
            trash = self.path.with_name(f".{self.path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(self.path, trash)
            os.replace(self.work, self.path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.work, self.path)
        return self.path


def read_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    f = path / MANIFEST if path.is_dir() else path
    if not f.is_file():
        raise RunDirError(f"{path} is not a run directory (no {MANIFEST})")
    try:
        data = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{f}: corrupted manifest ({e})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise RunDirError(f"{f}: not a compress manifest")
    return data


def artifact_path(run: str | Path, role: str) -> Path:
    """The file of `role` ("torch", "onnx", "engine") in a run directory."""
    manifest = read_manifest(run)
    art = manifest.get("artifacts", {}).get(role)
    if art is None:
        have = ", ".join(manifest.get("artifacts", {})) or "none"
        raise RunDirError(f"{run} has no '{role}' artifact (it has: {have})")
    return Path(run) / art["path"]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
