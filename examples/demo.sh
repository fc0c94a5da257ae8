#!/bin/sh
# make demo: the main job, end to end on real text (Debian's fortune cookies).
#
#  1. pretrain a small Llama-style model from scratch on the general domain
#     (most fortune categories, byte-level tokens);
#  2. adapt it to a held-out category ("definitions") with every strategy, measuring
#     the new-domain validation loss and the forgetting on the general domain;
#  3. classify fortunes by category (definitions / food / computers) with
#     feature extraction, a dense head and LoRA;
#  4. print the table, a sample before and after adaptation, and write the
#     loss plots.
#
# usage: examples/demo.sh BUILD_DIR [MODEL]
#   MODEL: run only the adaptation and classification parts on your own model
#   (any format peft reads; it must bring a tokenizer, or set TOKENIZER=path).
set -eu
build="${1:-build}"
user_model="${2:-}"
peft="$build/bin/peft"
out="${DEMO_OUT:-demo-out}"
fortunes=/usr/share/games/fortunes
steps="${PRETRAIN_STEPS:-400}"
[ -x "$peft" ] || { echo "demo: $peft is missing (run make)"; exit 1; }
[ -r "$fortunes/food" ] || { echo "demo: the fortunes package is missing (run make deps as root)"; exit 1; }
rm -rf "$out"
mkdir -p "$out/data"
t0=$(date +%s)

# ---- data ----
# general domain: most categories; new domain: definitions (held out of pretraining)
general="fortunes people computers science literature work wisdom art law politics love education food"
for c in $general; do [ -r "$fortunes/$c" ] && cat "$fortunes/$c"; done > "$out/data/general.txt"
head -c 60000 "$fortunes/definitions" > "$out/data/new.txt"
# the general-domain reference for forgetting: a slice not used in pretraining
tail -c 60000 "$out/data/general.txt" > "$out/data/general-ref.txt"
head -c -60000 "$out/data/general.txt" > "$out/data/general-train.txt"
tsv() { # category: one fortune per line, "label<TAB>text"
    awk -v label="$1" 'BEGIN { RS = "\n%\n" } { gsub(/[\t\n]+/, " ");
        if (length($0) > 20 && length($0) < 300 && n++ < 150) print label "\t" $0 }' "$fortunes/$1"
}
{ tsv definitions; tsv food; tsv computers; } > "$out/data/categories.tsv"
echo "data: general $(wc -c < "$out/data/general-train.txt") bytes, new domain $(wc -c < "$out/data/new.txt") bytes," \
     "$(wc -l < "$out/data/categories.tsv") labelled fortunes"

# ---- 1. the base model ----
tok=""
if [ -n "$user_model" ]; then
    base="$user_model"
    [ -n "${TOKENIZER:-}" ] && tok="--tokenizer $TOKENIZER"
    echo "base: $base (yours)"
else
    tok="--tokenizer bytes"
    "$peft" init --arch llama --layers 4 --d 128 --heads 4 --kv-heads 2 --vocab 256 --ctx 128 --out "$out/init" >/dev/null
    echo "pretraining a 0.76M-parameter Llama on the general domain ($steps steps, byte tokens)..."
    "$peft" train --model "$out/init" $tok --data "$out/data/general-train.txt" --strategy full --lr 3e-3 \
        --steps "$steps" --batch 16 --seq 128 --schedule cosine --warmup 20 --val-split 0.05 --eval-every 100 \
        --quiet --save-model --out "$out/pretrain"
    base="$out/pretrain/model"
fi

# ---- 2. adaptation to the new domain with every strategy ----
prompt="Happiness, n.:"
adapt() { # strategy lr [extra options]
    s=$1 lr=$2
    shift 2
    "$peft" train --model "$base" $tok --data "$out/data/new.txt" --strategy "$s" --lr "$lr" --epochs 3 --batch 16 \
        --seq 128 --val-split 0.15 --seed 2 --reference "$out/data/general-ref.txt" --quiet --out "$out/adapt-$s" \
        --sample "$prompt" --sample-tokens 60 "$@" > "$out/adapt-$s/samples.log" 2>&1 || {
        echo "demo: adaptation with $s failed:"; cat "$out/adapt-$s/samples.log"; exit 1; }
}
for spec in "full 1e-3" "lora 1e-2" "ia3 3e-2" "bitfit 3e-2" "dense 3e-3" "feature 3e-3"; do
    set -- $spec
    mkdir -p "$out/adapt-$1"
    adapt "$1" "$2"
done

# ---- 3. classification ----
for spec in "feature 1e-2" "dense 3e-3" "lora 3e-3"; do
    set -- $spec
    "$peft" train --model "$base" $tok --task classify --pooling mean --data "$out/data/categories.tsv" \
        --strategy "$1" --lr "$2" --seq 96 --batch 16 --epochs 5 --val-split 0.2 --seed 5 --quiet \
        --out "$out/classify-$1"
done

# ---- 4. report ----
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def summary(d):
    return json.load(open(os.path.join(out, d, "summary.json")))
print()
print("Adaptation to a held-out category (definitions), from the general-domain base model")
print("%-9s %10s %10s %10s %8s %11s %7s %8s" % ("strategy", "trainable", "val loss", "val ppl", "before", "forgetting", "time s", "peak MiB"))
for s in ["full", "lora", "ia3", "bitfit", "dense", "feature"]:
    j = summary("adapt-" + s)
    import math
    print("%-9s %10d %10.4f %10.2f %8.4f %+11.4f %7.1f %8.1f" % (s, j["trainable_params"], j["val_loss_after"],
          math.exp(j["val_loss_after"]), j["val_loss_before"], j["forgetting"], j["seconds"], j["peak_rss_mib"]))
for s in ["ULMFiT", "QLoRA"]:
    print("%-9s %s" % (s, "not available yet (a later issue adds it)"))
print()
print("Classification of fortunes: definitions / food / computers")
print("%-9s %10s %10s %8s %10s %7s %8s" % ("strategy", "trainable", "val loss", "before", "val acc", "time s", "peak MiB"))
for s in ["feature", "dense", "lora"]:
    j = summary("classify-" + s)
    acc = [json.loads(l)["val_acc"] for l in open(os.path.join(out, "classify-" + s, "metrics.jsonl")) if "val_acc" in l]
    print("%-9s %10d %10.4f %8.4f %10.3f %7.1f %8.1f" % (s, j["trainable_params"], j["val_loss_after"], j["val_loss_before"],
          acc[-1], j["seconds"], j["peak_rss_mib"]))
print("(3 classes: chance accuracy is 0.333)")
print()
text = open(os.path.join(out, "adapt-lora", "samples.txt")).read()
before, after = text.split("\nafter:", 1)
clean = lambda t: " / ".join(l.strip() for l in t.replace("before:", "", 1).strip().splitlines() if l.strip())
print("sample before adaptation: " + clean(before))
print("sample after (LoRA):      " + clean(after))
PY
if "$peft" plot --help >/dev/null 2>&1; then
    for d in "$out"/pretrain "$out"/adapt-* "$out"/classify-*; do
        [ -f "$d/metrics.jsonl" ] && "$peft" plot "$d/metrics.jsonl" -o "$d/loss.svg" >/dev/null 2>&1 || true
    done
    echo "plots: $out/*/loss.svg"
fi
echo "demo finished in $(( $(date +%s) - t0 )) s; everything is in $out/"
