import json, os, sys, time
sys.path.insert(0, "runs/hgdev")
import torch
torch.set_num_threads(2)
from common import load, train_plain_ensemble
x, y, xt, yt, ood = load("cpu")
t = time.perf_counter()
train_plain_ensemble(x, y)
rec = {"what": "ensemble5x15_cpu2", "fit_s": round(time.perf_counter() - t, 1)}
print(json.dumps(rec), flush=True)
open(os.path.join(os.environ.get("OUT", "/tmp"), "cpufit.jsonl"), "a").write(json.dumps(rec) + "\n")
