/* peft bench, run as a separate program (PEFT_CLI, set by make check): every
 * key of the JSON report is present with a sane value, for each strategy and
 * both architectures; the parameter and FLOP counts follow the documented
 * formula; the own GEMM and OpenBLAS give the same losses; bad command
 * lines fail cleanly. No timing assertions. */
#include <cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/testutil.h"

static int run(const char *args, char **out) { return tu_run_peft(args, out); }
static const char *stderr_text(void) { return tu_stderr(); }



static const char tiny_gpt2[] = "--arch gpt2 --layers 2 --d 64 --heads 4 --vocab 128 --batch 2 --seq 16";
static const char tiny_llama[] = "--arch llama --layers 2 --d 64 --heads 4 --kv-heads 2 --ffn 96 --vocab 128 --batch 2 --seq 16";

/* Every key present, positive and finite; mfu in (0, 1.5); returns the report. */
static cJSON *bench(const char *model, const char *strategy)
{
    char args[1024];
    snprintf(args, sizeof args, "bench %s --strategy %s --steps 4 --threads 2 --json", model, strategy);
    cJSON *j = tu_peft_json(args);
    static const char *const keys[] = {"tokens_per_s", "step_ms_median", "step_ms_min", "cpu_ms_per_step", "peak_rss_mib",
                                       "trainable_params", "total_params", "flops_per_token", "sgemm_gflops"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        ck_assert_msg(tu_json_num(j, keys[i]) > 0, "%s: %s = %g", args, keys[i], tu_json_num(j, keys[i]));
    double mfu = tu_json_num(j, "mfu");
    ck_assert_msg(mfu > 0 && mfu < 1.5, "%s: mfu %g", args, mfu);
    ck_assert_double_le(tu_json_num(j, "step_ms_min"), tu_json_num(j, "step_ms_median"));
    ck_assert_double_le(tu_json_num(j, "trainable_params"), tu_json_num(j, "total_params"));
    ck_assert_int_eq((int)tu_json_num(j, "timed_steps"), 2);
    ck_assert_int_eq((int)tu_json_num(j, "threads"), 2);
    /* the step actually trained something: a finite loss near ln(classes) at random init */
    ck_assert(tu_json_num(j, "loss_first") > 0 && tu_json_num(j, "loss_last") > 0);
    /* tokens/s is the batch over the median step */
    ck_assert_double_eq_tol(tu_json_num(j, "tokens_per_s"), 2 * 16 / (tu_json_num(j, "step_ms_median") * 1e-3),
                            1e-3 * tu_json_num(j, "tokens_per_s") + 0.01);
    const cJSON *impl = cJSON_GetObjectItemCaseSensitive(j, "impl");
    ck_assert(cJSON_IsString(impl) && !strcmp(impl->valuestring, "libpeft"));
    return j;
}

/* GPT-2, C 64, F 256, V 128, T 16, 2 layers, r 8 on c_attn:
 * block projections out*in: 3C*C + C*C + F*C + C*F = 12288 + 4096 + 16384 + 16384 = 49152 */
START_TEST(io_gpt2_every_strategy)
{
    const double C = 64, T = 16, V = 128, L = 2, P = 49152, lora = 8 * (64 + 192);
    const double attn = 2 * T * C * L;
    cJSON *jl = bench(tiny_gpt2, "lora"), *jf = bench(tiny_gpt2, "full"), *jh = bench(tiny_gpt2, "head");
    ck_assert_int_eq((int64_t)tu_json_num(jl, "trainable_params"), (int64_t)(L * lora));
    ck_assert_int_eq((int64_t)tu_json_num(jh, "trainable_params"), 64 * 4 + 4);
    ck_assert_int_eq((int64_t)tu_json_num(jf, "trainable_params"), (int64_t)tu_json_num(jf, "total_params"));
    ck_assert_int_eq((int64_t)tu_json_num(jl, "total_params"), (int64_t)tu_json_num(jf, "total_params"));
    /* full: 3 x (2 * all products) + 3 x attention forward */
    double mm = L * P + V * C;
    ck_assert_double_eq_tol(tu_json_num(jf, "flops_per_token"), 6 * mm + 3 * attn, 1e-3 * tu_json_num(jf, "flops_per_token"));
    /* lora: forward + input gradients through everything but block 0's c_attn (and its A), + A/B gradients */
    double mml = mm + L * lora;
    double expect_lora = (2 * mml + attn) + (2 * (mml - 3 * C * C - 8 * C) + 2 * attn) + 2 * L * lora;
    ck_assert_double_eq_tol(tu_json_num(jl, "flops_per_token"), expect_lora, 1e-3 * expect_lora);
    /* head: the frozen base forward without the LM head, + the classifier per sequence */
    double cls = 4 * C / T, expect_head = 2 * (L * P + cls) + attn + 2 * cls;
    ck_assert_double_eq_tol(tu_json_num(jh, "flops_per_token"), expect_head, 1e-3 * expect_head);
    cJSON_Delete(jl);
    cJSON_Delete(jf);
    cJSON_Delete(jh);
}
END_TEST

START_TEST(io_llama_lora_and_full)
{
    cJSON *jl = bench(tiny_llama, "lora"), *jf = bench(tiny_llama, "full");
    /* r 8 on q_proj (64 -> 64) and v_proj (64 -> 32) of 2 layers */
    ck_assert_int_eq((int64_t)tu_json_num(jl, "trainable_params"), 2 * (8 * (64 + 64) + 8 * (64 + 32)));
    ck_assert_int_eq((int64_t)tu_json_num(jf, "trainable_params"), (int64_t)tu_json_num(jf, "total_params"));
    ck_assert_int_eq((int)tu_json_num(jf, "kv_heads"), 2);
    ck_assert_int_eq((int)tu_json_num(jf, "ffn"), 96);
    ck_assert(tu_json_num(jf, "flops_per_token") > tu_json_num(jl, "flops_per_token"));
    cJSON *jh = bench(tiny_llama, "head");
    ck_assert_int_eq((int64_t)tu_json_num(jh, "trainable_params"), 64 * 4 + 4);
    ck_assert(tu_json_num(jh, "flops_per_token") < tu_json_num(jl, "flops_per_token"));
    cJSON_Delete(jl);
    cJSON_Delete(jf);
    cJSON_Delete(jh);
}
END_TEST

START_TEST(io_sgemm_peak)
{
    cJSON *j = tu_peft_json("bench --sgemm-peak --threads 1 --json --d 64 --layers 1 --heads 4 --vocab 128 --batch 2 --seq 16");
    ck_assert(tu_json_num(j, "sgemm_gflops") > 0);
    ck_assert(tu_json_num(j, "sgemm_gflops_workload") > 0);
    ck_assert_int_eq((int)tu_json_num(j, "threads"), 1);
    cJSON_Delete(j);
    /* a given peak is used as is: mfu = flops/token * tokens/s / peak */
    char args[512];
    snprintf(args, sizeof args, "bench %s --strategy lora --steps 3 --warmup 1 --threads 1 --peak-gflops 1000 --json",
             tiny_gpt2);
    j = tu_peft_json(args);
    ck_assert_double_eq_tol(tu_json_num(j, "sgemm_gflops"), 1000, 1e-9);
    double mfu = tu_json_num(j, "flops_per_token") * tu_json_num(j, "tokens_per_s") / 1e12;
    ck_assert_double_eq_tol(tu_json_num(j, "mfu"), mfu, 1e-3 * mfu + 1e-5);
    ck_assert_int_eq((int)tu_json_num(j, "timed_steps"), 2);
    cJSON_Delete(j);
}
END_TEST

/* --gemm openblas runs every product through OpenBLAS: the same model and
 * batches give the same losses up to rounding (the first before any update,
 * the last after two AdamW steps). */
START_TEST(io_gemm_backends_agree)
{
    char args[512];
    snprintf(args, sizeof args, "bench %s --strategy full --steps 3 --warmup 1 --threads 2 --json", tiny_gpt2);
    cJSON *own = tu_peft_json(args);
    snprintf(args, sizeof args, "bench %s --strategy full --steps 3 --warmup 1 --threads 2 --json --gemm openblas",
             tiny_gpt2);
    cJSON *ob = tu_peft_json(args);
    ck_assert_double_eq_tol(tu_json_num(own, "loss_first"), tu_json_num(ob, "loss_first"), 1e-4);
    ck_assert_double_eq_tol(tu_json_num(own, "loss_last"), tu_json_num(ob, "loss_last"), 1e-3);
    cJSON_Delete(own);
    cJSON_Delete(ob);
}
END_TEST

START_TEST(api_bad_command_lines)
{
    static const char *const bad[] = {
        "bench --strategy nope",
        "bench --arch bert",
        "bench --steps 2 --warmup 2",
        "bench --seq 1",
        "bench --layers 0",
        "bench --d 65 --heads 4",
        "bench --arch llama --heads 4 --kv-heads 3",
        "bench --peak-gflops -1",
        "bench --gemm mkl",
        "bench --steps x",
        "bench --frobnicate",
        "bench extra-positional",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *out;
        int rc = run(bad[i], &out);
        const char *err = stderr_text();
        ck_assert_msg(rc != 0, "peft %s should fail", bad[i]);
        ck_assert_msg(strlen(err) > 0, "peft %s failed without a message", bad[i]);
        ck_assert_msg(strstr(err, "peft") != NULL, "peft %s: message '%s'", bad[i], err);
        free(out);
    }
    char *out;
    ck_assert_int_eq(run("bench --help", &out), 0);
    stderr_text();
    ck_assert(strstr(out, "--strategy") && strstr(out, "--sgemm-peak"));
    free(out);
}
END_TEST

Suite *bench_suite(void)
{
    Suite *s = suite_create("bench");
    TCase *tc = tcase_create("io");
    tcase_add_test(tc, io_gpt2_every_strategy);
    tcase_add_test(tc, io_llama_lora_and_full);
    tcase_add_test(tc, io_sgemm_peak);
    tcase_add_test(tc, io_gemm_backends_agree);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_bad_command_lines);
    suite_add_tcase(s, tc);
    return s;
}
