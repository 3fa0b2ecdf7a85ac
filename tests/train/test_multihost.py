"""Multi-host training: two processes on localhost (4 CPU devices each) train with per-process
Grain slices and save a checkpoint; one process on a differently shaped mesh restores it and
continues. The losses equal one uninterrupted single-process run fed the same global batches,
and only process 0 writes metrics and samples."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import latte_shapes
from experiments.common import init_distributed
from vdm_jax.data.pipeline import make_pipeline, state_for_process_count
from vdm_jax.data.sources import build_source
from vdm_jax.train.loop import fit, setup

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("multihost_worker.py")
TIMEOUT_S = 300  # a worker still running then prints its stack and exits
PROCESSES, PER_PROCESS_BATCH, SAVED_AT, STEPS = 2, 4, 2, 4
COMMON = {"train.steps": STEPS, "train.log_every": 1, "train.checkpoint_every": SAVED_AT,
          "train.sample_every": SAVED_AT, "mesh.preset": "fsdp"}
MULTI = {**COMMON, "data.batch_size": PER_PROCESS_BATCH, "mesh.shape": [1, 8, 1, 1]}
SINGLE = {**COMMON, "data.batch_size": PER_PROCESS_BATCH * PROCESSES, "mesh.shape": [2, 4, 1, 1]}


def _config(overrides: dict):
    config = latte_shapes.get_config("test")
    for key, value in overrides.items():
        section, name = key.split(".")
        config[section][name] = tuple(value) if isinstance(value, list) else value
    return config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run_processes(workdirs: list[Path]) -> None:
    """Trains to SAVED_AT with PROCESSES processes of 4 CPU devices each; process i in
    ``workdirs[i]``."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    address = f"localhost:{_free_port()}"
    procs = []
    for i, workdir in enumerate(workdirs):
        settings = {"coordinator_address": address, "num_processes": PROCESSES, "process_id": i,
                    "workdir": str(workdir), "until_step": SAVED_AT, "timeout_s": TIMEOUT_S,
                    "config": MULTI}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), json.dumps(settings)],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=TIMEOUT_S + 30)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            outputs.append(proc.communicate()[0] + "\n<timed out>")
    report = "\n".join(f"--- process {i} (exit {p.returncode}) ---\n{out[-6000:]}"
                       for i, (p, out) in enumerate(zip(procs, outputs, strict=True)))
    assert all(p.returncode == 0 for p in procs), report


def _logged_losses(workdir: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [(line["step"], line["loss"]) for line in lines if "loss" in line]
    assert len(losses) == len(dict(losses)), f"a step was logged twice: {losses}"
    return dict(losses)


def _reference(workdir: Path):
    """One uninterrupted single-process run fed the global batches of the resumed run: to
    SAVED_AT the per-process slices of PROCESSES processes, stacked in process order (how
    ``make_array_from_process_local_data`` assembles them); after it, the single-process
    pipeline from the same global position (the restored run's data, see
    ``state_for_process_count``)."""
    config = _config(SINGLE)
    run = setup(config, workdir)
    source = build_source(config.data, split="train")
    slices = [iter(make_pipeline(source, batch_size=PER_PROCESS_BATCH,
                                 tokenizer=run.experiment.tokenizer, seed=config.data.seed,
                                 process_index=i, process_count=PROCESSES))
              for i in range(PROCESSES)]
    losses = {}
    for step in range(1, STEPS + 1):
        if step <= SAVED_AT:
            parts = [next(it) for it in slices]
            batch = {k: np.concatenate([p[k] for p in parts]) for k in ("video", "tokens")}
            next(run.data_iterator)  # keeps the single-process stream at the same position
        else:
            batch = next(run.data_iterator)
        run.state, metrics = run.train_step(run.state, run.to_device(batch))
        losses[step] = float(metrics["loss"])
    run.checkpointer.close()
    run.writer.close()
    return run.state, losses


def test_two_processes_then_one_on_another_mesh(tmp_path):
    main, other = tmp_path / "process0", tmp_path / "process1"
    other.mkdir()
    (other / "checkpoints").symlink_to(main / "checkpoints", target_is_directory=True)
    _run_processes([main, other])
    assert sorted(p.name for p in other.iterdir()) == ["checkpoints"]  # process 1 wrote no logs
    assert (main / "samples" / str(SAVED_AT) / "grid.png").stat().st_size > 0
    assert len(list((main / "tensorboard").iterdir())) == 1
    assert sorted(_logged_losses(main)) == list(range(1, SAVED_AT + 1))

    run = setup(_config(SINGLE), main)  # one process, mesh (2, 4, 1, 1): restores step SAVED_AT
    assert int(run.state.step) == SAVED_AT
    run.hooks.clear()
    resumed = fit(run)
    logged = _logged_losses(main)
    assert sorted(logged) == list(range(1, STEPS + 1))

    want_state, want = _reference(tmp_path / "reference")
    np.testing.assert_allclose([logged[s] for s in sorted(want)], [want[s] for s in sorted(want)],
                               rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 jax.device_get(resumed.params), jax.device_get(want_state.params))


def test_data_position_moves_to_another_process_count():
    saved = [{"parent": {"next_index": 12}, "vdm_skipped_records": 1} for _ in range(2)]
    assert state_for_process_count(saved, 1) == {"parent": {"next_index": 24},
                                                 "vdm_skipped_records": 2}
    with pytest.raises(ValueError, match="worker_count=0"):
        state_for_process_count([{"workers": []}], 1)


@pytest.mark.parametrize("kwargs, message", [
    ({"coordinator_address": "localhost:1234"}, "needs all of"),
    ({"coordinator_address": "localhost", "num_processes": 2, "process_id": 0}, "host:port"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, r"in \[0, "),
    ({"num_processes": 2, "auto": True}, "do not also pass --num_processes"),
])
def test_inconsistent_coordinator_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        init_distributed(**kwargs)
