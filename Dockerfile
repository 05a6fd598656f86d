# syntax=docker/dockerfile:1
# Gekko's image: `docker build -t gekko .`, then `docker compose up` (compose.yaml) for the demo
# with PostgreSQL, Redis, Prometheus and Grafana. docs/deployment.md says how to run it.
#
# Two stages. `build` installs the package and its runtime dependencies into a virtual
# environment; `runtime` copies only that environment onto a slim Python: no compiler, no
# source tree, no test extras and no torch (training needs torch; serving needs onnxruntime
# only, DESIGN.md §1; torch alone is ~750 MB installed, CPU build).

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/gekko
WORKDIR /src
# the package: setuptools finds engine*, procs*, shm*, models*, ops*, perf* (pyproject.toml)
COPY pyproject.toml README.md ./
COPY engine engine
COPY procs procs
COPY shm shm
COPY models models
COPY ops ops
COPY perf perf
# the runtime dependencies only (no [test] or [train] extra: no torch)
RUN /opt/gekko/bin/pip install . \
    && /opt/gekko/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)" \
    && /opt/gekko/bin/gekko --help >/dev/null

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
# an unprivileged user; its home is the engine's var_dir (ops/deploy/gekko.toml), a volume
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/gekko --create-home gekko
COPY --from=build /opt/gekko /opt/gekko
COPY ops/deploy/gekko.toml /etc/gekko/config.toml
ENV PATH=/opt/gekko/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/var/lib/gekko/numba-cache
USER gekko
WORKDIR /var/lib/gekko
VOLUME /var/lib/gekko
# the Prometheus exporter ([metrics] listen in ops/deploy/gekko.toml)
EXPOSE 9464
# SIGTERM is a clean stop: the strategies cancel, risk and exec drain, exec cancels what is left
STOPSIGNAL SIGTERM
ENTRYPOINT ["gekko"]
CMD ["run", "--config", "/etc/gekko/config.toml"]
