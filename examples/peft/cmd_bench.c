/* peft bench: training throughput of a randomly initialised GPT-2 or Llama
 * through the public API (peft_model_create, peft_adapter_attach,
 * peft_trainer_step), and the sgemm rate that MFU is measured against.
 * bench/torch_ref.py runs the same workloads in PyTorch with the same flags
 * and JSON keys; bench/compare.sh puts the two side by side.
 *
 * FLOPs per token (model FLOPs: what the maths needs, not what a kernel
 * happens to recompute, e.g. the attention backward's tile recomputation).
 * A multiply-add is 2 FLOPs. Per token, with C = d_model, T = seq, L layers:
 *
 *   P_mm   = elements of every matrix applied to the token: the block
 *            projections (out*in each), the LoRA factors r*(in+out) of each
 *            target, and the LM head V*C (LM task). The "head" strategy has
 *            no LM head; its classifier (4*C) runs once per sequence, so it
 *            counts 4*C/T per token.
 *   attn   = 2*T*C per layer: Q K^T and P V are T*C multiply-adds each per
 *            query token without the mask, half with the causal mask.
 *
 *   forward            = 2*P_mm + L*attn
 *   backward, inputs   = 2*P_mm + 2*L*attn, over what the gradient crosses:
 *                        lora/full: the whole stack (lora, whose embeddings
 *                        are frozen, needs no input gradient of block 0's
 *                        q/k/v or c_attn projections nor of their LoRA A,
 *                        so those are left out); head: nothing (the base
 *                        runs without gradients; the classifier's input
 *                        needs none).
 *   backward, weights  = 2*P_trainable_mm: only matrices that train (lora:
 *                        A and B; full: every projection and the LM head,
 *                        which GPT-2 ties to the embedding; head: the
 *                        classifier). Embedding rows, biases and norm gains
 *                        are not products and are not counted.
 *
 * So a frozen base costs 4*P_mm per token (forward + input gradients), not
 * the 6*P_mm of full training, and "6 * N_trainable" is wrong for LoRA.
 *
 * MFU = flops_per_token * tokens_per_s / (sgemm GFLOP/s * 1e9), the sgemm
 * rate being the best of large square products (512..2048) timed through the
 * library's BLAS wrapper (peft_matmul with gradients off) with the same
 * thread count (--peak-gflops G skips the measurement). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli.h"

static const char *const flags[] = {"help", "json", "sgemm-peak", NULL};
static const char *const valued[] = {"arch", "layers", "d", "heads", "kv-heads", "ffn", "vocab", "batch", "seq", "strategy",
                                     "lora-r", "lora-targets", "steps", "warmup", "threads", "seed", "peak-gflops", "gemm", NULL};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: peft bench [options]        training throughput on random weights and tokens\n"
            "       peft bench --sgemm-peak     the sgemm rate (GFLOP/s) MFU is measured against\n\n"
            "model (random init, as peft_model_create):\n"
            "  --arch gpt2|llama [gpt2]  --layers L [4]  --d D [256]  --heads H [4]\n"
            "  --kv-heads K [H]  --ffn F [gpt2: 4*D; llama: 8*D/3 rounded up to 32]  --vocab V [512]\n"
            "workload:\n"
            "  --batch B [8]  --seq T [128]\n"
            "  --strategy full|lora|head [lora]   head = frozen base + linear classifier, 4 classes\n"
            "  --lora-r R [8]  --lora-targets LIST [gpt2: c_attn; llama: q_proj,v_proj]\n"
            "  --steps N [6]    optimizer steps, the first --warmup W [2] untimed\n"
            "  --threads N [all cores]  --seed S [1]\n"
            "  --gemm auto|openblas [auto]  matrix products: the own AVX-512 GEMM when the CPU\n"
            "                   has it (auto), or OpenBLAS for every product\n"
            "  --peak-gflops G  sgemm rate for MFU (default: measured, about a second)\n"
            "output:\n"
            "  --json           one JSON object: tokens_per_s, step_ms_median, peak_rss_mib,\n"
            "                   trainable_params, flops_per_token, mfu, ...\n"
            "AdamW (lr 1e-4, weight decay 0.01, no clipping); LM: next-token cross-entropy\n"
            "on uniform random tokens. With --sgemm-peak and a model, also the rate on the\n"
            "workload's forward product shapes.\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds of the whole process (every thread), user + system. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* kB on Linux */
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- sgemm rate ---- */

/* GFLOP/s of C[M,N] = A[M,K] B^T (B [N,K], the layout of y = x W^T) through
 * peft_matmul, best of repeated calls for about `budget` seconds. */
static double gemm_rate(peft_ctx *ctx, int64_t M, int64_t N, int64_t K, double budget, peft_status *st)
{
    peft_tensor *a = NULL, *b = NULL;
    int64_t sa[2] = {M, K}, sb[2] = {N, K};
    double best = 0;
    *st = peft_tensor_create(ctx, PEFT_DTYPE_F32, 2, sa, &a);
    if (*st == PEFT_OK) *st = peft_tensor_create(ctx, PEFT_DTYPE_F32, 2, sb, &b);
    if (*st == PEFT_OK) *st = peft_tensor_init_uniform(a, -1.0f, 1.0f);
    if (*st == PEFT_OK) *st = peft_tensor_init_uniform(b, -1.0f, 1.0f);
    int prev = peft_set_grad_enabled(ctx, 0);
    double t_end = now_s() + budget;
    for (int i = 0; *st == PEFT_OK && (i < 3 || now_s() < t_end); i++) {
        peft_tensor *c;
        double t0 = now_s();
        *st = peft_matmul(ctx, a, b, PEFT_TRANS_B, &c);
        double dt = now_s() - t0;
        peft_graph_release(ctx);
        if (i > 0 && dt > 0 && 2.0 * (double)M * (double)N * (double)K / dt > best) /* call 0 warms up */
            best = 2.0 * (double)M * (double)N * (double)K / dt;
    }
    peft_set_grad_enabled(ctx, prev);
    peft_tensor_destroy(a);
    peft_tensor_destroy(b);
    return best * 1e-9;
}

/* The best rate over large square products. */
static double square_peak(peft_ctx *ctx, bool thorough, peft_status *st)
{
    static const int64_t sizes[] = {512, 1024, 2048};
    double best = 0;
    for (size_t i = thorough ? 0 : 1; i < (thorough ? 3u : 2u) && *st == PEFT_OK; i++) {
        double r = gemm_rate(ctx, sizes[i], sizes[i], sizes[i], thorough ? 1.0 : 0.5, st);
        if (r > best) best = r;
    }
    return best;
}

/* ---- the workload ---- */

typedef struct bench_cfg {
    peft_model_config mc;
    const char *arch, *strategy, *targets;
    int64_t B, T;
    int r, steps, warmup;
} bench_cfg;

typedef struct flop_count {
    double per_token;
    /* forward product shapes [M = B*T, N = out, K = in] for --sgemm-peak */
    int n_shapes;
    int64_t shapes[16][3];
} flop_count;

/* FLOPs per token, as described at the top of the file, from the model's own
 * projection list (so the count follows whatever the model builds). */
static void count_flops(const bench_cfg *bc, peft_model *m, flop_count *fc)
{
    const peft_model_config *c = peft_model_get_config(m);
    const double C = (double)c->d_model, T = (double)bc->T, V = (double)c->vocab_size, L = (double)c->n_layer;
    const bool lora = !strcmp(bc->strategy, "lora"), full = !strcmp(bc->strategy, "full"),
               head = !strcmp(bc->strategy, "head");
    const char *targets = bc->targets ? bc->targets : (c->arch == PEFT_ARCH_GPT2 ? "c_attn" : "q_proj,v_proj");
    double mm = 0, mm_trainable = 0, mm_no_input_grad = 0;
    memset(fc, 0, sizeof *fc);
    for (size_t i = 0; i < peft_model_n_linears(m); i++) {
        const char *name;
        peft_tensor *w, *b;
        if (peft_model_linear(m, i, &name, &w, &b) != PEFT_OK) continue;
        double out = (double)peft_tensor_dim(w, 0), in = (double)peft_tensor_dim(w, 1);
        double p = out * in, p_lora = lora && peft_target_matches(targets, name) ? bc->r * (in + out) : 0;
        mm += p + p_lora;
        mm_trainable += full ? p : p_lora;
        /* block 0's input projections read the frozen embeddings: no input gradient unless they train */
        bool reads_embedding = !strncmp(name, "transformer.h.0.", 16) || !strncmp(name, "model.layers.0.", 15);
        reads_embedding = reads_embedding && (strstr(name, "c_attn") || strstr(name, "q_proj") || strstr(name, "k_proj") ||
                                              strstr(name, "v_proj"));
        if (reads_embedding && !full) mm_no_input_grad += p + (p_lora ? bc->r * in : 0);
        bool dup = false;
        for (int k = 0; k < fc->n_shapes; k++)
            dup = dup || (fc->shapes[k][1] == (int64_t)out && fc->shapes[k][2] == (int64_t)in);
        if (!dup && fc->n_shapes < 15) {
            fc->shapes[fc->n_shapes][0] = bc->B * bc->T;
            fc->shapes[fc->n_shapes][1] = (int64_t)out;
            fc->shapes[fc->n_shapes++][2] = (int64_t)in;
        }
    }
    double attn = 2.0 * T * C * L; /* causal: half of 2 * 2*T*C */
    double fwd, bwd_in, bwd_w;
    if (head) {
        double cls = 4.0 * C / T;
        fwd = 2.0 * (mm + cls) + attn;
        bwd_in = 0;
        bwd_w = 2.0 * cls;
    } else {
        mm += V * C; /* LM head */
        if (full) mm_trainable += V * C;
        fwd = 2.0 * mm + attn;
        bwd_in = 2.0 * (mm - mm_no_input_grad) + 2.0 * attn;
        bwd_w = 2.0 * mm_trainable;
        fc->shapes[fc->n_shapes][0] = bc->B * bc->T;
        fc->shapes[fc->n_shapes][1] = c->vocab_size;
        fc->shapes[fc->n_shapes++][2] = c->d_model;
    }
    fc->per_token = fwd + bwd_in + bwd_w;
}

static bool parse_cfg(const cli_args *a, bench_cfg *bc)
{
    long long layers, d, heads, kv, ffn, vocab, batch, seq, r, steps, warmup;
    memset(bc, 0, sizeof *bc);
    bc->arch = cli_get(a, "arch") ? cli_get(a, "arch") : "gpt2";
    bc->strategy = cli_get(a, "strategy") ? cli_get(a, "strategy") : "lora";
    bc->targets = cli_get(a, "lora-targets");
    bool llama = !strcmp(bc->arch, "llama");
    if (!llama && strcmp(bc->arch, "gpt2")) {
        fprintf(stderr, "peft: --arch must be gpt2 or llama\n");
        return false;
    }
    if (strcmp(bc->strategy, "full") && strcmp(bc->strategy, "lora") && strcmp(bc->strategy, "head")) {
        fprintf(stderr, "peft: --strategy must be full, lora or head\n");
        return false;
    }
    if (!cli_int(a, "layers", 4, &layers) || !cli_int(a, "d", 256, &d) || !cli_int(a, "heads", 4, &heads) ||
        !cli_int(a, "kv-heads", heads, &kv) || !cli_int(a, "vocab", 512, &vocab) || !cli_int(a, "batch", 8, &batch) ||
        !cli_int(a, "seq", 128, &seq) || !cli_int(a, "lora-r", 8, &r) || !cli_int(a, "steps", 6, &steps) ||
        !cli_int(a, "warmup", 2, &warmup))
        return false;
    /* Llama's default MLP width: 8/3 of d rounded up to 32 (torch_ref.py uses the same rule) */
    if (!cli_int(a, "ffn", llama ? (8 * d / 3 + 31) / 32 * 32 : 4 * d, &ffn)) return false;
    if (layers < 1 || d < 1 || heads < 1 || kv < 1 || ffn < 1 || vocab < 2 || batch < 1 || seq < 2 || r < 1 ||
        warmup < 0 || steps <= warmup || steps > 100000 || batch * seq > (1LL << 24)) {
        fprintf(stderr, "peft: bench needs positive sizes, --seq >= 2, --vocab >= 2 and --steps > --warmup "
                        "(steps %lld, warmup %lld)\n", steps, warmup);
        return false;
    }
    bc->mc = peft_model_config_default(llama ? PEFT_ARCH_LLAMA : PEFT_ARCH_GPT2);
    bc->mc.n_layer = layers;
    bc->mc.d_model = d;
    bc->mc.n_head = heads;
    bc->mc.n_kv_head = llama ? kv : heads;
    bc->mc.d_ff = ffn;
    bc->mc.vocab_size = vocab;
    /* GPT-2 keeps its 1024 learned positions (they count as parameters) */
    bc->mc.n_ctx = seq > (llama ? 2048 : 1024) ? seq : (llama ? 2048 : 1024);
    bc->mc.bos_id = bc->mc.eos_id = -1;
    bc->B = batch;
    bc->T = seq;
    bc->r = (int)r;
    bc->steps = (int)steps;
    bc->warmup = (int)warmup;
    return true;
}

typedef struct bench_result {
    double tokens_per_s, step_ms_median, step_ms_min, cpu_ms_per_step, loss_first, loss_last;
    int64_t trainable, total;
} bench_result;

/* Attach, then time peft_trainer_step on fresh random batches. */
static peft_status run_steps(peft_ctx *ctx, const bench_cfg *bc, peft_model *m, bench_result *res)
{
    const bool head = !strcmp(bc->strategy, "head");
    peft_task task = peft_task_default(head ? PEFT_TASK_CLASSIFY : PEFT_TASK_LM);
    if (head) {
        task.n_classes = 4;
        task.pooling = PEFT_POOL_LAST;
    }
    peft_lora_opts lo = peft_lora_opts_default();
    lo.r = bc->r;
    lo.targets = bc->targets;
    peft_adapter *ad = NULL;
    peft_trainer *tr = NULL;
    /* "feature" without example ids caches nothing: the frozen base runs
     * (without gradients) every step and only the classifier trains */
    peft_status st = peft_adapter_attach(m, head ? "feature" : bc->strategy, &task,
                                         !strcmp(bc->strategy, "lora") ? (const void *)&lo : NULL, &ad);
    if (st != PEFT_OK) {
        cli_error(ctx, "cannot attach the strategy", st);
        return st;
    }
    peft_train_opts to = peft_train_opts_default();
    to.lr = 1e-4f;
    to.weight_decay = 0.01f; /* torch.optim.AdamW's default */
    to.max_grad_norm = 0.0f;
    to.batch_size = (int)bc->B;
    to.max_steps = bc->steps;
    size_t n = (size_t)(bc->B * bc->T);
    int32_t *ids = malloc(n * sizeof *ids), *labels = malloc((size_t)bc->B * sizeof *labels);
    double *ms = malloc((size_t)bc->steps * sizeof *ms);
    if (!ids || !labels || !ms) {
        fprintf(stderr, "peft: out of memory\n");
        st = PEFT_ERR_NOMEM;
        goto done;
    }
    if ((st = peft_trainer_create(ad, &to, &tr)) != PEFT_OK) {
        cli_error(ctx, "cannot set up training", st);
        goto done;
    }
    res->trainable = peft_adapter_trainable_numel(ad);
    res->total = peft_model_numel(m);
    for (int s = 0; s < bc->steps; s++) {
        for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(peft_ctx_rand_u64(ctx) % (uint64_t)bc->mc.vocab_size);
        for (int64_t i = 0; i < bc->B; i++) labels[i] = (int32_t)(peft_ctx_rand_u64(ctx) % 4);
        peft_batch b = {.B = bc->B, .T = bc->T, .ids = ids, .labels = head ? labels : NULL};
        float loss;
        double t0 = now_s(), c0 = cpu_s();
        if ((st = peft_trainer_step(tr, &b, &loss)) != PEFT_OK) {
            cli_error(ctx, "training step failed", st);
            goto done;
        }
        ms[s] = 1e3 * (now_s() - t0);
        if (s >= bc->warmup) res->cpu_ms_per_step += 1e3 * (cpu_s() - c0) / (double)(bc->steps - bc->warmup);
        if (s == 0) res->loss_first = loss;
        res->loss_last = loss;
    }
    int timed = bc->steps - bc->warmup;
    qsort(ms + bc->warmup, (size_t)timed, sizeof *ms, cmp_double);
    const double *t = ms + bc->warmup;
    res->step_ms_median = timed % 2 ? t[timed / 2] : 0.5 * (t[timed / 2 - 1] + t[timed / 2]);
    res->step_ms_min = t[0];
    res->tokens_per_s = (double)n / (res->step_ms_median * 1e-3);
done:
    free(ids);
    free(labels);
    free(ms);
    peft_trainer_destroy(tr);
    peft_adapter_destroy(ad);
    return st;
}

static int sgemm_peak_cmd(peft_ctx *ctx, const cli_args *a, bool json)
{
    peft_status st = PEFT_OK;
    double peak = square_peak(ctx, true, &st);
    /* with a model given: the rate on its forward products (created shape-only, no model needed) */
    bool workload = cli_has(a, "d") || cli_has(a, "layers") || cli_has(a, "vocab");
    double wl_flops = 0, wl_time = 0;
    bench_cfg bc;
    if (st == PEFT_OK && workload) {
        if (!parse_cfg(a, &bc)) return 2;
        peft_model *m = NULL;
        if ((st = peft_model_create(ctx, &bc.mc, &m)) != PEFT_OK) {
            cli_error(ctx, "cannot create the model", st);
            return 1;
        }
        flop_count fc;
        count_flops(&bc, m, &fc);
        peft_model_destroy(m);
        for (int k = 0; k < fc.n_shapes && st == PEFT_OK; k++) {
            int64_t M = fc.shapes[k][0], N = fc.shapes[k][1], K = fc.shapes[k][2];
            double r = gemm_rate(ctx, M, N, K, 0.3, &st);
            double f = 2.0 * (double)M * (double)N * (double)K;
            if (r > 0) wl_flops += f, wl_time += f / (r * 1e9);
            if (!json && r > 0) printf("sgemm %lld x %lld x %lld: %.1f GFLOP/s\n", (long long)M, (long long)N, (long long)K, r);
        }
    }
    if (st != PEFT_OK) {
        cli_error(ctx, "sgemm", st);
        return 1;
    }
    if (json) {
        printf("{\"threads\": %d, \"sgemm_gflops\": %.2f", peft_ctx_n_threads(ctx), peak);
        if (wl_time > 0) printf(", \"sgemm_gflops_workload\": %.2f", wl_flops / wl_time * 1e-9);
        printf("}\n");
    } else {
        printf("sgemm peak (square 512..2048, %d threads): %.1f GFLOP/s\n", peft_ctx_n_threads(ctx), peak);
        if (wl_time > 0) printf("sgemm on the workload's forward shapes: %.1f GFLOP/s\n", wl_flops / wl_time * 1e-9);
    }
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    cli_args a;
    if (!cli_parse(&a, argc, argv, flags, valued)) return 2;
    if (cli_has(&a, "help")) {
        usage(stdout);
        return 0;
    }
    if (a.n_positional) {
        usage(stderr);
        return 2;
    }
    bool json = cli_has(&a, "json");
    double peak_given;
    if (!cli_float(&a, "peak-gflops", 0, &peak_given)) return 2;
    if (!(peak_given >= 0) || !isfinite(peak_given)) {
        fprintf(stderr, "peft: --peak-gflops must be a positive number\n");
        return 2;
    }
    peft_ctx *ctx = cli_ctx(&a);
    if (!ctx) return 1;
    if (cli_has(&a, "sgemm-peak")) {
        int rc = sgemm_peak_cmd(ctx, &a, json);
        peft_ctx_destroy(ctx);
        return rc;
    }
    bench_cfg bc;
    peft_model *m = NULL;
    int rc = 1;
    peft_status st;
    if (!parse_cfg(&a, &bc)) {
        rc = 2;
        goto done;
    }
    if ((st = peft_model_create(ctx, &bc.mc, &m)) != PEFT_OK) {
        cli_error(ctx, "cannot create the model", st);
        goto done;
    }
    flop_count fc;
    count_flops(&bc, m, &fc);
    bench_result res;
    memset(&res, 0, sizeof res);
    if (run_steps(ctx, &bc, m, &res) != PEFT_OK) goto done;
    /* the peak after the run, so the measurement does not warm the caches for it */
    double peak = peak_given;
    st = PEFT_OK;
    if (peak == 0) peak = square_peak(ctx, false, &st);
    if (st != PEFT_OK || !(peak > 0)) {
        cli_error(ctx, "sgemm peak", st);
        goto done;
    }
    double mfu = fc.per_token * res.tokens_per_s / (peak * 1e9);
    if (json) {
        printf("{\"impl\": \"libpeft\", \"arch\": \"%s\", \"strategy\": \"%s\", \"layers\": %lld, \"d\": %lld, "
               "\"heads\": %lld, \"kv_heads\": %lld, \"ffn\": %lld, \"vocab\": %lld, \"batch\": %lld, \"seq\": %lld, "
               "\"threads\": %d, \"steps\": %d, \"timed_steps\": %d, ",
               bc.arch, bc.strategy, (long long)bc.mc.n_layer, (long long)bc.mc.d_model, (long long)bc.mc.n_head,
               (long long)bc.mc.n_kv_head, (long long)bc.mc.d_ff, (long long)bc.mc.vocab_size, (long long)bc.B,
               (long long)bc.T, peft_ctx_n_threads(ctx), bc.steps, bc.steps - bc.warmup);
        printf("\"tokens_per_s\": %.2f, \"step_ms_median\": %.6f, \"step_ms_min\": %.6f, \"cpu_ms_per_step\": %.3f, "
               "\"peak_rss_mib\": %.1f, "
               "\"trainable_params\": %lld, \"total_params\": %lld, \"flops_per_token\": %.6g, \"sgemm_gflops\": %.2f, "
               "\"mfu\": %.5f, \"loss_first\": %.5f, \"loss_last\": %.5f, \"arena_peak_mib\": %.1f, \"ctx_peak_mib\": %.1f}\n",
               res.tokens_per_s, res.step_ms_median, res.step_ms_min, res.cpu_ms_per_step, peak_rss_mib(), (long long)res.trainable,
               (long long)res.total, fc.per_token, peak, mfu, res.loss_first, res.loss_last,
               (double)peft_arena_peak(peft_ctx_arena(ctx)) / 1048576.0, (double)peft_ctx_bytes_peak(ctx) / 1048576.0);
    } else {
        printf("%s %s: %lld layers, d %lld, %lld heads (%lld kv), ffn %lld, vocab %lld; batch %lld x seq %lld, %d threads\n",
               bc.arch, bc.strategy, (long long)bc.mc.n_layer, (long long)bc.mc.d_model, (long long)bc.mc.n_head,
               (long long)bc.mc.n_kv_head, (long long)bc.mc.d_ff, (long long)bc.mc.vocab_size, (long long)bc.B,
               (long long)bc.T, peft_ctx_n_threads(ctx));
        printf("  %.1f tokens/s, step %.1f ms (median of %d, min %.1f; %.1f ms CPU), peak RSS %.1f MiB\n",
               res.tokens_per_s, res.step_ms_median, bc.steps - bc.warmup, res.step_ms_min, res.cpu_ms_per_step,
               peak_rss_mib());
        printf("  %lld trainable of %lld parameters; %.3g FLOP/token; %.2f GFLOP/s = MFU %.3f of sgemm %.1f GFLOP/s\n",
               (long long)res.trainable, (long long)res.total, fc.per_token, fc.per_token * res.tokens_per_s * 1e-9, mfu,
               peak);
        printf("  loss %.4f -> %.4f; scratch arena peak %.1f MiB, context allocations peak %.1f MiB\n", res.loss_first,
               res.loss_last, (double)peft_arena_peak(peft_ctx_arena(ctx)) / 1048576.0,
               (double)peft_ctx_bytes_peak(ctx) / 1048576.0);
    }
    rc = 0;
done:
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
    return rc;
}
