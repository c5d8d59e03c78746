"""``uqbench tune``: resumes after kill -9, scores on the validation split only, enforces the
budget, writes the presets file ``compare --presets`` reads, refuses bad input.

The tuned method is a tiny MAP-plus-noise sampler defined here (its Config declares a
search space), on tiny benchmarks with a validation split registered for the tests.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import optuna
import pandas as pd
import pytest
import torch
from torch.func import functional_call
from torch.utils.data import TensorDataset

from uqbench import registry
from uqbench.app.cli import main
from uqbench.app.lock import OutputLock
from uqbench.app.presets import check_presets, read_presets
from uqbench.app.tune import STUDY_FILE, TuneRequest, tune
from uqbench.app.tune_trial import PruneSettings, TrialSpec, run_trial, validation_view
from uqbench.configs import (
    CheckedConfig,
    LogUniform,
    Uniform,
    at_least,
    non_negative,
    positive,
    setting,
)
from uqbench.data import registry as data_registry
from uqbench.data.benchmark import BenchmarkData
from uqbench.errors import UserError
from uqbench.evaluation.harness import evaluate
from uqbench.registry import MethodInfo
from uqbench.sampler import Task, WeightSampler
from uqbench.testing import tiny_images, tiny_target
from uqbench.training import as_tensors

TESTS = Path(__file__).resolve().parent
SAMPLES = 8


@dataclass
class ToyConfig(CheckedConfig):
    owner: ClassVar[str] = "tunetoy"
    lr: float = setting(0.05, check=positive, search=LogUniform(1e-3, 0.3))
    noise: float = setting(0.01, check=non_negative, search=Uniform(0.0, 0.05))
    steps: int = setting(20, check=at_least(1))
    sleep_s: float = setting(0.0, check=non_negative)
    max_noise: float = setting(1.0, check=non_negative)
    #: False: the fit never calls ``progress`` (one long silent phase).
    report: bool = setting(True)

    def check_together(self) -> None:
        if self.noise > self.max_noise:
            raise UserError(f"tunetoy: noise {self.noise} exceeds max_noise {self.max_noise}")


class ToySampler(WeightSampler):
    """MAP weights by full-batch Adam, sampled as MAP + noise * N(0, 1); reports val_nll."""

    name = "tunetoy"
    Config = ToyConfig

    def fit(self, train, *, seed, val=None, progress=None) -> None:
        _maybe_hang()
        torch.manual_seed(seed)
        c = self.config
        x, y = as_tensors(train)
        params = {k: p.detach().clone().requires_grad_() for k, p in self.target.named_parameters()}
        opt = torch.optim.Adam(params.values(), lr=c.lr)
        for step in range(1, c.steps + 1):
            loss = torch.nn.functional.cross_entropy(functional_call(self.target, params, x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            time.sleep(c.sleep_s)
            if progress is not None and c.report:
                extra = {}
                if val is not None and step % 5 == 0:
                    vx, vy = as_tensors(val)
                    with torch.no_grad():
                        logits = functional_call(self.target, params, vx)
                        extra["val_nll"] = float(torch.nn.functional.cross_entropy(logits, vy))
                progress(step, c.steps, loss=loss.item(), **extra)
        self.mean = {k: v.detach() for k, v in params.items()}

    def sample(self, n, *, generator=None):
        self.check_n(n)
        return {
            k: v.unsqueeze(0) + self.config.noise * torch.randn((n, *v.shape), generator=generator)
            for k, v in self.mean.items()
        }

    def state_dict(self) -> dict:
        return {"mean": dict(self.mean)}

    def load_state_dict(self, state: dict) -> None:
        self.mean = dict(state["mean"])


@dataclass
class PlainConfig(CheckedConfig):
    owner: ClassVar[str] = "tunenospace"
    lr: float = setting(0.05, check=positive)


class NoSpaceSampler(ToySampler):
    """A method whose Config declares no search range."""

    name = "tunenospace"
    Config = PlainConfig


def _maybe_hang() -> None:
    """Under the kill test: count fits in a folder and block in the one to be killed."""
    folder = os.environ.get("TUNE_TOY_MARKERS")
    if folder:
        k = len(list(Path(folder).glob("fit-*")))
        (Path(folder) / f"fit-{k}").touch()
        if k == int(os.environ["TUNE_TOY_HANG_AT"]):
            time.sleep(3600)


def tiny_split(val: bool = True) -> BenchmarkData:
    """tiny_images split into train 240 / validation 90 / test 90 (3 classes)."""
    x, y = tiny_images(420, seed=0).tensors
    order = torch.randperm(420, generator=torch.Generator().manual_seed(0))
    part = {"train": order[:240], "val": order[240:330], "test": order[330:]}
    return BenchmarkData(
        name="tiny-val",
        task=Task(num_classes=3),
        make_target=tiny_target,
        train=TensorDataset(x[part["train"]], y[part["train"]]),
        test=TensorDataset(x[part["test"]], y[part["test"]]),
        ood={"noise": torch.rand(30, 1, 12, 12)},
        val=TensorDataset(x[part["val"]], y[part["val"]]) if val else None,
        sources={"train": "generated", "val": "generated", "test": "generated"},
    )


TOUCHED: list[str] = []


class GuardedData(BenchmarkData):
    """A benchmark whose test set and OOD sets must not be read: any access is recorded
    and raises."""

    def __getattribute__(self, name: str):
        if name in ("test", "ood"):
            TOUCHED.append(name)
            raise AssertionError(f"tune read the {name} data")
        return super().__getattribute__(name)


def guarded_split() -> BenchmarkData:
    d = tiny_split()
    fields = {k: v for k, v in vars(d).items()}
    return GuardedData(**fields)


def register(patch=setattr) -> None:
    """Add the toy methods and the tiny benchmarks to the registries (``patch`` is
    ``monkeypatch.setattr`` in tests, plain ``setattr`` in a subprocess)."""
    original = registry.discover

    def discover():
        found = dict(original())
        for cls in (ToySampler, NoSpaceSampler):
            found[cls.name] = MethodInfo(cls.name, f"test_tune:{cls.__name__}", "tests", cls, None)
        return found

    patch(registry, "discover", discover)
    spec = data_registry.BenchmarkSpec
    benchmarks = dict(data_registry.BENCHMARKS)
    benchmarks["tiny-val"] = spec("tiny-val", "tiny with validation", lambda s: tiny_split())
    benchmarks["tiny-noval"] = spec("tiny-noval", "tiny", lambda s: tiny_split(val=False))
    benchmarks["tiny-guarded"] = spec("tiny-guarded", "guarded", lambda s: guarded_split())
    patch(data_registry, "BENCHMARKS", benchmarks)


@pytest.fixture
def registered(monkeypatch):
    register(monkeypatch.setattr)
    monkeypatch.setenv("UQBENCH_NO_DOWNLOAD", "1")


def request(out: Path, **kw) -> TuneRequest:
    base = dict(
        method="tunetoy",
        benchmark="tiny-val",
        trials=3,
        out=out,
        samples=SAMPLES,
        device="cpu",
        verbose=False,
    )
    return TuneRequest(**{**base, **kw})


def states(out: Path, name: str = "tunetoy-tiny-val-nll") -> list[str]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{out / STUDY_FILE}")
    return [t.state.name for t in study.trials]


# --- the study, its outputs and the presets file ---------------------------------------
def test_tune_scores_on_validation_and_writes_presets(registered, tmp_path):
    out = tmp_path / "tune"
    result = tune(request(out, command="uqbench tune --method tunetoy ..."))
    frame = result.trials
    assert list(frame["number"]) == [0, 1, 2]
    assert list(frame["state"]) == ["COMPLETE"] * 3
    assert {"number", "state", "value", "fit_s", "lr", "noise", "val_acc"} <= set(frame.columns)
    assert result.best_value == pytest.approx(frame["value"].min())
    assert result.best_trial == int(frame.loc[frame["value"].idxmin(), "number"])

    # The recorded value is the harness NLL on the validation split of the best config.
    data = tiny_split()
    best = ToyConfig(**result.best_params)
    torch.manual_seed(0)
    sampler = ToySampler(tiny_target(), best, task=data.task)
    sampler.fit(data.train, seed=0, val=data.val)
    on_val = evaluate(sampler, validation_view(data), n_samples=SAMPLES, seed=0)
    assert on_val.metrics["nll"] == pytest.approx(result.best_value, rel=1e-6)
    on_test = evaluate(sampler, data, n_samples=SAMPLES, seed=0)
    assert on_test.metrics["nll"] != pytest.approx(result.best_value, rel=1e-3)

    presets = read_presets(out / "presets" / "tiny-val.json")
    entry = presets.methods["tunetoy"]
    assert presets.benchmark == "tiny-val"
    assert set(entry["config"]) == {"lr", "noise"}  # the tuned knobs only
    assert entry["config"] == pytest.approx(result.best_params)
    assert entry["best_trial"] == result.best_trial and entry["objective"] == "nll"
    assert entry["best_value"] == pytest.approx(result.best_value)
    assert entry["budget"]["trials"] == 3 and entry["budget"]["sampler"] == "TPE"
    assert entry["budget"]["seed"] == 0 and entry["budget"]["jobs"] == 1
    assert entry["budget"]["max_fit_s"] is None and entry["validation_size"] == 90
    assert entry["command"] == "uqbench tune --method tunetoy ..."
    assert entry["study"] == "../study.sqlite" and entry["trials"] == {"complete": 3}
    check_presets(presets, "tiny-val", {"tunetoy": set(vars(ToyConfig()))}, "f")

    csv = pd.read_csv(out / "trials.csv")
    assert len(csv) == 3 and list(csv["state"]) == ["COMPLETE"] * 3
    md = (out / "trials.md").read_text().splitlines()
    assert len(md) == 2 + 3 and md[0].startswith("| number | state | value | fit_s")

    # Raising --trials continues the study; other settings are refused.
    more = tune(request(out, trials=4))
    assert list(more.trials["state"]) == ["COMPLETE"] * 4
    with pytest.raises(UserError, match="other set"):
        tune(request(out, trials=5, overrides={"steps": "3"}))
    assert states(out) == ["COMPLETE"] * 4


def test_resumes_after_kill_9_losing_only_the_running_trial(registered, tmp_path):
    out, markers = tmp_path / "tune", tmp_path / "markers"
    markers.mkdir()
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import test_tune
        from uqbench.app.tune import TuneRequest, tune
        test_tune.register()
        tune(test_tune.request({str(out)!r}, trials=3))
        """
    )
    env = {
        **os.environ,
        "TUNE_TOY_MARKERS": str(markers),
        "TUNE_TOY_HANG_AT": "1",
        "UQBENCH_NO_DOWNLOAD": "1",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 180
        while not (markers / "fit-1").exists():  # trial 0 done, trial 1 fitting
            assert proc.poll() is None, "the tune process ended before the second trial"
            assert time.monotonic() < deadline, "the second trial never started"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert states(out) == ["COMPLETE", "RUNNING"]

    result = tune(request(out, trials=3))
    assert list(result.trials["state"]) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert "died" in result.trials.loc[1, "reason"]
    entry = read_presets(out / "presets" / "tiny-val.json").methods["tunetoy"]
    assert entry["trials"] == {"complete": 3, "fail": 1}


def test_library_call_takes_a_sampler_class_and_loaded_data(tmp_path):
    data = tiny_split()
    result = tune(request(tmp_path / "t", method=ToySampler, benchmark=data, trials=2))
    assert list(result.trials["state"]) == ["COMPLETE", "COMPLETE"]
    assert result.presets_path == tmp_path / "t" / "presets" / "tiny-val.json"
    assert set(read_presets(result.presets_path).methods) == {"tunetoy"}
    with pytest.raises(UserError, match="not a WeightSampler subclass"):
        tune(request(tmp_path / "u", method=ToyConfig, benchmark=data))
    assert not (tmp_path / "u").exists()


def test_a_second_tune_on_the_same_folder_is_refused(registered, tmp_path):
    out = tmp_path / "tune"
    out.mkdir()
    with OutputLock(out, "uqbench tune"), pytest.raises(UserError, match="in use by another"):
        tune(request(out, trials=1))


def test_parallel_trials_never_read_test_or_ood_data(registered, tmp_path):
    TOUCHED.clear()
    out = tmp_path / "tune"
    result = tune(request(out, benchmark="tiny-guarded", trials=2, jobs=2))
    assert TOUCHED == []
    assert list(result.trials["state"]) == ["COMPLETE", "COMPLETE"]
    entry = read_presets(result.presets_path).methods["tunetoy"]
    cores = len(os.sched_getaffinity(0))
    assert entry["budget"]["jobs"] == 2
    assert entry["budget"]["threads_per_trial"] == max(1, cores // 2)
    with pytest.raises(AssertionError):  # the guard itself works
        guarded_split().test  # noqa: B018


# --- budget and pruning ------------------------------------------------------------------
def test_the_fit_time_cap_stops_a_fit_that_reports_no_progress(registered, tmp_path):
    out = tmp_path / "tune"
    silent = {"sleep_s": "0.05", "steps": "100", "report": "false"}  # 5 s, never reports
    with pytest.raises(UserError, match="no trial of tunetoy-tiny-val-nll completed"):
        tune(request(out, trials=1, max_fit_s=0.2, overrides=silent))
    csv = pd.read_csv(out / "trials.csv")
    assert list(csv["state"]) == ["PRUNED"]
    assert "over the cap of 0.2 s (no progress call since the cap)" in csv["reason"][0]
    assert csv["fit_s"][0] < 0.2 * 1.1 + 1.0 + 0.5  # the backstop alarm, not the 5 s fit


def test_the_fit_time_cap_prunes_the_trial(registered, tmp_path):
    out = tmp_path / "tune"
    slow = {"sleep_s": "0.05", "steps": "20"}  # >= 1 s of fit against a 0.2 s cap
    with pytest.raises(UserError, match="no trial of tunetoy-tiny-val-nll completed"):
        tune(request(out, trials=2, max_fit_s=0.2, overrides=slow))
    csv = pd.read_csv(out / "trials.csv")
    assert list(csv["state"]) == ["PRUNED", "PRUNED"]
    assert all(r.startswith("max_fit_s: fit ran") for r in csv["reason"])
    steps = [int(re.search(r"\(step (\d+)/20\)", r).group(1)) for r in csv["reason"]]
    assert all(s < 20 for s in steps)  # stopped mid-fit, at a progress call past the cap
    assert (csv["fit_s"] < 0.2 + 0.3).all()
    assert not (out / "presets").exists()


def test_refused_configs_fail_and_do_not_count(registered, tmp_path):
    out = tmp_path / "tune"
    result = tune(request(out, trials=3, seed=1, overrides={"max_noise": "0.03"}))
    frame = result.trials
    assert (frame["state"] == "COMPLETE").sum() == 3
    failed = frame[frame["state"] == "FAIL"]
    assert len(failed) >= 1 and (failed["noise"] > 0.03).all()
    assert all(r.startswith("invalid config: tunetoy: noise") for r in failed["reason"])
    entry = read_presets(result.presets_path).methods["tunetoy"]
    assert entry["trials"] == {"complete": 3, "fail": len(failed)}


def _finished_trial(value: float) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        value=value, intermediate_values={s: value for s in (5, 10, 15, 20)}
    )


@pytest.mark.parametrize(("others", "expected"), [(0.05, "pruned"), (5.0, "complete")])
def test_median_pruner_uses_the_reported_validation_nll(others, expected):
    data = validation_view(tiny_split())
    prune = PruneSettings(
        direction="minimize",
        key="val_nll",
        n_startup_trials=1,
        finished=(_finished_trial(others), _finished_trial(others)),
    )
    config = {"lr": 1e-4, "noise": 0.0, "steps": 20, "sleep_s": 0.0}  # val NLL stays ~log 3
    spec = TrialSpec(
        number=0, method_cls=ToySampler, config=config, metric="nll", n_samples=2, prune=prune
    )
    outcome = run_trial(spec, data)
    assert outcome.state == expected
    if expected == "pruned":
        assert outcome.reason.startswith("median pruner: val_nll=")
        assert list(outcome.intermediate) == [5]  # stopped at the first report
    else:
        assert list(outcome.intermediate) == [5, 10, 15, 20] and outcome.value > 0.9


# --- bad input: one line, exit status 2, nothing written ----------------------------------
BAD = [
    (["--method", "nosuch"], "unknown method 'nosuch'"),
    (["--trials", "0"], "--trials 0"),
    (["--trials", "-2"], "--trials -2"),
    (["--set", "tunetoy.nope=1"], "tunetoy has no setting 'nope'"),
    (["--set", "other.lr=1"], "--set other.lr=1"),
    (["--objective", "auroc"], "--objective auroc is not a validation metric"),
    (["--method", "tunenospace"], "method tunenospace declares no search space"),
    (["--benchmark", "tiny-noval"], "benchmark tiny-noval has no validation split"),
    (["--jobs", "0"], "--jobs 0"),
    (["--max-fit-s", "0"], "--max-fit-s 0"),
]


@pytest.mark.parametrize(("flags", "message"), BAD, ids=[" ".join(f) for f, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    registered, tmp_path, capsys, flags, message
):
    out = tmp_path / "tune"
    args = {"--method": "tunetoy", "--benchmark": "tiny-val", "--trials": "2"}
    extra = []
    for i in range(0, len(flags), 2):
        if flags[i] in args:
            args[flags[i]] = flags[i + 1]
        else:
            extra += flags[i : i + 2]
    argv = ["tune", *[x for kv in args.items() for x in kv], *extra, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("uqbench: error: ")
    assert message in err
    assert not out.exists()


def test_cli_tune_prints_the_best_trial(registered, tmp_path, capsys):
    out = tmp_path / "tune"
    presets = tmp_path / "presets.json"
    argv = ["tune", "--method", "tunetoy", "--benchmark", "tiny-val", "--trials", "2"]
    argv += ["--out", str(out), "--presets-file", str(presets), "--samples", "4"]
    argv += ["--device", "cpu", "--set", "tunetoy.steps=10", "--objective", "acc"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "best trial" in stdout and "validation acc" in stdout
    entry = json.loads(presets.read_text())["methods"]["tunetoy"]
    umask = os.umask(0)
    os.umask(umask)
    assert presets.stat().st_mode & 0o777 == 0o666 & ~umask  # a normal file, not 0600
    assert entry["set"] == {"steps": 10} and entry["direction"] == "maximize"
    assert entry["command"].startswith("uqbench tune --method tunetoy")
    assert states(out, "tunetoy-tiny-val-acc") == ["COMPLETE", "COMPLETE"]


# --- Ray ---------------------------------------------------------------------------------
@pytest.mark.ray
def test_ray_executor_runs_the_trials(registered, tmp_path):
    ray = pytest.importorskip("ray", reason="the optional ray extra is not installed")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}},
    )
    try:
        result = tune(request(tmp_path / "tune", trials=2, executor="ray", jobs=2))
    finally:
        ray.shutdown()
    assert list(result.trials["state"]) == ["COMPLETE", "COMPLETE"]
    entry = read_presets(result.presets_path).methods["tunetoy"]
    assert entry["budget"]["executor"] == "ray" and entry["budget"]["threads_per_trial"] == 1


# --- the throughput benchmark runs end to end --------------------------------------------
def test_tune_throughput_benchmark_reports_each_mode(capsys):
    from benchmarks import tune_throughput

    argv = ["--data", "tiny", "--trials", "2", "--epochs", "2", "--samples", "2", "--cores", "1"]
    assert tune_throughput.main([*argv, "--modes", "serial,pruned", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {r["mode"]: r for r in report["modes"]}
    assert set(rows) == {"serial", "pruned"}
    for r in rows.values():
        assert r["trials"] == 2 and r["wall_s"] > 0
        assert r["trials_per_hour"] == pytest.approx(2 / r["wall_s"] * 3600, rel=0.01)
    assert rows["serial"]["pruned"] == 0 and rows["serial"]["speedup_vs_serial"] == 1.0


def test_presets_inherit_copies_a_tuned_entry_marked_as_inherited(tmp_path, capsys):
    from uqbench.app.presets import main as presets_main
    from uqbench.app.presets import write_method_entry

    path = tmp_path / "p.json"
    tuned = {"config": {"lr": 0.01}, "set": {"epochs": 3}, "best_value": 0.2}
    write_method_entry(path, "tiny-val", "tunetoy", tuned)
    assert presets_main(["inherit", str(path), "tunetoy", "a", "b"]) == 0
    methods = read_presets(path).methods
    assert methods["a"] == methods["b"] == {**tuned, "inherited_from": "tunetoy"}
    assert methods["tunetoy"] == tuned
    before = path.read_text()
    # Only a tuned entry can be inherited, and a refusal is one line that changes nothing.
    assert presets_main(["inherit", str(path), "a", "c"]) == 2
    assert presets_main(["inherit", str(path), "nosuch", "c"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("holds no tuned entry" in line for line in err)
    assert path.read_text() == before


def test_presets_transfer_keeps_the_tuned_knobs_with_new_lengths(tmp_path, capsys):
    from uqbench.app.presets import main as presets_main
    from uqbench.app.presets import write_method_entry

    small, large = tmp_path / "small.json", tmp_path / "large.json"
    tuned = {"config": {"lr": 0.01}, "set": {"epochs": 3, "batch_size": 8}, "best_value": 0.2}
    write_method_entry(small, "tiny-val", "tunetoy", tuned)
    write_method_entry(small, "tiny-val", "copy", {**tuned, "inherited_from": "tunetoy"})
    args = ["transfer", str(small), str(large), "--benchmark", "tiny-large"]
    assert presets_main([*args, "--set", "tunetoy.epochs=20"]) == 0
    presets = read_presets(large)
    assert presets.benchmark == "tiny-large" and set(presets.methods) == {"tunetoy"}
    assert presets.config_of("tunetoy") == {"lr": 0.01, "epochs": 20, "batch_size": 8}
    origin = presets.methods["tunetoy"]["transferred_from"]
    assert origin == {"benchmark": "tiny-val", "file": str(small)}
    # The method's own presets for the source benchmark travel with it (the tune ran on them).
    mnist = tmp_path / "mnist.json"
    engineered = {**tuned, "config": {"lr": 0.01, "lr_generator": 5e-4}}
    write_method_entry(tmp_path / "m5k.json", "mnist5000", "hypergan-engineered", engineered)
    assert (
        presets_main(["transfer", str(tmp_path / "m5k.json"), str(mnist), "--benchmark", "mnist"])
        == 0
    )
    moved = read_presets(mnist).config_of("hypergan-engineered")
    assert moved["generator_hidden"] == 128 and moved["epochs"] == 3 and moved["lr"] == 0.01
    # ... less the knobs the tune searched: its selection is what it ran on top of them.
    assert moved["lr_generator"] == 5e-4
    assert "lr_generator" not in read_presets(mnist).methods["hypergan-engineered"]["set"]
    before = large.read_text()
    # A length for a method not transferred, a bad --set, a same-benchmark target: refused.
    assert presets_main([*args, "--set", "nosuch.epochs=2"]) == 2
    assert presets_main([*args, "--set", "epochs"]) == 2
    assert presets_main(["transfer", str(small), str(large), "--benchmark", "tiny-val"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "nosuch" in err[0] and "METHOD.KEY=VALUE" in err[1], err
    assert large.read_text() == before


def test_the_pruner_never_acts_on_a_report_before_the_first_step():
    """A score at step 0 is the untrained network's: pruning on it would stop trials on
    initialisation noise."""
    import optuna

    from uqbench.app.tune_trial import PruneSettings, TrialSpec, _Pruned, _Watch

    better = [
        optuna.trial.create_trial(value=0.1, intermediate_values={0: 0.1, 5: 0.1}) for _ in range(6)
    ]
    prune = PruneSettings(direction="minimize", key="val_nll", finished=tuple(better))
    watch = _Watch(TrialSpec(number=6, method_cls=ToySampler, config={}, metric="nll", prune=prune))
    watch.start()
    watch(0, 10, val_nll=2.3)  # worse than every finished trial, but before any training
    with pytest.raises(_Pruned, match="val_nll=2.3 at step 5"):
        watch(5, 10, val_nll=2.3)
