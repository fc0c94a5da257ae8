/* More of the peft command line, run as a separate program (PEFT_CLI, set by
 * make check): eval (base model and re-attached adapters, every model format
 * agreeing), plot (a well-formed SVG with both curves), --help and the man
 * page against every command's option tables, and the example programs
 * (PEFT_BUILD_DIR/examples/<name>). */
#include <cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/testutil.h"

#define FORTUNES "/usr/share/games/fortunes/fortunes"

static const char *cli(void)
{
    const char *p = getenv("PEFT_CLI");
    return p ? p : "build/bin/peft";
}

/* Say why a test does nothing (flushed: the test runs in a forked child). */
static void skip(const char *why)
{
    printf("skip: %s\n", why);
    fflush(stdout);
}

static int run_prog(const char *prog, const char *args, char **out) { return tu_run_prog(prog, args, out); }
static int run(const char *args, char **out) { return run_prog(cli(), args, out); }
static const char *stderr_text(void) { return tu_stderr(); }



static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = '\0';
    fclose(f);
    return s;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

static size_t count(const char *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

static void rm_rf(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* Text in the golden Llama's 96-piece vocabulary (letters, digits, punctuation). */
static const char tiny_text[] = "the cat sat on the mat. the dog ran to the park.\n"
                                "a bird sang in the tree, and the sun came up.\n\n"
                                "Once upon a time there was a small red fox.\n"
                                "It liked to run and jump in the green grass 123 times.\n";

static void check_metrics(const cJSON *j, bool classify)
{
    double loss = tu_json_num(j, "loss"), acc = tu_json_num(j, "acc");
    ck_assert_msg(isfinite(loss) && loss > 0, "loss %g", loss);
    ck_assert(acc >= 0 && acc <= 1);
    ck_assert(tu_json_num(j, "examples") >= 1);
    ck_assert(tu_json_num(j, "predictions") >= 1);
    const cJSON *ppl = cJSON_GetObjectItemCaseSensitive(j, "ppl");
    if (classify) ck_assert(cJSON_IsNull(ppl));
    else ck_assert_double_eq_tol(tu_json_num(j, "ppl"), exp(loss), 1e-6 * exp(loss));
}

START_TEST(io_eval_golden_every_format)
{
    char dir[] = "/tmp/peft_eval_XXXXXX", path[256], args[2048];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tiny.txt", dir);
    write_file(path, tiny_text);
    /* the same weights in four formats: the same loss; the GGUF brings the tokenizer */
    const char *models[] = {"tests/golden/llama", "tests/golden/llama/model.safetensors", "tests/golden/llama/model.bin",
                            "tests/golden/llama/model.gguf"};
    double ref = NAN;
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        snprintf(args, sizeof args, "eval %s --tokenizer tests/golden/llama/model.gguf --data %s --seq 16 --json",
                 models[i], path);
        cJSON *j = tu_peft_json(args);
        check_metrics(j, false);
        ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "strategy")));
        ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "task")->valuestring, "lm");
        double loss = tu_json_num(j, "loss");
        if (i == 0) ref = loss;
        else ck_assert_msg(fabs(loss - ref) < 1e-4, "%s: loss %.6f, hf dir %.6f", models[i], loss, ref);
        cJSON_Delete(j);
    }
    /* random weights over 96 tokens: about ln 96 */
    ck_assert_msg(ref > 2 && ref < 8, "loss %g", ref);
    /* the batch size does not change the result */
    snprintf(args, sizeof args, "eval tests/golden/llama/model.gguf --data %s --seq 16 --batch 1 --json", path);
    cJSON *j = tu_peft_json(args);
    ck_assert_double_eq_tol(tu_json_num(j, "loss"), ref, 1e-4);
    cJSON_Delete(j);
    /* the human line */
    char *out;
    snprintf(args, sizeof args, "eval tests/golden/llama/model.gguf --data %s --seq 16", path);
    ck_assert_int_eq(run(args, &out), 0);
    ck_assert_msg(strstr(out, "loss ") && strstr(out, "ppl ") && strstr(out, "acc "), "%s", out);
    free(out);
    rm_rf(dir);
}
END_TEST

START_TEST(io_eval_reattaches_trained_adapters)
{
    char dir[] = "/tmp/peft_eval_XXXXXX", text[256], tsv[256], args[4096], *out;
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(text, sizeof text, "%s/tiny.txt", dir);
    write_file(text, tiny_text);
    const char *model = "tests/golden/llama/model.gguf";

    /* LoRA with a non-default rank */
    snprintf(args, sizeof args, "train --model %s --data %s --seq 16 --batch 4 --strategy lora --lora-r 2 --lr 3e-2 "
             "--steps 12 --val-split 0.2 --quiet --out %s/lora", model, text, dir);
    ck_assert_msg(run(args, &out) == 0, "train: %s", stderr_text());
    free(out);
    snprintf(args, sizeof args, "eval %s --data %s --seq 16 --json", model, text);
    cJSON *j = tu_peft_json(args);
    double base = tu_json_num(j, "loss");
    cJSON_Delete(j);
    snprintf(args, sizeof args, "eval %s --data %s --seq 16 --adapter %s/lora --lora-r 2 --json", model, text, dir);
    j = tu_peft_json(args);
    check_metrics(j, false);
    double tuned = tu_json_num(j, "loss");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "strategy")->valuestring, "lora");
    cJSON_Delete(j);
    ck_assert_msg(tuned < base - 0.05, "trained %.4f, base %.4f", tuned, base);

    /* peft train records its options in summary.json: no flags needed */
    snprintf(args, sizeof args, "eval %s --data %s --seq 16 --adapter %s/lora --json", model, text, dir);
    j = tu_peft_json(args);
    ck_assert_double_eq_tol(tu_json_num(j, "loss"), tuned, 1e-6);
    cJSON_Delete(j);
    /* a rank that does not fit the saved tensors: a clear error */
    snprintf(args, sizeof args, "eval %s --data %s --seq 16 --adapter %s/lora --lora-r 3", model, text, dir);
    ck_assert_int_eq(run(args, &out), 1);
    free(out);
    ck_assert_msg(strstr(stderr_text(), "lora_A") && strstr(stderr_text(), "[2, 32]"), "%s", stderr_text());

    /* options recorded in summary.json are used: add an "options" object */
    snprintf(args, sizeof args, "%s/lora/summary.json", dir);
    char *sj = read_all(args);
    ck_assert_ptr_nonnull(sj);
    cJSON *summary = cJSON_Parse(sj);
    free(sj);
    ck_assert_ptr_nonnull(summary);
    cJSON *opts = cJSON_AddObjectToObject(summary, "options");
    cJSON_AddNumberToObject(opts, "lora-r", 2);
    cJSON_AddNumberToObject(opts, "seq", 16);
    char *printed = cJSON_Print(summary);
    write_file(args, printed);
    free(printed);
    cJSON_Delete(summary);
    snprintf(args, sizeof args, "eval %s --data %s --adapter %s/lora --json", model, text, dir);
    j = tu_peft_json(args);
    ck_assert_double_eq_tol(tu_json_num(j, "loss"), tuned, 1e-6);
    cJSON_Delete(j);

    /* a bare .safetensors needs --strategy */
    snprintf(args, sizeof args, "eval %s --data %s --seq 16 --adapter %s/lora/adapter.safetensors", model, text, dir);
    ck_assert_int_eq(run(args, &out), 2);
    free(out);
    ck_assert_msg(strstr(stderr_text(), "--strategy") != NULL, "%s", stderr_text());
    snprintf(args, sizeof args, "eval %s --data %s --seq 16 --adapter %s/lora/adapter.safetensors --strategy lora "
             "--lora-r 2 --json", model, text, dir);
    j = tu_peft_json(args);
    ck_assert_double_eq_tol(tu_json_num(j, "loss"), tuned, 1e-6);
    cJSON_Delete(j);

    /* classification: a trained head, accuracy, no perplexity */
    snprintf(tsv, sizeof tsv, "%s/cls.tsv", dir);
    FILE *f = fopen(tsv, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 24; i++)
        fprintf(f, i % 2 ? "cats\tthe cat sat on the mat %d times.\n" : "dogs\tA DOG RAN TO THE PARK %d TIMES!\n", i);
    ck_assert_int_eq(fclose(f), 0);
    snprintf(args, sizeof args, "train --model %s --task classify --pooling mean --data %s --seq 16 --strategy bitfit "
             "--lr 5e-2 --epochs 6 --quiet --out %s/cls", model, tsv, dir);
    ck_assert_msg(run(args, &out) == 0, "train classify: %s", stderr_text());
    free(out);
    snprintf(args, sizeof args, "eval %s --task classify --pooling mean --data %s --seq 16 --adapter %s/cls --json",
             model, tsv, dir);
    j = tu_peft_json(args);
    check_metrics(j, true);
    ck_assert_msg(tu_json_num(j, "acc") >= 0.9, "accuracy %g on two easy classes", tu_json_num(j, "acc"));
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "task")->valuestring, "classify");
    cJSON_Delete(j);
    rm_rf(dir);
}
END_TEST

START_TEST(io_eval_stories260K)
{
    const char *models = tu_models_dir();
    if (!models || access(FORTUNES, R_OK) != 0) {
        skip("../shared/models or the fortunes package is absent");
        return;
    }
    char args[1024];
    double loss[2];
    const char *files[2] = {"stories260K.bin", "stories260K.gguf"};
    for (int i = 0; i < 2; i++) {
        snprintf(args, sizeof args, "eval %s/%s --data %s --seq 64 --json", models, files[i], FORTUNES);
        cJSON *j = tu_peft_json(args);
        check_metrics(j, false);
        loss[i] = tu_json_num(j, "loss");
        ck_assert(tu_json_num(j, "examples") > 100);
        cJSON_Delete(j);
    }
    /* a TinyStories model on fortune cookies: well above its own 1.3, well below ln 512 */
    ck_assert_msg(loss[0] > 2.5 && loss[0] < 5.5, "loss %g", loss[0]);
    ck_assert_double_eq_tol(loss[0], loss[1], 1e-4);
}
END_TEST

/* A small well-formedness check: every start tag is closed in order, and
 * attribute values are quoted (no '<' inside a tag). */
static void check_xml_balanced(const char *s)
{
    char stack[64][32];
    int depth = 0;
    for (const char *p = strchr(s, '<'); p; p = strchr(p + 1, '<')) {
        const char *end = strchr(p, '>');
        ck_assert_ptr_nonnull(end);
        ck_assert_msg(memchr(p + 1, '<', (size_t)(end - p - 1)) == NULL, "'<' inside a tag at %.40s", p);
        bool closing = p[1] == '/', selfclosing = end[-1] == '/';
        const char *name = p + 1 + closing;
        size_t n = strcspn(name, " />\n");
        ck_assert(n > 0 && n < 32);
        if (closing) {
            ck_assert_msg(depth > 0, "stray </%.*s>", (int)n, name);
            depth--;
            ck_assert_msg(strlen(stack[depth]) == n && !strncmp(stack[depth], name, n), "</%.*s> closes <%s>", (int)n,
                          name, stack[depth]);
        } else if (!selfclosing) {
            ck_assert(depth < 64);
            memcpy(stack[depth], name, n);
            stack[depth++][n] = '\0';
        }
    }
    ck_assert_msg(depth == 0, "<%s> never closed", depth ? stack[depth - 1] : "");
}

/* The number of "x,y" pairs in the points attribute of the polyline at p. */
static int polyline_points(const char *p)
{
    ck_assert_ptr_nonnull(p);
    p = strstr(p, "points=\"");
    ck_assert_ptr_nonnull(p);
    int n = 0;
    for (p += 8; *p && *p != '"'; p++) n += *p == ',';
    return n;
}

START_TEST(io_plot_writes_an_svg)
{
    char dir[] = "/tmp/peft_plot_XXXXXX", metrics[256], svg[256], args[1024], *out;
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", dir);
    FILE *f = fopen(metrics, "w");
    ck_assert_ptr_nonnull(f);
    for (int s = 1; s <= 30; s++) {
        fprintf(f, "{\"step\": %d, \"epoch\": %d, \"train_loss\": %.4f, \"lr\": 0.001, \"tokens_per_s\": 1000.0}\n", s,
                s / 10, 4.0 / (1 + 0.1 * s));
        if (s % 10 == 0) fprintf(f, "{\"step\": %d, \"val_loss\": %.4f, \"val_ppl\": %.4f}\n", s, 3.5 - 0.02 * s, 20.0);
    }
    fprintf(f, "{\"step\": 31, \"train_lo"); /* a torn last line */
    ck_assert_int_eq(fclose(f), 0);

    snprintf(svg, sizeof svg, "%s/loss.svg", dir);
    snprintf(args, sizeof args, "plot %s -o %s --title 'lora <r=8> & more'", metrics, svg);
    ck_assert_msg(run(args, &out) == 0, "plot: %s", stderr_text());
    free(out);
    char *s = read_all(svg);
    ck_assert_ptr_nonnull(s);
    ck_assert_msg(!strncmp(s, "<svg", 4), "starts with %.20s", s);
    ck_assert_int_eq(count(s, "<polyline"), 2);
    size_t len = strlen(s);
    ck_assert_msg(len > 7 && !strcmp(s + len - 7, "</svg>\n"), "ends with %s", s + (len > 20 ? len - 20 : 0));
    ck_assert_ptr_nonnull(strstr(s, "xmlns=\"http://www.w3.org/2000/svg\""));
    ck_assert_ptr_nonnull(strstr(s, "lora &lt;r=8&gt; &amp; more")); /* the title, escaped */
    ck_assert_ptr_nonnull(strstr(s, ">step</text>"));
    ck_assert_ptr_nonnull(strstr(s, ">loss</text>"));
    ck_assert_ptr_nonnull(strstr(s, "validation loss (best 2.9000)"));
    check_xml_balanced(s);
    /* the training curve has a point per step, the validation curve one per evaluation */
    ck_assert_int_eq(polyline_points(strstr(s, "<polyline")), 30);
    ck_assert_int_eq(polyline_points(strstr(strstr(s, "<polyline") + 1, "<polyline")), 3);
    free(s);

    /* a run directory means its metrics.jsonl; --out is -o */
    snprintf(args, sizeof args, "plot %s --out %s/b.svg", dir, dir);
    ck_assert_msg(run(args, &out) == 0, "plot DIR: %s", stderr_text());
    free(out);
    snprintf(svg, sizeof svg, "%s/b.svg", dir);
    s = read_all(svg);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(count(s, "<polyline"), 2);
    free(s);

    /* nothing to draw: still a valid SVG that says so */
    write_file(metrics, "not json\n");
    snprintf(args, sizeof args, "plot %s -o %s", metrics, svg);
    ck_assert_int_eq(run(args, &out), 0);
    free(out);
    s = read_all(svg);
    ck_assert(!strncmp(s, "<svg", 4) && count(s, "<polyline") == 0 && strstr(s, "no train_loss"));
    check_xml_balanced(s);
    free(s);

    /* errors */
    snprintf(args, sizeof args, "plot %s/missing.jsonl -o %s", dir, svg);
    ck_assert_int_eq(run(args, &out), 1);
    free(out);
    ck_assert_msg(strstr(stderr_text(), "missing.jsonl") != NULL, "%s", stderr_text());
    ck_assert_int_eq(run("plot", &out), 2);
    free(out);
    rm_rf(dir);
}
END_TEST

START_TEST(io_plot_a_real_run)
{
    const char *models = tu_models_dir();
    if (!models || access(FORTUNES, R_OK) != 0) {
        skip("../shared/models or the fortunes package is absent");
        return;
    }
    char dir[] = "/tmp/peft_plot_XXXXXX", args[1024], *out;
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(args, sizeof args, "train --model %s/stories260K.bin --data %s --seq 64 --strategy ia3 --lr 2e-2 "
             "--steps 12 --eval-every 4 --quiet --out %s", models, FORTUNES, dir);
    ck_assert_msg(run(args, &out) == 0, "train: %s", stderr_text());
    free(out);
    snprintf(args, sizeof args, "plot %s -o %s/loss.svg", dir, dir);
    ck_assert_msg(run(args, &out) == 0, "plot: %s", stderr_text());
    free(out);
    snprintf(args, sizeof args, "%s/loss.svg", dir);
    char *s = read_all(args);
    ck_assert_ptr_nonnull(s);
    ck_assert(!strncmp(s, "<svg", 4) && count(s, "<polyline") == 2);
    check_xml_balanced(s);
    free(s);
    rm_rf(dir);
}
END_TEST

/* The quoted names of `static const char *const <table>[] = {...}` in a source file. */
static int option_table(const char *src, const char *table, char names[][32], int cap)
{
    char key[64];
    snprintf(key, sizeof key, " %s[] = {", table);
    const char *p = strstr(src, key);
    if (!p) return 0;
    const char *end = strchr(p, '}');
    ck_assert_ptr_nonnull(end);
    int n = 0;
    for (p = strchr(p, '"'); p && p < end; p = strchr(p + 1, '"')) {
        const char *q = strchr(p + 1, '"');
        ck_assert(q && q - p - 1 < 32 && n < cap);
        memcpy(names[n], p + 1, (size_t)(q - p - 1));
        names[n++][q - p - 1] = '\0';
        p = q;
    }
    return n;
}

START_TEST(api_help_and_man_page_cover_every_option)
{
    if (access("examples/peft/main.c", R_OK) != 0 || access("docs/peft.1", R_OK) != 0) {
        skip("not run from the source tree");
        return;
    }
    char *top, *man = read_all("docs/peft.1");
    ck_assert_int_eq(run("--help", &top), 0);
    int n_commands = 0;
    /* "  name       description" lines of the command list */
    for (char *line = strtok(top, "\n"); line; line = strtok(NULL, "\n")) {
        char name[32];
        if (strncmp(line, "  ", 2) || line[2] == ' ' || sscanf(line + 2, "%31s", name) != 1) continue;
        n_commands++;
        char args[128], *help, *src, path[128], heading[64];
        snprintf(args, sizeof args, "%s --help", name);
        ck_assert_msg(run(args, &help) == 0, "peft %s --help: %s", name, stderr_text());
        ck_assert_msg(strlen(help) > 20, "peft %s --help printed '%s'", name, help);
        snprintf(heading, sizeof heading, ".SS %s\n", name);
        ck_assert_msg(strstr(man, heading) != NULL, "docs/peft.1 has no section for %s", name);
        snprintf(path, sizeof path, "examples/peft/cmd_%s.c", name);
        if ((src = read_all(path)) != NULL) {
            char names[64][32];
            int n = option_table(src, "flags", names, 64);
            n += option_table(src, "valued", names + n, 64 - n);
            ck_assert_msg(n > 1, "%s: no option tables found", path);
            for (int i = 0; i < n; i++) {
                if (!strcmp(names[i], "help")) continue; /* every command has it; peft --help says so */
                char opt[40], man_opt[80];
                size_t k = 0;
                snprintf(opt, sizeof opt, "%s%.31s", names[i][1] ? "--" : "-", names[i]);
                /* troff spells '-' as "\-" */
                for (const char *c = opt; *c && k + 3 < sizeof man_opt; c++) {
                    if (*c == '-') man_opt[k++] = '\\';
                    man_opt[k++] = *c;
                }
                man_opt[k] = '\0';
                ck_assert_msg(strstr(help, opt) != NULL, "peft %s --help does not mention %s", name, opt);
                ck_assert_msg(strstr(man, man_opt) != NULL, "docs/peft.1 does not mention %s of %s", opt, name);
            }
            free(src);
        }
        free(help);
    }
    ck_assert_int_ge(n_commands, 8);
    free(top);
    free(man);
    /* the man page formats without a warning (when groff is installed) */
    if (system("command -v groff >/dev/null 2>&1") == 0) {
        char *out;
        ck_assert_int_eq(tu_run_prog("groff", "-man -ww -z docs/peft.1", &out), 0);
        free(out);
        ck_assert_msg(stderr_text()[0] == '\0', "groff: %s", stderr_text());
    }
}
END_TEST

/* A warmup with the schedule's length left to the trainer (--epochs) is
 * accepted: the length is only known when fit counts the batches. */
START_TEST(api_train_warmup_with_epochs)
{
    char dir[] = "/tmp/peft_warmup_XXXXXX", path[256], args[1024], *out;
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tiny.txt", dir);
    write_file(path, tiny_text);
    snprintf(args, sizeof args, "train --model tests/golden/llama/model.gguf --data %s --seq 16 --batch 2 "
             "--schedule cosine --warmup 3 --epochs 2 --quiet --out %s/run", path, dir);
    ck_assert_msg(run(args, &out) == 0, "%s", stderr_text());
    free(out);
    /* but a warmup longer than --steps is refused, naming both */
    snprintf(args, sizeof args, "train --model tests/golden/llama/model.gguf --data %s --seq 16 --batch 2 "
             "--schedule cosine --warmup 5 --steps 3 --quiet --out %s/run2", path, dir);
    ck_assert_int_eq(run(args, &out), 1);
    free(out);
    ck_assert_msg(strstr(stderr_text(), "warmup_steps 5 > total_steps 3") != NULL, "%s", stderr_text());
    rm_rf(dir);
}
END_TEST

/* Run build/examples/<name> with args; skip when the build dir is unknown. */
static bool run_example(const char *name, const char *args, char **out)
{
    const char *build = getenv("PEFT_BUILD_DIR");
    char prog[512];
    snprintf(prog, sizeof prog, "%s/examples/%s", build, name);
    ck_assert_msg(access(prog, X_OK) == 0, "%s is not built", prog);
    int rc = run_prog(prog, args, out);
    ck_assert_msg(rc == 0, "%s %s exited %d: %s\n%s", prog, args, rc, stderr_text(), *out);
    return true;
}

START_TEST(io_examples_run)
{
    if (!getenv("PEFT_BUILD_DIR")) {
        skip("PEFT_BUILD_DIR is not set (make check sets it)");
        return;
    }
    char *out;
    /* these two need no data */
    run_example("tensor_basics", "", &out);
    free(out);
    run_example("cpp_example", "", &out);
    ck_assert_msg(strstr(out, "training loss") != NULL, "%s", out);
    free(out);

    const char *models = tu_models_dir();
    if (!models || access(FORTUNES, R_OK) != 0) {
        skip("the strategy examples need ../shared/models and the fortunes package");
        return;
    }
    char dir[] = "/tmp/peft_examples_XXXXXX", args[1024];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    const char *lm[] = {"full_finetune", "ia3", "bitfit", "custom_strategy"};
    for (size_t i = 0; i < sizeof lm / sizeof *lm; i++) {
        snprintf(args, sizeof args, "%s/stories260K.bin %s", models, FORTUNES);
        run_example(lm[i], args, &out);
        ck_assert_msg(strstr(out, "validation loss") != NULL, "%s: %s", lm[i], out);
        free(out);
    }
    const char *cls[] = {"feature_extraction", "dense_head"};
    for (size_t i = 0; i < sizeof cls / sizeof *cls; i++) {
        snprintf(args, sizeof args, "%s/stories260K.bin", models);
        run_example(cls[i], args, &out);
        ck_assert_msg(strstr(out, "accuracy") != NULL, "%s: %s", cls[i], out);
        free(out);
    }
    snprintf(args, sizeof args, "%s/stories260K.bin %s %s/adapter.safetensors", models, FORTUNES, dir);
    run_example("lora", args, &out);
    ck_assert_msg(strstr(out, "merged: loss") && strstr(out, "after loading"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "%s/adapter.safetensors", dir);
    ck_assert_int_eq(access(args, R_OK), 0);
    rm_rf(dir);
}
END_TEST

Suite *cli_extra_suite(void)
{
    Suite *s = suite_create("cli_extra");
    TCase *tc = tcase_create("io");
    tcase_add_test(tc, io_eval_golden_every_format);
    tcase_add_test(tc, io_eval_reattaches_trained_adapters);
    tcase_add_test(tc, io_eval_stories260K);
    tcase_add_test(tc, io_plot_writes_an_svg);
    tcase_add_test(tc, io_plot_a_real_run);
    tcase_add_test(tc, io_examples_run);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_help_and_man_page_cover_every_option);
    tcase_add_test(tc, api_train_warmup_with_epochs);
    suite_add_tcase(s, tc);
    return s;
}
