"""Full HyperGAN fit on CPU, 2 threads: fit time; state saved for a GPU evaluation of 100 nets."""
import json, os, sys, time
sys.path.insert(0, "runs/hgdev")
import torch
torch.set_num_threads(2)
from common import load
from uqbench.hypergan import HyperGAN
from uqbench.targets import small_cnn
from torch.utils.data import TensorDataset
tag = sys.argv[1]
x, y, xt, yt, ood = load("cpu")
over = dict(a.split("=", 1) for a in sys.argv[2:])
cfg = HyperGAN.make_config(over)
s = HyperGAN(small_cnn(), cfg)
t = time.perf_counter()
s.fit(TensorDataset(x, y), seed=0)
fit = time.perf_counter() - t
torch.save(s.state_dict(), f"/tmp/cpufit_{tag}.pt")
rec = {"what": "cpufit", "tag": tag, "over": over, "fit_s": round(fit, 1), "hist": s.history}
print(json.dumps(rec), flush=True)
open(os.path.join(os.environ.get("OUT", "/tmp"), "cpufit.jsonl"), "a").write(json.dumps(rec) + "\n")
open(f"/tmp/cpufit_{tag}.done", "w").write("1")
