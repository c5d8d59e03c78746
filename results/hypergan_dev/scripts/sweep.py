import json, os, sys, time
sys.path.insert(0, "runs/hgdev")
import torch
from common import load, evaluate_weights, train_plain_ensemble
from uqbench.hypergan import HyperGAN
from uqbench.targets import small_cnn
from torch.utils.data import TensorDataset
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
dev = "cuda"
LIMIT = float(sys.argv[1]) if len(sys.argv) > 1 else 420
out = open(os.path.join(os.environ.get("OUT", "/tmp"), "sweep.jsonl"), "w")
x, y, xt, yt, ood = load(dev)
T0 = time.time()
base = dict(steps=1200, nets_per_step=4, batch_size=64, noise_batch=32, val_every=200)
GI = dict(lr_mean=3e-3, lr_generator=3e-4)
runs = [
    ("GI", dict(GI)),
    ("GI_val0", dict(GI, val_fraction=0.0)),
    ("GI_nomixer", dict(GI, mixer=False)),
    ("GI_nodisc", dict(GI, discriminator=False)),
    ("lrmean1e-2", dict(lr_mean=1e-2)),
    ("GI_beta10", dict(GI, beta=10.0)),
    ("GI_init0.5", dict(GI, init_scale=0.5)),
    ("G_gh128_lrgen1e-3", dict(lr_mean=3e-3, lr_generator=1e-3, generator_hidden=128)),
    ("GI_gh128_n2_S2000", dict(GI, generator_hidden=128, nets_per_step=2, steps=2000)),
    ("GI_val0_S2400", dict(GI, val_fraction=0.0, steps=2400)),
    ("GI_wd0", dict(GI, weight_decay=0.0)),
    ("GI_const", dict(GI, lr_schedule="constant")),
    ("GI_pretrain", dict(GI, pretrain_steps=200)),
    ("GI_nb8", dict(GI, noise_batch=8)),
]
if os.environ.get("SMOKE"):
    base.update(steps=6, val_every=3)
    runs = [("A_base", {}), ("ens5x15", None), ("B", dict(steps=4)), ("O_nomixer", dict(mixer=False))]
    xt, yt = xt[:500], yt[:500]
    ood = {k: v[:500] for k, v in ood.items()}
    x, y = x[:600], y[:600]
for name, over in runs:
    if time.time() - T0 > LIMIT:
        print("time limit; skipped", name, flush=True)
        continue
    t = time.time()
    if over is None:
        w = train_plain_ensemble(x, y, device=dev, **({'members': 2, 'epochs': 1} if os.environ.get('SMOKE') else {}))
        fit_s = time.time() - t
        res = evaluate_weights(small_cnn().to(dev), w, xt, yt, ood)
        rec = {"name": name, "fit_s_gpu": round(fit_s, 1), **res}
    else:
        cfg = HyperGAN.make_config({k: str(v) for k, v in {**base, **over}.items()})
        s = HyperGAN(small_cnn(), cfg, device=dev)
        s.fit(TensorDataset(x, y), seed=0)
        torch.cuda.synchronize()
        fit_s = time.time() - t
        w = s.sample(100, generator=torch.Generator().manual_seed(123))
        res = evaluate_weights(s.target, w, xt, yt, ood)
        rec = {"name": name, "over": over, "fit_s_gpu": round(fit_s, 1), **res, "extra": s.extra_metrics,
               "hist": [{k: round(v, 4) for k, v in h.items()} for h in s.history]}
    print(json.dumps({k: v for k, v in rec.items() if k != "hist"}), flush=True)
    out.write(json.dumps(rec) + "\n"); out.flush()
import glob
tags = sys.argv[2].split(",") if len(sys.argv) > 2 else []
deadline = time.time() + float(sys.argv[3] if len(sys.argv) > 3 else 120)
for tag in tags:
    while not os.path.exists(f"/tmp/cpufit_{tag}.done") and time.time() < deadline:
        time.sleep(2)
    if not os.path.exists(f"/tmp/cpufit_{tag}.done"):
        print("cpufit not done", tag, flush=True)
        continue
    state = torch.load(f"/tmp/cpufit_{tag}.pt", weights_only=True)
    s = HyperGAN(small_cnn(), HyperGAN.Config(**state["config"]), device=dev)
    s.load_state_dict(state)
    w = s.sample(100, generator=torch.Generator().manual_seed(123))
    rec = {"name": "cpufit_" + tag, **evaluate_weights(s.target, w, xt, yt, ood), "extra": s.extra_metrics}
    print(json.dumps(rec), flush=True)
    out.write(json.dumps(rec) + "\n"); out.flush()
print("total", time.time() - T0)
