"""Scratch helpers for HyperGAN dev runs (not part of the project)."""
import json, time
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset
from uqbench.functional import batched_predict, flat_weight_norms
from uqbench.targets import small_cnn


def load(device):
    d = torch.load("runs/hgdev/data.pt")
    f = lambda t: (t.float() / 255).to(device)
    return f(d["x"]), d["y"].to(device), f(d["xt"]), d["yt"].to(device), {"notmnist": f(d["notmnist"]), "fashion": f(d["fashion"])}


def entropy(p):
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


def auroc(s_in, s_out):
    from sklearn.metrics import roc_auc_score
    s = torch.cat([s_in, s_out]).cpu().numpy()
    lab = [0] * len(s_in) + [1] * len(s_out)
    return float(roc_auc_score(lab, s))


def score_probs(probs, yt, ood_probs=None):
    """probs [n, N, C] -> acc@k etc."""
    res = {}
    n = probs.shape[0]
    for k in (1, 5, 10, 100):
        if k <= n:
            res[f"acc@{k}"] = round(100 * float((probs[:k].mean(0).argmax(-1) == yt).float().mean()), 2)
    res["single_mean"] = round(100 * float((probs.argmax(-1) == yt).float().mean()), 2)
    pbar = probs.mean(0)
    res["disagree"] = round(100 * float((probs.argmax(-1) != pbar.argmax(-1)).float().mean()), 2)
    res["nll"] = round(float(-torch.log(pbar[torch.arange(len(yt)), yt].clamp_min(1e-12)).mean()), 4)
    if ood_probs:
        h = entropy(pbar)
        for name, po in ood_probs.items():
            res[f"auroc_{name}"] = round(auroc(h, entropy(po.mean(0))), 4)
    return res


def evaluate_weights(target, w, xt, yt, ood=None, budget=1 << 30):
    sm = lambda o: o.softmax(-1)
    probs = batched_predict(target, w, xt, transform=sm, memory_budget=budget)
    ood_probs = {k: batched_predict(target, w, v, transform=sm, memory_budget=budget) for k, v in (ood or {}).items()}
    norms = flat_weight_norms(w)
    res = score_probs(probs, yt, ood_probs)
    res["div"] = round(float(norms.std() / norms.mean()), 4)
    return res


def train_plain_ensemble(x, y, members=5, epochs=15, batch=64, lr=1e-3, seed=0, device="cpu"):
    """Plain Adam training of `members` small CNNs one after another (scratch baseline)."""
    nets = []
    g = torch.Generator().manual_seed(seed)
    for m in range(members):
        torch.manual_seed(seed * 100 + m)
        net = small_cnn().to(device)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=g).to(device)
            for i in range(0, len(x) - batch + 1, batch):
                idx = perm[i:i + batch]
                loss = F.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        nets.append(net)
    w = {k: torch.stack([dict(n.named_parameters())[k].detach() for n in nets]) for k, _ in nets[0].named_parameters()}
    return w
