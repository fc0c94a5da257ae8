/* A dependency-free SVG plot of a training run's metrics. */
#ifndef PEFT_CLI_PLOT_H
#define PEFT_CLI_PLOT_H

/* Read metrics.jsonl as `peft train` writes it (one JSON object per line;
 * lines with "train_loss" and lines with "val_loss", each with "step") and
 * write a standalone SVG: both losses against the step, with axes, ticks,
 * grid, axis labels, a legend and the title (NULL: "loss"). Lines that are
 * not JSON or carry no finite loss are skipped; a file without any point
 * gives a plot that says so. Returns 0, or -1 after printing why to stderr
 * (the metrics file cannot be read, the SVG cannot be written). */
int plot_metrics_svg(const char *metrics_jsonl, const char *svg_path, const char *title);

#endif
