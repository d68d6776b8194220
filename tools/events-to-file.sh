#!/bin/sh
# Append a store's events to a JSON-lines file, forever, resuming after the last event
# the file holds: the file is the durable buffer a log shipper (Vector, Fluent Bit)
# tails with its own checkpoints. Run it under systemd (Restart=always); docs/events.md.
#
#   tools/events-to-file.sh /var/log/layerstore/events.jsonl [layerstore options...]
set -eu
out=$1
shift
mkdir -p "$(dirname "$out")"
# the LSN is the first key of every line: {"lsn": 42, ...}; a torn last line (a crash
# mid-write) is dropped first, so that the file stays one JSON object a line
if [ -s "$out" ] && [ "$(tail -c 1 "$out" | od -An -c | tr -d ' ')" != '\n' ]; then
    keep=$(($(wc -c < "$out") - $(tail -n 1 "$out" | wc -c)))
    truncate -s "$keep" "$out"
fi
last=$(tail -n 1 "$out" 2>/dev/null | sed -n 's/^{"lsn": \([0-9]*\),.*/\1/p')
exec layerstore "$@" events --follow --json --since "$(( ${last:-0} + 1 ))" >> "$out"
