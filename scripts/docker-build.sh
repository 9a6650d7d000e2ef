#!/usr/bin/env bash
# Builds the container image of a presence node without pulling anything.
#
# The image starts FROM scratch, so it needs no base image and no registry: the
# binary is compiled here, statically (CGO_ENABLED=0), and staged with a minimal
# /etc/passwd and /etc/group (non-root user "presence", uid/gid 10001), the host's
# CA bundle (for https prefix callbacks), an empty /tmp, and an empty /data and
# /tls owned by that user. Running it again rebuilds the same thing and replaces the tag.
#
#   ./scripts/docker-build.sh                        -> presence-node:dev
#   PRESENCE_IMAGE=registry.example/presence:1.2 ./scripts/docker-build.sh
#   GOARCH=arm64 ./scripts/docker-build.sh           (image for another architecture)
#
# Environment:
#   PRESENCE_IMAGE  image tag to build (default presence-node:dev; the compose file
#                   reads the same variable)
#   GOARCH          target architecture (default: the Docker engine's)
#   DOCKER          docker client to use (default docker)
set -euo pipefail
cd "$(dirname "$0")/.."

image=${PRESENCE_IMAGE:-presence-node:dev}
docker=${DOCKER:-docker}
uid=10001
# Staged under artifacts/ (ignored by git); .dockerignore sends only this
# directory to the engine, so the build context stays a few megabytes.
stage=artifacts/docker

step() { printf '==> %s\n' "$*" >&2; }

if ! "$docker" info >/dev/null 2>&1; then
  echo "docker-build: cannot reach the Docker engine with '$docker info'" >&2
  exit 1
fi
# Build for the engine's architecture unless told otherwise.
if [ -z "${GOARCH:-}" ]; then
  case "$("$docker" info --format '{{.Architecture}}')" in
    x86_64 | amd64) GOARCH=amd64 ;;
    aarch64 | arm64) GOARCH=arm64 ;;
    *) GOARCH=$(go env GOARCH) ;;
  esac
fi
export GOARCH

step "compiling ./cmd/node (linux/$GOARCH, static)"
rm -rf "$stage"
mkdir -p "$stage/rootfs/etc/ssl/certs" "$stage/rootfs/tmp" "$stage/owned/data" "$stage/owned/tls"
CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags '-s -w' -o "$stage/presence-node" ./cmd/node
if command -v readelf >/dev/null 2>&1 && readelf -l "$stage/presence-node" 2>/dev/null | grep -q INTERP; then
  echo "docker-build: $stage/presence-node is dynamically linked; scratch cannot run it" >&2
  exit 1
fi

step "staging the root file system in $stage"
cat >"$stage/rootfs/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
presence:x:$uid:$uid:presence node:/data:/sbin/nologin
EOF
cat >"$stage/rootfs/etc/group" <<EOF
root:x:0:
presence:x:$uid:
EOF
# Go's resolver reads this file; "files dns" is also its default without it.
echo 'hosts: files dns' >"$stage/rootfs/etc/nsswitch.conf"
if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$stage/rootfs/etc/ssl/certs/"
else
  echo "docker-build: warning: no /etc/ssl/certs/ca-certificates.crt on this host;" \
    "https callbacks will fail certificate checks in the image" >&2
fi
# COPY keeps the mode bits of the context (the legacy builder has no --chmod).
chmod 1777 "$stage/rootfs/tmp"
chmod 0700 "$stage/owned/data" "$stage/owned/tls"

version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
previous=$("$docker" image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)

step "building $image ($version)"
"$docker" build --pull=false --build-arg "VERSION=$version" -t "$image" -f Dockerfile .

# The old image lost its tag: drop it unless a container still uses it, so
# rebuilding does not pile up dangling images.
current=$("$docker" image inspect --format '{{.Id}}' "$image")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  "$docker" image rm "$previous" >/dev/null 2>&1 || true
fi
step "built $image ($current)"
