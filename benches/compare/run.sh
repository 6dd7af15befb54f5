#!/usr/bin/env bash
# The side-by-side spawn harness (see ../shared/docs/benchmarks.md), in one run on this machine:
#  1. in-process, interleaved (benches/compare.rs): for configurations A–F, the raw limit of
#     each (benches/compare/raw.rs), stockade, and std::process::Command;
#  2. whole processes through hyperfine, configuration C (user+pid+mount+uts+ipc, tmpfs root,
#     read-only system binds, /proc, minimal /dev, no syscall filter): stockade's `run` example,
#     bwrap with the same isolation, `runc run` on an equivalent bundle (busybox rootfs), and
#     util-linux `unshare` (namespaces and /proc only), C's raw limit as a whole process (the
#     bench binary with `--raw-once C`: the floor of a command-line tool doing C) and /bin/true
#     (a process that does nothing);
# then prints one table: p50 and p99 per row, stockade/raw, stockade/std, stockade-CLI/bwrap.
#
# Run as root on the machine to measure: benches/compare/run.sh
# Installs its peers from Debian when missing (bubblewrap runc hyperfine busybox-static).
# ROUNDS (default 300) sets in-process rounds and hyperfine runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
rounds=${ROUNDS:-300}

missing=()
for tool in bwrap:bubblewrap runc:runc hyperfine:hyperfine busybox:busybox-static; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

work=$(mktemp -d /tmp/stockade-compare.XXXXXX)
trap 'rm -rf "$work"' EXIT
cargo build --release -q --example run
run=$PWD/target/release/examples/run

# A runc bundle: a busybox rootfs and runc's default spec with /bin/true, no network or cgroup
# namespace (as C), read-only root.
mkdir -p "$work/bundle/rootfs/bin"
cp "$(command -v busybox)" "$work/bundle/rootfs/bin/busybox"
ln -s busybox "$work/bundle/rootfs/bin/true"
(cd "$work/bundle" && runc spec)
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
spec = json.load(open(path))
spec["process"]["args"] = ["/bin/true"]
spec["process"]["terminal"] = False
spec["root"]["readonly"] = True
spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] not in ("network", "cgroup")]
json.dump(spec, open(path, "w"))
PY

echo "== in-process (A-F), $rounds rounds"
COMPARE_ROUNDS=$rounds COMPARE_OUT="$work/inproc.tsv" cargo bench -q --bench compare

links=()
for p in /bin /sbin /lib /lib32 /lib64 /libx32; do
  if [ -L "$p" ]; then links+=(--symlink "$(readlink "$p")" "$p"); elif [ -d "$p" ]; then links+=(--ro-bind "$p" "$p"); fi
done
bwrap_cmd="bwrap --unshare-user --unshare-pid --unshare-ipc --unshare-uts \
  --tmpfs / --ro-bind /usr /usr ${links[*]} --proc /proc --dev /dev --remount-ro / /bin/true"
stockade_cmd="$run --ns user,pid,mount,uts,ipc --root tmpfs --system --no-filter -- /bin/true"
runc_cmd="runc --root $work/runc run --bundle $work/bundle stockade-compare"
# The raw limit of C as a whole process (the bench binary, `--raw-once C`), and a process that
# does nothing (/bin/true): what any command-line tool pays before and beside its isolation.
bench=$(cargo bench --bench compare --no-run 2>&1 | grep -o 'target/release/deps/compare-[0-9a-f]*' | head -1)

echo "== whole processes (C), hyperfine"
# hyperfine runs one command's runs back to back: in chunks, each command's runs are spread
# over the phase (and whatever the machine does after the in-process phase falls on all).
chunks=5
for ((k = 0; k < chunks; k++)); do
  hyperfine -N --warmup 5 --runs $(((rounds + chunks - 1) / chunks)) --style basic \
    --export-json "$work/cli-$k.json" \
    -n stockade-run "$stockade_cmd" \
    -n bwrap "$bwrap_cmd" \
    -n runc "$runc_cmd" \
    -n unshare 'unshare -Upmiu --fork --mount-proc /bin/true' \
    -n "raw limit (process)" "$PWD/$bench --raw-once C" \
    -n "/bin/true" /bin/true >/dev/null
done
python3 - "$work"/cli-*.json >"$work/cli.json" <<'PY'
import json, sys
merged = {}
for path in sys.argv[1:]:
    for r in json.load(open(path))["results"]:
        merged.setdefault(r["command"], []).extend(r["times"])
json.dump({"results": [{"command": c, "times": t} for c, t in merged.items()]}, sys.stdout)
PY

python3 - "$work/inproc.tsv" "$work/cli.json" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
rows = [l.split("\t") for l in lines if l.split("\t")[0] in ("std", "A", "B", "C", "D", "E", "F")]
extra = [l for l in lines if l.split("\t")[0] not in ("std", "A", "B", "C", "D", "E", "F")]
std = [float(x) for x in rows[0][1:]]
def pct(times, p):
    times = sorted(times)
    return times[round((len(times) - 1) * p)] * 1e3
cli = {r["command"]: (pct(r["times"], 0.5), pct(r["times"], 0.99)) for r in json.load(open(sys.argv[2]))["results"]}
print()
print("| row | p50 ms | p99 ms | stockade/raw p50 | stockade p99/p50 | stockade/std p50 |")
print("|---|---|---|---|---|---|")
print(f"| std::process::Command | {std[0]:.3f} | {std[1]:.3f} | | | |")
for name, r50, r99, o50, o99 in ([r[0]] + [float(x) for x in r[1:]] for r in rows[1:]):
    print(f"| {name}: raw limit | {r50:.3f} | {r99:.3f} | | | |")
    print(f"| {name}: stockade | {o50:.3f} | {o99:.3f} | {o50 / r50:.2f} | {o99 / o50:.2f} | {o50 / std[0]:.2f} |")
print()
print("| warm and throughput | p50 ms | p99 ms | ratio |")
print("|---|---|---|---|")
for l in extra:
    parts = l.split("\t")
    print("| " + " | ".join(parts) + " |")
print()
print("| whole process, C | p50 ms | p99 ms | stockade-CLI/this p50 |")
print("|---|---|---|---|")
ours = cli["stockade-run"][0]
for name, (p50, p99) in cli.items():
    print(f"| {name} | {p50:.3f} | {p99:.3f} | {ours / p50:.2f} |")
PY
