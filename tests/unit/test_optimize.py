"""carbond.optimize on CPU torch: what each technique reports is what the resulting model holds."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from carbond import client  # noqa: E402
from carbond.errors import OptimizeError, UsageError  # noqa: E402
from carbond.optimize import metrics, techniques  # noqa: E402
from carbond.optimize.compare import run_comparison  # noqa: E402
from tests.fakes.daemon import ENERGY_J, FakeDaemon  # noqa: E402


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in ("CARBOND_RUN", "CARBOND_SOCKET", "CARBOND_CONFIG", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", client.INPROCESS_ENV):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("CARBOND_STORE", f"sqlite://{tmp_path / 'c.db'}")
    monkeypatch.setenv("CARBOND_SENSORS_NVML", "false")
    monkeypatch.setattr(client, "_socket_cache", {})
    torch.manual_seed(0)
    return tmp_path


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)).eval()


class Convnet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.conv2 = nn.Conv2d(8, 16, 3)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(x, 1))


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def prunable_weights(model: nn.Module, kinds=techniques.PRUNABLE) -> list[torch.Tensor]:
    return [p for _, _, _, p in techniques._weights(model, kinds)]


# --- pruning ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [mlp, Convnet, Recurrent])
@pytest.mark.parametrize("amount", [0.1, 0.3, 0.77])
def test_global_pruning_reports_the_zeros_it_left(make, amount):
    model = make()
    pruned, applied = techniques.prune_global(model, amount)
    weights = prunable_weights(pruned)
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert applied.pruned_elements == total and applied.zero_elements == zeros
    assert applied.sparsity == zeros / total
    assert abs(applied.sparsity - amount) <= 1.0 / total + 1e-12  # L1Unstructured removes round(amount × n)
    assert not any(int((w == 0).sum()) for w in prunable_weights(model))  # the caller's model is untouched
    # permanent: plain parameters, no mask, no reparametrization, no hook
    for mod in pruned.modules():
        assert not any(n.endswith("_orig") for n, _ in mod.named_parameters(recurse=False))
        assert not any(n.endswith("_mask") for n, _ in mod.named_buffers(recurse=False))
        assert not mod._forward_pre_hooks


def test_global_pruning_equals_torch_global_unstructured_made_permanent():
    from torch.nn.utils import prune

    model = Convnet()
    reference = copy.deepcopy(model)
    params = [(reference.conv1, "weight"), (reference.conv2, "weight"), (reference.fc, "weight")]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.4)
    for mod, name in params:
        prune.remove(mod, name)
    pruned, _ = techniques.prune_global(model, 0.4)
    theirs = reference.state_dict()  # (prune.remove re-registers the weight: same tensors, another order)
    assert sorted(theirs) == sorted(pruned.state_dict())
    for name, ours in pruned.state_dict().items():
        assert torch.equal(ours, theirs[name]), name


def test_channel_pruning_removes_whole_channels_but_not_the_output_layer():
    model = Convnet()
    pruned, applied = techniques.prune_channels(model, 0.25)
    for layer in (pruned.conv1, pruned.conv2):
        rows = layer.weight.reshape(layer.weight.shape[0], -1)
        dead = (rows == 0).all(dim=1)
        assert int(dead.sum()) == round(0.25 * layer.weight.shape[0])
        assert torch.all(layer.bias[dead] == 0)  # a removed channel outputs 0, not its bias
        assert not torch.any(rows[~dead] == 0)
    assert torch.equal(pruned.fc.weight, model.fc.weight)  # the model's outputs keep every channel
    weights = [pruned.conv1.weight, pruned.conv2.weight]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert applied.sparsity == zeros / sum(w.numel() for w in weights)
    assert applied.layers == {"Conv2d": 2}
    out = pruned.conv1(torch.randn(2, 1, 8, 8))
    dead1 = (pruned.conv1.weight.reshape(8, -1) == 0).all(dim=1)
    assert torch.all(out[:, dead1] == 0)


def test_pruning_a_torchscript_model_gives_the_same_weights_as_the_python_one():
    model = mlp()
    eager, a = techniques.prune_global(model, 0.5)
    scripted, b = techniques.prune_global(torch.jit.script(model), 0.5)
    assert techniques.is_scripted(scripted) and a.sparsity == b.sparsity
    for (name, p), q in zip(eager.state_dict().items(), scripted.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    x = torch.randn(4, 784)
    assert torch.allclose(eager(x), scripted(x))


# --- quantization and what is counted -----------------------------------------------------------------


def test_dynamic_int8_size_is_smaller_and_equals_the_saved_bytes(tmp_path: Path):
    model = mlp()
    quantized, applied = techniques.quantize_dynamic(model)
    assert applied.layers == {"Linear": 2}
    size_q = len(metrics.serialized(quantized))
    size_f = len(metrics.serialized(model))
    assert size_q < size_f / 3  # int8 weights: about a quarter
    path = tmp_path / "q.pt"
    assert metrics.save(quantized, path) == size_q == path.stat().st_size
    # the saved bytes are the whole model: a fresh quantized model loads them and answers the same
    fresh, _ = techniques.quantize_dynamic(mlp())
    fresh.load_state_dict(torch.load(path, weights_only=False))
    x = torch.randn(3, 784)
    assert torch.equal(fresh(x), quantized(x))


@pytest.mark.parametrize("make, example", [(mlp, (2, 784)), (Recurrent, (2, 5, 16)), (Convnet, (2, 1, 8, 8))])
def test_quantized_models_keep_their_parameter_count(make, example):
    model = make()
    n = sum(p.numel() for p in model.parameters())
    assert metrics.count_params(model) == (n, n)
    x = torch.randn(*example)
    variants = ["quantized-static-int8"] if make is Convnet else ["quantized-int8"]
    for name in variants:
        quantized, _, _ = techniques.apply_variant(model, name, example=x, calibration=[torch.randn(*example)] * 3)
        assert sum(p.numel() for p in quantized.parameters()) < n  # .parameters() misses packed int8 weights
        total, nonzero = metrics.count_params(quantized)
        assert total == n
        # weights that round to 0 in int8 are zero: counted from the dequantized values
        expected_nonzero = sum(int(torch.count_nonzero(t.dequantize() if t.is_quantized else t))
                               for t in metrics.weight_tensors(quantized))
        assert nonzero == expected_nonzero <= n


def test_static_int8_conv_model_is_int8_and_close_to_float():
    model = Convnet()
    calibration = [torch.randn(8, 1, 8, 8) for _ in range(4)]
    quantized, applied = techniques.quantize_static(model, calibration[0], calibration)
    layers = techniques.quantized_layers(quantized)
    assert sum(layers.values()) == 3 and applied.technique == "quantize-static"
    x = torch.randn(8, 1, 8, 8)
    ref = model(x)
    assert (quantized(x) - ref).abs().max() < 0.1 * ref.abs().max()
    assert len(metrics.serialized(quantized)) < len(metrics.serialized(model))


def test_calibration_given_as_one_tensor_is_one_batch():
    model = mlp()
    batch = torch.randn(16, 784)
    _, applied = techniques.quantize_static(model, batch, batch)  # not 16 batches of one unbatched sample
    assert "1 calibration batch)" in applied.summary


def test_scripted_dynamic_int8_counts_the_packed_weights():
    model = mlp()
    quantized, applied = techniques.quantize_dynamic(torch.jit.script(model))
    assert applied.layers == {"Linear": 2} and not quantized.state_dict()  # the weights live in the graph
    assert metrics.count_params(quantized)[0] == sum(p.numel() for p in model.parameters())
    assert len(metrics.serialized(quantized)) < len(metrics.serialized(torch.jit.script(model))) / 3


# --- FLOPs, latency -----------------------------------------------------------------------------------


def test_flops_of_a_known_mlp_equal_the_hand_count():
    batch = 32
    assert metrics.count_flops(mlp(), torch.randn(batch, 784)) == 2 * batch * (784 * 256 + 256 * 10)


def test_flops_of_a_convnet_equal_the_hand_count():
    batch = 4
    conv1 = 8 * 6 * 6 * (1 * 3 * 3)  # out channels × out positions × multiply-adds each
    conv2 = 16 * 4 * 4 * (8 * 3 * 3)
    fc = 16 * 4 * 4 * 10
    assert metrics.count_flops(Convnet(), torch.randn(batch, 1, 8, 8)) == 2 * batch * (conv1 + conv2 + fc)


def test_quantized_flops_are_those_of_the_float_model_and_say_so():
    model = mlp()
    x = torch.randn(8, 784)
    quantized, _, float_model = techniques.apply_variant(model, "pruned-20+quantized-int8", example=x)
    assert metrics.count_flops(quantized, x) == 0  # the counter does not see int8 kernels
    eff = metrics.efficiency(quantized, x, flops_from=float_model)
    assert eff.flops == metrics.count_flops(model, x) and eff.flops_counted_on == "the float model it was quantized from"


def test_latency_times_at_least_the_batches_asked_and_percentiles_are_nearest_rank():
    lat = metrics.time_forward(mlp(), torch.randn(16, 784), batches=7, warmup=2)
    assert lat.batches == 7 and lat.batch_size == 16
    assert 0 < lat.median_ms <= lat.p95_ms
    assert metrics.percentile([5, 1, 4, 2, 3], 50) == 3
    assert metrics.percentile(list(range(1, 101)), 95) == 95
    assert metrics.percentile([7], 95) == 7


# --- bad input ----------------------------------------------------------------------------------------


def test_unsupported_models_get_errors_naming_the_layer_types():
    convs = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    with pytest.raises(OptimizeError) as e:
        techniques.quantize_dynamic(convs)
    assert "Linear, LSTM, GRU" in str(e.value) and "Conv2d ×2, ReLU" in str(e.value)
    with pytest.raises(OptimizeError, match=r"takes Linear, Bilinear, Conv1d.*its layers: ReLU, Tanh"):
        techniques.prune_global(nn.Sequential(nn.ReLU(), nn.Tanh()), 0.5)
    with pytest.raises(OptimizeError, match=r"other than the last.*has 1 such layer"):
        techniques.prune_channels(nn.Sequential(nn.Linear(4, 4)), 0.5)
    with pytest.raises(OptimizeError, match=r"static int8 quantization takes Linear, Conv1d.*its layers: Embedding"):
        techniques.quantize_static(nn.Sequential(nn.Embedding(10, 4)), torch.zeros(2, 3, dtype=torch.long), [])
    with pytest.raises(OptimizeError, match=r"TorchScript model takes Linear layers.*Conv2d"):
        techniques.quantize_dynamic(torch.jit.script(convs))


def test_static_int8_errors_untraceable_model_no_calibration_and_bad_batches():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) if x.sum() > 0 else x

    x = torch.randn(2, 4)
    with pytest.raises(OptimizeError, match=r"cannot be traced \(TraceError.*quantized-int8 \(dynamic\) needs no tracing"):
        techniques.quantize_static(Branchy(), x, [x])
    with pytest.raises(OptimizeError, match="needs calibration inputs"):
        techniques.quantize_static(mlp(), torch.randn(2, 784), None)
    with pytest.raises(OptimizeError, match="gave no batch"):
        techniques.quantize_static(mlp(), torch.randn(2, 784), [])
    with pytest.raises(OptimizeError, match="calibration batch 1 does not fit"):
        techniques.quantize_static(mlp(), torch.randn(2, 784), [torch.randn(2, 784), torch.randn(2, 5)])
    with pytest.raises(OptimizeError, match=r"traces the Python model with torch\.fx; a TorchScript model takes quantized-int8"):
        techniques.quantize_static(torch.jit.script(mlp()), torch.randn(2, 784), [torch.randn(2, 784)])


@pytest.mark.parametrize("name, message", [
    ("pruned-0", "between 0 and 100"), ("pruned-100", "between 0 and 100"), ("prune-30", "unknown variant"),
    ("quantized-int4", "unknown variant"), ("quantized-int8+pruned-30", "before any quantization"),
    ("pruned-10+pruned-20", "one pruning"), ("quantized-int8+quantized-static-int8", "one quantization"), ("", "a name"),
])
def test_bad_variant_names_say_the_grammar(name, message):
    with pytest.raises(OptimizeError, match=message):
        techniques.parse_variant(name)
    assert issubclass(OptimizeError, UsageError)  # the CLI exits 2


@pytest.mark.parametrize("amount", [0, 1, 1.5, -0.2, True, "0.3"])
def test_bad_pruning_amounts(amount):
    with pytest.raises(OptimizeError, match="fraction between 0 and 1"):
        techniques.prune_global(mlp(), amount)


def test_parse_variant_steps():
    v = techniques.parse_variant("Pruned-Channels-12.5+quantized-static-int8")
    assert v.steps == (techniques.Step("prune-channels", 0.125), techniques.Step("quantize-static"))
    assert v.quantized and not techniques.parse_variant("baseline").steps


# --- compare: nothing runs before the input is checked; runs are tagged and carry their work -----------


@pytest.fixture
def fake(tmp_path: Path):
    daemon = FakeDaemon(str(tmp_path / "d.sock"))
    yield daemon
    daemon.close()


def test_input_shape_mismatch_fails_before_any_benchmark_or_run(fake: FakeDaemon):
    with pytest.raises(OptimizeError) as e:
        run_comparison(mlp(), torch.randn(32, 785), ["baseline", "quantized-int8"], socket=fake.path, min_time_s=0)
    assert "shape (32, 785) float32" in str(e.value) and "in_features=784" in str(e.value)
    assert "mat1 and mat2 shapes cannot be multiplied" in str(e.value)
    assert fake.calls == []  # no run was started
    with pytest.raises(OptimizeError, match="Linear, LSTM"):  # a variant the model cannot take: also before any run
        run_comparison(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.randn(1, 1, 5, 5), ["baseline", "quantized-int8"],
                       socket=fake.path, min_time_s=0)
    assert fake.calls == []


def test_compare_runs_each_variant_as_a_tagged_inference_run_with_its_items(fake: FakeDaemon):
    x = torch.randn(16, 784)
    rows, notes = run_comparison(mlp(), x, ["baseline", "pruned-50", "quantized-int8"], eval_fn=lambda m: 0.5,
                                 socket=fake.path, n_batches=6, min_time_s=0, job="opt", project="p", tags={"model": "mlp"})
    starts = fake.ops_seen("run.start")
    assert [s["tags"] for s in starts] == [{"model": "mlp", "variant": v} for v in ("baseline", "pruned-50", "quantized-int8")]
    assert {(s["job"], s["project"], s["phase"]) for s in starts} == {("opt", "p", "inference")}
    for row, run in zip(rows, fake.runs.values(), strict=True):
        assert run["units"] == {"items": row["items"], "batches": row["batches"]} and row["items"] == 16 * row["batches"]
        assert run["metrics"] == {"accuracy": 0.5} and row["run"] == run["run"]
        assert row["energy_j_per_item"] == pytest.approx(ENERGY_J / row["items"])
        assert row["measured_by"] == "daemon"
    assert rows[1]["sparsity"] == pytest.approx(0.5 * 203_264 / 203_530, abs=1e-5)
    assert rows[2]["size_change_pct"] < -70 and rows[0]["size_change_pct"] == 0
    assert rows[1]["accuracy_delta"] == 0.0
    assert any("report compare --per items --run" in n for n in notes)


def test_eval_fn_must_return_numbers(fake: FakeDaemon):
    with pytest.raises(OptimizeError, match="must return a number"):
        run_comparison(mlp(), torch.randn(2, 784), ["baseline"], eval_fn=lambda m: "good", socket=fake.path, min_time_s=0)


def test_optimize_cli_parser_does_not_load_torch():
    import subprocess

    code = ("import sys; from carbond.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
