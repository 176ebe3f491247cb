"""User control of the conversion: rules, exclude globs, an extra layer map, in-place conversion, the way back."""

import dataclasses

import pytest
import torch
from torch import nn

import aimc
from aimc.nn import AnalogLinear
from tests.arch_models import build


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))

    def forward(self, x):
        return self.mlp(self.attn(x))


def _net():
    torch.manual_seed(0)
    return nn.Sequential(Block(), Block(), nn.Linear(8, 3))


def test_rules_by_glob_give_configs_and_digital_layers_first_match_wins():
    cfg, other = aimc.presets.joshi2020(), aimc.presets.aihwkit_default()
    a = aimc.convert(_net(), cfg, rules={"*.attn.*": other, "2": "digital", "1.mlp": "digital"})
    assert a[0].attn[0].analog.config == other and a[0].mlp[0].analog.config == cfg
    assert type(a[2]) is nn.Linear and type(a[1].mlp[0]) is nn.Linear  # "1.mlp": its layers inherit digital
    assert isinstance(a[1].attn[1], AnalogLinear)
    digital = {n: why for n, _, why in a.aimc_report.digital}
    assert digital["2"] == "kept digital by the rules" and digital["1.mlp.2"] == "kept digital by the rules"
    assert a.aimc_report.configs["0.attn.0"] == other.name
    # the share counts the digital products
    n_lin = 8 * 8 * 4 + 2 * 8 * 16 * 2 + 8 * 3
    assert a.aimc_report.analog_share == pytest.approx((n_lin - 3 * 8 - 2 * 8 * 16) / n_lin)


def test_rule_function_and_errors():
    def rule(name, m):
        return "digital" if isinstance(m, nn.Linear) and m.out_features == 16 else None

    a = aimc.convert(_net(), aimc.presets.joshi2020(), rules=rule)
    assert type(a[0].mlp[0]) is nn.Linear and isinstance(a[0].mlp[2], AnalogLinear)
    with pytest.raises(aimc.ConfigError, match="matches no module"):
        aimc.convert(_net(), aimc.presets.joshi2020(), rules={"*.nothing": "digital"})
    with pytest.raises(aimc.ConfigError, match="expected an AnalogConfig"):
        aimc.convert(_net(), aimc.presets.joshi2020(), rules={"2": "analog"})
    with pytest.raises(aimc.ConfigError, match="returned"):
        aimc.convert(_net(), aimc.presets.joshi2020(), rules=lambda n, m: 3)
    with pytest.raises(aimc.ConfigError, match="tied"):
        aimc.convert(_net(), aimc.presets.joshi2020(), tied="yes")


def test_exclude_globs_keep_whole_subtrees_digital():
    a = aimc.convert(_net(), aimc.presets.joshi2020(), exclude=["*.mlp", "2"])
    assert all(type(m) is nn.Linear for m in (a[0].mlp[0], a[1].mlp[2], a[2]))
    assert isinstance(a[0].attn[0], AnalogLinear)
    with pytest.raises(aimc.ConfigError, match="exclude"):
        aimc.convert(_net(), aimc.presets.joshi2020(), exclude=["*.nope"])


class MyLinear(nn.Linear):
    pass


def test_layer_map_adds_module_types():
    torch.manual_seed(0)
    m = nn.Sequential(MyLinear(4, 3))
    # default: a subclass (maybe with its own forward) stays digital, and the error says why
    with pytest.raises(aimc.UnsupportedLayerError, match="subclass of Linear"):
        aimc.convert(m, aimc.presets.joshi2020())
    b = aimc.convert(m, aimc.presets.joshi2020(), layer_map={MyLinear: AnalogLinear})
    assert isinstance(b[0], AnalogLinear)
    with pytest.raises(aimc.ConfigError, match="from_torch"):
        aimc.convert(m, aimc.presets.joshi2020(), layer_map={MyLinear: nn.Linear})


def test_inplace_converts_without_copying_and_to_digital_goes_back():
    model, (ids,) = build("gpt2_like")
    ref = model(ids)
    ptr = model.h[0].c_attn.weight.data_ptr()
    ln = model.ln_f
    a = aimc.convert(model, aimc.presets.joshi2020(), inplace=True, tied="analog")
    assert a is model and a.ln_f is ln and a.h[0].c_attn.weight.data_ptr() == ptr  # same storage: no copy
    assert isinstance(a.lm_head.weight, aimc.nn.AnalogWeight) and a.lm_head.weight is a.wte.weight
    aimc.program(a, seed=0)
    d = aimc.to_digital(a)
    assert type(d.lm_head) is nn.Linear and type(d.h[0].c_attn).__name__ == "Conv1D"
    assert d.lm_head.weight is d.wte.weight and type(d.wte.weight) is nn.Parameter
    assert not hasattr(d, "aimc_report") and not any(hasattr(m, "analog") for m in d.modules())
    torch.testing.assert_close(d.eval()(ids), ref)
    assert aimc.convert(d, aimc.presets.joshi2020()).aimc_report.analog  # convertible again
    # a MultiheadAttention (converted in place) and a recurrent layer get their torch types back
    mha, x = build("transformer_encoder_bf")
    back = aimc.to_digital(aimc.convert(mha, aimc.presets.joshi2020()))
    assert type(back.layers[0].self_attn) is nn.MultiheadAttention
    assert type(back.layers[0].self_attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    torch.testing.assert_close(back(*x), mha(*x))
    rnn, x = build("recurrent")
    back = aimc.to_digital(aimc.convert(rnn, aimc.presets.joshi2020()))
    assert type(back.gru) is nn.GRU
    torch.testing.assert_close(back(*x), rnn(*x))


def test_per_layer_configs_survive_save_and_load(tmp_path):
    other = dataclasses.replace(aimc.presets.joshi2020(), name="other")
    a = aimc.convert(_net(), aimc.presets.joshi2020(), rules={"0.*": other, "2": "digital"}).eval()
    aimc.program(a, seed=0)
    aimc.at_time(a, 100.0, seed=0)
    aimc.save(a, tmp_path / "m.safetensors")
    b = aimc.load(tmp_path / "m.safetensors", model=_net()).eval()
    assert b[0].attn[0].analog.config.name == "other" and b[1].attn[0].analog.config.name == "joshi2020"
    assert type(b[2]) is nn.Linear
    x = torch.randn(4, 8)
    torch.testing.assert_close(b(x), a(x))


def test_readme_conversion_example_runs_and_prints_what_it_says(capsys):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Converting any model", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own example
    printed = capsys.readouterr().out.strip()
    claimed = re.search(r"print\(res\)\s+# (.*)", code).group(1).strip()
    assert printed == claimed


def test_pickle_and_deepcopy_keep_each_analog_weight_bound_to_its_own_layer():
    import copy
    import io

    model, x = build("swin_like")
    a = aimc.convert(model, aimc.presets.joshi2020()).eval()
    aimc.program(a, seed=0)
    aimc.at_time(a, 100.0, seed=0)
    buf = io.BytesIO()
    torch.save(a, buf)
    buf.seek(0)
    for b in (torch.load(buf, weights_only=False), copy.deepcopy(a)):
        w = b.attn.qkv.weight
        assert isinstance(w, aimc.nn.AnalogWeight) and w.aimc_owner is b.attn.qkv and w.aimc_owner is not a.attn.qkv
        torch.testing.assert_close(b(*x), a(*x), rtol=0, atol=0)
