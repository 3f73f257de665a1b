"""Distributed training on the CPU: `torchrun --nproc_per_node 2 -m segkit.cli train` with the
gloo backend trains the tiny config; both ranks finish in step, one checkpoint is written, and
it holds what rank 0 holds (every tensor equal), while the parameters agree across ranks (DDP
averaged the gradients). The NCCL/GPU path is mmengine's own launcher, unchanged; it needs GPUs
and is not run here.

Each rank's final state is dumped by :class:`DumpRankState`, a hook this module registers when
the workers import it through the config's ``custom_imports``.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("mmseg") is None:
    pytest.skip("mmsegmentation is not installed: pip install 'segkit[mmseg]' (make test "
                "installs it)", allow_module_level=True)

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.registry import HOOKS  # noqa: E402

from segkit.errors import InputError  # noqa: E402

from .mmseg_data import make_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "upernet_swin-tiny_cpu.py"
TORCHRUN_TIMEOUT = 600


@HOOKS.register_module(force=True)
class DumpRankState(Hook):
    """Saves this rank's model (parameters and buffers) and what ran, after the run."""

    priority = "LOWEST"

    def __init__(self, out: str) -> None:
        self.out = out

    def after_run(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        torch.save({"state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    "params": [k for k, _ in model.named_parameters()],
                    "wrapper": type(runner.model).__name__, "rank": runner.rank,
                    "world_size": runner.world_size, "iter": runner.iter},
                   os.path.join(self.out, f"rank{runner.rank}.pt"))


@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or \
        shutil.which("torchrun")
    if torchrun is None:
        pytest.fail("torchrun (installed with torch) is not on PATH beside the interpreter")
    tmp = tmp_path_factory.mktemp("dist")
    data, work, dumps = tmp / "data", tmp / "work", tmp / "dumps"
    dumps.mkdir()
    make_dataset(data, n=16, folds=2)  # fold 0: 8 training images = 2 iterations at 2 x 2
    config = tmp / "tiny_dist.py"
    config.write_text(
        f"_base_ = [{str(TINY)!r}]\n"
        "custom_imports = dict(imports=['segkit.mmseg', 'tests.test_distributed'], "
        "allow_failed_imports=False)\n"
        f"custom_hooks = [dict(type='DumpRankState', out={str(dumps)!r})]\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH",
                                                                                    "")]),
               OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1")
    env.pop("WORLD_SIZE", None)
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "segkit.cli", "train",
           str(config), "--data-root", str(data), "--work-dir", str(work), "--fold", "0",
           "--pretrained", "none", "--cfg-options", "train_cfg.max_epochs=1",
           "randomness.seed=1", "default_hooks.checkpoint.save_best=None"]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=TORCHRUN_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return work, dumps, proc


def test_both_ranks_finish_in_step(torchrun_run):
    _, dumps, _ = torchrun_run
    ranks = [torch.load(dumps / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for r, d in enumerate(ranks):
        assert d["rank"] == r and d["world_size"] == 2
        assert d["wrapper"] == "MMDistributedDataParallel"
        assert d["iter"] == 2  # 8 images, 2 per rank and iteration
    # DDP averaged the gradients: both ranks hold the same parameters (BN running statistics
    # are per rank: mmengine does not broadcast buffers)
    for name in ranks[0]["params"]:
        torch.testing.assert_close(ranks[0]["state_dict"][name], ranks[1]["state_dict"][name],
                                   rtol=0, atol=0, msg=name)


def test_one_checkpoint_holding_rank0s_model(torchrun_run):
    import segkit.mmseg as sm

    work, dumps, _ = torchrun_run
    assert sorted(p.name for p in work.glob("*.pth")) == ["epoch_1.pth"]
    assert Path((work / "last_checkpoint").read_text().strip()) == work / "epoch_1.pth"
    saved = sm.checkpoint.load(work / "epoch_1.pth")
    assert saved["meta"]["iter"] == 2
    rank0 = torch.load(dumps / "rank0.pt", weights_only=False)["state_dict"]
    assert sorted(saved["state_dict"]) == sorted(rank0)
    for name, tensor in rank0.items():
        assert torch.equal(saved["state_dict"][name], tensor), name


def test_cpu_launcher_refuses_nccl_and_a_missing_environment(monkeypatch):
    from segkit.mmseg.runner import setup_cpu_distributed

    if torch.cuda.is_available():
        pytest.skip("CUDA is available: mmengine's own launcher runs (the GPU path)")
    for key, value in dict(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT="29999").items():
        monkeypatch.setenv(key, value)
    cfg = Config(dict(model=dict(), env_cfg=dict(dist_cfg=dict(backend="nccl"))))
    with pytest.raises(InputError, match=r"env_cfg.dist_cfg.backend='nccl' needs CUDA GPUs"):
        setup_cpu_distributed(cfg)
    monkeypatch.delenv("MASTER_PORT")
    with pytest.raises(InputError, match="MASTER_PORT"):
        setup_cpu_distributed(Config(dict(model=dict())))


def test_cpu_launcher_turns_syncbn_into_bn_and_drops_device_ids(monkeypatch):
    import torch.distributed as dist

    from segkit.mmseg.runner import setup_cpu_distributed

    if torch.cuda.is_available():
        pytest.skip("CUDA is available: mmengine's own launcher runs (the GPU path)")
    monkeypatch.setattr(dist, "is_initialized", lambda: True)  # no process group here
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "0")
    cfg = Config(dict(model=dict(decode_head=dict(norm_cfg=dict(type="SyncBN")),
                                 aux=[dict(norm_cfg=dict(type="SyncBN"))])))
    assert setup_cpu_distributed(cfg) is False
    assert cfg.model.decode_head.norm_cfg.type == "BN" and cfg.model.aux[0].norm_cfg.type == "BN"
    assert cfg.model_wrapper_cfg.device_ids is None
    assert cfg.env_cfg.dist_cfg.backend == "gloo"
