"""Metrics to the console, a JSONL file and TensorBoard event files (process 0 only)."""

import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class MetricsWriter:
    """Writes scalar dicts to ``workdir/metrics.jsonl`` and ``workdir/tensorboard/``.

    Disabled writers (other processes in a multi-host run) accept and drop everything.
    """

    def __init__(self, workdir: str | Path, *, enabled: bool = True):
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(workdir / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, scalars: dict, *, console: bool = True) -> None:
        if not self.enabled:
            return
        values = {k: float(np.asarray(v)) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        self._jsonl.flush()
        for name, value in values.items():
            self._tb.add_scalar(name, value, step)
        if console:
            log.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in values.items()))

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()
