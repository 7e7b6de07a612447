#!/usr/bin/env bash
# Builds deploy/Dockerfile without a Docker engine (buildah: chroot isolation, vfs storage, as root), then runs
# the image: `portico check` of its config, the demo, the image's own HEALTHCHECK command against it, and one
# HTTPS request. Run from anywhere: `sudo deploy/build-check.sh` (needs `apt-get install buildah`).
#
# --local-base: for a machine that cannot reach Docker Hub (a sandbox that only mirrors apt and npm): makes a
# stand-in for node:20.19-bookworm-slim from a debootstrap'd bookworm (needs debootstrap) plus this machine's
# node, npm and node headers, and this machine's CA bundle as NODE_EXTRA_CA_CERTS (for a TLS-intercepting npm
# mirror). The Dockerfile is built unchanged on top of it; the base is then not the official image.
# Timing on a 2-core sandbox: debootstrap ~3 min, base ~30 s, build ~3 min, run ~10 s.
set -euo pipefail
cd "$(dirname "$0")/.."
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
BASE=docker.io/library/node:20.19-bookworm-slim
IMAGE=localhost/portico:check
pull=--pull

if [ "${1:-}" = "--local-base" ]; then
  pull=--pull=never
  if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
    rootfs="$(mktemp -d /tmp/portico-base-XXXXXX)"
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
    node_bin="$(command -v node)"
    prefix="$(dirname "$(dirname "$(readlink -f "$node_bin")")")"
    mkdir -p "$rootfs/usr/local/bin" "$rootfs/usr/local/lib/node_modules" "$rootfs/usr/local/include"
    cp -a "$(readlink -f "$node_bin")" "$rootfs/usr/local/bin/node"
    cp -a "$prefix/lib/node_modules/npm" "$rootfs/usr/local/lib/node_modules/"
    cp -a "$prefix/include/node" "$rootfs/usr/local/include/node"
    ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
    ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/host-ca.crt"
    chroot "$rootfs" groupadd -g 1000 node
    chroot "$rootfs" useradd -u 1000 -g node -m -s /bin/bash node
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb
    c="$(buildah from scratch)"
    cp -a "$rootfs/." "$(buildah mount "$c")/"
    buildah umount "$c" >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env NODE_EXTRA_CA_CERTS=/etc/ssl/certs/host-ca.crt --cmd node "$c"
    buildah commit -q "$c" "$BASE" >/dev/null
    buildah rm "$c" >/dev/null
    echo "build-check: stand-in $BASE made from debootstrap + this machine's node $(node --version)"
  fi
fi

# docker format: OCI images have no HEALTHCHECK
buildah bud -q "$pull" --isolation chroot --format docker -f deploy/Dockerfile -t "$IMAGE" . >/tmp/portico-build-check-bud.log 2>&1 \
  || { tail -30 /tmp/portico-build-check-bud.log >&2; exit 1; }
echo "build-check: built $IMAGE"
# the HEALTHCHECK's command (CMD form), one argument a line
mapfile -t cmd < <(buildah inspect --type image "$IMAGE" | node -e '
  const hc = JSON.parse(require("fs").readFileSync(0, "utf8")).Docker?.config?.Healthcheck?.Test ?? [];
  if (hc[0] !== "CMD") process.exit(1);
  for (const a of hc.slice(1)) console.log(a);') || { echo "build-check: the image has no HEALTHCHECK in CMD form" >&2; exit 1; }

c="$(buildah from -q "$IMAGE")"
demo=""
cleanup() {
  if [ -n "$demo" ]; then kill "$demo" 2>/dev/null || true; wait "$demo" 2>/dev/null || true; fi
  buildah rm "$c" >/dev/null 2>&1 || true
}
trap cleanup EXIT
buildah run "$c" -- node /opt/portico/bin/portico.js check -c /etc/portico/portico.yaml
buildah run "$c" -- node -e "require('/opt/portico/build/Release/portico_native.node')"
# chroot isolation shares this machine's network: the demo's ports (8080, 8443, 9901) must be free
timeout 120 buildah run "$c" -- node /opt/portico/bin/portico.js demo -c /etc/portico/portico.yaml >/tmp/portico-build-check.log 2>&1 &
demo=$!
# the HEALTHCHECK's own command, run in the image, until it passes (20 s: the image's start period)
for _ in $(seq 1 40); do
  if buildah run "$c" -- "${cmd[@]}" 2>/dev/null; then
    echo "build-check: HEALTHCHECK passes"
    curl -fsk -o /dev/null -w 'build-check: https://127.0.0.1:8443/ -> %{http_code}\n' https://127.0.0.1:8443/
    exit 0
  fi
  sleep 0.5
done
echo "build-check: HEALTHCHECK never passed; the demo said:" >&2
cat /tmp/portico-build-check.log >&2
exit 1
