# dermafake API and trainer image. GPU hosts use the CUDA runtime base (the default); hosts that
# cannot pull it pass a local Debian/Ubuntu image with Python 3.11+ as BASE_IMAGE.
# Weights are mounted at /artifacts at run time, never baked in.
# podman: build with `--format docker`, or the OCI format drops HEALTHCHECK (and SHELL).
# CPU-only hosts: --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu installs
# torch's CPU wheels (a few hundred MB) instead of the CUDA ones (most of the ~6.7 GB image).
ARG BASE_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04

FROM ${BASE_IMAGE} AS build
# Marks the build stage's image so that scripts can remove it after the build
# (`podman image prune -f --filter label=dermafake.stage=build`): it holds a second copy of the
# environment (~6 GB with CUDA torch).
LABEL dermafake.stage=build
# Optional local package sources (a wheel folder, a file:// index) so torch is not downloaded again.
ARG PIP_FIND_LINKS=""
ARG PIP_EXTRA_INDEX_URL=""
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN if ! python3 -m venv --help >/dev/null 2>&1; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY training ./training
COPY app ./app
# hadolint ignore=DL3013
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        /opt/venv/bin/pip install --index-url "$TORCH_INDEX_URL" torch torchvision; \
    fi \
    && /opt/venv/bin/pip install . \
    && /opt/venv/bin/python -c "import app.main, training.pipeline, torch, torchvision"

FROM ${BASE_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# /data is owned by the service user so that the trainer's --download can fill a fresh volume.
# torch.compile (DERMAFAKE_COMPILE, on by default) builds kernels at start-up: inductor needs a
# C++ compiler and the Python headers on CPU, Triton a C compiler on CUDA. Without them the
# service falls back to eager, slower, and logs why.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-dev g++ \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --shell /usr/sbin/nologin dermafake \
    && mkdir -p /artifacts /data \
    && chown dermafake:dermafake /artifacts /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    TORCH_HOME=/artifacts/torch \
    DERMAFAKE_ARTIFACTS_DIR=/artifacts \
    DERMAFAKE_HOST=0.0.0.0 \
    DERMAFAKE_PORT=8000
USER 10001:10001
WORKDIR /home/dermafake
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["python", "-m", "app"]
