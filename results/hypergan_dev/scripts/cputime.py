"""CPU timing on 2 threads: HyperGAN ms/step for variants, plain-net step, full ensemble fit."""
import json, os, sys, time
sys.path.insert(0, "runs/hgdev")
import torch
torch.set_num_threads(2)
from common import load, train_plain_ensemble, evaluate_weights
from uqbench.hypergan import HyperGAN
from uqbench.targets import small_cnn
from uqbench.training import seeded_generator
out = open(os.path.join(os.environ.get("OUT", "/tmp"), "cputime.jsonl"), "w")
def log(rec):
    print(json.dumps(rec), flush=True); out.write(json.dumps(rec) + "\n"); out.flush()
x, y, xt, yt, ood = load("cpu")
for n, b, gh in [(4, 64, 512), (2, 64, 512), (8, 64, 512), (4, 128, 512), (2, 128, 512), (4, 64, 256), (4, 64, 128)]:
    s = HyperGAN(small_cnn(), HyperGAN.make_config({"nets_per_step": str(n), "batch_size": str(b), "generator_hidden": str(gh)}))
    g = seeded_generator(0)
    s._calibrate_output_scale(g)
    og, od = s._optimizers()
    for _ in range(3):
        s._step(x[:b], y[:b], og, od, g)
    t = time.perf_counter()
    for _ in range(15):
        s._step(x[:b], y[:b], og, od, g)
    log({"what": "hg_step", "nets": n, "batch": b, "gh": gh, "ms": round((time.perf_counter() - t) / 15 * 1000, 1)})
t = time.perf_counter()
w = train_plain_ensemble(x, y, members=1, epochs=1)
log({"what": "plain_1epoch_s", "s": round(time.perf_counter() - t, 2)})
t = time.perf_counter()
w = train_plain_ensemble(x, y)
fit = time.perf_counter() - t
res = evaluate_weights(small_cnn(), w, xt, yt)
log({"what": "ensemble5x15", "fit_s": round(fit, 1), **res})
