#!/usr/bin/env bash
# Side by side: replay wall time on the host, in the two-stage image and in the old one-stage image.
set -euo pipefail
cd /work/main
C=.venv/bin/capsule
rm -rf /tmp/sbs; mkdir /tmp/sbs
$C freeze capsules/paper-2d-torch --out /tmp/sbs/new >/dev/null 2>&1
cp -r /tmp/sbs/new /tmp/sbs/old
$C build /tmp/sbs/new >/dev/null 2>&1
cp dockerfiles/cpu.Dockerfile /tmp/sbs/cpu.Dockerfile.new
git show 78220f9:dockerfiles/cpu.Dockerfile > dockerfiles/cpu.Dockerfile
$C build /tmp/sbs/old >/dev/null 2>&1 || true
cp /tmp/sbs/cpu.Dockerfile.new dockerfiles/cpu.Dockerfile
for d in new old; do docker image inspect $(python3 -c "import json;print(json.load(open('/tmp/sbs/$d/manifest.json'))['images']['cpu']['image_id'])") --format "$d image {{.Size}}"; done
t() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1; echo "$(date +%s.%N) - $s" | bc; }
for i in 1 2 3 4; do
  echo "round $i host $(t $C replay /tmp/sbs/new --out /tmp/sbs/h$i) new $(t $C replay /tmp/sbs/new --on docker --out /tmp/sbs/n$i) old $(t $C replay /tmp/sbs/old --on docker --out /tmp/sbs/o$i)"
done
# rounds 5–10, in the other order
for i in 5 6 7 8 9 10; do
  echo "round $i old $(t $C replay /tmp/sbs/old --on docker --out /tmp/sbs/o$i) new $(t $C replay /tmp/sbs/new --on docker --out /tmp/sbs/n$i) host $(t $C replay /tmp/sbs/new --out /tmp/sbs/h$i)"
done
