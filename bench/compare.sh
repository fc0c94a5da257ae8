#!/bin/sh
# libpeft against plain PyTorch on the same training workloads (docs/performance.md).
#
#   sh bench/compare.sh                 every workload, 6 steps each (2 untimed)
#   QUICK=1 sh bench/compare.sh         3 steps each (1 untimed), a few minutes
#   ONLY="W1-lora W3-full" sh bench/compare.sh   a subset, by name
#
# Environment: PEFT_CLI (default build/bin/peft), THREADS (2), STEPS / WARMUP,
# OUT (directory for the raw JSON, default build/bench-results), PEAK_GFLOPS
# (the OpenBLAS sgemm rate MFU is measured against; default: `peft bench
# --sgemm-peak --gemm openblas`, which a busy machine drags down: then give the
# figure of a quiet moment).
# Prints two markdown tables; ratios are libpeft / PyTorch. The first is the
# median step (the headline numbers); the second the fastest step, the CPU
# time per step (every thread) and the 1-minute load average when the pair
# started, which show how much other work on the machine disturbed the run.
# The two programs run one after the other, alternating which goes first,
# never at the same time.
set -eu

PEFT=${PEFT_CLI:-build/bin/peft}
TORCH="/usr/bin/python3 $(dirname "$0")/torch_ref.py"
THREADS=${THREADS:-2}
if [ "${QUICK:-0}" = 1 ]; then STEPS=${STEPS:-3}; WARMUP=${WARMUP:-1}; else STEPS=${STEPS:-6}; WARMUP=${WARMUP:-2}; fi
OUT=${OUT:-build/bench-results}
ONLY=${ONLY:-}

[ -x "$PEFT" ] || { echo "compare.sh: $PEFT not found (make cli, or set PEFT_CLI)" >&2; exit 1; }
/usr/bin/python3 -c 'import torch' 2>/dev/null ||
    { echo "compare.sh: PyTorch missing: apt-get install python3-torch" >&2; exit 1; }
mkdir -p "$OUT"

W1="--arch gpt2 --layers 12 --d 768 --heads 12 --vocab 50257 --batch 4 --seq 128"
W2="--arch llama --layers 30 --d 576 --heads 9 --kv-heads 3 --ffn 1536 --vocab 49152 --batch 4 --seq 128"
W3="--arch gpt2 --layers 4 --d 256 --heads 4 --vocab 512 --batch 8 --seq 128"
W4="--arch gpt2 --layers 12 --d 768 --heads 12 --vocab 50257 --batch 1"

# name|arguments
workloads() {
    cat <<EOF
W1-lora|$W1 --strategy lora --lora-r 8 --lora-targets c_attn
W1-full|$W1 --strategy full
W1-head|$W1 --strategy head
W2-lora|$W2 --strategy lora --lora-r 8 --lora-targets q_proj,v_proj
W2-full|$W2 --strategy full
W3-lora|$W3 --strategy lora --lora-r 8 --lora-targets c_attn
W3-full|$W3 --strategy full
W4-lora-seq512|$W4 --seq 512 --strategy lora --lora-r 8 --lora-targets c_attn
W4-lora-seq1024|$W4 --seq 1024 --strategy lora --lora-r 8 --lora-targets c_attn
EOF
}

# MFU is measured against OpenBLAS's sgemm rate (what the issue's targets
# use); the own GEMM's rate is printed beside it.
if [ -n "${PEAK_GFLOPS:-}" ]; then
    gflops=$PEAK_GFLOPS
    echo "OpenBLAS sgemm peak as given: $gflops GFLOP/s" >&2
else
    peak=$("$PEFT" bench --sgemm-peak --gemm openblas --threads "$THREADS" --json)
    echo "$peak" > "$OUT/sgemm.json"
    gflops=$(echo "$peak" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["sgemm_gflops"])')
    echo "OpenBLAS sgemm peak, $THREADS threads: $gflops GFLOP/s" >&2
fi
own=$("$PEFT" bench --sgemm-peak --threads "$THREADS" --json)
echo "$own" > "$OUT/sgemm-own.json"
echo "libpeft's own GEMM (auto), $THREADS threads: $(echo "$own" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["sgemm_gflops"])') GFLOP/s" >&2

common="--threads $THREADS --steps $STEPS --warmup $WARMUP --peak-gflops $gflops --json"
i=0
workloads | while IFS='|' read -r name args; do
    if [ -n "$ONLY" ]; then
        case " $ONLY " in *" $name "*) ;; *) continue ;; esac
    fi
    echo "running $name ..." >&2
    # shellcheck disable=SC2086
    run_peft() { "$PEFT" bench $args $common > "$OUT/$name.peft.json" || { echo "$name: libpeft failed" >&2; rm -f "$OUT/$name.peft.json"; }; }
    run_torch() { $TORCH $args $common > "$OUT/$name.torch.json" || { echo "$name: PyTorch failed" >&2; rm -f "$OUT/$name.torch.json"; }; }
    rm -f "$OUT/$name.peft.json" "$OUT/$name.torch.json"
    cut -d' ' -f1 /proc/loadavg > "$OUT/$name.load" # other users of the machine show here
    if [ $((i % 2)) = 0 ]; then run_peft; run_torch; else run_torch; run_peft; fi
    i=$((i + 1))
done

/usr/bin/python3 - "$OUT" "$ONLY" <<'EOF'
import json, os, sys
out, only = sys.argv[1], sys.argv[2].split()
names = ["W1-lora", "W1-full", "W1-head", "W2-lora", "W2-full", "W3-lora", "W3-full", "W4-lora-seq512", "W4-lora-seq1024"]

def results():
    """(name, libpeft JSON, PyTorch JSON, load) per workload run; all None but the name when missing."""
    for n in names:
        if only and n not in only:
            continue
        try:
            p = json.load(open(os.path.join(out, n + ".peft.json")))
            t = json.load(open(os.path.join(out, n + ".torch.json")))
            load = open(os.path.join(out, n + ".load")).read().strip()
        except (OSError, ValueError):
            p = t = load = None
        yield n, p, t, load

print("| workload | libpeft tokens/s | PyTorch tokens/s | ratio | libpeft peak MiB | PyTorch peak MiB | ratio | libpeft MFU | PyTorch MFU |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for n, p, t, _ in results():
    if p is None:
        print("| %s | (missing) |||||||" % n)
        continue
    print("| %s | %.0f | %.0f | %.2f | %.0f | %.0f | %.2f | %.3f | %.3f |" % (
        n, p["tokens_per_s"], t["tokens_per_s"], p["tokens_per_s"] / t["tokens_per_s"],
        p["peak_rss_mib"], t["peak_rss_mib"], p["peak_rss_mib"] / t["peak_rss_mib"], p["mfu"], t["mfu"]))
print()
print("| workload | libpeft best-step tokens/s | PyTorch best-step tokens/s | ratio | libpeft CPU s/step | PyTorch CPU s/step | ratio | load at start |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for n, p, t, load in results():
    if p is None:
        continue
    tok = p["batch"] * p["seq"]
    bp, bt = tok / (p["step_ms_min"] * 1e-3), tok / (t["step_ms_min"] * 1e-3)
    cp, ct = p["cpu_ms_per_step"] * 1e-3, t["cpu_ms_per_step"] * 1e-3
    print("| %s | %.0f | %.0f | %.2f | %.2f | %.2f | %.2f | %s |" % (n, bp, bt, bp / bt, cp, ct, cp / ct, load))
EOF
