# minihcx: two commands.
#   make demo  - set up .venv and run the whole pipeline on the embedded default data, print the results
#   make test  - set up .venv (with the test-only requirements) and run the test suite
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
EVAL_ARGS      ?=

CKPTS := pretrain=$(OUT)/pretrain,sft=$(OUT)/sft,dpo=$(OUT)/dpo,jsft=$(OUT)/jsft,self_judge=$(OUT)/self_judge
STAGES := tokenizer tasks data pretrain sft jsft dpo self_judge eval

# run a stage's command; on success write its wall time (seconds) into the stage's .done stamp
define stage
	@mkdir -p $(dir $@)
	@start=$$(date +%s); $(1) && echo $$(( $$(date +%s) - start )) > $@.tmp && mv $@.tmp $@
endef

.PHONY: demo pipeline test clean venv

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed-test
	$(PY) -m pytest -q tests

demo: $(SETUP)
	@$(MAKE) --no-print-directory pipeline PY=$(PY) OUT=$(OUT)

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
	$(call stage,$(PY) sft.py --init-from $(OUT)/pretrain --tasks-dir $(OUT)/tasks --out-dir $(OUT)/sft $(SFT_ARGS))

$(OUT)/jsft/.done: $(OUT)/pretrain/.done
	$(call stage,$(PY) jsft.py --init-from $(OUT)/pretrain --tasks-dir $(OUT)/tasks --out-dir $(OUT)/jsft $(JSFT_ARGS))

$(OUT)/dpo/.done: $(OUT)/sft/.done
	$(call stage,$(PY) self_judge.py --offline --init-from $(OUT)/sft --tasks-dir $(OUT)/tasks --out-dir $(OUT)/dpo $(DPO_ARGS))

$(OUT)/self_judge/.done: $(OUT)/jsft/.done
	$(call stage,$(PY) self_judge.py --init-from $(OUT)/jsft --tasks-dir $(OUT)/tasks --out-dir $(OUT)/self_judge $(SELF_JUDGE_ARGS))

$(OUT)/eval/.done: $(OUT)/sft/.done $(OUT)/dpo/.done $(OUT)/jsft/.done $(OUT)/self_judge/.done
	$(call stage,$(PY) evaluate.py --out-dir $(OUT)/eval --data-dir $(OUT)/data --tasks-dir $(OUT)/tasks --tokenizer-report $(OUT)/tokenizer/report.json --ckpts $(CKPTS) $(EVAL_ARGS))

clean:
	rm -rf $(OUT)
