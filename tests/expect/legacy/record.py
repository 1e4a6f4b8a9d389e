import json, numpy as np, torch
import spos_hw.nas.spaces
from spos_hw.nas.checkpoint import load_supernet, load_subnet
from spos_hw.latency.predictor import load_predictor
from spos_hw.nas.search import report_search
net, ck = load_supernet("supernet.pt"); net.eval()
space = net.space
rng = np.random.default_rng(7)
archs = space.decode(space.sample(rng, 4))
x = torch.randn(3, *space.input_shape, generator=torch.Generator().manual_seed(3))
out = {"archs": [str(a) for a in archs]}
with torch.no_grad():
    out["supernet_logits"] = [net(x, a).tolist() for a in archs]
    sub, sck = load_subnet("model.pt"); sub.eval()
    out["subnet_arch"] = str(sub.arch)
    out["subnet_logits"] = sub(x).tolist()
pred = load_predictor("lut.json", space)
out["predicted_ms"] = pred.cost(space.encode(archs)).tolist()
out["report"] = report_search("search", {"latency": 0.0345, "flops": 100}, lut="lut.json")
out["input_seed"] = 3
json.dump(out, open("expect.json", "w"), indent=1)
print(out["report"]["arch"], out["predicted_ms"])
