"""Data parallel: a real `torchrun --nproc_per_node=2` on the CPU (gloo) equals one process.

Same global batch, so the losses must agree within 1e-5 and the final weights closely. The
2-process run also accumulates 2 micro-batches per rank, so no_sync and the loss weighting by
the global count of labelled tokens are exercised together.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

WORKER = textwrap.dedent('''
    import sys
    import torch
    from minilm.nn.config import ModelConfig
    from minilm.nn.model import MaskedLM
    from minilm.train.trainer import TrainConfig, Trainer

    class Data:
        """Random rows, ~25% labelled (uneven per row), the global batch a pure function of step."""
        def batch(self, step, rank=0, world_size=1):
            g = torch.Generator().manual_seed(1000 + step)
            ids = torch.randint(4, 120, (16, 24), generator=g)
            labels = torch.where(torch.rand(16, 24, generator=g) < 0.25, ids, -100)
            labels[:, 1] = ids[:, 1]
            per = 16 // world_size
            return {"input_ids": ids[rank * per:(rank + 1) * per], "labels": labels[rank * per:(rank + 1) * per]}

        def eval_batches(self):
            return [self.batch(10**6)]

    out, accumulation = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    model = MaskedLM(ModelConfig.preset("bert-tiny", vocab_size=120, max_seq_len=24, dropout=0.0,
                                        attention_dropout=0.0, norm="pre"))
    config = TrainConfig(steps=6, lr=3e-3, warmup_steps=2, log_every=1, accumulation=accumulation, device="cpu",
                         progress=False)
    summary = Trainer(model, config, Data(), Data(), out).fit()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
''')


def _losses(run_dir):
    return [r["loss"] for r in map(json.loads, open(run_dir / "metrics.jsonl")) if "loss" in r]


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one"), "1"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), str(tmp_path / "two"), "2"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    l1, l2 = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(l1) == len(l2) == 6
    assert max(abs(a - b) for a, b in zip(l1, l2)) < 1e-5, (l1, l2)
    assert l1[-1] < l1[0]  # it trained
    w1 = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=1e-5, rtol=1e-4)
    # Only rank 0 wrote: one metrics file, no second set of checkpoints.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir())
