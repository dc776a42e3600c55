# syntax=docker/dockerfile:1
# One image for the worker, the trainer, migrations and ingestion: `factmatch <command>`.
#   docker build -t factmatch .                                  # CUDA build of torch (PyPI's Linux default)
#   docker build --build-arg TORCH_INDEX_URL=<PyTorch CPU wheel index> -t factmatch:cpu .
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
RUN pip install --upgrade pip \
 && if [ -n "$TORCH_INDEX_URL" ]; then pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"; \
    else pip install "torch==${TORCH_VERSION}"; fi
# Dependencies first (cached layer), then the project itself.
COPY worker ./worker
COPY trainer ./trainer
COPY migrations ./migrations
RUN pip install -c constraints.txt . && pip uninstall -y factmatch \
 && pip install --no-deps -e .

FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/models/hf-cache \
    FACTMATCH_MODEL_STORE=/models
RUN groupadd --system --gid 10001 factmatch \
 && useradd --system --uid 10001 --gid factmatch --home-dir /app --shell /usr/sbin/nologin factmatch \
 && mkdir -p /models && chown factmatch:factmatch /models
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=factmatch:factmatch /app /app
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["factmatch"]
CMD ["worker"]
