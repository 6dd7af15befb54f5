#!/usr/bin/env bash
# create -> start -> delete of a busybox container through OCI runtimes' command lines, side by
# side in one hyperfine run (see ../shared/docs/benchmarks.md): stockade-runtime against runc
# on the same bundle: the config `runc spec` writes (pid, network, ipc, uts, mount and cgroup
# namespaces, its masks, read-only root, capabilities, rlimits), its process /bin/true in a
# busybox root. Each iteration is the three commands a
# containerd shim runs, each a process of its own, as the shim pays them; `delete --force`
# because the container may not have been reaped yet (its exit, not the delete, is what the
# commands wait for with runc either).
#
# Needs root, hyperfine, runc (apt-get install hyperfine runc busybox-static).
# Usage: benches/runtime-side-by-side.sh [extra hyperfine args, e.g. --export-markdown out.md]
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in hyperfine runc busybox; do
  command -v "$tool" > /dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine runc busybox-static; break; }
done
cargo build --release --features runtime --bin stockade-runtime -q
ours=$PWD/target/release/stockade-runtime

work=$(mktemp -d /tmp/stockade-runtime-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
bundle=$work/bundle
mkdir -p "$bundle/rootfs/bin"
cp "$(command -v busybox)" "$bundle/rootfs/bin/busybox"
ln -s busybox "$bundle/rootfs/bin/true"
(cd "$bundle" && runc spec)
python3 - "$bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
json.dump(c, open(path, "w"))
PY

cycle() { # runtime root
  echo "$1 --root $2 create --bundle $bundle bench > /dev/null && $1 --root $2 start bench && $1 --root $2 delete --force bench"
}
mkdir -p "$work/runc" "$work/ours"
chmod 700 "$work/runc" "$work/ours"
hyperfine --warmup 20 --runs "${RUNS:-200}" "$@" \
  -n 'runc create+start+delete' "$(cycle runc "$work/runc")" \
  -n 'stockade-runtime create+start+delete' "$(cycle "$ours" "$work/ours")"
