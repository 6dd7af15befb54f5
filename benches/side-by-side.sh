#!/usr/bin/env bash
# Spawn -> exit of /bin/true through command-line sandboxes, side by side in one hyperfine run
# (see ../shared/docs/benchmarks.md): stockade's `run` example against bubblewrap with the same
# isolation (tmpfs root, read-only /usr and the /bin, /lib* links, fresh /proc, minimal /dev,
# every namespace but net), plus util-linux unshare and a plain exec as floors.
# Each command includes its own process start-up, as a user of the CLI would pay it.
#
# Needs: hyperfine, bubblewrap (apt-get install hyperfine bubblewrap). Run as root or not.
# Usage: benches/side-by-side.sh [extra hyperfine args, e.g. --export-markdown out.md]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example run -q
run=target/release/examples/run

links=()
for p in /bin /sbin /lib /lib32 /lib64 /libx32; do
  if [ -L "$p" ]; then links+=(--symlink "$(readlink "$p")" "$p"); elif [ -d "$p" ]; then links+=(--ro-bind "$p" "$p"); fi
done
bwrap_cmd="bwrap --unshare-user --unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup \
  --tmpfs / --ro-bind /usr /usr ${links[*]} --proc /proc --dev /dev /bin/true"
stockade_cmd="$run --ns user,pid,mount,uts,ipc,cgroup --root tmpfs --system -- /bin/true"

hyperfine -N --warmup 30 --runs "${RUNS:-400}" "$@" \
  -n 'exec /bin/true' '/bin/true' \
  -n 'unshare -Urpm --fork --mount-proc' 'unshare -Urpm --fork --mount-proc /bin/true' \
  -n 'bwrap (tmpfs root, binds, proc, dev)' "$bwrap_cmd" \
  -n 'stockade run (same)' "$stockade_cmd"
