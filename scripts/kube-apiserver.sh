#!/usr/bin/env bash
# Build a real kube-apiserver (v1.20.2) and unpack etcd (3.4) for the tests that run against
# a real Kubernetes API (tests/kube_*.rs), from Debian's packages only: this machine kind has
# no cluster, no Docker and no Go module proxy. Built once, cached outside the checkout:
#
#   $OPENKCM_KUBE_DIR (default ~/.cache/openkcm/kube-v1.20.2)/bin/{kube-apiserver,etcd}
#
# Idempotent: with both binaries present it prints their paths and exits (under a second).
# Cold: ~5 minutes on 2 cores (Go 1.19 from Debian, the kubernetes source package's vendored
# tree built offline in GOPATH mode, as Kubernetes 1.20's own scripts build it).
#
# Two fixes the 1.20 tree needs with Debian's Go:
#   1. pkg/generated/openapi/zz_generated.openapi.go is generated, not shipped: run the
#      vendored openapi-gen over the packages tagged +k8s:openapi-gen.
#   2. The vendored github.com/modern-go/reflect2 1.0.1 faults under Go >= 1.18 on the first
#      custom-resource write; Debian's 1.0.2 replaces it.
set -euo pipefail

VERSION=v1.20.2
DIR="${OPENKCM_KUBE_DIR:-${HOME:-/root}/.cache/openkcm/kube-$VERSION}"
BIN="$DIR/bin"

say() { printf 'kube-apiserver: %s\n' "$*" >&2; }
die() { printf 'kube-apiserver: error: %s\n' "$*" >&2; exit 1; }

if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/etcd" ]; then
    say "present in $BIN"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9
if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/etcd" ]; then
    say "present in $BIN (built by another run)"
    exit 0
fi

WORK="$DIR/work"
rm -rf "$WORK"
mkdir -p "$WORK" "$BIN"

# --- Go 1.19 (Debian 12's only Go; enough for Kubernetes 1.20) --------------------------
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/lib/go/bin/go ]; then
    say "installing golang-go from Debian"
    $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
    $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends golang-go >/dev/null
fi
GO="$(command -v go || echo /usr/lib/go/bin/go)"

# --- A private apt configuration: source packages and unpacked debs ----------------------
APTDIR="$WORK/apt"
mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/parts"
cat >"$APTDIR/sources.list" <<'EOF'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
EOF
cat >"$APTDIR/apt.conf" <<EOF
Dir::State::Lists "$APTDIR/lists";
Dir::Cache "$APTDIR/cache";
Dir::Etc::SourceList "$APTDIR/sources.list";
Dir::Etc::SourceParts "$APTDIR/parts";
APT::Sandbox::User "root";
EOF
export APT_CONFIG="$APTDIR/apt.conf"
say "fetching package lists"
apt-get update -qq
cd "$WORK"
say "downloading the kubernetes source package, etcd-server and reflect2"
apt-get source --download-only -qq kubernetes >/dev/null
apt-get download -qq etcd-server golang-github-modern-go-reflect2-dev >/dev/null
unset APT_CONFIG

# --- etcd: unpacked, not installed (installing would start a service) -------------------
dpkg-deb -x etcd-server_*.deb "$WORK/etcd"
install -m 0755 "$WORK/etcd/usr/bin/etcd" "$BIN/etcd"

# --- the Kubernetes tree -------------------------------------------------------------------
say "unpacking the source"
mkdir -p "$WORK/gopath/src/k8s.io"
tar -xzf kubernetes_*.orig.tar.gz -C "$WORK"
TREE="$(find "$WORK" -maxdepth 1 -type d -name 'kubernetes*' | head -n1)"
[ -d "$TREE/vendor" ] || die "no vendor/ in $TREE"
ln -s "$TREE" "$WORK/gopath/src/k8s.io/kubernetes"

dpkg-deb -x golang-github-modern-go-reflect2-dev_*.deb "$WORK/reflect2"
rm -rf "$TREE/vendor/github.com/modern-go/reflect2"
cp -r "$WORK/reflect2/usr/share/gocode/src/github.com/modern-go/reflect2" \
    "$TREE/vendor/github.com/modern-go/reflect2"

export GO111MODULE=off GOPROXY=off GOFLAGS= CGO_ENABLED=0 GOPATH="$WORK/gopath"
export GOCACHE="$WORK/gocache"
cd "$WORK/gopath/src/k8s.io/kubernetes"

say "generating the OpenAPI definitions"
"$GO" build -o "$WORK/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
PKGS="$(grep -rl --include=*.go -E '^// ?\+k8s:openapi-gen=' pkg staging/src vendor/k8s.io 2>/dev/null |
    xargs -n1 dirname | sort -u |
    sed -e 's#^staging/src/#vendor/#' -e 's#^vendor/##' -e 's#^pkg/#k8s.io/kubernetes/pkg/#' |
    sort -u | paste -sd, -)"
[ -n "$PKGS" ] || die "no packages tagged for openapi-gen"
"$WORK/openapi-gen" \
    --input-dirs "$PKGS" \
    --output-package k8s.io/kubernetes/pkg/generated/openapi \
    --output-file-base zz_generated.openapi \
    --go-header-file hack/boilerplate/boilerplate.generatego.txt \
    --report-filename /dev/null >/dev/null 2>"$WORK/openapi-gen.log" ||
    { tail -20 "$WORK/openapi-gen.log" >&2; die "openapi-gen failed"; }

say "building kube-apiserver $VERSION (several minutes)"
LDFLAGS="-s -w"
# GOPATH mode: the vendored packages' import paths carry the vendor/ prefix.
for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version \
    k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    LDFLAGS="$LDFLAGS -X $pkg.gitVersion=$VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=20"
    LDFLAGS="$LDFLAGS -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
"$GO" build -tags selinux,notest -ldflags "$LDFLAGS" -o "$BIN/kube-apiserver.tmp" \
    k8s.io/kubernetes/cmd/kube-apiserver
mv "$BIN/kube-apiserver.tmp" "$BIN/kube-apiserver"

cd "$DIR"
rm -rf "$WORK"
say "built: $BIN/kube-apiserver ($("$BIN/kube-apiserver" --version)), $BIN/etcd"
