"""save/load: safetensors + config metadata; device state round-trips exactly; explicit config changes; errors."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file

import aimc
from aimc.io import read_metadata
from tests.helpers import small_cnn


def _drifted(cfg=None, seed=0):
    a = aimc.convert(small_cnn(), cfg or aimc.presets.joshi2020()).eval()
    aimc.program(a, seed=seed)
    aimc.at_time(a, 86400.0, seed=seed)
    return a


@pytest.mark.parametrize("preset", ["joshi2020", "aihwkit_default"])
def test_round_trip_restores_device_state_and_outputs(tmp_path, preset):
    a = _drifted(aimc.presets.get(preset))
    x = torch.randn(4, 3, 8, 8)
    path = tmp_path / "m.safetensors"
    aimc.save(a, path)
    b = aimc.load(path, model=small_cnn()).eval()
    assert b.aimc_config == a.aimc_config
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], rtol=0, atol=0, equal_nan=True, msg=k)
    aimc.at_time(a, 86400.0, seed=0)  # same call on both ⇒ same read and output noise streams
    aimc.at_time(b, 86400.0, seed=0)
    assert torch.equal(a(x), b(x))


def test_loaded_model_is_ready_without_at_time(tmp_path):
    a = _drifted()
    x = torch.randn(4, 3, 8, 8)
    y = a(x)
    aimc.save(a, tmp_path / "m.safetensors")
    b = aimc.load(tmp_path / "m.safetensors", model=small_cnn()).eval()
    assert torch.equal(b(x), y)  # ideal periphery: the stored at_time call is recomputed bit-identically


def test_state_dict_round_trip_into_fresh_conversion():
    a = _drifted()
    b = aimc.convert(small_cnn(), aimc.presets.joshi2020())
    b.load_state_dict(a.state_dict())
    sa, sb = a[0].analog.device_state(a[0]._matrix()), b[0].analog.device_state(b[0]._matrix())
    assert torch.equal(sb.g_prog, sa.g_prog) and torch.equal(sb.nu, sa.nu)


def test_rebuild_architecture_from_zoo_name(tmp_path):
    from aimc.models import digits_cnn

    a = aimc.convert(digits_cnn(), aimc.presets.joshi2020())
    aimc.program(a, seed=1)
    aimc.save(a, tmp_path / "d.safetensors", arch="digits_cnn")
    b = aimc.load(tmp_path / "d.safetensors")
    assert torch.equal(next(iter(b.state_dict().values())), next(iter(a.state_dict().values())))
    assert read_metadata(tmp_path / "d.safetensors")["arch"] == "digits_cnn"


def test_loading_into_another_config_is_explicit(tmp_path, caplog):
    a = _drifted()
    aimc.save(a, tmp_path / "m.safetensors")
    other = dataclasses.replace(aimc.presets.joshi2020(), mapping=aimc.MappingConfig(18, 8, "tile"))
    b = aimc.load(tmp_path / "m.safetensors", model=small_cnn(), config=other)
    assert b.aimc_config == other and not b[0].analog.programmed
    assert torch.equal(b[0].weight, a[0].weight)
    assert "without the programmed device state" in caplog.text
    c = aimc.load(tmp_path / "m.safetensors", model=small_cnn())  # no config: the stored one, state kept
    assert c.aimc_config == a.aimc_config and c[0].analog.programmed


def test_file_errors(tmp_path):
    with pytest.raises(aimc.FileFormatError, match="does not exist"):
        aimc.load(tmp_path / "nope.safetensors")
    a = _drifted()
    p = tmp_path / "m.safetensors"
    aimc.save(a, p)
    data = p.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(aimc.FileFormatError):
        aimc.load(tmp_path / "trunc.safetensors", model=small_cnn())
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(aimc.FileFormatError, match="not a readable"):
        aimc.load(tmp_path / "junk.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(aimc.FileFormatError, match="not an aimc model"):
        aimc.load(tmp_path / "foreign.safetensors")
    with pytest.raises(aimc.FileFormatError, match="rebuild"):
        aimc.load(p)  # saved without arch and no model given
    with pytest.raises(aimc.StateError, match="converted"):
        aimc.save(small_cnn(), tmp_path / "x.safetensors")
    meta = read_metadata(p)
    assert json.loads(meta["config"])["name"] == "joshi2020"
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temp files


def test_save_is_byte_identical_for_the_same_model(tmp_path) -> None:  # noqa: ANN001
    import hashlib

    import aimc
    from torch import nn

    model = aimc.convert(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), aimc.presets.joshi2020())
    aimc.program(model, seed=1)
    digests = set()
    for k in range(6):  # safetensors orders several metadata entries by hash: one entry keeps files identical
        aimc.save(model, tmp_path / f"m{k}.safetensors")
        digests.add(hashlib.sha256((tmp_path / f"m{k}.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1


def test_files_with_separate_metadata_entries_still_load(tmp_path) -> None:  # noqa: ANN001
    import json

    import aimc
    import torch
    from safetensors.torch import save_file
    from torch import nn

    from aimc.io import FORMAT

    model = aimc.convert(nn.Sequential(nn.Linear(4, 3)), aimc.presets.joshi2020())
    aimc.program(model, seed=2)
    meta = {"format": FORMAT, "config": json.dumps(model.aimc_config.to_dict()), "analog_layers": json.dumps(["0"]),
            "arch": "", "torch": torch.__version__}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "old.safetensors", metadata=meta)
    back = aimc.load(tmp_path / "old.safetensors", model=nn.Sequential(nn.Linear(4, 3)))
    torch.testing.assert_close(back[0].analog.device_state(back[0].weight).g_prog,
                               model[0].analog.device_state(model[0].weight).g_prog)


def test_loading_into_another_architecture_names_every_difference(tmp_path):
    """Issue 21.2: torch's raw `RuntimeError: size mismatch` became a FileFormatError listing missing, unexpected and
    mismatched keys (with both shapes), like safetensors' load_model(strict=True); the model is left untouched."""
    from torch import nn

    a = _drifted()
    p = tmp_path / "m.safetensors"
    aimc.save(a, p, arch="tests.helpers:small_cnn")
    other = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(),
                          nn.Linear(16, 5))  # wider first conv, no layers 3..9
    with pytest.raises(aimc.FileFormatError) as e:
        aimc.load(p, model=other)
    msg = str(e.value)
    assert "does not match the architecture" in msg and "Nothing was loaded" in msg
    assert "0.weight (file (8, 3, 3, 3), model (16, 3, 3, 3))" in msg
    assert "1.running_mean (file (8,), model (16,))" in msg
    assert "missing key(s): 4.weight" in msg  # the Linear at index 4 is not in the file
    assert "unexpected key(s): 3.analog.*, 3.bias, 3.weight, 7.analog.*" in msg and "9.weight" in msg
    assert "'tests.helpers:small_cnn'" in msg  # says which architecture the file wants
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(aimc.FileFormatError):
        aimc.load(p, model=other)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in before.items())
    b = aimc.load(p)  # rebuilt from arch: loads
    assert torch.equal(b[0].weight, a[0].weight)


def test_arch_that_needs_a_config_is_stored_and_rebuilt(tmp_path):
    """Issue 21.7: an architecture class built from a config object (Hugging Face style) used to fail at load with a
    raw TypeError (missing 'config'); its config is now stored in the metadata and the class rebuilt from it."""
    from tests.config_model import TinyConfig, TinyConfigNet

    a = aimc.convert(TinyConfigNet(TinyConfig(width=5, classes=2)), aimc.presets.joshi2020()).eval()
    aimc.program(a, seed=3)
    aimc.at_time(a, 3600.0, seed=3)
    p = tmp_path / "c.safetensors"
    aimc.save(a, p, arch="tests.config_model:TinyConfigNet")
    assert json.loads(read_metadata(p)["arch_config"]) == {"width": 5, "classes": 2}
    b = aimc.load(p).eval()
    assert isinstance(b, TinyConfigNet) and b.config == TinyConfig(width=5, classes=2)
    x = torch.randn(4, 6)
    assert torch.equal(a(x), b(x))


def test_arch_kwargs_are_stored_and_missing_arguments_are_a_clear_error_at_save(tmp_path):
    from tests.config_model import mlp

    a = aimc.convert(mlp(7), aimc.presets.joshi2020()).eval()
    aimc.program(a, seed=1)
    aimc.at_time(a, 3600.0, seed=1)
    with pytest.raises(aimc.ConfigError, match=r"needs argument\(s\) \['width'\].*arch_kwargs=\{'width': \.\.\.\}"):
        aimc.save(a, tmp_path / "m.safetensors", arch="tests.config_model:mlp")
    assert not (tmp_path / "m.safetensors").exists()
    with pytest.raises(aimc.ConfigError, match="JSON-serialisable"):
        aimc.save(a, tmp_path / "m.safetensors", arch="tests.config_model:mlp", arch_kwargs={"width": {1, 2}})
    with pytest.raises(aimc.ConfigError, match="cannot import"):
        aimc.save(a, tmp_path / "m.safetensors", arch="tests.config_model:nope")
    aimc.save(a, tmp_path / "m.safetensors", arch="tests.config_model:mlp", arch_kwargs={"width": 7})
    b = aimc.load(tmp_path / "m.safetensors").eval()
    x = torch.randn(3, 6)
    assert torch.equal(a(x), b(x)) and b.aimc_arch_kwargs == {"width": 7}
    aimc.save(b, tmp_path / "again.safetensors")  # the loaded model remembers how it was built
    assert json.loads(read_metadata(tmp_path / "again.safetensors")["arch_kwargs"]) == {"width": 7}


def test_a_zoo_model_with_kwargs_from_an_experiment_is_loadable_without_model(tmp_path):
    from aimc.experiment.build import build_model
    from aimc.experiment.spec import ModelSpec

    m = build_model(ModelSpec(name="mnist_mlp", kwargs={"hidden": 12}))
    a = aimc.convert(m, aimc.presets.joshi2020())
    aimc.save(a, tmp_path / "z.safetensors")
    b = aimc.load(tmp_path / "z.safetensors")
    assert {k: v.shape for k, v in b.state_dict().items()} == {k: v.shape for k, v in a.state_dict().items()}


def test_a_real_hugging_face_model_round_trips(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16, max_position_embeddings=16)
    torch.manual_seed(0)
    a = aimc.convert(transformers.BertModel(cfg), aimc.presets.joshi2020()).eval()
    aimc.program(a, seed=0)
    aimc.at_time(a, 3600.0, seed=0)
    aimc.save(a, tmp_path / "bert.safetensors", arch="transformers:BertModel")
    b = aimc.load(tmp_path / "bert.safetensors").eval()
    ids = torch.randint(0, 40, (2, 7))
    assert torch.equal(a(ids).last_hidden_state, b(ids).last_hidden_state)
