"""DDP training (gloo, 2 CPU processes) of a model whose analog products run through AnalogWeight interception
(Swin-like parent F.linear, nn.MultiheadAttention, nn.TransformerEncoder): the clean weights stay identical on
both ranks after a few steps, and they are AnalogWeights all along."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import aimc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.arch_models import build

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {}
        for arch in ("swin_like", "transformer_encoder_bf"):
            model, (x,) = build(arch, batch=4)  # same seeded weights on every rank
            model = aimc.convert(model, aimc.presets.joshi2020()).train()
            init = {k: v.clone() for k, v in model.state_dict().items() if "analog" not in k}
            ddp = nn.parallel.DistributedDataParallel(model)
            opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
            torch.manual_seed(100 + rank)  # training noise and data: independent per rank
            for _ in range(3):
                xb = x + 0.1 * torch.randn_like(x)
                loss = ddp(xb).square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                aimc.clip(model)
            results[arch] = (init, {k: v.clone() for k, v in model.state_dict().items() if "analog" not in k},
                             all(isinstance(p, aimc.nn.AnalogWeight) for _, layer in aimc.nn.analog_layers(model)
                                 for p in layer.parameters(recurse=False) if p.dim() >= 2))
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_gloo_available(), reason="gloo backend not available")
def test_ddp_trains_intercepted_models_identically_on_both_ranks(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for arch in r0:
        (init, w0, wrapped0), (_, w1, wrapped1) = r0[arch], r1[arch]
        assert wrapped0 and wrapped1
        assert all(not torch.equal(init[k], w0[k]) for k in w0 if k.endswith("weight") and w0[k].dim() >= 2)
        for k in w0:
            torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0)
