#!/usr/bin/env bash
# Build the image and prove it serves: /readyz and a real /detect from inside the container,
# running as the non-root user with the artifacts mounted read-only. Then bring trainer + api up
# with podman-compose (smoke profile, so the one-shot trainer finishes in about a minute).
#   deploy/container-smoke.sh [ARTIFACTS_DIR] [DATA_DIR]     (SKIP_BUILD=1 reuses the image)
# Needs podman (+ podman-compose): install them with your package manager.
set -euo pipefail
cd "$(dirname "$0")/.."
artifacts=$(realpath "${1:-artifacts}")
data=$(realpath "${2:-data/ham10000-200x150}")
base=${BASE_IMAGE:-localhost/debian-python:3.11}
port=${PORT:-18080}
command -v podman >/dev/null || { echo "podman not installed: skipping"; exit 77; }
compgen -G "$artifacts/*/detector.safetensors" >/dev/null \
  || { echo "no detector under $artifacts (*/detector.safetensors)"; exit 2; }

# Local package sources, mounted read-only for the build, so torch is not downloaded again.
mounts=()
for d in /opt/wheels /opt/pypi /opt/pypi-more /etc/xdg/pip; do
  [ -d "$d" ] && mounts+=(-v "$d:$d:ro")
done
if [ "${SKIP_BUILD:-0}" = 1 ] && podman image exists dermafake:latest; then
  echo "== using the existing dermafake:latest (SKIP_BUILD=1)"
else
  # --format docker: podman's default OCI format drops HEALTHCHECK (and SHELL).
  podman build --format docker "${mounts[@]}" --build-arg BASE_IMAGE="$base" \
    --build-arg PIP_FIND_LINKS=/opt/wheels \
    --build-arg PIP_EXTRA_INDEX_URL="file:///opt/pypi/simple file:///opt/pypi-more/simple" \
    -t dermafake:latest .
  # the build stage's image (a second ~6 GB copy of the environment) is not needed any more
  podman image prune -f --filter label=dermafake.stage=build >/dev/null || true
fi
echo "== healthcheck: $(podman image inspect dermafake:latest --format '{{.Config.Healthcheck}}')"

echo "== image user: $(podman image inspect dermafake:latest --format '{{.Config.User}}')"
podman rm -f dermafake-smoke >/dev/null 2>&1 || true
podman run -d --name dermafake-smoke -p "127.0.0.1:$port:8000" \
  -v "$artifacts:/artifacts:ro" -e DERMAFAKE_DEVICE=cpu dermafake:latest >/dev/null
trap 'podman rm -f dermafake-smoke >/dev/null 2>&1 || true' EXIT
start=$SECONDS
for _ in $(seq 1 300); do  # loading + compiling every batch bucket (no inductor cache yet)
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  if [ "$(podman inspect -f '{{.State.Running}}' dermafake-smoke)" != true ]; then
    echo "== the container exited during start-up:"; podman logs dermafake-smoke 2>&1 | tail -20
    exit 1
  fi
  sleep 2
done
echo "== ready after $((SECONDS - start)) s"
echo "== uid inside: $(podman exec dermafake-smoke id -u)"
echo "== /readyz";   curl -fsS "http://127.0.0.1:$port/readyz"; echo
echo "== served as (compiled inside the container needs its g++ and Python headers):"
curl -fsS "http://127.0.0.1:$port/v1/models" | python3 -c 'import json, sys
for m in json.load(sys.stdin)["models"]:
    print(m["name"], m["dtype"], "compile", m["compile"], "buckets", m["batch_buckets"])'
images=("$data"/images/*.jpg); image=${images[0]}
echo "== /detect $(basename "$image")"
curl -fsS -F "file=@$image" "http://127.0.0.1:$port/detect"; echo
echo "== /generate n=2"
curl -fsS "http://127.0.0.1:$port/generate?n=2&seed=3" -o /tmp/dermafake-generate.json; head -c 160 /tmp/dermafake-generate.json; echo
echo "== write to /artifacts is refused:"
podman exec dermafake-smoke touch /artifacts/x 2>&1 || true
podman rm -f dermafake-smoke >/dev/null

if command -v podman-compose >/dev/null && [ "${COMPOSE:-1}" = 1 ]; then
  echo "== podman-compose: trainer (smoke profile) then api"
  export BASE_IMAGE="$base" DATA="$data" PROFILE=smoke API_PORT="$port" DEVICE=cpu
  # podman-compose 1.0 cannot parse the CPU override's `!reset` and ignores GPU reservations,
  # so it runs the main file with the CPU settings passed as variables.
  files=(-f docker-compose.yml)
  podman-compose "${files[@]}" down -v >/dev/null 2>&1 || true
  podman-compose "${files[@]}" up -d trainer
  trainer=$(podman ps -a --filter label=com.docker.compose.service=trainer --format '{{.Names}}')
  echo "== trainer exit code: $(podman wait "$trainer")"
  podman logs "$trainer" 2>&1 | grep '\[pipeline\]'
  podman-compose "${files[@]}" up -d api
  for _ in $(seq 1 120); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 2
  done
  echo "== compose /readyz"; curl -fsS "http://127.0.0.1:$port/readyz"; echo
  echo "== compose /detect"; curl -fsS -F "file=@$image" "http://127.0.0.1:$port/detect"; echo
  podman-compose "${files[@]}" down -v >/dev/null 2>&1 || true
fi
