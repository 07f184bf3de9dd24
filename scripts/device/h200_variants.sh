#!/bin/bash
# One device session: longer-trained denoisers for rot and Weizmann (variants), then Table 1 cells + sigma sweeps.
# QUICK=1: smoke-test sizes (CPU).
set -u
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled GIT_COMMIT=${GIT_COMMIT:-unknown}
OUT=${OUT:-/tmp/gpuout}; mkdir -p $OUT
LOG=$OUT/log.txt
T0=$(date +%s)
s() { echo "=== $(date +%T) +$(( $(date +%s) - T0 ))s $*" | tee -a $LOG; }
if [ -d .whl ] && [ "${QUICK:-0}" != 1 ]; then python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site; fi
python3 -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" 2>&1 | tee -a $LOG
WZDATA=$([ "${QUICK:-0}" = 1 ] && echo /work/shared/data/weizmann/mocogan_actions || echo .gpu/weizmann/mocogan_actions)
sed -i "s|data_dir: ../shared/data/weizmann/mocogan_actions|data_dir: $WZDATA|" configs/weizmann.yaml configs/vae_weizmann.yaml
if [ "${QUICK:-0}" = 1 ]; then
  ACC=cpu; EW=1; EW2=1; ER=1; TE2=300; MAXT=00:00:01:00; TT=120; TE=300; TR=1; XT="--trainer.limit_train_batches=2 --trainer.limit_val_batches=1"
  WS="3"; RS="25"; VQ="trainer.callbacks.2.init_args.steps=2 trainer.check_val_every_n_epoch=1"
else
  ACC=gpu; EW=${EW:-200}; EW2=${EW2:-125}; ER=${ER:-800}; MAXT=${MAXT:-00:00:04:00}; TT=265; TE=140; TE2=90; TR=5; XT=""
  WS="1 2 3 5"; RS="20 30"; VQ=""
fi
FLOOR3=0.011764705882352941
FLOOR25=0.09803921568627451
ROTX=${ROTX-model.init_args.loss_weighting=inverse_variance model.init_args.sigma_floor=$FLOOR25}
CB=trainer.callbacks.2.init_args
IVW="model.init_args.loss_weighting=inverse_variance model.init_args.sigma_floor=$FLOOR3"
BIG="model.init_args.network.init_args.widths=[64,128,256] model.init_args.network.init_args.mid_width=512"
WZ="data.init_args.batch_size=64 trainer.max_epochs=$EW trainer.check_val_every_n_epoch=25 $CB.every_n_epochs=100 $CB.methods=[linear]"
RT="trainer.max_epochs=$ER trainer.check_val_every_n_epoch=50 $CB.every_n_epochs=250 $CB.methods=[linear]"
python3 scripts/device/variant.py weizmann W1 $IVW $WZ $VQ >> $LOG
python3 scripts/device/variant.py weizmann W2 $IVW $WZ trainer.max_epochs=$EW2 $BIG $VQ >> $LOG
python3 scripts/device/variant.py rot R1 $RT ${ROTX:-} $VQ >> $LOG
python3 scripts/device/variant.py rot R2 $RT $BIG ${ROTX:-} $VQ >> $LOG
train() {  # name ds
  timeout $TT python3 train.py fit --config /tmp/cfg_$1/$2.yaml --trainer.accelerator=$ACC --trainer.max_time=$MAXT \
    --trainer.enable_progress_bar=false $XT \
    --trainer.logger=lightning.pytorch.loggers.CSVLogger --trainer.logger.init_args.save_dir=runs --trainer.logger.init_args.name=$1 \
    > $OUT/train_$1.txt 2>&1
  echo "$1 train rc $? after $(( $(date +%s) - T0 ))s: $(grep -o "psnr_[0-9]*=[0-9.]*" $OUT/train_$1.txt | tail -3 | tr '\n' ' ')" | tee -a $LOG
}
s train
train W1 weizmann & train W2 weizmann & train R1 rot & train R2 rot & wait
s evaluate
evalv() {  # name ds sweep-sigmas
  timeout $TE python3 scripts/reproduce_table1.py --configs /tmp/cfg_$1 --datasets $2 --methods linear tangent --no-train \
    --trials $TR --out $OUT/$1 > $OUT/eval_$1.txt 2>&1
  grep -a "DTW-SSID" $OUT/eval_$1.txt | sed "s/^/$1 /" | tee -a $LOG
  timeout $TE2 python3 scripts/sweep.py --configs /tmp/cfg_$1 --dataset $2 --sigmas $3 --trials 2 --out $OUT/$1 --tag $1 \
    > $OUT/sweep_$1.txt 2>&1
  grep -a "DTW-SSID" $OUT/sweep_$1.txt | sed "s/^/$1 /" | tee -a $LOG
}
evalv W1 weizmann "$WS" & evalv W2 weizmann "$WS" & evalv R1 rot "$RS" & evalv R2 rot "$RS" & wait
s pack
python3 - <<'PY'
import torch, os
for name in ("W1", "W2", "R1", "R2"):
    p = f"runs/{name}/checkpoints/last.ckpt"
    if os.path.exists(p):
        c = torch.load(p, map_location="cpu", weights_only=False)
        print(name, "epoch", c["epoch"], "step", c["global_step"])
        c = {k: v for k, v in c.items() if k not in ("optimizer_states", "lr_schedulers", "callbacks", "loops")}
        if name.endswith("2"):  # paper-size: fp16 weights keep the returned files under 64 MiB
            c["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in c["state_dict"].items()}
        torch.save(c, os.environ["OUT"] + f"/{name}.ckpt")
PY
cp /tmp/cfg_*/*.yaml $OUT/ 2>/dev/null; for n in W1 W2 R1 R2; do cp /tmp/cfg_$n/*.yaml $OUT/$n/ 2>/dev/null; done
mkdir -p $OUT/logs; mv $OUT/*_*.txt $OUT/logs/; cp -r runs/W1 runs/W2 runs/R1 runs/R2 $OUT/logs/ 2>/dev/null
tar czf $OUT/results.tgz --exclude='*.ckpt' -C $OUT W1 W2 R1 R2 logs 2>>$LOG
tar cf $OUT/ckpts.tar -C $OUT $(cd $OUT && ls *.ckpt) && rm $OUT/*.ckpt
[ $(stat -c %s $OUT/ckpts.tar) -gt 15000000 ] && split -b 15M -d $OUT/ckpts.tar $OUT/ckpts.tar.part && rm $OUT/ckpts.tar
rm -rf $OUT/W1 $OUT/W2 $OUT/R1 $OUT/R2 $OUT/*.yaml $OUT/logs
s done
ls -la $OUT | tee -a $LOG
