#!/bin/bash
# Weizmann row with the paper-size inverse-variance denoiser (W2, fp16 weights upcast): Table 1 cells + sigma / k sweeps.
set -u
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled GIT_COMMIT=${GIT_COMMIT:-unknown}
OUT=${OUT:-/tmp/gpuout}; mkdir -p $OUT/wz; LOG=$OUT/log.txt
T0=$(date +%s); s() { echo "=== $(date +%T) +$(( $(date +%s) - T0 ))s $*" | tee -a $LOG; }
if [ -d .whl ] && [ "${QUICK:-0}" != 1 ]; then python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site; fi
python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())" | tee -a $LOG
WZDATA=$([ "${QUICK:-0}" = 1 ] && echo /work/shared/data/weizmann/mocogan_actions || echo .gpu/weizmann/mocogan_actions)
sed -i "s|data_dir: ../shared/data/weizmann/mocogan_actions|data_dir: $WZDATA|" configs/weizmann.yaml configs/vae_weizmann.yaml
mkdir -p runs/weizmann/checkpoints
python3 - <<'PY'
import torch
c = torch.load(".gpu/W2_fp16.ckpt", map_location="cpu", weights_only=False)
c["state_dict"] = {k: v.float() if v.is_floating_point() else v for k, v in c["state_dict"].items()}
torch.save(c, "runs/weizmann/checkpoints/last.ckpt")
print("epoch", c["epoch"], "step", c["global_step"], c["hyper_parameters"]["loss_weighting"])
PY
TR=${TR:-5}; ST=${ST:-}
s evaluate
(timeout 190 python3 scripts/reproduce_table1.py --datasets weizmann --methods linear tangent --no-train --trials $TR --out $OUT/wz > $OUT/wz/eval.txt 2>&1; grep -a "DTW-SSID" $OUT/wz/eval.txt | tee -a $LOG) &
(timeout 190 python3 scripts/sweep.py --dataset weizmann --sigmas 0.5 1 2 3 --trials 2 --out $OUT/wz --tag w2 > $OUT/wz/sweep.txt 2>&1; grep -a "DTW-SSID" $OUT/wz/sweep.txt | tee -a $LOG) &
(timeout 190 python3 scripts/sweep.py --dataset weizmann --sigmas 1 --ks 2 8 --methods tangent --trials 2 --out $OUT/wz --tag w2_k > $OUT/wz/sweep_k.txt 2>&1; grep -a "DTW-SSID" $OUT/wz/sweep_k.txt | tee -a $LOG) &
wait
s pack
tar czf $OUT/wz.tgz -C $OUT wz && rm -rf $OUT/wz
s done
