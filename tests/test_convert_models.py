"""Conversion of real architecture patterns (``tests/arch_models.py``), checked by execution, not by the report.

For each model: before programming the converted model computes what the plain model computes; after programming,
every analog matrix is on the computation path (negating its drifted weights moves the output), no master weight
of an analog layer enters a matrix product, and the analog share so measured equals the report's; heavy drift
moves the output; a save/load round trip gives the same outputs.
"""

import pytest
import torch

import aimc
from tests.arch_models import ARCHITECTURES, build


def _out(y):
    return y[0] if isinstance(y, tuple) else y


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_reported_analog_weight_runs_analog(arch, tmp_path):
    model, x = build(arch)
    a = aimc.convert(model, aimc.presets.joshi2020()).eval()
    rep = a.aimc_report
    with torch.no_grad():
        torch.testing.assert_close(_out(a(*x)), _out(model(*x)), rtol=1e-5, atol=1e-5)  # unprogrammed: digital
    res = aimc.audit(a, *x)
    assert res.leaks == [] and all(res.analog.values()), res
    assert res.measured_share == pytest.approx(rep.analog_share, abs=1e-12), (res, str(rep))
    assert rep.analog_share >= 0.99
    assert len(res.analog) == sum(len(layer.analog_matrices()) for _, layer in aimc.nn.analog_layers(a))
    # heavy drift without compensation moves the output (the fused / parent paths ignored it before)
    aimc.program(a, seed=0)
    with torch.no_grad():
        aimc.at_time(a, 25.0, seed=0, gdc=False)
        y25 = _out(a(*x))
        aimc.at_time(a, 1e9, seed=0, gdc=False)
        y_late = _out(a(*x))
    assert (y_late - y25).abs().max() > 1e-3 * y25.abs().max()
    if arch in ("swin_like", "vit_like", "resnet_like", "convnext_like", "mobilenet_like"):  # evaluate with the fitting metric (random labels)
        data = [(x[0], torch.randint(0, 10, (x[0].shape[0],), generator=torch.Generator().manual_seed(0)))]
        res = aimc.evaluate(a, data, [25.0, 1e7], [0], "gdc", metric="accuracy", progress=False)
        assert res.table["accuracy"].between(0, 1).all() and len(res.table) == 2
    aimc.save(a, tmp_path / "m.safetensors")
    fresh, _ = build(arch)
    b = aimc.load(tmp_path / "m.safetensors", model=fresh).eval()
    with torch.no_grad():
        for m in (a, b):  # the same chip at the same time, noise replayed from the stored at_time call
            aimc.at_time(m, 3600.0, seed=3)
        torch.testing.assert_close(_out(b(*x)), _out(a(*x)))


def test_gpt2_lm_head_tied_to_embedding_is_digital_by_default_and_never_untied():
    model, (ids,) = build("gpt2_like")
    a = aimc.convert(model, aimc.presets.joshi2020())
    digital = {n: why for n, _, why in a.aimc_report.digital}
    assert "tied to the lookup table 'wte'" in digital["lm_head"]
    assert a.lm_head.weight is a.wte.weight
    b = aimc.convert(model, aimc.presets.joshi2020(), tied="analog").eval()
    assert b.lm_head.weight is b.wte.weight and isinstance(b.lm_head, aimc.nn.AnalogLinear)
    assert any("lookup" in n for n in b.aimc_report.notes)
    res = aimc.audit(b, ids)
    assert res.analog["lm_head"] and "wte.weight" in res.lookup_weights
    with torch.no_grad():  # the lookup reads the master weight: programming does not change the embedding
        aimc.program(b, seed=0)
        aimc.at_time(b, 1e7, seed=0, gdc=False)
        torch.testing.assert_close(b.wte(ids), model.wte(ids))


def test_audit_catches_a_product_on_a_computed_copy_of_the_weight():
    """The audit fails a model whose product bypasses the tiles: a parent multiplying a computed tensor."""
    class Bypass(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            return x @ (self.fc.weight * 1.0).t()  # a computed copy: a plain tensor, not the analog weight

    torch.manual_seed(0)
    a = aimc.convert(Bypass(), aimc.presets.joshi2020())
    res = aimc.audit(a, torch.randn(2, 4))
    assert res.analog == {"fc": False} and res.measured_share == 0.0 and a.aimc_report.analog_share == 1.0


def test_views_of_an_analog_weight_transposed_run_analog_other_views_refuse():
    class Views(torch.nn.Module):
        def __init__(self, how):
            super().__init__()
            self.fc, self.how = torch.nn.Linear(4, 3), how

        def forward(self, x):
            w = self.fc.weight
            if self.how == "T":
                return x @ w.T + self.fc.bias
            if self.how == "addmm":
                return torch.addmm(self.fc.bias, x, w.t())
            return x[:, :2] @ w[:, :2].t()  # a slice of the crossbar's rows

    torch.manual_seed(0)
    x = torch.randn(2, 4)
    for how in ("T", "addmm"):
        a = aimc.convert(Views(how), aimc.presets.joshi2020()).eval()
        res = aimc.audit(a, x)
        assert res.analog == {"fc": True} and not res.leaks and res.measured_share == 1.0
    a = aimc.convert(Views("slice"), aimc.presets.joshi2020()).eval()
    a(x)  # before programming: the master weight, as every layer computes then
    aimc.program(a, seed=0)
    aimc.at_time(a, 10.0, seed=0)
    with pytest.raises(aimc.StateError, match="view of it"):
        a(x)


@pytest.mark.slow  # compiling takes ~40 s on 2 shared cores
def test_compiled_transformer_layer_equals_eager():
    """torch.compile of a converted TransformerEncoderLayer (matrix path, dynamic DAC) gives the eager result;
    a wrong SDPA result on permuted views from the tiles was seen before the projections were made contiguous."""
    import dataclasses

    cfg = aimc.presets.aihwkit_default()
    cfg = dataclasses.replace(cfg, periphery=dataclasses.replace(cfg.periphery, out_noise=0.0))  # deterministic
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True).eval()
    a = aimc.convert(layer, cfg).eval()
    aimc.program(a, seed=0)
    aimc.at_time(a, 3600.0, seed=0)
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        y = a(x)
        assert (y - layer(x)).abs().max() > 1e-3  # analog, not the fused digital kernel
        torch.testing.assert_close(torch.compile(a)(x), y)


@pytest.mark.parametrize("arch", ["swin_like", "gpt2_like", "vit_like", "transformer_encoder_bf", "recurrent"])
def test_hwa_training_reaches_every_analog_weight(arch):
    """In train mode every analog product (parent F.linear, addmm of Conv1D, attention projections, recurrent
    matrices) gets the training noise, and every analog weight gets a gradient."""
    import dataclasses

    model, x = build(arch)
    cfg = aimc.presets.joshi2020()
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, noise="additive", eta=0.1))
    a = aimc.convert(model, cfg).train()
    for m in a.modules():  # no dropout: only the weight noise makes two training forwards differ
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    torch.manual_seed(1)
    y1 = _out(a(*x))
    torch.manual_seed(2)
    y2 = _out(a(*x))
    assert (y1 - y2).abs().max() > 1e-4
    y2.square().mean().backward()
    weights = [p for p in a.parameters() if isinstance(p, aimc.nn.AnalogWeight)]
    assert weights and all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)
    # each matrix's training weight is the one its products use: scrambling it alone moves the output
    a.zero_grad()
    with torch.no_grad():
        torch.manual_seed(1)
        base = _out(a(*x))
        for name, layer in aimc.nn.analog_layers(a):
            for sfx, (mat, _) in layer.analog_matrices().items():
                mat.train_weight = lambda w, mat=mat: -3.0 * type(mat).train_weight(mat, w)
                torch.manual_seed(1)
                moved = (_out(a(*x)) - base).abs().max() > 1e-6 * base.abs().max()
                del mat.train_weight
                assert moved, f"{name}{sfx}: training product does not use its training weight"


@pytest.mark.parametrize("arch", ["transformer_encoder_bf", "gpt2_like", "recurrent", "conv_zoo", "swin_like"])
def test_cost_mapping_counts_every_analog_matrix(arch):
    """`aimc cost` on the new layer types: one row per analog matrix, each with MVMs (it crashed on
    MultiheadAttention / GRU / Conv1D layers before)."""
    from aimc.cost.layout import mapping

    model, x = build(arch)
    a = aimc.convert(model, aimc.presets.joshi2020())
    rep = mapping(a, example_input=x[0])
    n_mats = sum(len(layer.analog_matrices()) for _, layer in aimc.nn.analog_layers(a))
    assert len(rep.layers) == n_mats and all(r.mvms > 0 for r in rep.layers)
    assert rep.totals["weights"] == a.aimc_report.analog_weights
