#!/usr/bin/env bash
# Builds the sandbox image from the repository root (`./run image` calls this, then smoke-tests
# the image with tests/image/test_built_image.py).
#
#   sandbox_image/build.sh TAG       prints the engine that built it (docker or buildah)
#                                    on stdout; everything else goes to stderr
#
# With a Docker engine that answers, `docker build`. Without one, `buildah build --isolation
# chroot` (no daemon, no user namespaces needed) on a base made here from Debian's packages
# alone: mmdebstrap's minbase trixie, slimmed as Debian's own slim images are (no manuals,
# docs or translations), imported under the name the Dockerfile's FROM uses.
set -euo pipefail
cd "$(dirname "$0")/.."
exec 3>&1 1>&2

TAG=${1:?usage: sandbox_image/build.sh TAG}
BASE_NAME=docker.io/library/debian:trixie-slim
say() { printf 'image: %s\n' "$*" >&2; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
context=(pyproject.toml README.md requirements.lock runtime tools sandbox_image)
if [ "$revision" != unknown ] && [ -n "$(git status --porcelain -- "${context[@]}")" ]; then
    revision="$revision-dirty"
fi
source_url=$(git config --get remote.origin.url 2>/dev/null || true)
case "$source_url" in *://* | git@*) ;; *) source_url="" ;; esac
build_args=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision"
    --build-arg "SOURCE=$source_url")
# The build's HTTPS downloads trust what this machine trusts (see the Dockerfile).
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
[ -s "$CA_BUNDLE" ] && build_args+=(--secret "id=ca-bundle,src=$CA_BUNDLE")

# Under CI=true nothing made by an earlier build is reused (a fresh machine has none of it):
# the base is made again and no layer comes from the cache.
fresh=no
case "${CI:-}" in "" | 0 | false | no) ;; *) fresh=yes ;; esac
cache_flags=()
[ "$fresh" = no ] || cache_flags=(--no-cache)

debian_base() {
    if [ "$fresh" = no ] && [ -n "$(buildah images --quiet "$BASE_NAME" 2>/dev/null)" ]; then
        say "using $BASE_NAME built here on $(buildah inspect --type image \
            --format '{{.Docker.Created}}' "$BASE_NAME")"
        return
    fi
    say "making $BASE_NAME from Debian's packages (mmdebstrap --variant=minbase trixie)"
    local tar ctr
    tar=$(mktemp --suffix=.tar)
    # The path excludes and unsafe-io are those of Debian's slim images; they stay in the
    # image (in /etc/dpkg/dpkg.cfg.d), so later installs leave manuals and docs out too and
    # skip fsync (a layer is written whole or not at all).
    mmdebstrap --quiet --variant=minbase --mode=root --dpkgopt=force-unsafe-io \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/groff/*' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --aptopt='Acquire::Languages "none"' \
        --aptopt='DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; }' \
        trixie "$tar"
    ctr=$(buildah from scratch)
    buildah add --quiet "$ctr" "$tar" /
    buildah config --cmd '["bash"]' \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
    buildah commit --quiet --rm --format docker "$ctr" "$BASE_NAME" >/dev/null
    rm -f "$tar"
}

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    say "building $TAG with docker"
    DOCKER_BUILDKIT=1 docker build --file sandbox_image/Dockerfile --tag "$TAG" \
        "${cache_flags[@]}" "${build_args[@]}" .
    say "$TAG: $(docker image inspect --format '{{.Size}}' "$TAG") bytes"
    echo docker >&3
else
    for tool in buildah mmdebstrap; do
        command -v "$tool" >/dev/null || {
            say "no Docker engine and no $tool: apt-get install buildah mmdebstrap"
            exit 2
        }
    done
    debian_base
    say "building $TAG with buildah (no Docker engine here)"
    # --format docker keeps HEALTHCHECK (the OCI format has no field for it); --layers keeps
    # each step's layer, so a rebuild after a code change reuses the dependency layer; --jobs 2
    # builds the two stages side by side until the runtime stage needs the build's results.
    buildah build --isolation chroot --format docker --layers --jobs 2 --pull=never \
        "${cache_flags[@]}" \
        --file sandbox_image/Dockerfile --tag "$TAG" \
        --build-arg "BASE_IMAGE=$BASE_NAME" "${build_args[@]}" .
    say "$TAG: $(buildah images --format '{{.Size}}' "$TAG") (uncompressed)"
    echo buildah >&3
fi
