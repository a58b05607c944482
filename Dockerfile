# One image for every role (ingest, engine, api). CPU by default; GPU by build argument:
#   docker build -t spacevllm:cpu .
#   docker build -t spacevllm:gpu --build-arg VARIANT=gpu .
# torch is pinned as in pyproject.toml and installed from PyTorch's CPU (or CUDA) index, never unpinned.
FROM python:3.11-slim
ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG CUDA_INDEX=https://download.pytorch.org/whl/cu128
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 SVL_DATA_DIR=/data
WORKDIR /app
RUN if [ "$VARIANT" = "gpu" ]; then pip install "torch==${TORCH_VERSION}" --index-url "$CUDA_INDEX"; \
    else pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu; fi
COPY pyproject.toml README.md ./
COPY stream stream
COPY engine engine
COPY export export
COPY api api
COPY configs configs
COPY models models
COPY deploy deploy
# editable: the shipped model (models/tiny) is found next to the code
RUN pip install -e ".[${VARIANT}]"
RUN useradd --system --uid 10001 --home /data svl && mkdir -p /data && chown svl /data
USER svl
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"
CMD ["spacevllm", "serve", "--host", "0.0.0.0"]
