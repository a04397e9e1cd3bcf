# One image for the demo and the dashboard:
#   docker build -t jeeves-control-tower .
#   docker run -p 9464:9464 jeeves-control-tower                         # the demo
#   docker run -p 8501:8501 jeeves-control-tower jeeves-ipc dashboard --host 0.0.0.0
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY src ./src
COPY dashboard ./dashboard
COPY grafana ./grafana
RUN pip install ".[demo,dashboard]"
COPY .streamlit ./.streamlit

RUN useradd --create-home --uid 10001 jeeves
USER jeeves

EXPOSE 9464 8501
CMD ["jeeves-ipc", "demo", "--host", "0.0.0.0", "--port", "9464"]
