"""Run directories: every command with `--out DIR` leaves DIR/manifest.json and its artifacts.

A run is built in `DIR.partial/` and renamed to `DIR` only when it completes, so a finished-looking
directory is always whole. An interrupted run stays in `DIR.partial/` with its training checkpoints,
and `--resume` continues it (with the same settings and data only); `--force` replaces an existing DIR
(only once the new run completes).

While a process writes a run, it holds an OS lock (`flock`) on `.DIR.lock` beside it, with its pid
inside: a second process is refused and told who holds it, and the lock of a process that died is
released by the kernel, so a crash never leaves a stale lock. A run that fails is removed by `abort`
(the CLI's one error handler calls it for every run still open); an interrupted one is kept for --resume.
"""

from __future__ import annotations

import contextlib
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
# settings a resumed run may change: where it runs and how often it reports, not what it computes
RESUME_MAY_CHANGE = {"device", "checkpoint_every", "eval_every", "workers", "show_progress"}

_OPEN: list[RunDir] = []  # runs this process is writing, newest last


class RunLock:
    """An exclusive `flock` on a file beside a run directory, holding the owner's pid."""

    def __init__(self, run_path: Path) -> None:
        self.path = run_path.with_name(f".{run_path.name}.lock")
        self.fd: int | None = None

    def acquire(self, what: Path) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunDirError(
                    f"{what} is being written by another compress process (pid {owner[:12]}); "
                    "wait for it to finish or stop it first"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file that its previous owner unlinked while we waited
                break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError:  # e.g. a full disk: leave no lock file behind
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(fd)
            raise
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)  # closing drops the flock
        self.fd = None


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
        self.lock = RunLock(self.path)
        self.lock.acquire(self.path)
        self._created = False
        try:
            self._open(resume)
        except BaseException:
            if self._created:
                shutil.rmtree(self.work, ignore_errors=True)
            self.lock.release()
            raise
        _OPEN.append(self)

    def _open(self, resume: bool) -> None:
        force, command = self.force, self.command
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"--out {self.path} is a file; give a directory path")
        if self.work.exists() and not self.work.is_dir():
            raise RunDirError(f"{self.work} is a file in the way of the run directory; move it away")
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
        self._created = not self.work.exists()
        self.work.mkdir(parents=True, exist_ok=True)
        previous = self.work / MANIFEST
        if self.resumed and previous.exists():
            try:
                self.manifest = json.loads(previous.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise RunDirError(f"{previous}: corrupted manifest; use --force to start over") from None
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
        """Record the resolved settings; a resumed run must have the same ones (data included)."""
        config = json.loads(json.dumps(config, default=str))  # the form the manifest keeps
        saved = self.manifest.get("config")
        if self.resumed and saved:
            changed = _first_difference(saved, config)
            if changed is not None:
                raise RunDirError(
                    f"{self.work}: the interrupted run used different settings ({changed}); resume with the "
                    "same settings and data, or use --force to start over"
                )
        self.manifest["config"] = config
        self.save()  # on disk before any work starts, so a resume can compare against it

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
        self._close()
        return self.path

    def abort(self, *, keep: bool = False) -> Path | None:
        """Stop writing: remove the staged directory (or keep it for --resume); returns what was kept."""
        kept = None
        if keep and self.work.exists():
            kept = self.work
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        self._close()
        return kept

    def _close(self) -> None:
        self.lock.release()
        if self in _OPEN:
            _OPEN.remove(self)


def abort_open_runs(*, keep: bool) -> list[Path]:
    """Abort every run this process still has open, newest first; returns the directories kept.

    `keep` keeps them for --resume (an interruption); a run that was itself resumed is always kept,
    since it holds earlier work."""
    kept = []
    for run in reversed(list(_OPEN)):
        path = run.abort(keep=keep or run.resumed)
        if path is not None and not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return kept


def config_difference(saved: Any, now: Any) -> str | None:
    """The first setting a run recorded (`saved`) that `now` changes, as 'data.limit: 100 -> 200'
    (None when a resume may go on: the same settings, up to RESUME_MAY_CHANGE)."""
    return _first_difference(saved, json.loads(json.dumps(now, default=str)))


def _first_difference(saved: Any, now: Any, where: str = "") -> str | None:
    """The path of the first setting that differs, as 'data.limit: 100 -> 200'; None when equal."""
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in sorted(set(saved) | set(now)):
            if key in RESUME_MAY_CHANGE:
                continue
            found = _first_difference(saved.get(key), now.get(key), f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    if saved != now:
        from compress.text import short

        return f"{where or 'config'}: {short(saved)} -> {short(now)}"
    return None


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
    artifacts = manifest.get("artifacts", {})
    art = artifacts.get(role) if isinstance(artifacts, dict) else None
    if not isinstance(art, dict) or not isinstance(art.get("path"), str):
        have = ", ".join(artifacts) if isinstance(artifacts, dict) and artifacts else "none"
        raise RunDirError(f"{run} has no '{role}' artifact (it has: {have})")
    path = Path(run) / art["path"]
    if not path.resolve().is_relative_to(Path(run).resolve()):
        raise RunDirError(f"{run}: its manifest points the '{role}' artifact outside the run directory")
    if not path.is_file():
        raise RunDirError(f"{run}: the '{role}' artifact {art['path']} is missing")
    if manifest.get("status") == "complete" and art.get("sha256") and sha256_file(path) != art["sha256"]:
        raise RunDirError(
            f"{path} does not match the sha256 in {run}/{MANIFEST}: the run was changed after it completed"
        )
    return path


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
