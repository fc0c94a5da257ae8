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

int cmd_info(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
