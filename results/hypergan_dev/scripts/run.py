"""Scratch: fit HyperGAN on mnist5000 with overrides, time it, score acc@k on the 10k test set."""
import argparse, json, sys, time
import torch
sys.path.insert(0, "/tmp/hg")
import data
from torch.utils.data import TensorDataset
from uqbench.hypergan import HyperGAN
from uqbench.targets import small_cnn
from uqbench.functional import batched_predict, flat_weight_norms

ap = argparse.ArgumentParser()
ap.add_argument("--set", nargs="*", default=[])
ap.add_argument("--eval-nets", type=int, default=10)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--preset", default=None)
ap.add_argument("--test-n", type=int, default=10000)
ap.add_argument("--ood", action="store_true")
ap.add_argument("--save", default=None)
a = ap.parse_args()
torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "1")))
x, y = data.mnist5k()
xt, yt = data.mnist_test()
xt, yt = xt[: a.test_n], yt[: a.test_n]
overrides = dict(kv.split("=", 1) for kv in a.set)
cfg = HyperGAN.make_config(overrides, benchmark=a.preset)
print(cfg, flush=True)
s = HyperGAN(small_cnn(), cfg)
t0 = time.perf_counter()
last = [t0]
def prog(step, total, **m):
    if step % 100 == 0:
        now = time.perf_counter()
        print(f"step {step}/{total} {now-t0:.1f}s ({(now-last[0])/100*1000:.0f} ms/step) " + " ".join(f"{k}={v:.3f}" for k, v in m.items()), flush=True)
        last[0] = now
s.fit(TensorDataset(x, y), seed=a.seed, progress=prog)
fit_s = time.perf_counter() - t0
for h in s.history:
    print("hist", {k: round(v, 4) for k, v in h.items()})
print("extra", s.extra_metrics)
t1 = time.perf_counter()
w = s.sample(max(a.eval_nets, 100), generator=torch.Generator().manual_seed(123))
norms = flat_weight_norms(w)
div = float(norms.std() / norms.mean())
w = {k: v[: a.eval_nets] for k, v in w.items()}
probs = batched_predict(s.target, w, xt, transform=lambda o: o.softmax(-1), memory_budget=1 << 29)
res = {"fit_s": round(fit_s, 1), "div100": round(div, 4)}
for k in (1, 5, 10, 100):
    if k <= a.eval_nets:
        res[f"acc@{k}"] = round(100 * float((probs[:k].mean(0).argmax(-1) == yt).float().mean()), 2)
single = (probs.argmax(-1) == yt).float().mean(1)
res["single_mean"] = round(100 * float(single.mean()), 2)
pbar = probs.mean(0)
res["disagree"] = round(100 * float((probs.argmax(-1) != pbar.argmax(-1)).float().mean()), 2)
res["nll"] = round(float(-torch.log(pbar[torch.arange(len(yt)), yt].clamp_min(1e-12)).mean()), 4)
if a.ood:
    from sklearn.metrics import roc_auc_score
    ent = lambda p: -(p * p.clamp_min(1e-12).log()).sum(-1)
    hin = ent(pbar)
    for name, xo in (("notmnist", data.notmnist()), ("fashion", data.fashion())):
        po = batched_predict(s.target, w, xo, transform=lambda o: o.softmax(-1), memory_budget=1 << 29).mean(0)
        ho = ent(po)
        res[f"auroc_{name}"] = round(float(roc_auc_score([0]*len(hin)+[1]*len(ho), torch.cat([hin, ho]).numpy())), 4)
res["eval_s"] = round(time.perf_counter() - t1, 1)
print("RESULT", json.dumps({"set": overrides, "preset": a.preset, **res}), flush=True)
if a.save:
    torch.save(s.state_dict(), a.save)
