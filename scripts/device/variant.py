"""Write a variant of a config: python variant.py <ds> <name> key.path=value ... -> /tmp/cfg_<name>/<ds>.yaml (+ vae)."""
import shutil, sys, yaml
from pathlib import Path
ds, name, *sets = sys.argv[1:]
cfg = yaml.safe_load(open(f"configs/{ds}.yaml"))
text = yaml.safe_dump(cfg, sort_keys=False).replace(f"runs/{ds}/", f"runs/{name}/").replace(f"name: {ds}\n", f"name: {name}\n")
cfg = yaml.safe_load(text)
for s in sets:
    key, val = s.split("=", 1)
    node, parts = cfg, key.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[parts[-1]] = yaml.safe_load(val)
out = Path(f"/tmp/cfg_{name}"); out.mkdir(exist_ok=True)
(out / f"{ds}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
shutil.copy(f"configs/vae_{ds}.yaml", out / f"vae_{ds}.yaml")
print(out / f"{ds}.yaml")
