/* peft — the command-line program. Subcommands live in their own files and
 * register in the table below. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static int cmd_version(int argc, char **argv)
{
    (void)argc, (void)argv;
    printf("peft %s (library %s)\n", PEFT_VERSION_STRING, peft_version_string());
    return 0;
}

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} command;

static const command commands[] = {
    {"init", cmd_init, "create a model with random weights (to pretrain from scratch)"},
    {"info", cmd_info, "describe a model file: architecture, sizes, dtypes, parameters"},
    {"logits", cmd_logits, "print the logits for a list of token ids"},
    {"generate", cmd_generate, "continue a prompt (greedy or sampled, with a KV cache)"},
    {"tokenize", cmd_tokenize, "show the ids and pieces of a text"},
    {"train", cmd_train, "fine-tune a model on a text or TSV file with any strategy"},
    {"eval", cmd_eval, "loss, perplexity and accuracy on a text or TSV file (with a trained adapter)"},
    {"plot", cmd_plot, "draw a run's metrics.jsonl (train and validation loss) as an SVG"},
    {"bench", cmd_bench, "training throughput, memory and MFU on a random model (and the sgemm peak)"},
    {"version", cmd_version, "print the version"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: peft COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nRun 'peft COMMAND --help' for the options of a command (all of them: man peft).\n");
}

int main(int argc, char **argv)
{
    if (peft_version_number() != PEFT_VERSION_NUMBER) {
        fprintf(stderr, "peft: header %s does not match library %s\n", PEFT_VERSION_STRING, peft_version_string());
        return 1;
    }
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) return cmd_version(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "peft: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
