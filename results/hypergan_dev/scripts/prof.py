import sys, time, torch
sys.path.insert(0, "/tmp/hg")
import data
from uqbench.hypergan import HyperGAN
from uqbench.targets import small_cnn
from uqbench.training import seeded_generator
torch.set_num_threads(1)
x, y = data.mnist5k()
overrides = dict(kv.split("=", 1) for kv in sys.argv[1:])
s = HyperGAN(small_cnn(), HyperGAN.make_config(overrides))
c = s.config
g = seeded_generator(0)
s._calibrate_output_scale(g)
opt_g, opt_d = s._optimizers()
xb, yb = x[:c.batch_size], y[:c.batch_size]
for _ in range(3):
    s._step(xb, yb, opt_g, opt_d, g)
t = time.perf_counter()
for _ in range(5):
    s._step(xb, yb, opt_g, opt_d, g)
print("ms/step", (time.perf_counter() - t) / 5 * 1000)
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU]) as p:
    for _ in range(3):
        s._step(xb, yb, opt_g, opt_d, g)
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=22))
