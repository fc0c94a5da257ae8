/* Shared helpers of the peft command-line program. */
#ifndef PEFT_CLI_H
#define PEFT_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "peft/peft.h"

/* A tiny option parser: "--name value" and "--flag". */
typedef struct cli_args {
    int argc;
    char **argv;
    const char *positional[4];
    int n_positional;
} cli_args;

/* Split argv into options and positionals; `flags` lists options without a
 * value (NULL-terminated). Returns false (with a message) on a bad option. */
bool cli_parse(cli_args *a, int argc, char **argv, const char *const *flags, const char *const *valued);
const char *cli_get(const cli_args *a, const char *name);
bool cli_has(const cli_args *a, const char *name);
bool cli_int(const cli_args *a, const char *name, long long def, long long *out);
bool cli_float(const cli_args *a, const char *name, double def, double *out);

/* A context with n_threads from --threads (0 = all cores) and --seed. */
peft_ctx *cli_ctx(const cli_args *a);
/* Load MODEL (any format); prints the error and returns NULL on failure. */
peft_model *cli_load_model(peft_ctx *ctx, const char *path, int keep_dtype);
/* The tokenizer for a model: --tokenizer PATH, else the one the model file brought.
 * *owned says whether the caller must destroy it. NULL (with a message) if none. */
peft_tokenizer *cli_tokenizer(peft_ctx *ctx, const cli_args *a, peft_model *m, bool *owned);
/* Parse "1,2,3" into ids (malloc'd); false on a bad list. */
bool cli_parse_ids(const char *s, int32_t **ids, size_t *n);
void cli_error(peft_ctx *ctx, const char *what, peft_status st);

/* The data options shared by train and eval (names for the option tables, usage lines). */
#define CLI_DATA_FLAGS "add-bos", "no-bos", "add-eos", "skip-bad-lines"
#define CLI_DATA_VALUED "format", "pack", "overflow", "utf8"
#define CLI_DATA_USAGE                                                                                      \
    "  --format auto|text|jsonl|tsv   data format [auto: from the name and contents; .gz is read too]\n"  \
    "  --add-bos | --no-bos  BOS at the start of documents/examples [when the tokenizer has one]\n"       \
    "  --add-eos             EOS at the end of documents/examples\n"                                    \
    "  --pack across|within  LM: pack documents together, or never span two (pad) [across]\n"            \
    "  --overflow truncate|refuse|drop   examples longer than --seq [truncate]\n"                       \
    "  --utf8 keep|replace|reject        invalid UTF-8 in the data [keep]\n"                            \
    "  --skip-bad-lines      skip (and count) malformed lines instead of failing\n"
/* Named option values: the command line, or a run's summary.json. Booleans
 * are "" when set and NULL when not. */
typedef const char *(*cli_getter)(void *src, const char *name);
typedef union cli_strategy_buf {
    peft_lora_opts lora;
    peft_ia3_opts ia3;
    peft_dense_opts dense;
    peft_full_opts full;
    peft_feature_opts feature;
} cli_strategy_buf;
/* The options struct of a built-in strategy from the --lora-*, --ia3-*, --dense-*,
 * --top-blocks, --feature-depth values (*opts NULL: a strategy without options).
 * Strings point into the source. false (message printed) on a bad value. */
bool cli_strategy_opts(const char *strategy, cli_getter get, void *src, cli_strategy_buf *buf, const void **opts);

/* Fill dataset options from the data flags; false (message printed) on a bad value. */
bool cli_dataset_opts(const cli_args *a, int64_t seq, int classify, peft_dataset_opts *o);

int cmd_info(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
