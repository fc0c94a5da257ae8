#!/bin/sh
# Measure every strategy on the same tasks with the real stories260K model and
# print the markdown tables of docs/strategies.md.
#   LM: adapt to fortune cookies (a new domain for a TinyStories model);
#       forgetting is the loss on 40 stories the base model wrote itself.
#   classify: fortunes from 'definitions' vs 'food' (Debian fortunes package).
# usage: tools/strategy_table.sh [BUILD_DIR] [MODELS_DIR]
set -eu
build="${1:-build}"
models="${2:-../shared/models}"
peft="$build/bin/peft"
model="$models/stories260K.bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# the general domain: the base model's own samples
i=0
while [ $i -lt 40 ]; do
    "$peft" generate "$model" --prompt "Once upon a time" --max-new 96 --temperature 1 --seed $((i + 1)) >> "$work/ref.txt"
    printf '\n' >> "$work/ref.txt"
    i=$((i + 1))
done

# classification data: label<TAB>text, one fortune per line
fortunes_tsv() {
    awk -v label="$2" 'BEGIN { RS = "\n%\n" } { gsub(/[\t\n]+/, " "); if (length($0) > 20 && length($0) < 400 && n++ < 150) print label "\t" $0 }' \
        "/usr/share/games/fortunes/$1"
}
{ fortunes_tsv definitions definitions; fortunes_tsv food food; } > "$work/cls.tsv"

row() { # strategy task dir
    python3 - "$@" <<'PY'
import json, sys
s = json.load(open(sys.argv[3] + "/summary.json"))
f = lambda k: ("%.4f" % s[k]) if s.get(k) is not None else "-"
if sys.argv[2] == "classify":
    acc = [json.loads(l)["val_acc"] for l in open(sys.argv[3] + "/metrics.jsonl") if "val_acc" in l]
    mid = "%.3f" % acc[-1]
else:
    mid = f("forgetting")
print("| %s | %d | %s | %s | %s | %.1f | %.1f |" % (sys.argv[1], s["trainable_params"], f("val_loss_before"),
      f("val_loss_after"), mid, s["seconds"], s["peak_rss_mib"]))
PY
}

echo "| strategy | trainable | val loss before | val loss after | forgetting | seconds | peak RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|---:|"
common="--data /usr/share/games/fortunes/fortunes --seq 64 --batch 8 --epochs 3 --seed 1 --quiet --reference $work/ref.txt"
for spec in "full 2e-3" "lora 1e-2" "ia3 2e-2" "bitfit 2e-2" "dense 2e-3" "feature 2e-3"; do
    set -- $spec
    "$peft" train --model "$model" --strategy "$1" --lr "$2" $common --out "$work/lm-$1"
    row "$1" lm "$work/lm-$1"
done
echo
echo "| strategy | trainable | val loss before | val loss after | val acc | seconds | peak RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for spec in "feature 1e-2" "dense 3e-3" "lora 3e-3" "full 1e-3" "bitfit 1e-2" "ia3 1e-2"; do
    set -- $spec
    "$peft" train --model "$model" --task classify --pooling mean --data "$work/cls.tsv" --strategy "$1" --lr "$2" \
        --seq 64 --batch 8 --epochs 6 --val-split 0.2 --seed 5 --quiet --out "$work/cls-$1"
    row "$1" classify "$work/cls-$1"
done
