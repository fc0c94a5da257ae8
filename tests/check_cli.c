/* The peft command line, run as a separate program (PEFT_CLI, set by make
 * check): info and logits --json on every file of ../shared/models and on the
 * golden fixtures, tokenize, generate, and clear errors for bad input. */
#include <cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/testutil.h"

static int run(const char *args, char **out) { return tu_run_peft(args, out); }
static const char *stderr_text(void) { return tu_stderr(); }


static int64_t jint(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    ck_assert_msg(cJSON_IsNumber(v), "no number '%s'", key);
    return (int64_t)v->valuedouble;
}

/* logits --json: n_vocab and rows of that length, all finite */
static void check_logits(const char *model, const char *tokens, int64_t vocab, int rows)
{
    char args[1024];
    snprintf(args, sizeof args, "logits %s --tokens %s --json%s", model, tokens, rows > 1 ? " --all-positions" : "");
    cJSON *j = tu_peft_json(args);
    ck_assert_int_eq(jint(j, "n_vocab"), vocab);
    const cJSON *lg = cJSON_GetObjectItemCaseSensitive(j, "logits");
    ck_assert(cJSON_IsArray(lg));
    ck_assert_int_eq(cJSON_GetArraySize(lg), rows);
    const cJSON *row;
    cJSON_ArrayForEach(row, lg)
    {
        ck_assert_int_eq(cJSON_GetArraySize(row), (int)vocab);
        const cJSON *x;
        cJSON_ArrayForEach(x, row) ck_assert(cJSON_IsNumber(x) && x->valuedouble == x->valuedouble);
    }
    cJSON_Delete(j);
}

START_TEST(io_info_and_logits_on_golden_fixtures)
{
    const char *models[] = {"tests/golden/gpt2", "tests/golden/gpt2-sharded", "tests/golden/gpt2/model.bf16.safetensors",
                            "tests/golden/llama", "tests/golden/llama-tied", "tests/golden/llama/model.gguf",
                            "tests/golden/llama/model.q8_0.gguf", "tests/golden/llama/model.bin"};
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        char args[512];
        snprintf(args, sizeof args, "info %s --json", models[i]);
        cJSON *j = tu_peft_json(args);
        ck_assert_int_eq(jint(j, "vocab_size"), 96);
        ck_assert_int_eq(jint(j, "n_layer"), 2);
        ck_assert_int_gt(jint(j, "parameters"), 10000);
        cJSON_Delete(j);
        check_logits(models[i], "1,17,42", 96, 1);
    }
    check_logits("tests/golden/llama", "1,17,42,0", 96, 4);
    /* the text form too */
    char *out;
    ck_assert_int_eq(run("info tests/golden/gpt2/model.bf16.safetensors", &out), 0);
    ck_assert_ptr_nonnull(strstr(out, "architecture  gpt2"));
    ck_assert_ptr_nonnull(strstr(out, "bf16"));
    free(out);
}
END_TEST

START_TEST(io_every_shared_model_file)
{
    const char *dir = tu_models_dir();
    if (!dir) {
        printf("skip: ../shared/models is absent\n");
        return;
    }
    char args[1024];
    /* the two real model files */
    const char *files[] = {"stories260K.bin", "stories260K.gguf"};
    for (int i = 0; i < 2; i++) {
        snprintf(args, sizeof args, "info %s/%s --json", dir, files[i]);
        cJSON *j = tu_peft_json(args);
        ck_assert_int_eq(jint(j, "vocab_size"), 512);
        ck_assert_int_eq(jint(j, "d_model"), 64);
        ck_assert_int_eq(jint(j, "n_layer"), 5);
        ck_assert_int_eq(jint(j, "n_kv_head"), 4);
        ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "tokenizer")->valuestring, "spm");
        cJSON_Delete(j);
        snprintf(args, sizeof args, "%s/%s", dir, files[i]);
        check_logits(args, "1,403,407,261,378", 512, 1);
    }
    /* tokenizer-only files: info describes them, logits refuses clearly */
    const char *toks[] = {"ggml-vocab-gpt-2.gguf", "tok512.bin", "gpt2"};
    const int64_t sizes[] = {50257, 512, 50257};
    for (int i = 0; i < 3; i++) {
        snprintf(args, sizeof args, "info %s/%s --json", dir, toks[i]);
        cJSON *j = tu_peft_json(args);
        ck_assert_int_eq(jint(j, "n_vocab"), sizes[i]);
        cJSON_Delete(j);
        char *out;
        snprintf(args, sizeof args, "logits %s/%s --tokens 1,2 --json", dir, toks[i]);
        ck_assert_int_eq(run(args, &out), 1);
        free(out);
        ck_assert_msg(strstr(stderr_text(), "peft: cannot load the model") != NULL, "stderr: %s", stderr_text());
    }
}
END_TEST

START_TEST(io_generate_reference_continuation)
{
    const char *dir = tu_models_dir();
    if (!dir) {
        printf("skip: ../shared/models is absent\n");
        return;
    }
    /* llama.cpp's greedy reference from ../shared/models/README.md */
    const char *expect = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
                         "One day, she saw";
    const char *files[] = {"stories260K.gguf", "stories260K.bin"};
    for (int i = 0; i < 2; i++) {
        char args[1024], *out;
        snprintf(args, sizeof args, "generate %s/%s --prompt 'Once upon a time' --max-new 32", dir, files[i]);
        ck_assert_int_eq(run(args, &out), 0);
        ck_assert_msg(strncmp(out, expect, strlen(expect)) == 0, "%s generated: %s", files[i], out);
        free(out);
    }
    char args[1024], *out;
    snprintf(args, sizeof args, "tokenize %s/stories260K.gguf 'Once upon a time' --bos --json", dir);
    ck_assert_int_eq(run(args, &out), 0);
    ck_assert_ptr_nonnull(strstr(out, "[1, 403, 407, 261, 378]"));
    free(out);
    snprintf(args, sizeof args, "tokenize --tokenizer %s/gpt2 'Hello world' --json", dir);
    ck_assert_int_eq(run(args, &out), 0);
    ck_assert_ptr_nonnull(strstr(out, "[15496, 995]"));
    free(out);
}
END_TEST

START_TEST(api_bad_command_lines)
{
    char *out;
    ck_assert_int_eq(run("nonsense", &out), 2);
    free(out);
    ck_assert_int_eq(run("logits tests/golden/gpt2 --tokens 1,x", &out), 2);
    free(out);
    ck_assert_int_eq(run("logits tests/golden/gpt2 --tokens 1,999", &out), 1);
    free(out);
    ck_assert_ptr_nonnull(strstr(stderr_text(), "999 is out of range"));
    ck_assert_int_eq(run("info /nonexistent", &out), 1);
    free(out);
    ck_assert_ptr_nonnull(strstr(stderr_text(), "/nonexistent"));
    ck_assert_int_eq(run("info tests/golden/gpt2 --bogus", &out), 2);
    free(out);
    ck_assert_int_eq(run("--help", &out), 0);
    ck_assert_ptr_nonnull(strstr(out, "generate"));
    free(out);
    ck_assert_int_eq(run("generate --help", &out), 0);
    ck_assert_ptr_nonnull(strstr(out, "--top-p"));
    free(out);
}
END_TEST

/* Every JSON line of a metrics.jsonl file. */
static int read_metrics(const char *path, cJSON **lines, int max)
{
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "no %s", path);
    char buf[1024];
    int n = 0;
    while (n < max && fgets(buf, sizeof buf, f)) {
        lines[n] = cJSON_Parse(buf);
        ck_assert_msg(lines[n] != NULL, "%s: line %d is not JSON: %s", path, n + 1, buf);
        n++;
    }
    fclose(f);
    return n;
}

static bool same_file(const char *a, const char *b)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cmp -s %s %s", a, b);
    return system(cmd) == 0;
}

START_TEST(io_train_lm_metrics_and_resume)
{
    const char *dir = tu_models_dir();
    if (!dir || access("/usr/share/games/fortunes/fortunes", R_OK) != 0) {
        printf("skip: ../shared/models or the fortunes package is absent\n");
        return;
    }
    char tmpl[] = "/tmp/peft_train_XXXXXX", args[2048], *out;
    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    const char *common = "--data /usr/share/games/fortunes/fortunes --seq 64 --batch 8 --seed 3 --quiet --threads 2";
    snprintf(args, sizeof args, "train --model %s/stories260K.bin %s --strategy lora --lora-r 4 --lr 1e-2 --epochs 2 "
             "--eval-every 10 --out %s/a --reference /usr/share/games/fortunes/fortunes", dir, common, tmpl);
    ck_assert_msg(run(args, &out) == 0, "peft %s: %s", args, stderr_text());
    free(out);
    char path[512];
    snprintf(path, sizeof path, "%s/a/metrics.jsonl", tmpl);
    cJSON *lines[400];
    int n = read_metrics(path, lines, 400);
    double first_val = -1, last_val = -1;
    int train_lines = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(lines[i], "val_loss");
        if (v) {
            ck_assert(cJSON_GetObjectItemCaseSensitive(lines[i], "val_ppl") != NULL);
            if (first_val < 0) first_val = v->valuedouble;
            last_val = v->valuedouble;
        } else {
            ck_assert(cJSON_GetObjectItemCaseSensitive(lines[i], "train_loss") != NULL);
            ck_assert(cJSON_GetObjectItemCaseSensitive(lines[i], "tokens_per_s") != NULL);
            ck_assert(cJSON_GetObjectItemCaseSensitive(lines[i], "lr") != NULL);
            train_lines++;
        }
        cJSON_Delete(lines[i]);
    }
    ck_assert_int_gt(train_lines, 10);
    ck_assert_msg(last_val < first_val, "validation loss did not go down: %g -> %g", first_val, last_val);
    snprintf(path, sizeof path, "%s/a/summary.json", tmpl);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char buf[4096];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    buf[len] = 0;
    fclose(f);
    cJSON *sj = cJSON_Parse(buf);
    ck_assert_ptr_nonnull(sj);
    const char *keys[] = {"strategy", "trainable_params", "total_params", "best_val_loss", "val_loss_before",
                          "val_loss_after", "forgetting", "seconds", "peak_rss_mib"};
    for (int k = 0; k < 9; k++) ck_assert_msg(cJSON_GetObjectItemCaseSensitive(sj, keys[k]) != NULL, "summary lacks %s", keys[k]);
    ck_assert_int_eq(jint(sj, "trainable_params"), 5 * 4 * (64 + 64) + 5 * 4 * (64 + 32));
    ck_assert(cJSON_GetObjectItemCaseSensitive(sj, "val_loss_after")->valuedouble <
              cJSON_GetObjectItemCaseSensitive(sj, "val_loss_before")->valuedouble);
    cJSON_Delete(sj);

    /* resume: 8 steps straight vs 4 + resume to 8 give the same bytes */
    snprintf(args, sizeof args, "train --model %s/stories260K.bin %s --strategy full --lr 1e-3 --steps 8 --out %s/b", dir,
             common, tmpl);
    ck_assert_msg(run(args, &out) == 0, "%s", stderr_text());
    free(out);
    snprintf(args, sizeof args, "train --model %s/stories260K.bin %s --strategy full --lr 1e-3 --steps 4 --out %s/c", dir,
             common, tmpl);
    ck_assert_msg(run(args, &out) == 0, "%s", stderr_text());
    free(out);
    snprintf(args, sizeof args, "train --model %s/stories260K.bin %s --strategy full --lr 1e-3 --steps 8 --resume %s/c", dir,
             common, tmpl);
    ck_assert_msg(run(args, &out) == 0, "%s", stderr_text());
    free(out);
    char pb[512], pc[512];
    snprintf(pb, sizeof pb, "%s/b/adapter.safetensors", tmpl);
    snprintf(pc, sizeof pc, "%s/c/adapter.safetensors", tmpl);
    ck_assert_msg(same_file(pb, pc), "resumed run differs from the uninterrupted one");
    /* bad input: a learning rate that is not finite, an unknown strategy */
    snprintf(args, sizeof args, "train --model %s/stories260K.bin %s --lr nan --out %s/d", dir, common, tmpl);
    ck_assert_int_eq(run(args, &out), 1);
    free(out);
    ck_assert_msg(strstr(stderr_text(), "learning rate nan") != NULL, "%s", stderr_text());
    snprintf(args, sizeof args, "train --model %s/stories260K.bin %s --strategy magic --out %s/d", dir, common, tmpl);
    ck_assert_int_eq(run(args, &out), 1);
    free(out);
    ck_assert_msg(strstr(stderr_text(), "no strategy called \"magic\"") != NULL, "%s", stderr_text());
    snprintf(args, sizeof args, "rm -rf %s", tmpl);
    ck_assert_int_eq(system(args), 0);
}
END_TEST

START_TEST(io_train_jsonl_bad_lines)
{
    char tmpl[] = "/tmp/peft_jsonl_XXXXXX", path[512], args[2048], *out;
    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    snprintf(path, sizeof path, "%s/data.jsonl", tmpl);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 40; i++) {
        if (i == 7) fprintf(f, "{\"prompt\": \"no completion here\"}\n");
        fprintf(f, "{\"prompt\": \"Q%d: say hi\", \"completion\": \" hi there %d\"}\n", i, i % 3);
    }
    fclose(f);
    snprintf(args, sizeof args, "init --arch llama --layers 1 --d 32 --heads 2 --vocab 256 --ctx 64 --out %s/m", tmpl);
    ck_assert_msg(run(args, &out) == 0, "%s", stderr_text());
    free(out);
    char common[1024];
    snprintf(common, sizeof common, "--model %s/m --tokenizer bytes --strategy lora --seq 32 --batch 4 --steps 3 --quiet", tmpl);
    snprintf(args, sizeof args, "train %s --data %s --out %s/a", common, path, tmpl);
    ck_assert_int_eq(run(args, &out), 1);
    free(out);
    ck_assert_msg(strstr(stderr_text(), "data.jsonl:8:") != NULL, "stderr: %s", stderr_text());
    snprintf(args, sizeof args, "train %s --data %s --skip-bad-lines --out %s/a", common, path, tmpl);
    ck_assert_msg(run(args, &out) == 0, "%s", stderr_text());
    free(out);
    snprintf(args, sizeof args, "rm -rf %s", tmpl);
    ck_assert_int_eq(system(args), 0);
}
END_TEST

Suite *cli_suite(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("io");
    tcase_add_test(tc, io_info_and_logits_on_golden_fixtures);
    tcase_add_test(tc, io_every_shared_model_file);
    tcase_add_test(tc, io_generate_reference_continuation);
    tcase_add_test(tc, io_train_lm_metrics_and_resume);
    tcase_add_test(tc, io_train_jsonl_bad_lines);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_bad_command_lines);
    suite_add_tcase(s, tc);
    return s;
}
