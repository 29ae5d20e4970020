"""train.precision: what ``auto`` picks on each kind of device, the fp16 GradScaler's skipped
step (run on the CPU, where torch's scaler works the same way), and fp32 bit-for-bit
reproducibility of a whole training run."""

import pytest
import torch
from tiny_runs import reid_config, run_dir_of

from reid_srdl.core import precision as prec
from reid_srdl.engine import assembly
from reid_srdl.engine.loop import TrainingLoop
from reid_srdl.engine.trainer import Trainer


def hardware(monkeypatch, cpu_bf16: bool, cuda_bf16: bool = False):
    """A CPU on which bf16 pays (native and faster) or not; a CUDA GPU with bf16 or not."""
    monkeypatch.setattr(prec, "cpu_bf16_pays", lambda: cpu_bf16)
    monkeypatch.setattr(prec, "cuda_supports_bf16", lambda: cuda_bf16)


@pytest.mark.parametrize(
    "native, bf16_rate, fp32_rate, expected",
    [
        (True, 3.0e11, 1.0e11, True),  # AMX / a fast AVX512-BF16 unit: bf16 3x the fp32 GEMM
        (True, 1.4e11, 1.0e11, False),  # native but under the 1.5x margin
        (True, 1.37e11, 2.59e11, False),  # the measured Xeon without AMX: bf16 slower than fp32
        (False, None, None, False),  # emulated: not even measured (it would take seconds)
    ],
)
def test_bf16_pays_only_where_native_and_measured_faster(monkeypatch, native, bf16_rate, fp32_rate, expected):
    rates = {torch.bfloat16: bf16_rate, torch.float32: fp32_rate}
    measured = []

    def gemm_rate(dtype):
        measured.append(dtype)
        return rates[dtype]

    monkeypatch.setattr(prec, "cpu_supports_bf16", lambda: native)
    monkeypatch.setattr(prec, "gemm_rate", gemm_rate)
    prec.cpu_bf16_pays.cache_clear()
    try:
        assert prec.cpu_bf16_pays() is expected
        assert sorted(map(str, measured)) == (["torch.bfloat16", "torch.float32"] if native else [])
    finally:
        prec.cpu_bf16_pays.cache_clear()


def test_gemm_rate_is_flops_over_the_median_time(monkeypatch):
    clock = iter([0.0, 0.5, 1.0, 1.1, 2.0, 2.2])  # three products: 0.5 s, 0.1 s, 0.2 s -> median 0.2 s
    monkeypatch.setattr(prec.time, "perf_counter", lambda: next(clock))
    assert prec.gemm_rate(torch.float32, n=4, repeats=3) == pytest.approx(2 * 4**3 / 0.2)


@pytest.mark.parametrize(
    "cpu_bf16, cuda_bf16, device, expected",
    [
        (True, False, "cpu", "bf16"),  # AVX512-BF16 / AMX
        (False, False, "cpu", "fp32"),  # emulated bf16 is slower than fp32
        (False, True, "cuda", "bf16"),
        (False, False, "cuda", "fp16"),  # a GPU without bf16: fp16 + GradScaler
        (True, False, "mps", "fp32"),
    ],
)
def test_auto_resolves_to_what_the_hardware_runs_natively(monkeypatch, cpu_bf16, cuda_bf16, device, expected):
    hardware(monkeypatch, cpu_bf16, cuda_bf16)
    assert prec.resolve_precision("auto", device) == expected


@pytest.mark.parametrize("cpu_bf16", [True, False])
def test_explicit_precisions_are_kept_whatever_the_cpu(monkeypatch, cpu_bf16):
    hardware(monkeypatch, cpu_bf16)
    assert prec.resolve_precision("fp32", "cpu") == "fp32"
    assert prec.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(prec.PrecisionError, match=r"train.precision 'fp16' needs a CUDA device"):
        prec.resolve_precision("fp16", "cpu", "train.precision")
    with pytest.raises(prec.PrecisionError, match=r"one of fp32, bf16, fp16, auto; got 'half'"):
        prec.resolve_precision("half", "cpu")


def test_training_precision_auto_is_channels_last_and_fp32_stays_nchw(monkeypatch):
    cpu = torch.device("cpu")
    hardware(monkeypatch, True)
    assert assembly.training_precision("auto", False, cpu) == assembly.Precision("bf16", True)
    assert assembly.training_precision("fp32", False, cpu) == assembly.Precision("fp32", False)
    hardware(monkeypatch, False)
    assert assembly.training_precision("auto", False, cpu) == assembly.Precision("fp32", True)
    assert assembly.training_precision("bf16", False, cpu) == assembly.Precision("bf16", False)
    # train.channels_last=true asks for it whatever the precision.
    assert assembly.training_precision("fp32", True, cpu) == assembly.Precision("fp32", True)
    assert not assembly.Precision("bf16", True).uses_scaler and assembly.Precision("fp16", False).uses_scaler


def test_auto_run_records_the_precision_it_used(monkeypatch, tiny_market_root, tmp_path):
    hardware(monkeypatch, False)
    cfg = reid_config(tiny_market_root, tmp_path, "train.precision=auto", "method.name=vanilla", "train.epochs=1")
    trainer = Trainer(cfg, run_dir_of(cfg))
    assert trainer.precision == assembly.Precision("fp32", True)
    first = next(p for p in trainer.method.trainable.parameters() if p.dim() == 4)
    assert first.is_contiguous(memory_format=torch.channels_last) and not first.is_contiguous()


class _ScalerLoop(TrainingLoop):
    """The loop's optimizer_step alone, with an enabled GradScaler (what fp16 runs use)."""

    def __init__(self, net, init_scale):
        self.optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=1000)


def test_grad_scaler_skips_an_overflowing_step_and_halves_the_scale():
    net = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
    loop = _ScalerLoop(net, init_scale=2.0**10)
    x = torch.tensor([[1.0, 1.0, 1.0]])

    # An infinite gradient: the step is skipped, the weights stay, the scale is halved (backoff 0.5).
    overflow = (net(x) * torch.tensor(float("inf"))).sum()
    assert loop.optimizer_step(overflow) is False
    assert torch.equal(net.weight, torch.tensor([[1.0, 2.0, 3.0]]))
    assert loop.scaler.get_scale() == 2.0**9

    # A finite loss: the unscaled gradient (= x) is applied, w <- w - lr * x.
    assert loop.optimizer_step(net(x).sum()) is True
    assert torch.allclose(net.weight, torch.tensor([[0.5, 1.5, 2.5]]), atol=0, rtol=0)
    assert loop.scaler.get_scale() == 2.0**9


@pytest.mark.slow
def test_fp32_training_is_bit_for_bit_reproducible(tiny_market_root, tmp_path):
    def trained(name, *extra):
        cfg = reid_config(tiny_market_root, tmp_path / name, "train.epochs=2", "method.name=srdl", *extra)
        trainer = Trainer(cfg, run_dir_of(cfg))
        trainer.fit()
        return trainer.method.trainable.state_dict()

    first, second = trained("a"), trained("b")
    assert first.keys() == second.keys()
    for key, value in first.items():
        assert torch.equal(value, second[key]), key
    # Not vacuous: another seed ends elsewhere.
    other = trained("c", "train.seed=1")
    assert any(not torch.equal(v, other[k]) for k, v in first.items() if v.is_floating_point())


def test_result_table_header_names_the_precision_and_layout_used():
    from reid_srdl.engine.evaluate import results_table

    summary = {
        "task": "classification",
        "method": "srdl",
        "model": "resnet8",
        "data": "fashion_mnist",
        "epochs": 4,
        "train_seconds": 12.4,
        "train_flops": 2.5e12,
        "results": {"deployed": {"test": {"top1": 0.8512, "top5": 0.99}}},
    }
    title = results_table(dict(summary, precision="fp32", channels_last=True)).splitlines()[1]
    assert title == "srdl | resnet8 on fashion_mnist | 4 epochs | fp32 channels-last | train 12s, 2.500 TFLOPs"
    assert " | bf16 | " in results_table(dict(summary, precision="bf16", channels_last=False))
