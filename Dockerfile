# The gpufleet operator image: `docker build -t ghcr.io/gpufleet/gpufleet:0.1.0 .`
# Two stages: the wheel is built (with setuptools from PyPI, pyproject's build-system) in the first,
# so the runtime image carries no build tools and no source tree.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
# operator/gpufleet/forecasting is a symlink to ../../forecasting: copy both, the wheel follows it.
COPY operator/ operator/
COPY forecasting/ forecasting/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# A fixed numeric uid/gid, so runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --gid 10001 gpufleet \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin gpufleet
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
# kopf's health endpoint (--health) and the operator's metrics (--metrics-port), as the chart sets them.
EXPOSE 8080 9090
ENTRYPOINT ["gpufleet", "operator"]
CMD ["--health=0.0.0.0:8080", "--metrics-port=9090"]
