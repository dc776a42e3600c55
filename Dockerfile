# syntax=docker/dockerfile:1.7
# One image for the worker, the trainer, migrations and ingestion: `factmatch <command>`.
#
#   docker build -t factmatch .                                    # torch for CUDA 12.8 (the default)
#   docker build --build-arg TORCH_CUDA=cu130 -t factmatch .       # CUDA 13
#   docker build --build-arg TORCH_CUDA=cpu -t factmatch:cpu .     # no GPU
#
# TORCH_CUDA picks PyTorch's wheel index, and with it the NVIDIA driver the nodes need:
#   cu128 (default): driver >= 570 (>= 525 through CUDA minor-version compatibility); Volta and newer
#   cu130:           driver >= 580; Turing and newer (PyPI's own torch wheels are this line)
#   cpu:             no driver; a smaller image for CPU-only workers
# PyPI's plain `torch` would be cu130: many GPU node pools still run 535/550 drivers.
ARG PYTHON_VERSION=3.11
ARG DEBIAN_CODENAME=bookworm

FROM python:${PYTHON_VERSION}-slim-${DEBIAN_CODENAME} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu128
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_CUDA}
# Where pip also looks for wheels (a mirror; deploy/build_image.sh serves this machine's CPU torch).
ARG PIP_FIND_LINKS=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# 1. torch alone: the largest layer, changed only by its build arguments.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

# 2. The dependencies, from pyproject.toml and the constraints alone: a code or README edit
#    does not reinstall them. (tomllib reads the list; the project itself is not installed yet.)
#    pdqhash is a source package: its C++ builds here, in the build stage only (the compiler
#    is Debian's for the pinned codename; it never reaches the runtime image).
COPY pyproject.toml constraints.txt ./
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" \
        > requirements.txt \
 && pip install -c constraints.txt -r requirements.txt

# 3. The project, last and without dependencies: a normal (not editable) install; the SQL
#    migrations and shipped decision models travel as package data.
COPY README.md ./
COPY worker ./worker
COPY trainer ./trainer
COPY migrations ./migrations
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
 && python -c "import migrations, worker.retrieval.shipped, worker.settings, worker.images.reader, worker.console.app"

FROM python:${PYTHON_VERSION}-slim-${DEBIAN_CODENAME} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="factmatch" \
      org.opencontainers.image.description="Streaming moderation worker: matches social-media posts to published fact-checks." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# Everything writable is under /tmp (an emptyDir in the chart, so readOnlyRootFilesystem holds)
# or /models (the model store volume); the code is root-owned and read-only to the runtime user.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp/home \
    XDG_CACHE_HOME=/tmp/cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    TRITON_CACHE_DIR=/tmp/triton \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor \
    HF_HOME=/models/hf-cache \
    FACTMATCH_MODEL_STORE=/models
# Tesseract and its data for the text in posts' images (FACTMATCH_IMAGE_OCR_LANGS' default); the
# fonts calibration renders labelled posts as memes with (FACTMATCH_CALIBRATE_READ_TEXT).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng tesseract-ocr-spa \
        tesseract-ocr-fra tesseract-ocr-deu tesseract-ocr-por fonts-dejavu-core fonts-dejavu-extra fonts-liberation \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 factmatch \
 && useradd --system --uid 10001 --gid 0 --home-dir /tmp/home --shell /usr/sbin/nologin factmatch \
 && mkdir -p /models \
 && chown 10001:0 /models \
 && chmod 2775 /models
COPY --from=build /opt/venv /opt/venv
WORKDIR /tmp
# Any UID works (OpenShift assigns a random one in group 0): nothing needs to be owned by 10001.
USER 10001:0
ENTRYPOINT ["factmatch"]
CMD ["worker"]
