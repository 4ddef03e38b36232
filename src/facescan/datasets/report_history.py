"""Kedro dataset listing the earlier versions of a versioned HTML report (read-only)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from facescan.evaluation.report import REPORT_META

__all__ = ["ReportHistoryDataset"]

_META = re.compile(rf'<meta name="{REPORT_META}" content="([^"]*)"')


class ReportHistoryDataset(AbstractDataset[None, list[dict[str, Any]]]):
    """The versions saved so far of a versioned report: ``<filepath>/<version>/<name>``.

    Loading returns one dict per version, oldest first: ``version`` (Kedro's timestamp, the
    folder name), ``path`` (relative to the folder holding ``filepath``'s parent, for links from a
    report saved there) and what the report recorded about its run in its ``facescan-run`` meta
    tag (git commit, environment, variants...). A report without the tag gives the version and
    path only. Nothing is written through this dataset: the versioned report dataset writes.

    Example catalog entry::

        ablation_report_history:
          type: facescan.datasets.ReportHistoryDataset
          filepath: data/08_reporting/reports/ablation_report.html

    Args:
        filepath: the versioned report dataset's ``filepath`` (a folder of versions, once saved).
    """

    def __init__(self, filepath: str) -> None:
        self._filepath = Path(filepath)

    def _load(self) -> list[dict[str, Any]]:
        folder = self._filepath
        if not folder.is_dir():
            return []
        base = folder.parent.parent
        out = []
        for version_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            report = version_dir / folder.name
            if not report.is_file():
                continue
            entry: dict[str, Any] = {
                "version": version_dir.name,
                "path": report.relative_to(base).as_posix(),
            }
            with report.open(encoding="utf-8", errors="replace") as f:
                head = f.read(8192)
            match = _META.search(head)
            if match:
                try:
                    meta = json.loads(html.unescape(match.group(1)))
                except json.JSONDecodeError:
                    meta = {}
                if isinstance(meta, dict):
                    entry.update({k: v for k, v in meta.items() if k not in entry})
            out.append(entry)
        return out

    def _save(self, data: None) -> None:
        raise DatasetError(
            f"{type(self).__name__} is read-only: it lists the versions of {self._filepath}"
        )

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
