#!/bin/sh
# Build the zeusd .deb from this tree: packaging/build-deb.sh [--version V] [--out DIR] [--lintian]
#
# debian/ lives in packaging/debian, so the tree (tracked and untracked files
# that git does not ignore) is copied to a temporary directory with debian/ at
# its root, built there with "dpkg-buildpackage -us -uc -b", and the .deb is
# copied to DIR (default: dist/). --version V adds a changelog entry for V in
# the copy (the e2e test uses it to build an upgrade). --lintian runs lintian
# on the result and fails on any error or warning. Prints the .deb's path last.
set -eu

usage() { echo "usage: $0 [--version V] [--out DIR] [--lintian]" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
version=""
out="$repo/dist"
run_lintian=0
while [ $# -gt 0 ]; do
    case "$1" in
    --version) [ $# -ge 2 ] || usage; version=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
    --lintian) run_lintian=1; shift ;;
    *) usage ;;
    esac
done

for tool in dpkg-buildpackage dh dh_python3 git; do
    command -v "$tool" >/dev/null || { echo "build-deb: $tool is missing; run .ci/e2e-deps.sh" >&2; exit 1; }
done

work=$(mktemp -d /tmp/zeusd-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
src="$work/zeusd"
mkdir -p "$src"

cd "$repo"
git ls-files -z --cached --others --exclude-standard \
    | (cd "$repo" && xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) \
    | tar --null -T - -cf - | tar -C "$src" -xf -
rm -rf "$src/debian"
cp -a packaging/debian "$src/debian"

# The package ships these two; refuse to build without them.
for needed in README.md policy/policy.toml; do
    [ -f "$src/$needed" ] || { echo "build-deb: $needed is missing" >&2; exit 1; }
done

if [ -n "$version" ]; then
    {
        printf 'zeusd (%s) unstable; urgency=medium\n\n  * Rebuild as %s.\n\n' "$version" "$version"
        printf ' -- zeusd maintainers <zeusd@localhost.invalid>  %s\n\n' "$(date -R)"
        cat "$src/debian/changelog"
    } >"$src/debian/changelog.new"
    mv "$src/debian/changelog.new" "$src/debian/changelog"
fi

cd "$src"
# Debian's own python3 and tools only: a pyenv or venv python first in PATH
# would be used by pybuild and lacks the Debian build modules.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
if ! dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1; then
    tail -n 60 "$work/build.log" >&2
    echo "build-deb: dpkg-buildpackage failed (last 60 lines above)" >&2
    exit 1
fi

mkdir -p "$out"
deb=$(ls "$work"/zeusd_*_all.deb)
cp "$deb" "$out/"
deb="$out/$(basename "$deb")"

if [ "$run_lintian" = 1 ]; then
    # Run from the build tree so debian/*.lintian-overrides are not needed
    # twice; overrides are in the .deb itself.
    if ! lintian --fail-on error,warning --display-info "$deb"; then
        echo "build-deb: lintian found problems in $deb" >&2
        exit 1
    fi
fi
echo "$deb"
