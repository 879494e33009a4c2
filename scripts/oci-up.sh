#!/usr/bin/env bash
# Install skopeo, umoci and runc (Debian bookworm has all three) when any is missing: skopeo
# writes `capsule export --format oci`; the tests read its archive with skopeo and umoci.
set -euo pipefail
missing=()
command -v skopeo >/dev/null || missing+=(skopeo)
command -v umoci >/dev/null || missing+=(umoci)
command -v runc >/dev/null || missing+=(runc)
if [ ${#missing[@]} -eq 0 ]; then
    echo "oci-up: $(skopeo --version), $(umoci --version), $(runc --version | head -n 1)" >&2
    exit 0
fi
echo "oci-up: installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
for tool in skopeo umoci runc; do
    command -v "$tool" >/dev/null || { echo "oci-up: $tool did not install" >&2; exit 1; }
done
echo "oci-up: $(skopeo --version), $(umoci --version), $(runc --version | head -n 1)" >&2
