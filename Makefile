# switchpoint: make sweep TASK=jsquad SWEEP=smoke   (see README.md)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SP := $(PY) -m switchpoint

TASK ?=
SWEEP ?= default
BACKEND ?= local
STORE ?= runs
MODEL ?=
REGISTRY ?= $(IMAGE_REGISTRY)
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGES := train infer-local infer-bedrock score

task_args = $(if $(TASK),--task $(TASK)) --sweep $(SWEEP) --store $(STORE)
run_args = $(task_args) --backend $(BACKEND) $(if $(MODEL),--model $(MODEL)) $(if $(REGISTRY),--registry $(REGISTRY))

.PHONY: help install test test-fast lint bench sweep plan status data train infer-local infer-bedrock score report images push clean

help:
	@echo "make install                      venv with torch (CPU) and every extra"
	@echo "make sweep TASK=jsquad SWEEP=smoke  offline end-to-end sweep (tiny model, bundled data)"
	@echo "make sweep TASK=xlsum [SWEEP=default|study] [BACKEND=local|docker|sagemaker] [STORE=runs|s3://bucket/prefix]"
	@echo "make plan|status ...              estimate cost before / show progress and spend during a sweep"
	@echo "make plan ... OFFLINE=1           the pre-flight without network: no host tried, the store not read"
	@echo "make data|train|infer-local|infer-bedrock|score|report ...   one step of the sweep"
	@echo "make test | lint | bench | images | push"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# The CPU wheel of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -c constraints.txt -e '.[dev]'

install: $(PY)

test: $(PY)
	$(PY) -m pytest -q -n 2 --durations=10

lint: $(PY)
	$(VENV)/bin/hadolint --failure-threshold warning $(foreach i,$(IMAGES),images/$(i)/Dockerfile)

GPU_BENCH_CONFIG ?= llama-1b
BENCH_LOG ?= bench/results/last-run.log
bench: $(PY)
	@set -o pipefail; { \
	  for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done; \
	  if $(PY) -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then \
	    echo "== GPU section: a ~1B model of $(GPU_BENCH_CONFIG)'s shape, random weights"; \
	    $(PY) bench/bench_train.py --gpu-config $(GPU_BENCH_CONFIG) && \
	    $(PY) bench/bench_infer.py --gpu-config $(GPU_BENCH_CONFIG) || exit 1; \
	  else echo "== GPU section skipped: no CUDA GPU visible here"; fi; \
	} 2>&1 | tee $(BENCH_LOG)
	@echo "== every before/after ratio of this run (baseline in the same process):"; grep '^RATIO' $(BENCH_LOG)

sweep plan status: $(PY)
	$(if $(filter sweep,$@),$(SP) run sweep $(run_args),$(SP) $@ $(task_args)$(if $(filter plan,$@), --backend $(BACKEND)$(if $(REGISTRY), --registry $(REGISTRY))$(if $(filter 1,$(OFFLINE)), --offline)))

data train infer-local infer-bedrock score report: $(PY)
	$(SP) run $@ $(run_args)

images:
	@for i in $(IMAGES); do docker build -f images/$$i/Dockerfile -t switchpoint-$$i:$(VERSION) . || exit 1; done

push: images
	@test -n "$(REGISTRY)" || { echo "set REGISTRY=<account>.dkr.ecr.<region>.amazonaws.com (and log in to ECR)"; exit 2; }
	@for i in $(IMAGES); do \
	  aws ecr describe-repositories --repository-names switchpoint-$$i >/dev/null 2>&1 || aws ecr create-repository --repository-name switchpoint-$$i >/dev/null; \
	  docker tag switchpoint-$$i:$(VERSION) $(REGISTRY)/switchpoint-$$i:$(VERSION) && docker push $(REGISTRY)/switchpoint-$$i:$(VERSION) || exit 1; \
	done

clean:
	rm -rf runs build dist *.egg-info .pytest_cache
