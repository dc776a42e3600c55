#!/usr/bin/env bash
# Build the real image from the repository's Dockerfile with buildah (no Docker engine needed),
# then run the CLI inside it and print the size of every layer. Heavy (GBs, minutes): not CI.
#
#   deploy/build_image.sh            # CPU image (this machine's torch wheel), tag factmatch:cpu
#
# Base images cannot be pulled here, so a stand-in for python:3.11-slim-bookworm is bootstrapped
# with mmdebstrap (Debian bookworm, python3.11, under the same name) and the build runs with
# --pull=never. Storage is vfs and isolation chroot: no daemon, no overlay or user namespaces.
# What it cannot prove: the CUDA runtime (no GPU, no CUDA wheel index reachable here).
set -euo pipefail
cd "$(dirname "$0")/.."
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
TAG=${TAG:-factmatch:cpu}
BASE=docker.io/library/python:3.11-slim-bookworm
WHEELS=${WHEELS:-/opt/wheels}
PORT=${PORT:-8765}

for tool in buildah mmdebstrap; do
  command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install -y buildah mmdebstrap" >&2; exit 2; }
done

if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
  echo "== stand-in base $BASE (mmdebstrap bookworm + python3.11)"
  rootfs=$(mktemp --suffix=.tar)
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$rootfs" /etc/apt/sources.list.d/debian.sources 2>/dev/null \
    || mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
      bookworm "$rootfs"
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$rootfs" /
  # This machine's network re-signs TLS with its own CA: the stand-in trusts what the host trusts.
  buildah copy --quiet "$ctr" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt --cmd python3 "$ctr"
  buildah commit --quiet "$ctr" "$BASE" >/dev/null
  buildah rm "$ctr" >/dev/null
  rm -f "$rootfs"
fi

# The CPU torch wheel on this machine's disk, served to the build (PyTorch's index is unreachable).
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$WHEELS" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT

echo "== building $TAG"
started=$(date +%s)
buildah build --quiet --pull=never --layers -t "$TAG" \
  --build-arg TORCH_CUDA=cpu \
  --build-arg TORCH_INDEX_URL=https://pypi.org/simple \
  --build-arg PIP_FIND_LINKS="http://127.0.0.1:$PORT/" \
  --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  -f Dockerfile . >/dev/null
echo "built in $(( $(date +%s) - started )) s"

echo "== the CLI inside the image, as its runtime user"
ctr=$(buildah from --pull=never "$TAG")
trap 'kill $server 2>/dev/null || true; buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
user=$(buildah inspect --format '{{.OCIv1.Config.User}}' "$ctr")
echo "runtime user: $user"
buildah run --user "$user" "$ctr" -- factmatch --help > "${TMPDIR:-/tmp}/factmatch-help.txt"
grep -E "demo|worker|migrate|calibrate|quarantine" "${TMPDIR:-/tmp}/factmatch-help.txt" | head -6
buildah run --user "$user" "$ctr" -- factmatch migrate --help > "${TMPDIR:-/tmp}/factmatch-migrate-help.txt"
grep -m1 "Usage" "${TMPDIR:-/tmp}/factmatch-migrate-help.txt"
buildah run "$ctr" -- python -c "import migrations, importlib.resources as r; print(sorted(p.name for p in r.files('migrations').iterdir() if p.name.endswith('.sql')))"
buildah run --user 10001:0 "$ctr" -- sh -c 'touch /opt/venv/x 2>/dev/null && echo "code writable!" || echo "code read-only to the runtime user: ok"' || true

echo "== layers"
buildah inspect --type image "$TAG" > "${TMPDIR:-/tmp}/factmatch-image.json"
python3 - "${TMPDIR:-/tmp}/factmatch-image.json" <<'PY'
import json
import sys

image = json.load(open(sys.argv[1]))
history = [h for h in image["OCIv1"]["history"] if not h.get("empty_layer")]
layers = json.loads(image["Manifest"])["layers"]
for h, layer in zip(history, layers):
    print(f"{layer['size'] / 2**20:9.1f} MiB  {h.get('created_by', '')[:110]}")
print(f"{sum(layer['size'] for layer in layers) / 2**30:9.2f} GiB in all ({len(layers)} layers)")
PY
