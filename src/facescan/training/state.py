"""The side files of one training run, under ``training.resume_dir/<namespace>/``.

=============  ===========================================================================
``last.pt``    resume state after the last checkpointed epoch (only the latest is kept)
``best.pt``    the best epoch so far, as a facescan checkpoint dict (the contract)
``done.json``  written last: the run finished; holds its fingerprint
=============  ===========================================================================

Only rank 0 writes them; every write is atomic (temp file, fsync, rename). Every read is
``weights_only``; a file that does not load is reported, renamed aside (``*.corrupt-<time>``) and
treated as absent, so a damaged file never stops training: it only costs a fresh start.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from facescan.checkpoint import atomic_torch_save, fsync_dir, load_torch

__all__ = ["RunFiles"]

logger = logging.getLogger(__name__)


class RunFiles:
    """Reads and writes one namespace's resume folder.

    Args:
        folder: ``training.resume_dir/<namespace>``.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.last = self.folder / "last.pt"
        self.best = self.folder / "best.pt"
        self.done = self.folder / "done.json"

    def __repr__(self) -> str:
        return f"RunFiles({str(self.folder)!r})"

    def _load(self, path: Path) -> dict[str, Any] | None:
        """Load ``path``; None when absent or corrupt (a corrupt file is renamed aside)."""
        if not path.is_file():
            return None
        try:
            data = load_torch(path)
            if not isinstance(data, dict):
                raise ValueError(f"expected a dict, found {type(data).__name__}")
            return data
        except Exception as exc:
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(path, aside)
            logger.error(
                "%s is corrupt and cannot be resumed from (%s: %s); it was renamed to %s and "
                "training starts fresh",
                path,
                type(exc).__name__,
                exc,
                aside.name,
            )
            return None

    def finished(self, fingerprint: str) -> dict[str, Any] | None:
        """The best checkpoint of a finished run with this fingerprint, or None."""
        if not self.done.is_file():
            return None
        try:
            marker = json.loads(self.done.read_text())
        except (OSError, ValueError):
            marker = {}
        if marker.get("fingerprint") != fingerprint:
            logger.info(
                "%s holds a finished run of another configuration or data; it will be replaced",
                self.folder,
            )
            return None
        best = self._load(self.best)
        if best is None or best.get("run_fingerprint") != fingerprint:
            return None
        return best

    def decide(self, fingerprint: str, force: bool, name: str) -> str:
        """The one decision of a run: ``"skip"`` (finished with this fingerprint), ``"resume"``
        (a ``last.pt`` to try) or ``"fresh"``; ``force`` clears the folder and starts fresh."""
        if force:
            if self.done.exists() or self.last.exists():
                logger.info("training.force is true: retraining %s from scratch", name)
            self.clear()
            return "fresh"
        finished = self.finished(fingerprint)
        if finished is not None:
            logger.info(
                "Skipping %s: already trained with the same configuration and data (best val "
                "acc %.4f at epoch %d; %s). Set training.force: true to retrain.",
                name,
                finished["best_val_acc"],
                finished["best_epoch"],
                self.best,
            )
            return "skip"
        return "resume" if self.last.is_file() else "fresh"

    def resume_state(self, fingerprint: str) -> dict[str, Any] | None:
        """The resume state to continue from, or None to start fresh (with a log line saying why)."""
        state = self._load(self.last)
        if state is None:
            return None
        if state.get("fingerprint") != fingerprint:
            logger.info(
                "%s was written for another configuration or data (fingerprint %s, now %s): "
                "starting over",
                self.last,
                str(state.get("fingerprint"))[:12],
                fingerprint[:12],
            )
            return None
        best = self._load(self.best)
        if best is None or best.get("run_fingerprint") != fingerprint:
            logger.warning("%s has no matching best.pt next to it: starting over", self.last)
            return None
        return state

    def clear(self) -> None:
        """Remove this run's files (not the renamed-aside corrupt ones)."""
        for path in (self.done, self.last, self.best):
            path.unlink(missing_ok=True)

    def save_resume(self, state: dict[str, Any]) -> None:
        """Replace ``last.pt`` atomically."""
        atomic_torch_save(state, self.last)

    def save_best(self, checkpoint: dict[str, Any]) -> None:
        """Replace ``best.pt`` atomically."""
        atomic_torch_save(checkpoint, self.best)

    def load_best(self) -> dict[str, Any]:
        """``best.pt`` (``weights_only``).

        Raises:
            FileNotFoundError: naming the file when it is missing.
        """
        if not self.best.is_file():
            raise FileNotFoundError(f"{self.best}: no best checkpoint was written")
        return load_torch(self.best)

    def mark_done(self, fingerprint: str, summary: dict[str, Any]) -> None:
        """Write ``done.json`` atomically, then drop ``last.pt`` (not needed once finished)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.done.with_name(f".{self.done.name}.tmp")
        with open(tmp, "w") as f:
            json.dump({"fingerprint": fingerprint, **summary}, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.done)
        fsync_dir(self.folder)
        self.last.unlink(missing_ok=True)
