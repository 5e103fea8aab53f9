# Ringlane image: both entry points (ringlane-sidecar, ringlane-operator).
#
# BASE is a Debian bookworm image with python3 (3.11) and apt. The e2e harness
# builds it locally (localhost/ringlane-testbox:dev, debootstrap minbase) and
# runs: buildah bud --pull=never --isolation chroot --build-arg BASE=... .
# Any Debian bookworm image that has python3 and apt works as BASE.
ARG BASE=localhost/ringlane-testbox:dev

# ---- build: compile the C core (cffi) and collect every wheel ----------------
FROM ${BASE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
# liburing-dev and node-llhttp (llhttp's C sources) are what build_core.py compiles against.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev python3-dev python3-venv \
      liburing-dev node-llhttp \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/build-venv
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY sidecar ./sidecar
COPY operator ./operator
# pip_cert (optional build secret): a CA bundle for networks with a TLS proxy.
# The project's dependencies are pinned in pyproject.toml; pip itself is pinned here.
# The runtime venv is assembled here without pip in it, and copied whole below.
# The pip cache mount keeps downloaded wheels across builds (not in any layer).
RUN --mount=type=secret,id=pip_cert --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && /opt/build-venv/bin/pip install -q pip==25.3 \
 && /opt/build-venv/bin/pip wheel -q --wheel-dir /wheels . \
 && python3 -m venv --without-pip /opt/ringlane \
 && /opt/build-venv/bin/pip --python /opt/ringlane/bin/python install -q --no-index \
      --find-links /wheels ringlane \
 && /opt/ringlane/bin/python -c "import ringlane_sidecar._core, ringlane_operator"

# ---- runtime -----------------------------------------------------------------
FROM ${BASE} AS runtime
ARG BASE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ringlane" \
      org.opencontainers.image.description="Kubernetes sidecar proxy operator with a CPU-pinned io_uring data plane" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE}"
ENV DEBIAN_FRONTEND=noninteractive
# liburing2: the only native library the C core links besides libc (llhttp is compiled in).
RUN apt-get update \
 && apt-get install -y --no-install-recommends liburing2 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY --from=build /opt/ringlane /opt/ringlane
ENV PATH=/opt/ringlane/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Non-root numeric user, so runAsNonRoot can verify it; named in /etc/passwd because
# libraries ask for the user's name (kopf's peering identity calls getpass.getuser()).
RUN echo 'ringlane:x:65532:65532:ringlane:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'ringlane:x:65532:' >> /etc/group
USER 65532:65532
WORKDIR /
CMD ["ringlane-sidecar", "probe"]
