"""Hugging Face transformers models (tiny configs, random weights, no downloads): every reported analog weight runs
analog (by execution), the share is >= 99 % with embeddings aside, program / at_time / forward / save-load work.

Needs ``pip install 'aimc[hf]'``; skipped without transformers. The tiny models run by default (about a second
each); a GPT-2 with 768 features (several 512 x 512 tiles per matrix) on the ``aihwkit_default`` periphery runs
behind the ``slow`` marker.
"""

import pytest
import torch

import aimc

transformers = pytest.importorskip("transformers")


def _gpt2(n_embd=32):
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=n_embd, n_layer=2, n_head=4)
    return transformers.GPT2LMHeadModel(cfg)


def _bert():
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32, num_labels=3)
    return transformers.BertForSequenceClassification(cfg)


def _llama():
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(cfg)


def build(name):
    torch.manual_seed(0)
    model = {"gpt2": _gpt2, "bert": _bert, "llama": _llama, "gpt2_768": lambda: _gpt2(768)}[name]().eval()
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(1))
    return model, ids


def _logits(out):
    return out.logits


def check(name, tmp_path, config=None):
    model, ids = build(name)
    a = aimc.convert(model, config or aimc.presets.joshi2020()).eval()
    rep = a.aimc_report
    with torch.no_grad():
        torch.testing.assert_close(_logits(a(ids)), _logits(model(ids)), rtol=1e-4, atol=1e-4)
    res = aimc.audit(a, ids)
    assert res.leaks == [] and all(res.analog.values()), res
    assert res.measured_share == pytest.approx(rep.analog_share, abs=1e-12) and rep.analog_share >= 0.99, (res, rep)
    aimc.program(a, seed=0)
    with torch.no_grad():
        aimc.at_time(a, 25.0, seed=0, gdc=False)
        y25 = _logits(a(ids))
        aimc.at_time(a, 1e9, seed=0, gdc=False)
        assert (_logits(a(ids)) - y25).abs().max() > 1e-3 * y25.abs().max()
        aimc.at_time(a, 3600.0, seed=2)
        aimc.save(a, tmp_path / "m.safetensors")
        fresh, _ = build(name)
        b = aimc.load(tmp_path / "m.safetensors", model=fresh).eval()
        aimc.at_time(a, 3600.0, seed=2)  # replay the same read and output noise on both
        torch.testing.assert_close(_logits(b(ids)), _logits(a(ids)))
    # evaluate with the fitting metric, dict batches as Hugging Face takes them
    metric = "accuracy" if name == "bert" else "perplexity"
    labels = torch.randint(0, 3, (2,), generator=torch.Generator().manual_seed(3)) if name == "bert" else ids
    res = aimc.evaluate(a, [{"input_ids": ids, "labels": labels}], [25.0, 3.15e7], [0], "gdc", metric=metric,
                        progress=False)
    col = res.table[metric]
    assert len(col) == 2 and (col.between(0, 1).all() if name == "bert" else (col > 1).all())
    return a, rep


def test_gpt2_conv1d_runs_analog_and_lm_head_stays_tied(tmp_path):
    a, rep = check("gpt2", tmp_path)
    assert type(a.transformer.h[0].attn.c_attn).__name__ == "AnalogConv1D"
    assert isinstance(a.transformer.h[0].attn.c_attn, transformers.pytorch_utils.Conv1D)
    digital = {n: why for n, _, why in rep.digital}
    assert "tied to the lookup table 'transformer.wte'" in digital["lm_head"]
    assert a.lm_head.weight is a.transformer.wte.weight


@pytest.mark.parametrize("name", ["bert", "llama"])
def test_bert_and_llama(name, tmp_path):
    check(name, tmp_path)


@pytest.mark.slow
def test_gpt2_768_features_on_the_aihwkit_periphery(tmp_path):
    a, rep = check("gpt2_768", tmp_path, aimc.presets.aihwkit_default())
    assert rep.n_tiles > len(rep.analog)  # matrices split over several tiles
