/* peft plot: the loss curves of a training run (its metrics.jsonl) as an SVG. */
#include "cli.h"
#include "plot.h"

#include <sys/stat.h>

static const char *const flags[] = {"help", NULL};
static const char *const valued[] = {"o", "out", "title", NULL};

static void usage(FILE *f)
{
    fprintf(f, "usage: peft plot METRICS.jsonl -o OUT.svg [--title TEXT]\n"
               "       peft plot RUN_DIR -o OUT.svg\n\n"
               "Draws train_loss and val_loss against the step from the metrics.jsonl that\n"
               "'peft train' writes (a run directory means RUN_DIR/metrics.jsonl).\n"
               "  -o, --out OUT.svg   the SVG to write\n"
               "  --title TEXT        plot title (default: the metrics path)\n"
               "  --help              this text\n");
}

int cmd_plot(int argc, char **argv)
{
    cli_args a;
    if (!cli_parse(&a, argc, argv, flags, valued)) return 2;
    if (cli_has(&a, "help")) {
        usage(stdout);
        return 0;
    }
    const char *out = cli_get(&a, "o") ? cli_get(&a, "o") : cli_get(&a, "out");
    if (a.n_positional != 1 || !out) {
        usage(stderr);
        return 2;
    }
    const char *in = a.positional[0];
    char path[4096];
    struct stat sb;
    if (stat(in, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(path, sizeof path, "%s/metrics.jsonl", in);
        in = path;
    }
    const char *title = cli_get(&a, "title");
    return plot_metrics_svg(in, out, title ? title : in) == 0 ? 0 : 1;
}
