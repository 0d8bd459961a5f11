# The gpufleet operator image. `make image` builds it with podman (hack/image.sh); Docker (BuildKit,
# for RUN --mount) and buildah work too:
#   docker build -t ghcr.io/gpufleet/gpufleet:0.1.0 .
# BASE is any Debian-like image with python3 (>= 3.11, with its venv module), groupadd and useradd.
# The default is the public one users pull; hack/image.sh passes a Debian bookworm root filesystem
# made with mmdebstrap (the same Python 3.11), for machines that cannot pull from registries.
ARG BASE=python:3.11-slim-bookworm

# Stage 1: a venv with the runtime dependencies only (pyproject's [project].dependencies; the
# [report], [bench] and [dev] extras stay out), read from pyproject.toml so that this stage is
# reused until they change. A build machine whose egress re-signs TLS passes its CA bundle as the
# optional secret pip-cert (hack/image.sh does); it is mounted for the step only, never in a layer.
FROM ${BASE} AS deps
RUN python3 -m venv /opt/gpufleet
COPY pyproject.toml /src/
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
 && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && /opt/gpufleet/bin/pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt \
 && /opt/gpufleet/bin/pip check

# Stage 2: that venv as it ships: without pip and setuptools, the test suites inside wheels, or the
# kubernetes client's asyncio twin (kubernetes.aio, about 68 MB: gpufleet uses the synchronous
# client, kopf its own aiohttp one, and nothing imports it).
FROM deps AS runtime-deps
RUN /opt/gpufleet/bin/pip uninstall -y -q pip setuptools \
 && find /opt/gpufleet -depth -type d -name tests -path '*/site-packages/*/tests' -exec rm -rf {} + \
 && rm -rf /opt/gpufleet/lib/python3*/site-packages/kubernetes/aio

# Stage 3: gpufleet itself, installed under /stage exactly where it lies in the image, so a code
# change rebuilds this small layer only.
FROM deps AS build
WORKDIR /src
COPY README.md ./
# operator/gpufleet/forecasting is a symlink to ../../forecasting: copy both, the wheel follows it.
COPY operator/ operator/
COPY forecasting/ forecasting/
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
 && /opt/gpufleet/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps --root /stage .

# The image: the base, a fixed user, the venv and gpufleet; no build tools, no source tree.
FROM ${BASE}
# A fixed numeric uid/gid, so runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --gid 10001 gpufleet \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin gpufleet
COPY --from=runtime-deps /opt/gpufleet /opt/gpufleet
COPY --from=build /stage/ /
ENV PATH=/opt/gpufleet/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
USER 10001:10001
# kopf's health endpoint (--health) and the operator's metrics (--metrics-port), as the chart sets them.
EXPOSE 8080 9090
ENTRYPOINT ["gpufleet", "operator"]
CMD ["--health=0.0.0.0:8080", "--metrics-port=9090"]
