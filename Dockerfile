# One image for every role (migrate, api, worker); the compose file picks the command.
#   CPU:  docker build -t lrsearch .
#   GPU:  docker build --build-arg VARIANT=gpu -t lrsearch:gpu .   (TensorFlow with CUDA wheels)
FROM python:3.11-slim

ARG VARIANT=cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    LRSEARCH_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY lrsearch ./lrsearch
COPY service ./service
COPY worker ./worker
COPY alembic ./alembic
# Editable, so that `lrsearch migrate` finds the migration scripts in /app/alembic.
RUN if [ "$VARIANT" = "gpu" ]; then pip install -e ".[gpu]"; else pip install -e .; fi

# Offline datasets (mnist.npz, cifar10 batches, ...) and uploads live here.
VOLUME ["/data"]
EXPOSE 8000
# A non-root user: the API and the workers need no privileges.
RUN useradd --create-home lrsearch && mkdir -p /data && chown lrsearch /data
USER lrsearch
ENTRYPOINT ["lrsearch"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
