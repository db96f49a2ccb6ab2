"""launch.sh picks and prints the right command on every path (DRY_RUN=1 prints it and
runs nothing): one process, NPROC gloo processes, one process per visible GPU, many
nodes from NNODES + MASTER_ADDR, and many nodes from SLURM's variables. The GPU count
and `scontrol` are stand-ins, so the GPU and SLURM paths are checked on a CPU machine."""

import os
import stat
import subprocess
import sys

from tests.conftest import tiny_overrides
from tests.train.runs import ENV, ROOT


def stand_ins(tmp_path, gpus: int):
    """A PYTHON that reports `gpus` CUDA devices (and is the real one otherwise), and an
    `scontrol` that expands a node list as SLURM's does (first node `node-a`)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    python = bin_dir / "python"
    python.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$1" = -c ] && [[ "$2" == *device_count* ]]; then echo ' + str(gpus) + "; exit; fi\n"
        f'exec {sys.executable} "$@"\n'
    )
    scontrol = bin_dir / "scontrol"
    # A big job's list (thousands of lines), so a reader that stops after the first
    # line would break the pipe for certain rather than by chance.
    nodes = "echo node-a; for i in {1..20000}; do echo node-$i; done"
    scontrol.write_text(f"#!/usr/bin/env bash\n{nodes}\n")
    for f in (python, scontrol):
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    return python, bin_dir


def launch(tmp_path, tiny_dataset, gpus=0, **env) -> subprocess.CompletedProcess:
    """./launch.sh configs/debug.toml with DRY_RUN=1, `gpus` stand-in GPUs and `env`."""
    python, bin_dir = stand_ins(tmp_path, gpus)
    clean = ("SLURM_", "NPROC", "NNODES", "MASTER_ADDR")
    full_env = {k: v for k, v in ENV.items() if not k.startswith(clean)}
    full_env |= {"PYTHON": str(python), "DRY_RUN": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    cmd = ["./launch.sh", "configs/debug.toml", *tiny_overrides(tiny_dataset, tmp_path)]
    return subprocess.run(
        cmd, cwd=ROOT, env=full_env | env, capture_output=True, text=True, timeout=120
    )


def dry_run(tmp_path, tiny_dataset, gpus=0, **env) -> list[str]:
    """The one command launch.sh prints (and does not run), split into words."""
    result = launch(tmp_path, tiny_dataset, gpus, **env)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert len(lines) == 1, result.stdout
    assert not (tmp_path / "debug").exists()  # nothing was trained
    return lines[0][2:].split(" ")


def torchrun_args(argv):
    i = argv.index("torch.distributed.run")
    return argv[i + 1 : argv.index("strata.cli") - 1]


def test_no_gpu_is_one_process(tmp_path, tiny_dataset):
    argv = dry_run(tmp_path, tiny_dataset)
    assert argv[0].endswith("bin/python") and argv[1:4] == ["-m", "strata.cli", "train"]


def test_nproc_gloo_processes(tmp_path, tiny_dataset):
    argv = dry_run(tmp_path, tiny_dataset, NPROC="2")
    assert torchrun_args(argv)[-2:] == ["--standalone", "--nproc_per_node=2"]


def test_one_process_per_visible_gpu(tmp_path, tiny_dataset):
    argv = dry_run(tmp_path, tiny_dataset, gpus=8)
    args = torchrun_args(argv)
    assert args[-2:] == ["--standalone", "--nproc_per_node=8"]
    assert "--signals-to-handle=SIGINT,SIGHUP,SIGQUIT" in args
    argv = dry_run(tmp_path, tiny_dataset, gpus=8, NPROC="4")
    assert "--nproc_per_node=4" in torchrun_args(argv)


def test_many_nodes_from_nnodes_and_master_addr(tmp_path, tiny_dataset):
    env = {"NNODES": "4", "MASTER_ADDR": "10.0.0.7", "MASTER_PORT": "29600"}
    argv = dry_run(tmp_path, tiny_dataset, gpus=8, **env)
    args = torchrun_args(argv)
    assert {"--nnodes=4", "--nproc_per_node=8", "--rdzv_backend=c10d"} <= set(args)
    assert "--rdzv_endpoint=10.0.0.7:29600" in args and "--standalone" not in args


def test_many_nodes_from_slurm(tmp_path, tiny_dataset):
    env = {"SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_JOB_ID": "4242"}
    argv = dry_run(tmp_path, tiny_dataset, gpus=4, **env)
    args = torchrun_args(argv)
    assert {"--nnodes=2", "--nproc_per_node=4", "--rdzv_id=4242"} <= set(args)
    assert "--rdzv_endpoint=node-a:29500" in args  # the job's first node


def test_many_nodes_need_a_rendezvous_host(tmp_path, tiny_dataset):
    result = launch(tmp_path, tiny_dataset, gpus=8, NNODES="2")
    assert result.returncode != 0
    assert "set MASTER_ADDR (the rendezvous host) for NNODES=2" in result.stderr
