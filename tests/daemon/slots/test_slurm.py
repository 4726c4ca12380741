"""The Slurm launcher in-process against fake sbatch, squeue and scancel on PATH.

The fakes are shell scripts: sbatch and scancel write their arguments to a log and
answer as Slurm does; squeue prints whatever the test put in its state file. So the
launcher's own decisions (waves, states, timeouts, cancels) are tested without a
cluster; tests/e2e/test_slurm.py runs the same code against a real one.
"""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import pytest

from virnuc.daemon.config import DaemonConfig, load_config
from virnuc.daemon.slots.launcher import PilotDemand
from virnuc.daemon.slots.slurm import SlurmLauncher, sbatch_command

DEADLINE = 10.0


class FakeSlurm:
    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.calls = bin_dir / "calls.log"
        self.queue = bin_dir / "squeue.txt"  # what squeue prints
        self.queue.write_text("")
        self.sbatch_answer("echo 42")
        self._script("squeue", f'cat "{self.queue}"')
        self._script("scancel", "true")

    def sbatch_answer(self, body: str) -> None:
        self._script("sbatch", body)

    def _script(self, name: str, body: str) -> None:
        path = self.bin_dir / name
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> "{self.calls}"\n{body}\n')
        path.chmod(0o755)

    def called(self, name: str) -> list[list[str]]:
        lines = self.calls.read_text().splitlines() if self.calls.exists() else []
        return [shlex.split(line)[1:] for line in lines if line.startswith(name + " ")]

    def set_queue(self, *lines: str) -> None:
        self.queue.write_text("".join(line + "\n" for line in lines))


@pytest.fixture
def slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSlurm:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return FakeSlurm(bin_dir)


def slurm_config(tmp_path: Path, **changes: object) -> DaemonConfig:
    settings = {
        "backend": "slurm",
        "worker_endpoint": "tcp://10.0.0.1:5555",
        "slurm_poll_interval": 0.05,
        "slurm_start_timeout": 5.0,
        "stop_grace": 2.0,
        **changes,
    }
    return load_config(None, {"state_dir": tmp_path / "state", **settings})


def test_sbatch_asks_for_one_array_of_pilots_with_the_configured_resources(tmp_path) -> None:
    config = slurm_config(
        tmp_path,
        slurm_partition="gpu",
        slurm_account="lab",
        slurm_mem="32G",
        slurm_time="4:00:00",
        slurm_cpus=8,
        slurm_extra_args=["--qos=long"],
    )
    command = sbatch_command(config, ["s0", "s2"], "cuda")
    assert command[:4] == ["sbatch", "--parsable", "--job-name=virnuc-pilot", "--array=0-1%4"]
    for option in ("--partition=gpu", "--account=lab", "--gres=gpu:1", "--cpus-per-task=8",
                   "--mem=32G", "--time=4:00:00", "--signal=B:TERM@120", "--no-requeue",
                   "--qos=long"):  # fmt: skip
        assert option in command
    wrap = command[command.index("--wrap") + 1]
    assert wrap.startswith("exec ")  # SIGTERM reaches the worker itself, not a shell
    program = shlex.split(wrap)[1:]
    assert program[program.index("--array-worker-ids") + 1] == "s0,s2"
    assert program[program.index("--endpoint") + 1] == "tcp://10.0.0.1:5555"
    assert program[program.index("--device") + 1] == "cuda"
    assert program[program.index("--daemon-timeout") + 1] == "30.0"
    assert "--parent-pid" not in program  # a pilot's parent is slurmstepd


def test_an_empty_gres_submits_cpu_pilots(tmp_path) -> None:
    command = sbatch_command(slurm_config(tmp_path, slurm_gres=""), ["s0"], "cpu")
    assert not [arg for arg in command if arg.startswith("--gres")]


@pytest.mark.asyncio
async def test_slots_asking_together_become_one_array_and_follow_squeue(slurm, tmp_path) -> None:
    launcher = SlurmLauncher(slurm_config(tmp_path), {"VIRNUC_WORKER_CURVE": "a b c"})
    first = await launcher.launch("s0", "cpu")
    second = await launcher.launch("s1", "cpu")
    slurm.set_queue("42_0|PENDING|Priority|", "42_1|PENDING|Resources|")
    await asyncio.wait_for(first.submitted.wait(), DEADLINE)
    assert len(slurm.called("sbatch")) == 1
    assert "--array=0-1%4" in slurm.called("sbatch")[0]
    assert (first.info(), second.info()["slurm_job_id"]) == (
        {"backend": "slurm", "slurm_job_id": "42_0"},
        "42_1",
    )
    slurm.set_queue("42_0|RUNNING|None|node7", "42_1|PENDING|Resources|")
    assert await asyncio.wait_for(first.running(), DEADLINE) is None
    assert first.info()["node"] == "node7"
    assert second.returncode is None
    slurm.set_queue("42_1|RUNNING|None|node8")  # 42_0 has left squeue: it ended
    assert await asyncio.wait_for(first.wait(), DEADLINE) == 1
    assert "42_0" in first.ended_how()
    await launcher.close()
    assert ["42"] in slurm.called("scancel")  # the backstop at shutdown


@pytest.mark.asyncio
async def test_a_pilot_left_pending_fails_with_slurms_reason_and_is_cancelled(
    slurm, tmp_path
) -> None:
    launcher = SlurmLauncher(slurm_config(tmp_path, slurm_start_timeout=0.5), {})
    slurm.set_queue("42_0|PENDING|PartitionDown|")
    pilot = await launcher.launch("s0", "cpu")
    problem = await asyncio.wait_for(pilot.running(), DEADLINE)
    assert problem is not None
    assert "PartitionDown" in problem
    assert "slurm_start_timeout" in problem
    assert ["42_0"] in slurm.called("scancel")
    await launcher.close()


@pytest.mark.asyncio
async def test_sbatch_refusing_the_job_is_the_reason_it_never_ran(slurm, tmp_path) -> None:
    slurm.sbatch_answer(
        "echo 'sbatch: error: Batch job submission failed: Invalid partition name specified' >&2"
        "; exit 1"
    )
    launcher = SlurmLauncher(slurm_config(tmp_path), {})
    pilot = await launcher.launch("s0", "cpu")
    problem = await asyncio.wait_for(pilot.running(), DEADLINE)
    assert problem is not None
    assert "Invalid partition name specified" in problem
    assert pilot.returncode is not None
    await launcher.close()
    assert slurm.called("scancel") == []  # nothing was submitted


@pytest.mark.asyncio
async def test_stopping_a_running_pilot_sends_sigterm_and_a_pending_one_is_cancelled(
    slurm, tmp_path
) -> None:
    launcher = SlurmLauncher(slurm_config(tmp_path), {})
    running, pending = await launcher.launch("s0", "cpu"), await launcher.launch("s1", "cpu")
    slurm.set_queue("42_0|RUNNING|None|n1", "42_1|PENDING|Priority|")
    await asyncio.wait_for(running.running(), DEADLINE)
    await running.stop()
    await pending.stop()
    assert slurm.called("scancel") == [["--signal=TERM", "--full", "42_0"], ["42_1"]]
    await launcher.close()


@pytest.mark.asyncio
async def test_demand_starts_no_more_pilots_than_units_wait() -> None:
    demand, stopping = PilotDemand(), asyncio.Event()
    claims = [asyncio.create_task(demand.claim(stopping)) for _ in range(3)]
    demand.set_waiting(2)
    done, waiting = await asyncio.wait(claims, timeout=0.5)  # two come through, not three
    assert (len(done), len(waiting), demand.starting) == (2, 1, 2)
    demand.release()  # one pilot said hello; its unit no longer waits
    demand.set_waiting(1)
    done, _ = await asyncio.wait(waiting, timeout=0.2)
    assert not done
    stopping.set()
    assert await asyncio.wait_for(claims[2], DEADLINE) is False


def test_the_slurm_backend_needs_a_tcp_endpoint(tmp_path) -> None:
    with pytest.raises(ValueError, match="worker_endpoint"):
        load_config(None, {"state_dir": tmp_path, "backend": "slurm"})
    with pytest.raises(ValueError, match="backend must be"):
        load_config(None, {"state_dir": tmp_path, "backend": "kubernetes"})
