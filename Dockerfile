# nodeos operator image.
#
# Two stages. `build` (on the machine's own platform) builds the nodeos wheel and installs it with
# the locked dependencies (requirements/runtime.txt, every file checked by hash) into
# /opt/nodeos/lib for the *target* platform, so an arm64 image builds on amd64 without emulation.
# The runtime stage only copies that directory onto a Python 3.11 base: no pip, no shell tools
# of ours, no sandbox or node simulator, nothing run as root.
#
# Bases are arguments. The defaults are digest-pinned public images; any base works whose
# `python3` on PATH is CPython 3.11 on glibc (the build base also needs pip and venv). The
# project's CI builds this same file on stand-in bases made from Debian packages
# (`nodeos sandbox image`, docs/image.md).
ARG BUILD_IMAGE=docker.io/library/python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b
ARG RUNTIME_IMAGE=gcr.io/distroless/python3-debian12:nonroot@sha256:7d1042ce588ab97019fe95c24ffca7bc5a82ccdac572511d5e09bda4435c89c5

# hadolint ignore=DL3029
FROM --platform=$BUILDPLATFORM ${BUILD_IMAGE} AS build
ARG TARGETARCH
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements/ requirements/
# Dependencies first, so a source change reuses this layer. Wheels only, for the target's CPU
# and any glibc up to Debian 12's 2.36 (pip does not widen a manylinux_2_X tag by itself, hence
# the list of --platform options, split on purpose).
# hadolint ignore=SC2086
RUN python3 -m venv /tools \
 && /tools/bin/pip install --require-hashes -r requirements/build.txt \
 && case "${TARGETARCH:-$(uname -m)}" in \
      amd64|x86_64) cpu=x86_64 ;; \
      arm64|aarch64) cpu=aarch64 ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH:-}" >&2; exit 1 ;; \
    esac \
 && platforms="--platform manylinux2014_${cpu}" \
 && for glibc in $(seq 17 36); do platforms="$platforms --platform manylinux_2_${glibc}_${cpu}"; done \
 && /tools/bin/pip install --require-hashes --no-deps --only-binary=:all: $platforms \
      --implementation cp --python-version 3.11 --abi cp311 \
      --target /opt/nodeos/lib -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY operator ./operator
# The operator's wheel, without the parts only developers run: the sandbox, the node simulator,
# the demo and code generation (the CLI says so if they are asked for). Byte-compiled ahead, so
# a read-only root filesystem costs nothing at start.
RUN /tools/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist . \
 && /tools/bin/pip install --no-deps --no-index --target /opt/nodeos/lib /dist/nodeos-*.whl \
 && rm -rf /opt/nodeos/lib/bin /opt/nodeos/lib/nodeos/sandbox /opt/nodeos/lib/nodeos/simulator \
      /opt/nodeos/lib/nodeos/demo.py /opt/nodeos/lib/nodeos/codegen.py \
 && python3 -m compileall -q --invalidation-mode unchecked-hash /opt/nodeos/lib

# Named although it is the default: buildah 1.28 would look the base up for the build stage's
# platform otherwise.
# hadolint ignore=DL3029,DL3065
FROM --platform=$TARGETPLATFORM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="nodeos" \
      org.opencontainers.image.description="Kubernetes operator that rolls OS upgrades across nodes running an API-driven, immutable OS (Talos-compatible)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="nodeos"
COPY --from=build /opt/nodeos/lib /opt/nodeos/lib
ENV PYTHONPATH=/opt/nodeos/lib PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["python3", "-m", "nodeos"]
CMD ["run"]
