# commentdesk scoring service, CPU only.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    COMMENTDESK_MODEL_DIR=/app/artifacts/minilm-brand \
    COMMENTDESK_SERVER__HOST=0.0.0.0 \
    COMMENTDESK_SERVER__PORT=8000

RUN useradd --create-home --uid 10001 commentdesk
WORKDIR /app

# The CPU wheel of torch first: the default index would pull a multi-GB CUDA build.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY model/ model/
COPY service/ service/
COPY training/ training/
COPY commentdesk/ commentdesk/
COPY artifacts/ artifacts/
RUN pip install --no-cache-dir .

USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["commentdesk", "serve"]
