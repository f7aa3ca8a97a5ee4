# minihcx: two commands.
#   make demo  - set up .venv and run the whole pipeline on the embedded default data, print the results
#   make test  - set up .venv (with the test-only requirements), run ruff check and ruff format --check
#                (both configured in pyproject.toml), then the test suite
# Each demo stage is a file target (a .done stamp written after the stage succeeds), so a stage whose
# output is already there is skipped; `make clean` starts over. The per-stage *_ARGS variables are the
# knobs (the test suite's smoke run passes tiny values through them).

PYTHON ?= python3
VENV   := .venv
PY     ?= $(VENV)/bin/python
OUT    ?= out
SETUP  ?= $(VENV)/.installed

TOKENIZER_ARGS ?=
TASKS_ARGS     ?=
DATA_ARGS      ?=
PRETRAIN_ARGS  ?=
SFT_ARGS       ?=
JSFT_ARGS      ?=
DPO_ARGS       ?=
SELF_JUDGE_ARGS?=
ORACLE_ARGS    ?=
RM_ARGS        ?=
RM_ARM_ARGS    ?=
EVAL_ARGS      ?=
SEED_ARGS      ?=
SEEDS          ?= 1 2 3

# `make demo` runs every stage at a smaller scale than the scripts' defaults (which `make reproduce`
# uses) to fit about 10 minutes on 2 cores: fewer steps per stage, and an evaluation on a stratified
# 88 of the 670 held-out prompts (evaluate.py measures the judge, so JSFT does not). Each knob goes
# before the stage's *_ARGS, so `make demo SFT_ARGS="--steps 200"` still wins. The README's results
# come from `make reproduce`.
DEMO_PRETRAIN   ?= --steps 160
DEMO_SFT        ?= --steps 100
DEMO_JSFT       ?= --steps 80 --sampled-pairs 400 --eval-prefs none
DEMO_RM         ?= --steps 50
DEMO_PREFERENCE ?= --steps 20
DEMO_EVAL       ?= --max-tasks 88 --rejection-prompts 32 --max-judge-pairs 160
# reproduce's evaluation: every held-out prompt, the self-rejection curve too; win rates by the
# verifier only (its table reads no others) and held-out judge accuracy of the two checkpoints
# that judge in SELF-JUDGE
REPRODUCE_EVAL_ARGS ?= --max-tasks 0 --rejection-prompts 0 --judge-ckpt '' --judges jsft,self_judge

CKPTS := pretrain=$(OUT)/pretrain,sft=$(OUT)/sft,dpo=$(OUT)/dpo,jsft=$(OUT)/jsft,onpolicy_rm=$(OUT)/onpolicy_rm,self_judge=$(OUT)/self_judge,oracle=$(OUT)/oracle
STAGES := tokenizer tasks data pretrain sft jsft dpo reward_model onpolicy_rm self_judge oracle eval

# run a stage's command; on success write its wall time (seconds) into the stage's .done stamp
define stage
	@mkdir -p $(dir $@)
	@start=$$(date +%s); $(1) && echo $$(( $$(date +%s) - start )) > $@.tmp && mv $@.tmp $@
endef

.PHONY: demo pipeline reproduce test clean venv

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q tests

demo: $(SETUP)
	@$(MAKE) --no-print-directory pipeline PY=$(PY) OUT=$(OUT) \
		PRETRAIN_ARGS="$(DEMO_PRETRAIN) $(PRETRAIN_ARGS)" SFT_ARGS="$(DEMO_SFT) $(SFT_ARGS)" \
		JSFT_ARGS="$(DEMO_JSFT) $(JSFT_ARGS)" RM_ARGS="$(DEMO_RM) $(RM_ARGS)" \
		DPO_ARGS="$(DEMO_PREFERENCE) $(DPO_ARGS)" SELF_JUDGE_ARGS="$(DEMO_PREFERENCE) $(SELF_JUDGE_ARGS)" \
		EVAL_ARGS="$(DEMO_EVAL) $(EVAL_ARGS)"

# The experiment behind the README's results, at the scripts' default scale: the pipeline after
# pretraining once per seed (the tokenizer, task world, data and pretrained base are shared, in
# $(OUT)/reproduce/base; a seed varies data order, sampling and judge data), then one table over the
# seeds with pooled paired intervals. The base is one process and gets every core (torch's default
# threads); then the seeds run at once, one thread per stage and REPRODUCE_JOBS stages at a time,
# which keeps 2 cores busier than threads can. JSFT and the reward model skip their own held-out
# pass: evaluate.py measures both judges on the same pairs.
REPRODUCE_JOBS ?= 3
REPRODUCE_JSFT ?= --eval-prefs none
REPRODUCE_RM   ?= --eval-prefs none
BASE      := $(OUT)/reproduce/base
SEED_RUNS := $(foreach s,$(SEEDS),$(OUT)/reproduce/seed$(s)/eval/.done)

reproduce: $(SETUP)
	@$(MAKE) --no-print-directory $(BASE)/pretrain/.done PY=$(PY) OUT=$(OUT)
	@OMP_NUM_THREADS=1 $(MAKE) --no-print-directory -j$(REPRODUCE_JOBS) $(SEED_RUNS) PY=$(PY) OUT=$(OUT)
	$(PY) reproduce.py --out-dir $(OUT)/reproduce $(SEED_RUNS:.done=report.json)

# the shared base: the pipeline's first stages, with $(BASE) as their OUT
$(BASE)/pretrain/.done:
	@$(MAKE) --no-print-directory $@ PY=$(PY) OUT=$(BASE)

$(OUT)/reproduce/seed%/eval/.done: $(BASE)/pretrain/.done  # a rebuilt base reruns the seeds
	@d=$(OUT)/reproduce/seed$*; mkdir -p $$d; \
	for x in tokenizer tasks data pretrain; do ln -sfn $(abspath $(BASE))/$$x $$d/$$x; done; \
	$(MAKE) --no-print-directory pipeline PY=$(PY) OUT=$$d SEED_ARGS="--seed $*" EVAL_ARGS="$(REPRODUCE_EVAL_ARGS)" \
		JSFT_ARGS="$(REPRODUCE_JSFT) $(JSFT_ARGS)" RM_ARGS="$(REPRODUCE_RM) $(RM_ARGS)"

pipeline: $(OUT)/eval/.done
	@echo; echo "wall time per stage (s):"; for s in $(STAGES); do printf "  %-11s %s\n" $$s "$$(cat $(OUT)/$$s/.done)"; done

$(OUT)/tokenizer/.done:
	$(call stage,$(PY) tokenizer.py --out $(OUT)/tokenizer $(TOKENIZER_ARGS))

$(OUT)/tasks/.done:
	$(call stage,$(PY) tasks.py --out-dir $(OUT)/tasks $(TASKS_ARGS))

$(OUT)/data/.done: $(OUT)/tokenizer/.done $(OUT)/tasks/.done
	$(call stage,$(PY) data.py --out-dir $(OUT)/data --tokenizer $(OUT)/tokenizer/tokenizer.model $(DATA_ARGS))

$(OUT)/pretrain/.done: $(OUT)/data/.done
	$(call stage,$(PY) pretrain.py --data-dir $(OUT)/data --out-dir $(OUT)/pretrain $(PRETRAIN_ARGS))

$(OUT)/sft/.done: $(OUT)/pretrain/.done
	$(call stage,$(PY) sft.py --init-from $(OUT)/pretrain --tasks-dir $(OUT)/tasks --out-dir $(OUT)/sft --lm-data $(OUT)/data $(SEED_ARGS) $(SFT_ARGS))

$(OUT)/jsft/.done: $(OUT)/sft/.done
	$(call stage,$(PY) jsft.py --init-from $(OUT)/sft --tasks-dir $(OUT)/tasks --out-dir $(OUT)/jsft --lm-data $(OUT)/data $(SEED_ARGS) $(JSFT_ARGS))

# the offline baseline learns from the pairs JSFT's judge learned from: the task world's and the sampled ones
DPO_PREFS = $(OUT)/tasks/prefs_train.jsonl,$(OUT)/tasks/ultrafeedback_train.jsonl,$(OUT)/jsft/sampled_prefs.jsonl
$(OUT)/dpo/.done: $(OUT)/sft/.done $(OUT)/jsft/.done
	$(call stage,$(PY) self_judge.py --offline --init-from $(OUT)/sft --prefs $(DPO_PREFS) --tasks-dir $(OUT)/tasks --out-dir $(OUT)/dpo $(SEED_ARGS) $(DPO_ARGS))

$(OUT)/self_judge/.done: $(OUT)/jsft/.done
	$(call stage,$(PY) self_judge.py --init-from $(OUT)/jsft --tasks-dir $(OUT)/tasks --out-dir $(OUT)/self_judge $(SEED_ARGS) $(SELF_JUDGE_ARGS))

# the baseline SELF-JUDGE removes: a separate Bradley-Terry reward model, trained from SFT on the same pairs,
# judges the same on-policy loop from the same start (three models in memory instead of two)
$(OUT)/reward_model/.done: $(OUT)/sft/.done $(OUT)/jsft/.done
	$(call stage,$(PY) reward_model.py --init-from $(OUT)/sft --prefs $(DPO_PREFS) --tasks-dir $(OUT)/tasks --out-dir $(OUT)/reward_model $(SEED_ARGS) $(RM_ARGS))

$(OUT)/onpolicy_rm/.done: $(OUT)/jsft/.done $(OUT)/reward_model/.done
	$(call stage,$(PY) self_judge.py --judge reward --reward-model $(OUT)/reward_model --init-from $(OUT)/jsft --tasks-dir $(OUT)/tasks --out-dir $(OUT)/onpolicy_rm $(SEED_ARGS) $(SELF_JUDGE_ARGS) $(RM_ARM_ARGS))

# the oracle arm: the same on-policy loop from the same start, judged by the verifier (an upper bound)
$(OUT)/oracle/.done: $(OUT)/jsft/.done
	$(call stage,$(PY) self_judge.py --judge verifier --init-from $(OUT)/jsft --tasks-dir $(OUT)/tasks --out-dir $(OUT)/oracle $(SEED_ARGS) $(SELF_JUDGE_ARGS) $(ORACLE_ARGS))

$(OUT)/eval/.done: $(OUT)/sft/.done $(OUT)/dpo/.done $(OUT)/jsft/.done $(OUT)/self_judge/.done $(OUT)/oracle/.done $(OUT)/onpolicy_rm/.done
	$(call stage,$(PY) evaluate.py --out-dir $(OUT)/eval --data-dir $(OUT)/data --tasks-dir $(OUT)/tasks --tokenizer-report $(OUT)/tokenizer/report.json --ckpts $(CKPTS) --reward-model $(OUT)/reward_model $(SEED_ARGS) $(EVAL_ARGS))

clean:
	rm -rf $(OUT)
