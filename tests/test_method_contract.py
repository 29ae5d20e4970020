"""The contract of every registered method (parametrised over ``METHODS.list()``, as timm's model
tests are over ``list_models()``): built from its config section, its forward logs the terms
of tests/method_contracts.py and they add up to the loss by the method's formula, gradients
reach every trainable parameter, a few SGD steps lower the loss, the deployed network is a
plain rebuildable Net, the FLOP counter sees what the forward runs, a save/load of its state
continues bit-exactly, its extra evaluation models evaluate, and a tiny run through
reid-train (plain CE and the BoT recipe) logs terms that add up.

Method-specific checks (hand computations of each paper's terms, structure, options) stay in
tests/test_methods*.py."""

import json
import math
import os

import pytest
import torch
from method_contracts import CONTRACTS, contract_of, expected_loss, logged_terms, overrides
from method_helpers import spread_classifiers
from tiny_runs import NETS, NUM_CLASSES, TinySet, batch, stage_context

from reid_srdl import load_config
from reid_srdl.core import checkpoint as ckpt
from reid_srdl.engine.flops import parameter_count, training_forward_flops
from reid_srdl.methods import METHODS, Recipe, build_method
from reid_srdl.models import Net, build_model
from reid_srdl.models.model_file import load_model_file

pytestmark = pytest.mark.usefixtures("single_thread")

REGISTERED = METHODS.list()
# A BoT-style recipe: every hard-label CE label-smoothed, a weighted batch-hard triplet.
BOT = Recipe(label_smoothing=0.1, triplet_weight=0.5, triplet_margin=0.3)
EPOCHS = 4


def test_every_registered_method_has_a_contract():
    missing = [name for name in REGISTERED if name not in CONTRACTS]
    assert missing == [], f"registered methods without an entry in tests/method_contracts.py: {missing}"
    assert sorted(CONTRACTS) == sorted(REGISTERED), "an entry names no registered method"


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """One frozen teacher file per net (of the student's architecture), for methods that need one."""
    folder = tmp_path_factory.mktemp("teachers")
    paths = {}
    for net, (factory, _shape) in NETS.items():
        torch.manual_seed(5)
        paths[net] = str(folder / f"{net}.pt")
        ckpt.save_model_file(factory(), paths[net])
    return paths


def config_of(name, net, teachers):
    """The config of method ``name`` at its contract options (with a teacher of ``net`` if it needs one)."""
    teacher = [f"method.{name}.teacher={teachers[net]}", f"method.{name}.teacher_model={net}"]
    extra = teacher if contract_of(name).teacher else []
    return load_config(None, [*overrides(name), *extra])


def build(name, net, teachers, seed=0, recipe=None):
    """Method ``name`` built from its config section at its contract options, on net ``net``."""
    torch.manual_seed(seed)
    kwargs = {} if recipe is None else {"recipe": recipe}
    section = config_of(name, net, teachers).method
    return build_method(section, NETS[net][0], total_epochs=EPOCHS, num_classes=NUM_CLASSES, seed=seed, **kwargs)


def tiny_set(net):
    return TinySet(NETS[net][1], n=10)


def stage_ends(method):
    """The epochs after which the trainer calls on_stage_end (every stage but the last)."""
    ends, epoch = [], 0
    for spec in method.stages()[:-1]:
        epoch += spec.epochs
        ends.append((len(ends), epoch))
    return ends


def into_last_stage(method, run_dir, data):
    """Run the stage-end hooks as the trainer would, up to the last stage; returns the context."""
    ctx = stage_context(run_dir, data)
    for stage, epoch in stage_ends(method):
        method.on_stage_end(stage, ctx)
        method.set_epoch(epoch)
    return ctx


def scalars(out):
    return {k: float(v.detach()) for k, v in out.items() if k != "logits"}


# ----------------------------------------------------------------------------- build
@pytest.mark.parametrize("name", REGISTERED)
def test_built_from_its_config_section(name, teachers):
    m = build(name, "resnet8", teachers)
    assert isinstance(m, METHODS.get(name))
    # The method got its config section, whose contract options differ from the defaults.
    assert m.options == config_of(name, "resnet8", teachers).method.options_of(name)
    default = type(m.options)()
    for option in contract_of(name).options:
        key = option.split("=")[0]
        assert getattr(m.options, key) != getattr(default, key), key
    assert isinstance(m.trainable, torch.nn.Module) and sum(s.epochs for s in m.stages()) == EPOCHS


# ----------------------------------------------------------------------------- forward, loss
@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("recipe", ["plain", "bot"])
@pytest.mark.parametrize("name", REGISTERED)
def test_logged_terms_add_up_to_the_loss(name, recipe, net, teachers, tmp_path):
    """In every stage: the logged terms are the table's (all of them in the last stage), the loss
    is the table's formula of them, logits and accuracy have their shapes."""
    m = build(name, net, teachers, recipe=BOT if recipe == "bot" else None)
    spread_classifiers(m)  # logits away from 0: every distillation term non-trivial
    data = tiny_set(net)
    ctx = stage_context(tmp_path, data)
    x, y, idx = data.x, data.y, torch.arange(len(data))  # two images of each of 5 classes
    ends = dict(stage_ends(m))
    table = contract_of(name).terms | ({"triplet"} if recipe == "bot" else set())
    for stage in range(len(m.stages())):
        m.train()
        out = m(x, y, idx)
        assert out["loss"].dim() == 0 and math.isfinite(out["loss"].item())
        assert out["logits"].shape == (len(y), NUM_CLASSES)
        assert 0.0 <= out["acc"].item() <= 1.0
        assert logged_terms(out) <= table, f"{name} logs terms the table does not know"
        terms = scalars(out)
        expected = expected_loss(name, terms, m.options, BOT.triplet_weight if recipe == "bot" else 0.0)
        assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
        if stage in ends:
            m.on_stage_end(stage, ctx)
            m.set_epoch(ends[stage])
            spread_classifiers(m)
    assert logged_terms(out) == table
    distillation = table - {"ce", "triplet", "kl_weight"}
    assert all(terms[t] > 1e-6 for t in distillation), terms  # the formula compared non-trivial numbers


# ----------------------------------------------------------------------------- gradients, training
@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("name", REGISTERED)
def test_gradients_reach_every_trainable_parameter(name, net, teachers, tmp_path):
    m = build(name, net, teachers)
    data = tiny_set(net)
    into_last_stage(m, tmp_path, data)
    spread_classifiers(m.trainable)
    m.train()
    m(data.x, data.y, torch.arange(len(data)))["loss"].backward()
    trainable = [(n, p) for n, p in m.trainable.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("name", REGISTERED)
def test_a_few_sgd_steps_lower_the_loss(name, net, teachers, tmp_path):
    m = build(name, net, teachers)
    sgd = contract_of(name).sgd
    into_last_stage(m, tmp_path, tiny_set(net))
    spread_classifiers(m)  # a teacher with something to teach
    m.train()
    # Plain SGD by default: BYOT's hint chases the deepest features, a target that moves as
    # they train, and momentum makes its total loss oscillate on so few steps.
    opt = torch.optim.SGD(m.trainable.parameters(), lr=sgd.lr, momentum=sgd.momentum)
    x, y, idx = batch(net)
    losses = []
    for _ in range(sgd.steps):
        out = m(x, y, idx)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < sgd.ratio * losses[0], losses


# ----------------------------------------------------------------------------- deploy
@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("name", REGISTERED)
def test_deployed_net_is_a_plain_rebuildable_net(name, net, teachers, tmp_path):
    factory, _ = NETS[net]
    m = build(name, net, teachers)
    into_last_stage(m, tmp_path, tiny_set(net))
    plain = factory()
    deployed = m.deploy().eval()
    assert isinstance(deployed, Net)
    assert parameter_count(deployed) == parameter_count(plain)
    # What the method trains beyond the deployed net (exits, branches, a self-teacher) is dropped.
    if m.trainable is deployed:
        assert parameter_count(m.trainable) == parameter_count(plain)
    else:
        assert parameter_count(m.trainable) > parameter_count(plain)
    x, _, _ = batch(net, n=3)
    with torch.no_grad():
        logits, feats = deployed(x)
        plain_logits, plain_feats = plain.eval()(x)
    assert logits.shape == plain_logits.shape and feats.shape == plain_feats.shape
    rebuilt = build_model(**deployed.spec)
    assert list(rebuilt.state_dict()) == list(deployed.state_dict())
    ckpt.save_model_file(deployed, str(tmp_path / "final.pt"))
    loaded, _ = load_model_file(str(tmp_path / "final.pt"))
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], logits)


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("name", REGISTERED)
def test_extra_eval_models_are_the_declared_ones_and_evaluate(name, net, teachers, tmp_path):
    m = build(name, net, teachers)
    spread_classifiers(m)
    ctx = into_last_stage(m, tmp_path, tiny_set(net))
    extra = m.extra_eval_models(ctx)
    assert set(extra) == contract_of(name).extra_eval
    x, _, _ = batch(net, n=4)
    for model in extra.values():
        with torch.no_grad():
            logits, feats = model.eval()(x)
        assert logits.shape == (4, NUM_CLASSES) and feats.dim() == 2 and feats.shape[0] == 4
        assert torch.isfinite(logits).all() and torch.isfinite(feats).all()


# ----------------------------------------------------------------------------- FLOPs
@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("name", REGISTERED)
def test_flop_counter_sees_what_the_forward_runs(name, net, teachers, tmp_path):
    factory, shape = NETS[net]
    m = build(name, net, teachers)
    into_last_stage(m, tmp_path, tiny_set(net))
    one = TinySet(shape, n=1)
    flops = training_forward_flops(m, one, torch.device("cpu"))
    plain = training_forward_flops(METHODS.get("vanilla").create(factory, 2), one, torch.device("cpu"))
    assert plain > 0 and contract_of(name).flops(flops / plain), (flops, plain)


# ----------------------------------------------------------------------------- resume
def _steps(method, opt, x, y, idx, n):
    losses = []
    for _ in range(n):
        out = method(x, y, idx)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    return losses


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("name", REGISTERED)
def test_a_saved_and_reloaded_state_continues_bit_exactly(name, net, teachers, tmp_path):
    """Save what the trainer saves (trainable weights, optimizer, extra_state) mid last stage,
    load it into a method built from another initialisation: the next steps are bit-identical."""
    data = tiny_set(net)
    x, y, idx = data.x, data.y, torch.arange(len(data))
    a = build(name, net, teachers, seed=0)
    a.train()
    opt = torch.optim.SGD(a.trainable.parameters(), lr=0.05, momentum=0.9)
    _steps(a, opt, x, y, idx, 2)
    if stage_ends(a):
        into_last_stage(a, tmp_path, data)
        opt = torch.optim.SGD(a.trainable.parameters(), lr=0.05, momentum=0.9)  # a new stage, a new optimizer
        a.train()
        _steps(a, opt, x, y, idx, 1)
    saved_path = os.path.join(tmp_path, "state.pt")
    ckpt.atomic_save(
        {"trainable": a.trainable.state_dict(), "optimizer": opt.state_dict(), "method": a.extra_state()}, saved_path
    )
    saved = ckpt.load_plain_file(saved_path, "training state")

    b = build(name, net, teachers, seed=1)
    before = dict(b.trainable.state_dict())
    assert any(not torch.equal(v, saved["trainable"][k]) for k, v in before.items() if v.is_floating_point())
    b.load_extra_state(saved["method"], str(tmp_path))
    ckpt.load_state_dict_checked(b.trainable, saved["trainable"], saved_path)
    b.set_epoch(a.epoch)
    b.train()
    b_opt = torch.optim.SGD(b.trainable.parameters(), lr=0.05, momentum=0.9)
    b_opt.load_state_dict(saved["optimizer"])

    torch.manual_seed(7)
    expected = _steps(a, opt, x, y, idx, 2)
    torch.manual_seed(7)
    assert _steps(b, b_opt, x, y, idx, 2) == expected
    reference = a.trainable.state_dict()
    for k, v in b.trainable.state_dict().items():
        assert torch.equal(v, reference[k]), k


# ----------------------------------------------------------------------------- through reid-train
@pytest.mark.parametrize("recipe", ["ce", "bot"])
@pytest.mark.parametrize("name", REGISTERED)
def test_a_tiny_run_logs_terms_that_add_up_and_saves_the_plain_net(name, recipe, tiny_run):
    """Every method x {plain CE, the BoT recipe} through reid-train on the tiny set."""
    run = tiny_run(name, recipe)
    with open(os.path.join(run, "metrics.jsonl")) as f:
        lines = [json.loads(x) for x in f]
    cfg = load_config(os.path.join(run, "config.yaml"))
    options = cfg.method.options_of(name)
    assert [line["epoch"] for line in lines] == list(range(1, len(lines) + 1))
    for line in lines:
        weight = cfg.loss.triplet_weight
        assert line["loss"] == pytest.approx(expected_loss(name, line, options, weight), rel=1e-4)
        assert ("triplet" in line) == (recipe == "bot")
    table = contract_of(name).terms | ({"triplet"} if recipe == "bot" else set())
    assert table <= set(lines[-1])
    with open(os.path.join(run, "metrics.json")) as f:
        summary = json.load(f)
    assert set(summary["results"]) == {"deployed"} | contract_of(name).extra_eval
    assert summary["forward_flops_per_sample"][0] > 0 and summary["deployed_parameters"] > 0
    assert 0.0 <= summary["results"]["deployed"]["single_query"]["rank1"] <= 1.0
    with open(os.path.join(run, "config.yaml")) as f:
        saved = f.read()
    assert ("neck: bnneck" in saved) == (recipe == "bot") and ("sampler: identity" in saved) == (recipe == "bot")
    # final.pt is the plain network of the run's spec: what the method trained beyond it is gone.
    net, meta = load_model_file(run)
    assert isinstance(net, Net) and meta["spec"]["name"] == "small_reid" and meta["method"] == name
    plain = build_model(**meta["spec"])
    assert [(k, v.shape) for k, v in net.state_dict().items()] == [(k, v.shape) for k, v in plain.state_dict().items()]
    assert summary["deployed_parameters"] == parameter_count(plain)
