#!/usr/bin/env bash
# The docker compose tier: build the cluster of compose.yaml, run the tests
# marked `docker` (tests/test_docker_cluster.py) against it, take it all down.
# .ci/run calls it after the main suite; users can run it too (see README.md):
#
#   docker/ci.sh [extra pytest args]
#
# As root on Debian, it installs what is missing (docker.io, docker-compose,
# debootstrap; one apt-get update) and starts dockerd when none answers.  As
# another user it needs a running engine it may use, and the packages.
#
# 1. debian:bookworm-slim: kept if present, else pulled, else made locally
#    (Docker Hub unreachable): debootstrap --variant=minbase bookworm into a
#    temporary folder, `docker import`, folder removed.  The base image is the
#    one thing this script leaves behind (later runs skip the 50 s).
# 2. setup.sh (keys and cluster/ssh_config, kept in cluster/), build, up.
# 3. waits (deadline) until every node answers `ssh node-K true`.
# 4. pytest -m docker tests/test_docker_cluster.py, with PEGASUS_DOCKER_TESTS=1
#    (an unreachable cluster then fails the tests instead of skipping them).
# 5. always, even after a failure or Ctrl-c: `down` with the images it built,
#    a check that no container, network or image of the project is left, and
#    dockerd stopped if this script started it.  It prints each step's time.
#
# Environment: PYTHON (default: the repository's .venv/bin/python, else
# python3; it needs pytest and Pegasus's dependencies), COMPOSE (default:
# `docker compose` when that works, else `docker-compose`), DEBIAN_MIRROR
# (default: the mirror apt uses here, else http://deb.debian.org/debian).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
DOCKER_DIR="$(pwd)"
REPO="$(cd .. && pwd)"
PROJECT="$(sed -n 's/^COMPOSE_PROJECT_NAME=//p' .env)"
NODES="node-1 node-2 node-3 node-4"
export DEBIAN_FRONTEND=noninteractive

START=$SECONDS
TIMES=()
step_start=$SECONDS step_name=""
step() {   # step NAME: ends the previous step (its time recorded), starts NAME
    [ -z "$step_name" ] || TIMES+=("$step_name $((SECONDS - step_start)) s")
    step_name="$1" step_start=$SECONDS
    [ -z "$1" ] || printf '\n==> docker tier: %s\n' "$1"
}
run() { printf '+ %s\n' "$*"; "$@"; }
die() { printf 'docker/ci.sh: %s\n' "$*" >&2; exit 1; }

scratch="$(mktemp -d /tmp/pegasus-docker-ci.XXXXXX)"
started_dockerd="" compose_up="" images_before=""

finish() {
    status=$?
    trap - EXIT INT TERM
    set +e
    cd "$DOCKER_DIR"
    if [ -n "$compose_up" ]; then
        step "down"
        run "${COMPOSE[@]}" down --rmi local --volumes --remove-orphans --timeout 5
        leftovers
    fi
    if [ -n "$started_dockerd" ]; then
        step "stopping the dockerd this script started"
        kill -TERM "$started_dockerd" 2>/dev/null
        for _ in $(seq 300); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$started_dockerd" 2>/dev/null && { echo "dockerd still runs: KILL"; kill -KILL "$started_dockerd"; }
    fi
    rm -rf "$scratch"
    step ""
    printf '\n==> docker tier: %s in %d s (%s)\n' \
        "$([ "$status" = 0 ] && echo passed || echo "FAILED (exit $status)")" \
        "$((SECONDS - START))" "$(IFS=,; echo "${TIMES[*]}" | sed 's/,/, /g')"
    exit "$status"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

leftovers() {   # remove, and name, whatever of the project `down` left behind
    local label="label=com.docker.compose.project=$PROJECT" left="" other="" id
    for id in $(docker ps -aq --filter "$label"); do left+=" container $id"; docker rm -f "$id" >/dev/null; done
    for id in $(docker network ls -q --filter "$label"); do left+=" network $id"; docker network rm "$id" >/dev/null; done
    for id in $(docker images -q --filter "reference=$PROJECT*"); do left+=" image $id"; docker rmi -f "$id" >/dev/null; done
    for id in $(docker images -aq --no-trunc | sort -u); do   # not ours to remove: named only
        case " $images_before " in *" $id "*) ;; *) other+=" $id";; esac
    done
    [ -z "$left" ] || echo "down left:$left (removed now)"
    [ -z "$other" ] || echo "images made during this run and still there (another user's build?):$other"
    [ -n "$left$other" ] || echo "nothing of $PROJECT left: no container, network or image (base images kept)"
}

# --- packages ----------------------------------------------------------------
step "packages"
packages=()
command -v dockerd >/dev/null || packages+=(docker.io)
if [ -n "${COMPOSE:-}" ]; then
    read -r -a COMPOSE <<<"$COMPOSE"
elif docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
else
    COMPOSE=(docker-compose)
    command -v docker-compose >/dev/null || packages+=(docker-compose)
fi
command -v debootstrap >/dev/null || packages+=(debootstrap)
if [ "${#packages[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${packages[*]}: install them (apt-get install ${packages[*]}) or run as root"
    policy=/usr/sbin/policy-rc.d own_policy=""
    if [ ! -e "$policy" ]; then   # no service started by the packages' scripts
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
    fi
    run apt-get update -q
    run apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${packages[@]}"
    [ -z "$own_policy" ] || rm -f "$policy"
else
    echo "docker.io, ${COMPOSE[*]} and debootstrap present"
fi

# --- the engine --------------------------------------------------------------
step "dockerd"
if docker info >/dev/null 2>&1; then
    echo "a Docker engine answers: using it"
else
    [ "$(id -u)" = 0 ] || die "no Docker engine answers (docker info) and only root can start dockerd here"
    echo "no Docker engine answers: starting dockerd (log: $scratch/dockerd.log)"
    dockerd >"$scratch/dockerd.log" 2>&1 &
    started_dockerd=$!
    deadline=$((SECONDS + 60))
    until docker info >/dev/null 2>&1; do
        kill -0 "$started_dockerd" 2>/dev/null || { tail -n 20 "$scratch/dockerd.log"; die "dockerd exited"; }
        [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "$scratch/dockerd.log"; die "dockerd did not answer within 60 s"; }
        sleep 0.2
    done
fi
docker version --format 'engine {{.Server.Version}}, client {{.Client.Version}}' || true
"${COMPOSE[@]}" version | sed -n 1p   # (head would end compose with SIGPIPE)

# --- the base image ----------------------------------------------------------
step "base image"
mirror() {   # the Debian mirror apt uses here
    sed -n 's/^URIs: *\(http[^ ]*debian\/*\)$/\1/p; s/^deb  *\(http[^ ]*debian\/*\) .*/\1/p' \
        /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | sed -n 1p || true
}
if docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
    echo "debian:bookworm-slim present"
elif timeout 120 docker pull debian:bookworm-slim; then
    :
else
    [ "$(id -u)" = 0 ] || die "debian:bookworm-slim cannot be pulled, and only root can debootstrap it"
    url="${DEBIAN_MIRROR:-$(mirror)}"
    url="${url:-http://deb.debian.org/debian}"
    echo "cannot pull: making debian:bookworm-slim with debootstrap from $url"
    echo "+ debootstrap --variant=minbase bookworm $scratch/rootfs $url (log: $scratch/debootstrap.log)"
    debootstrap --variant=minbase bookworm "$scratch/rootfs" "$url" >"$scratch/debootstrap.log" 2>&1 \
        || { tail -n 20 "$scratch/debootstrap.log"; die "debootstrap failed"; }
    rm -rf "$scratch"/rootfs/var/cache/apt/archives/*.deb "$scratch"/rootfs/var/lib/apt/lists/*
    tar -C "$scratch/rootfs" -c . | docker import - debian:bookworm-slim
    rm -rf "$scratch/rootfs"
fi
images_before="$(docker images -aq --no-trunc | sort -u | tr '\n' ' ')"

# --- the cluster -------------------------------------------------------------
step "setup.sh"
run sh ./setup.sh

step "build"
compose_up=1   # from here on, finish() takes the project down
run "${COMPOSE[@]}" build

step "up"
run "${COMPOSE[@]}" up -d

step "waiting for ssh"
deadline=$((SECONDS + 60))
for node in $NODES; do
    until ssh -F cluster/ssh_config -o ConnectTimeout=5 "$node" true 2>"$scratch/ssh.err"; do
        [ "$SECONDS" -lt "$deadline" ] || { cat "$scratch/ssh.err"; die "$node does not answer ssh within 60 s"; }
        sleep 0.2
    done
    echo "$node answers"
done

# --- the tests ---------------------------------------------------------------
step "tests"
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    [ ! -x "$REPO/.venv/bin/python" ] || PYTHON="$REPO/.venv/bin/python"
fi
cd "$REPO"
PEGASUS_DOCKER_TESTS=1 run "$PYTHON" -m pytest -q -m docker tests/test_docker_cluster.py "$@"
