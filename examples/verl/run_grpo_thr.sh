#!/usr/bin/env bash
# GRPO + THR with verl 0.9 (v1 trainer, FSDP2 actor, vLLM rollout) on MATH, one node.
#
#   pip install 'thr-rl[verl]' vllm            # verl's own GPU stack (ray, vllm, flash-attn, ...)
#   python examples/verl/prepare_data.py --levels 3,4,5 --out ~/data/thr_math
#   NGPUS=4 THR_P=0.2 bash examples/verl/run_grpo_thr.sh
#   LOSS_MODE=gspo bash examples/verl/run_grpo_thr.sh      # GSPO-token (verl's gspo keeps token advantages)
#   THR_MODE=off bash examples/verl/run_grpo_thr.sh        # plain GRPO, THR metrics still logged
#
# The plugin must be imported in every Ray process: VERL_USE_EXTERNAL_MODULES goes through
# ray_init.runtime_env.env_vars below, together with all nine THR_* settings. Each value is
# quoted for Hydra ('0.2', not 0.2): unquoted, Hydra reads numbers as floats and ray.init
# refuses the runtime env (env_vars must be Dict[str, str]).
set -euo pipefail
cd "$(dirname "$0")/../.."

MODEL=${MODEL:-Qwen/Qwen2.5-Math-1.5B}
DATA=${DATA:-$HOME/data/thr_math}
NGPUS=${NGPUS:-4}
LOSS_MODE=${LOSS_MODE:-vanilla}
STEPS=${STEPS:-40}
THR_MODE=${THR_MODE:-reweight}
THR_P=${THR_P:-0.2}
THR_THRESHOLD=${THR_THRESHOLD:-nthr}
THR_BETA=${THR_BETA:-1.0}
THR_QUANTILE=${THR_QUANTILE:-0.2}
THR_VALUE=${THR_VALUE:-0.0}
THR_POSITIVE_REWARD=${THR_POSITIVE_REWARD:-1.0}
THR_CHUNK_SIZE=${THR_CHUNK_SIZE:-1024}
THR_METHOD=${THR_METHOD:-auto}
THR_VARS=(THR_MODE THR_P THR_THRESHOLD THR_BETA THR_QUANTILE THR_VALUE THR_POSITIVE_REWARD THR_CHUNK_SIZE THR_METHOD)

export VERL_USE_EXTERNAL_MODULES=thr.integrations.verl
export "${THR_VARS[@]}"
ENV=+ray_kwargs.ray_init.runtime_env.env_vars
RAY_ENV=("$ENV.VERL_USE_EXTERNAL_MODULES='thr.integrations.verl'")
for name in "${THR_VARS[@]}"; do
  RAY_ENV+=("$ENV.$name='${!name}'")  # quoted: a string for Hydra, as ray requires
done

python3 -m verl.trainer.main_ppo \
  algorithm.adv_estimator=grpo_thr \
  algorithm.use_kl_in_reward=false \
  data.train_files="$DATA/train.parquet" \
  data.val_files="$DATA/test.parquet" \
  data.train_batch_size=256 \
  data.max_prompt_length=1024 \
  data.max_response_length=3072 \
  actor_rollout_ref.model.path="$MODEL" \
  actor_rollout_ref.model.use_remove_padding=true \
  actor_rollout_ref.actor.strategy=fsdp2 \
  actor_rollout_ref.actor.optim.lr=1e-6 \
  actor_rollout_ref.actor.ppo_mini_batch_size=64 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
  actor_rollout_ref.actor.clip_ratio=0.2 \
  actor_rollout_ref.actor.use_kl_loss=true \
  actor_rollout_ref.actor.kl_loss_coef=1e-4 \
  actor_rollout_ref.actor.kl_loss_type=low_var_kl \
  actor_rollout_ref.actor.policy_loss.loss_mode="$LOSS_MODE" \
  actor_rollout_ref.actor.ulysses_sequence_parallel_size=1 \
  actor_rollout_ref.rollout.name=vllm \
  actor_rollout_ref.rollout.n=8 \
  actor_rollout_ref.rollout.temperature=1.0 \
  actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
  actor_rollout_ref.rollout.gpu_memory_utilization=0.5 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8 \
  reward.custom_reward_function.path=examples/verl/reward.py \
  reward.custom_reward_function.name=compute_score \
  trainer.use_v1=true \
  trainer.balance_batch=true \
  trainer.n_gpus_per_node="$NGPUS" \
  trainer.nnodes=1 \
  trainer.total_training_steps="$STEPS" \
  trainer.logger='["console"]' \
  trainer.project_name=thr \
  trainer.experiment_name="grpo-thr-p${THR_P}-${LOSS_MODE}" \
  "${RAY_ENV[@]}" \
  "$@"
