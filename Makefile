# Entry points. `make demo` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help demo test lint unit sanity molecule testbed clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

demo:  ## Provision a local container host, put load on it, deploy under load, print what was lost
	@scripts/demo.sh

test:  ## The whole suite: lint, unit tests and every Molecule scenario (what CI runs)
	@scripts/test.sh

testbed:  ## Only set up: toolchain, Docker engine, test images, wheelhouse
	@scripts/testbed/venv.sh && scripts/testbed/ensure_docker.sh && \
	  scripts/testbed/build_images.sh && scripts/testbed/build_wheelhouse.sh

lint:  ## yamllint, ansible-lint (production), argument-spec check, collection build
	@scripts/testbed/venv.sh && scripts/lint.sh

unit:  ## Unit tests of the plugins
	@scripts/testbed/venv.sh && .venv/bin/python -m pytest -q tests/unit

sanity:  ## ansible-test sanity --python 3.11 on a copy under .cache (offline but for PyPI)
	@scripts/testbed/venv.sh && scripts/sanity.sh

molecule:  ## One scenario on one distro: make molecule SCENARIO=smoke DISTRO=debian12
	@scripts/molecule_scenario.sh $(or $(SCENARIO),smoke) $(or $(DISTRO),debian12)

clean:  ## Remove the toolchain, caches and test containers (keeps the images)
	-@docker ps -aq --filter name=taskstack- | xargs -r docker rm -f
	rm -rf .venv .cache .ansible
