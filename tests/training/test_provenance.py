"""facescan.provenance.collect: complete, JSON-able, never failing."""

from __future__ import annotations

import json
import subprocess

from facescan import provenance


def test_collect_describes_code_and_machine() -> None:
    info = provenance.collect({"run": "x"})
    assert set(info) >= {
        "git_commit",
        "git_dirty",
        "packages",
        "python",
        "platform",
        "cpu",
        "cpu_cores",
        "gpus",
        "cuda",
        "created_utc",
    }
    assert info["packages"]["torch"].startswith("2.")
    assert info["run"] == "x"
    json.dumps(info)


def test_collect_never_fails(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise subprocess.TimeoutExpired("git", 2)

    monkeypatch.setattr(provenance.subprocess, "run", broken)
    info = provenance.collect()
    assert info["git_commit"] == "unknown" and info["git_dirty"] == "unknown"
