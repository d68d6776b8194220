#!/usr/bin/env bash
# The main job on a throwaway store: import a real layer, build on it, hold, mount,
# list, look up, show history, unmount, delete.
set -euo pipefail
ROOT=$(mktemp -d /tmp/layerstore-demo.XXXXXX)
WORK=$(mktemp -d /tmp/layerstore-demo-work.XXXXXX)
cleanup() {
    # unmount anything the demo left mounted, then remove the store
    { grep -o " $ROOT[^ ]*" /proc/self/mountinfo 2>/dev/null || true; } | while read -r m; do umount "$m" || true; done
    rm -rf "$ROOT" "$WORK"
    return 0
}
trap cleanup EXIT
ls() { command ls "$@"; }
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "layerstore $*"; layerstore --root "$ROOT" "$@"; }

# A real layer: the Python standard library's json and email packages as a tar.gz.
PYLIB=$(python3 -c 'import json,os; print(os.path.dirname(os.path.dirname(json.__file__)))')
tar -C "$PYLIB" -czf "$WORK/layer.tar.gz" json email
say "tar -C $PYLIB -czf layer.tar.gz json email   ($(du -h "$WORK/layer.tar.gz" | cut -f1))"

run create --name base "$WORK/layer.tar.gz"
run create --parent base --name app
run create --parent app --writable --name container
run layers --tree
run layer base
DIFF=$(layerstore --root "$ROOT" --json layer base | python3 -c 'import json,sys; print(json.load(sys.stdin)["diff-digest"])')
run by-digest "$DIFF"
run hold app --lease demo
run refs app
run mount container
MERGED=$(layerstore --root "$ROOT" mount container)
say "ls $MERGED   (mounted a second time: same path, count 2)"
ls "$MERGED"
echo 'hello from the container' > "$MERGED/hello.txt"
run metadata container
run diff container -o "$WORK/container.tar"
say "tar -tvf container.tar"
tar -tvf "$WORK/container.tar"
run umount container
run umount container
run delete app || true
run release app --lease demo
run history container
run delete container
run delete app
run layers
run log verify
