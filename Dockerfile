# syntax=docker/dockerfile:1
#
# The vnest image: the vnest CLI (the syncer and control-plane entrypoint),
# plus the binaries the chart's first init container copies into the pod:
# kine, etcd, pod-security-check (upstream's Pod Security Standards checks,
# which the syncer runs) and a static busybox. kube-apiserver, kube-controller-manager and
# kube-scheduler are NOT in this image: the chart copies them from the
# official registry.k8s.io images, so one vnest image serves every Kubernetes
# version. helm and the chart are here for the Cluster API provider's pod.
#
#   docker build -t vnest:0.1.0 .

# ---------------------------------------------------------------------------
# Stage 1: kine, etcd and pod-security-check, built exactly as vnest/binaries/build.py builds them
# (CGO_ENABLED=0, -trimpath, "-s -w" plus the same -X version stamp), from the
# same pinned Go modules under build/go. It runs on the build machine's
# platform and cross-compiles for the target (pure Go, no cgo).
FROM --platform=$BUILDPLATFORM golang:1.26 AS binaries
ARG TARGETOS
ARG TARGETARCH
ENV CGO_ENABLED=0 \
    GOFLAGS="-mod=readonly -buildvcs=false" \
    GOOS=$TARGETOS \
    GOARCH=$TARGETARCH
WORKDIR /src
COPY build/ build/
# The kine version stamp comes from the one pins file, as in build.py.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    set -eu; \
    kine_version="$(awk -F'"' '/^\[/ { section = $0; sub(/[ \t]*#.*/, "", section) } section == "[kine]" && $1 ~ /^version *= *$/ { print $2; exit }' build/versions.toml)"; \
    test -n "$kine_version"; \
    cd /src/build/go/kine; \
    go build -trimpath \
        -ldflags "-s -w -X github.com/k3s-io/kine/pkg/version.Version=${kine_version}" \
        -o /out/kine github.com/k3s-io/kine; \
    cd /src/build/go/etcd; \
    go build -trimpath -ldflags "-s -w" -o /out/etcd .; \
    cd /src/build/go/kube; \
    go build -trimpath -ldflags "-s -w" -o /out/pod-security-check ./cmd/pod-security-check; \
    helm_version="$(awk -F'"' '/^\[/ { section = $0; sub(/[ \t]*#.*/, "", section) } section == "[helm]" && $1 ~ /^version *= *$/ { print $2; exit }' /src/build/versions.toml)"; \
    go build -trimpath \
        -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${helm_version}" \
        -o /out/helm helm.sh/helm/v3/cmd/helm

# ---------------------------------------------------------------------------
# Stage 2: the runtime image.
FROM python:3.11-slim

# The official Kubernetes images are distroless (no shell, no cp): the chart
# copies this static busybox into the pod first and uses it to copy their
# binaries out. Static, so it runs in any image.
RUN set -eu; \
    apt-get update; \
    apt-get install -y --no-install-recommends busybox-static; \
    cp /bin/busybox /usr/local/bin/busybox; \
    rm -rf /var/lib/apt/lists/*

COPY --from=binaries /out/kine /out/etcd /out/pod-security-check /out/helm /usr/local/bin/
# The chart and helm: the Cluster API provider (`vnest capi provider`) installs virtual clusters with them.
COPY chart/ /opt/vnest/chart/

# vnest itself. No VNEST_BIN_DIR here: in the pod, `vnest controlplane run`
# gets --bin-dir /binaries from the chart.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VNEST_HELM=/usr/local/bin/helm \
    VNEST_CHART_DIR=/opt/vnest/chart
COPY pyproject.toml README.md /tmp/vnest-src/
COPY vnest/ /tmp/vnest-src/vnest/
RUN pip install --no-cache-dir /tmp/vnest-src && rm -rf /tmp/vnest-src

WORKDIR /
ENTRYPOINT ["vnest"]
CMD ["--help"]
