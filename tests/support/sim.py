"""A simulated-GPU spec file with a journal, and reading that journal back.

The simulator appends one JSON line per setter that succeeded (see the
docstring of ``zeusd.devices.simulated``); tests take a ``mark()`` before a
request and look at what was applied ``since(mark)``.
"""

from __future__ import annotations

import json
from pathlib import Path

SET_POWER = "nvmlDeviceSetPowerManagementLimit"
SET_PERSISTENCE = "nvmlDeviceSetPersistenceMode"
SET_GPU_CLOCKS = "nvmlDeviceSetGpuLockedClocks"
RESET_GPU_CLOCKS = "nvmlDeviceResetGpuLockedClocks"
SET_MEM_CLOCKS = "nvmlDeviceSetMemoryLockedClocks"
RESET_MEM_CLOCKS = "nvmlDeviceResetMemoryLockedClocks"


class SimGpus:
    """The ``--simulated-gpus`` JSON file of one daemon and its journal."""

    def __init__(self, directory: Path, profile="h200", count: int | None = 4,
                 faults: list[dict] | None = None, name: str = "gpus") -> None:
        self.spec_path = directory / f"{name}.json"
        self.journal_path = directory / f"{name}-journal.jsonl"
        spec: dict = {"profile": profile, "journal": str(self.journal_path)}
        if count is not None:
            spec["count"] = count
        if faults:
            spec["faults"] = faults
        self.spec_path.write_text(json.dumps(spec))

    def entries(self) -> list[dict]:
        if not self.journal_path.exists():
            return []
        lines = self.journal_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def mark(self) -> int:
        """A position in the journal; ``since(mark)`` returns what came after it."""
        return len(self.entries())

    def since(self, mark: int, gpu: int | None = None) -> list[tuple[int, str, list]]:
        """(gpu, call, args) of each setter applied after ``mark``, in journal order."""
        out = [(e["gpu"], e["call"], e["args"]) for e in self.entries()[mark:]]
        return [e for e in out if gpu is None or e[0] == gpu]

    def applied(self, mark: int, gpu: int, call: str | None = None) -> list[list]:
        """The args of every ``call`` applied on ``gpu`` after ``mark``, in order."""
        return [args for g, c, args in self.since(mark, gpu) if call is None or c == call]
