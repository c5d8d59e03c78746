"""Scratch: fit HyperGAN on a registered benchmark (preset + overrides) and score it with the harness."""
import argparse, json, os, time
import torch
from uqbench.data.registry import load_benchmark
from uqbench.evaluation.harness import evaluate
from uqbench.hypergan import HyperGAN
ap = argparse.ArgumentParser()
ap.add_argument("benchmark")
ap.add_argument("--set", nargs="*", default=[])
ap.add_argument("--samples", type=int, default=100)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
data = load_benchmark(a.benchmark, data_root="/work/shared/data", download=False)
over = dict(kv.split("=", 1) for kv in a.set)
cfg = HyperGAN.make_config(over, benchmark=a.benchmark)
torch.manual_seed(0)
s = HyperGAN(data.make_target(), cfg, task=data.task)
t = time.perf_counter()
s.fit(data.train, seed=a.seed)
fit = time.perf_counter() - t
t = time.perf_counter()
ev = evaluate(s, data, n_samples=a.samples, seed=a.seed)
m = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in ev.metrics.items()}
print(json.dumps({"benchmark": a.benchmark, "set": over, "fit_s": round(fit, 1), "eval_s": round(time.perf_counter() - t, 1), **m}))
print("history", [(h["step"], round(h["val_score"], 3), round(h["diversity"], 4)) for h in s.history])
