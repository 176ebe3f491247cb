"""aimc.evaluate / aimc.evaluation.score with any metric: top-k accuracy, perplexity / token NLL of causal language
models (shifted labels, ignore index, exact token counts), callables; tuple, dict and tensor batches; tensor, tuple,
dict and ModelOutput-like outputs; names and directions in the table, summary and plot."""

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import aimc
from aimc.evaluation import score
from aimc.metrics import Metric, get_metric, perplexity
from tests.helpers import batches, small_cnn

V, D = 11, 16


class TinyLM(nn.Module):
    """A per-token causal 'language model' (embedding → MLP → vocabulary) whose output type is selectable, with a
    Hugging Face-like keyword signature (no ``labels`` argument: passing one is a TypeError)."""

    def __init__(self, kind: str = "tensor"):
        super().__init__()
        torch.manual_seed(3)
        self.emb = nn.Embedding(V, D)
        self.fc1, self.fc2 = nn.Linear(D, D), nn.Linear(D, V)
        self.kind = kind

    def forward(self, input_ids, attention_mask=None):  # noqa: ANN001, ANN201
        logits = self.fc2(torch.relu(self.fc1(self.emb(input_ids))))
        if self.kind == "dict":
            return {"logits": logits}
        if self.kind == "attr":  # ModelOutput-like: attribute access
            return SimpleNamespace(logits=logits, past_key_values=None)
        if self.kind == "tuple":
            return (logits, None)
        return logits


def _tokens(seed=0, sizes=(3, 5, 2), t=9):
    """Batches of uneven size with uneven numbers of ignored labels (-100) per batch."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, b in enumerate(sizes):
        ids = torch.randint(0, V, (b, t), generator=g)
        labels = ids.clone()
        labels[:, : 1 + 3 * i] = -100  # batch i ignores its first 1 + 3i positions (prompt-like)
        out.append({"input_ids": ids, "labels": labels})
    return out


def _reference_nll(model, data):
    """Mean next-token NLL over all scored tokens of all batches, computed in one piece."""
    logits, labels = [], []
    with torch.no_grad():
        for b in data:
            out = model(b["input_ids"])
            lg = out if isinstance(out, torch.Tensor) else out["logits"] if isinstance(out, dict) else out.logits
            logits.append(lg[:, :-1].reshape(-1, V))
            labels.append(b["labels"][:, 1:].reshape(-1))
    return float(F.cross_entropy(torch.cat(logits), torch.cat(labels), ignore_index=-100))


@pytest.mark.parametrize("kind", ["tensor", "dict", "attr", "tuple"])
def test_perplexity_is_exp_of_the_token_mean_over_all_batches(kind):
    model, data = TinyLM(kind).eval(), _tokens()
    ref = _reference_nll(TinyLM("tensor").eval(), data)
    # the per-batch mean of per-batch means differs: the test can tell exact token counting from averaging means
    per_batch = [_reference_nll(TinyLM("tensor").eval(), [b]) for b in data]
    assert abs(sum(per_batch) / len(per_batch) - ref) > 1e-3
    assert score(model, data, "nll") == pytest.approx(ref, rel=1e-6)
    assert score(model, data, "perplexity") == pytest.approx(math.exp(ref), rel=1e-6)


def test_perplexity_labels_from_inputs_with_padding_masked():
    """No labels: the input tokens are the labels; positions with attention_mask 0 are not scored."""
    model = TinyLM().eval()
    d = _tokens()[0]
    mask = torch.ones_like(d["input_ids"])
    mask[:, -3:] = 0
    labels = d["input_ids"].masked_fill(mask == 0, -100)
    with_labels = score(model, [{"input_ids": d["input_ids"], "attention_mask": mask, "labels": labels}], "nll")
    assert score(model, [{"input_ids": d["input_ids"], "attention_mask": mask}], "nll") == with_labels
    unmasked = score(model, [{"input_ids": d["input_ids"]}], "nll")
    assert unmasked != with_labels
    # tuple and bare-tensor batches: (input_ids, labels) and input_ids
    assert score(model, [(d["input_ids"], d["labels"])], "nll") == score(model, [d], "nll")
    assert score(model, [d["input_ids"]], "nll") == unmasked


def test_perplexity_catches_pre_shifted_targets_and_supports_them():
    model = TinyLM().eval()
    seq = torch.randint(0, V, (4, 10), generator=torch.Generator().manual_seed(1))
    x, y = seq[:, :-1], seq[:, 1:]  # character-level style: y[i] = x[i + 1]
    with pytest.raises(aimc.DataError, match="shift=False"):
        score(model, [(x, y)], "perplexity")
    with torch.no_grad():
        ref = F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))
    assert score(model, [(x, y)], perplexity(shift=False)) == pytest.approx(math.exp(float(ref)), rel=1e-6)


@pytest.mark.parametrize("bad,match", [
    (lambda d: {**d, "labels": d["labels"].float()}, "dtype"),
    (lambda d: {**d, "labels": d["labels"].masked_fill(d["labels"] == 3, V)}, "range"),
    (lambda d: {**d, "labels": d["labels"][:, :4]}, "shape|labels"),
])
def test_perplexity_bad_labels_raise_data_error(bad, match):
    d = _tokens()[2]
    d["labels"][0, -1] = 3  # make sure the out-of-range replacement hits a scored position
    with pytest.raises(aimc.DataError, match=match):
        score(TinyLM().eval(), [bad(d)], "perplexity")


def test_top_k_accuracy_against_manual_ranking():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=g)
    y = torch.randint(0, 7, (50,), generator=g)
    ident = nn.Identity()
    rank = (logits > logits.gather(1, y[:, None])).sum(1)  # 0 = label is the argmax
    for k in (1, 2, 5):
        want = float((rank < k).float().mean())
        assert score(ident, [(logits[:20], y[:20]), (logits[20:], y[20:])], f"top{k}") == pytest.approx(want)
    assert score(ident, [(logits, y)], "accuracy") == score(ident, [(logits, y)], "top1")
    assert 0 < score(ident, [(logits, y)], "top1") < score(ident, [(logits, y)], "top2") < 1
    with pytest.raises(aimc.DataError, match="at least 9 classes"):
        score(ident, [(logits, y)], "top9")


def test_dict_batches_and_model_output_objects_for_classification():
    """Hugging Face style: dict batches (labels not passed to the model) and outputs with .logits / ['logits']."""
    class Clf(nn.Module):
        def __init__(self, kind):
            super().__init__()
            torch.manual_seed(0)
            self.lin, self.kind = nn.Linear(6, 4), kind

        def forward(self, pixel_values):  # noqa: ANN001, ANN201
            z = self.lin(pixel_values)
            return SimpleNamespace(logits=z) if self.kind == "attr" else {"logits": z, "hidden": None}

    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(40, 6, generator=g), torch.randint(0, 4, (40,), generator=g)
    plain = score(Clf("attr").lin, [(x, y)], "accuracy")
    for kind in ("attr", "dict"):
        for key in ("labels", "label"):
            assert score(Clf(kind), [{"pixel_values": x, key: y}], "accuracy") == plain


def test_callable_metric_and_metric_object_name_the_column():
    analog = aimc.convert(small_cnn(), aimc.presets.joshi2020())

    def mean_max_logit(out, batch):  # noqa: ANN001, ANN202
        return out.max(1).values.sum(), len(batch[0])

    res = aimc.evaluate(analog, batches(), [25.0], [0, 1], "none", metric=mean_max_logit, progress=False)
    assert list(res.table.columns) == ["model", "compensation", "t_seconds", "seed", "mean_max_logit"]
    assert res.metric.higher_is_better is None
    # same value as computing it by hand on the programmed chip
    aimc.program(analog, seed=1)
    aimc.at_time(analog, 25.0, seed=1, gdc=False)
    with torch.no_grad():
        want = sum(float(analog.eval()(x).max(1).values.sum()) for x, _ in batches()) / 64
    assert res.table["mean_max_logit"].iloc[1] == pytest.approx(want, rel=1e-6)
    m = Metric("loss", lambda out, b: (F.cross_entropy(out, b[1], reduction="sum"), len(b[1])), False)
    s = aimc.evaluate(analog, batches(), [25.0], [0], "none", metric=m, progress=False)
    assert "loss" in s.table and "lower is better" in s.to_markdown()
    with pytest.raises(aimc.DataError, match="returned"):
        score(analog, batches(), lambda out, b: 3.0)


def test_perplexity_through_evaluate_on_an_analog_lm(tmp_path):
    """Per-seed perplexities in the table (each from all tokens of its seed), mean and CI over seeds, names and
    'lower is better' in the summary and plot."""
    analog = aimc.convert(TinyLM("attr"), aimc.presets.joshi2020())
    data = _tokens()
    res = aimc.evaluate(analog, data, [25.0, 3.15e7], [0, 1, 2], "none", metric="perplexity", progress=False)
    t = res.table
    assert list(t.columns) == ["model", "compensation", "t_seconds", "seed", "perplexity"]
    # one cell by hand: program seed 2, one year, no GDC, token mean over all batches
    aimc.program(analog, seed=2)
    aimc.at_time(analog, 3.15e7, seed=2, gdc=False)
    want = math.exp(_reference_nll(analog.eval(), data))
    got = t[(t.seed == 2) & (t.t_seconds == 3.15e7)]["perplexity"].item()
    assert got == pytest.approx(want, rel=1e-6)
    s = res.summary().set_index("t_seconds")
    year = t[t.t_seconds == 3.15e7]["perplexity"]
    assert s.loc[3.15e7, "mean"] == pytest.approx(year.mean()) and s.loc[3.15e7, "n"] == 3
    assert s.loc[3.15e7, "ci95_low"] < year.mean() < s.loc[3.15e7, "ci95_high"]
    md = res.to_markdown()
    assert "mean perplexity" in md and "lower is better" in md and "(%)" not in md
    fig = res.plot(tmp_path / "ppl.png")
    assert "perplexity" in fig.axes[0].get_ylabel() and "lower is better" in fig.axes[0].get_ylabel()
    assert "accuracy" not in fig.axes[0].get_ylabel() and (tmp_path / "ppl.png").stat().st_size > 1000


def test_accuracy_results_keep_their_names():
    a = aimc.convert(small_cnn(), aimc.presets.joshi2020())
    res = aimc.evaluate(a, batches(), [25.0], [0], "none", progress=False)
    assert res.table.columns[-1] == "accuracy" and "mean acc. (%)" in res.to_markdown()
    assert res.plot().axes[0].get_ylabel() == "test accuracy (%)"
    top = aimc.evaluate(a, batches(), [25.0], [0, 1], "none", metric="top3", progress=False)
    assert top.table.columns[-1] == "top3" and "mean top-3 accuracy (%)" in top.to_markdown()
    assert top.table["top3"].iloc[0] > res.table["accuracy"].iloc[0]  # seed 0: top-3 over top-1, same chip
    fig = top.plot()
    assert fig.axes[0].get_ylabel() == "test top-3 accuracy (%)" and fig.axes[0].get_title().startswith("Top-3")


def test_gdc_bn_takes_dict_batches():
    """BN re-estimation takes the same kinds of batches as the evaluation (here dicts with keyword inputs)."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.body = small_cnn()

        def forward(self, pixel_values):  # noqa: ANN001, ANN201
            return {"logits": self.body(pixel_values)}

    data = [{"pixel_values": x, "labels": y} for x, y in batches()]
    calib = [{"pixel_values": x} for x, _ in batches(seed=5)]
    a = aimc.convert(Net(), aimc.presets.joshi2020())
    res = aimc.evaluate(a, data, [3600.0], [0], ("gdc", "gdc+bn"), calib=calib, progress=False)
    b = aimc.convert(small_cnn(), aimc.presets.joshi2020())
    ref = aimc.evaluate(b, batches(), [3600.0], [0], ("gdc", "gdc+bn"), calib=batches(seed=5), progress=False)
    pd.testing.assert_frame_equal(res.table, ref.table)
    assert aimc.recalibrate_bn(a, calib, n_images=20) == 20


@pytest.mark.parametrize("bad", ["f1", "top0", 3, None])
def test_unknown_metrics_raise_config_error(bad):
    with pytest.raises(aimc.ConfigError, match="metric"):
        get_metric(bad)


def test_metric_name_cannot_clash_with_key_columns():
    with pytest.raises(aimc.ConfigError, match="clashes"):
        aimc.evaluate(aimc.convert(small_cnn(), aimc.presets.ideal()), batches(), [1.0], [0], "none",
                      metric=Metric("seed", lambda o, b: (0, 1)), progress=False)
