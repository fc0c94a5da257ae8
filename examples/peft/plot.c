/* plot_metrics_svg: training and validation loss against the step, as a
 * standalone SVG written by hand (no plotting library, no scripts, no fonts
 * embedded: viewers fall back to their sans-serif). */
#include "plot.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct point {
    double x, y; /* step, loss */
} point;

typedef struct series {
    point *p;
    size_t n, cap;
} series;

static int push(series *s, double x, double y)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        point *p = realloc(s->p, cap * sizeof *p);
        if (!p) return -1;
        s->p = p, s->cap = cap;
    }
    s->p[s->n++] = (point){x, y};
    return 0;
}

static int by_step(const void *a, const void *b)
{
    double x = ((const point *)a)->x, y = ((const point *)b)->x;
    return (x > y) - (x < y);
}

/* A finite number under `key`, else NAN. */
static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) ? v->valuedouble : NAN;
}

static int read_metrics(const char *path, series *train, series *val)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "peft: plot: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    while (rc == 0 && getline(&line, &cap, f) > 0) {
        cJSON *j = cJSON_Parse(line);
        if (!j) continue; /* a torn last line of a killed run, or a comment */
        double step = num(j, "step"), tl = num(j, "train_loss"), vl = num(j, "val_loss");
        if (!isnan(step) && !isnan(tl)) rc = push(train, step, tl);
        if (rc == 0 && !isnan(step) && !isnan(vl)) rc = push(val, step, vl);
        cJSON_Delete(j);
    }
    free(line);
    fclose(f);
    if (rc) fprintf(stderr, "peft: plot: out of memory reading %s\n", path);
    /* a resumed run appends: keep each line in step order */
    if (train->n) qsort(train->p, train->n, sizeof *train->p, by_step);
    if (val->n) qsort(val->p, val->n, sizeof *val->p, by_step);
    return rc;
}

/* A "nice" tick spacing (1, 2 or 5 times a power of ten) giving at most
 * about `ticks` intervals over `range`. */
static double nice_step(double range, int ticks)
{
    double raw = range / ticks, mag = pow(10, floor(log10(raw))), r = raw / mag;
    return (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * mag;
}

typedef struct axis {
    double lo, hi, step;
    int decimals; /* for the tick labels */
} axis;

static axis make_axis(double lo, double hi, int ticks, bool integer)
{
    if (!(hi > lo)) { /* one value: give it some room */
        double pad = lo != 0 ? fabs(lo) * 0.1 : 1;
        lo -= pad, hi += pad;
    }
    axis a;
    a.step = nice_step(hi - lo, ticks);
    if (integer && a.step < 1) a.step = 1;
    a.lo = floor(lo / a.step + 1e-9) * a.step;
    a.hi = ceil(hi / a.step - 1e-9) * a.step;
    a.decimals = a.step >= 1 ? 0 : (int)ceil(-log10(a.step) - 1e-9);
    return a;
}

static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* Canvas and plot area, in SVG user units. */
enum { W = 760, H = 460, ML = 76, MR = 28, MT = 56, MB = 62 };
static const double PW = W - ML - MR, PH = H - MT - MB;

static double px(const axis *a, double x) { return ML + (x - a->lo) / (a->hi - a->lo) * PW; }
static double py(const axis *a, double y) { return MT + PH - (y - a->lo) / (a->hi - a->lo) * PH; }

static void polyline(FILE *f, const series *s, const axis *ax, const axis *ay, const char *color, double width)
{
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%.1f\" stroke-linejoin=\"round\" "
               "clip-path=\"url(#plot)\" points=\"", color, width);
    for (size_t i = 0; i < s->n; i++)
        fprintf(f, "%s%.1f,%.1f", i ? " " : "", px(ax, s->p[i].x), py(ay, s->p[i].y));
    fprintf(f, "\"/>\n");
}

static void write_svg(FILE *f, const series *train, const series *val, const char *title)
{
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\" fill=\"#333\">\n",
            W, H, W, H);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<text x=\"%d\" y=\"32\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">", W / 2);
    xml_text(f, title);
    fprintf(f, "</text>\n");
    if (train->n + val->n == 0) {
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">no train_loss or val_loss in the metrics</text>\n</svg>\n",
                W / 2, H / 2);
        return;
    }
    /* ranges over both series; the step axis starts at 0 */
    double x0 = 0, x1 = 0, y0 = INFINITY, y1 = -INFINITY;
    const series *all[2] = {train, val};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < all[k]->n; i++) {
            point p = all[k]->p[i];
            x0 = fmin(x0, p.x), x1 = fmax(x1, p.x), y0 = fmin(y0, p.y), y1 = fmax(y1, p.y);
        }
    /* a little room so no point sits on the frame */
    double xpad = 0.02 * (x1 - x0), ypad = 0.04 * (y1 - y0);
    axis ax = make_axis(x0, x1 + xpad, 8, true), ay = make_axis(y0 - ypad, y1 + ypad, 6, false);
    fprintf(f, "<defs><clipPath id=\"plot\"><rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\"/></clipPath></defs>\n",
            ML - 2, MT - 2, PW + 4, PH + 4);
    /* grid and ticks: an index loop so rounding never drops the last tick */
    int nx = (int)lround((ax.hi - ax.lo) / ax.step), ny = (int)lround((ay.hi - ay.lo) / ay.step);
    fprintf(f, "<g stroke=\"#e6e6e6\" stroke-width=\"1\">\n");
    for (int i = 1; i < nx; i++) {
        double x = px(&ax, ax.lo + i * ax.step);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.0f\"/>\n", x, MT, x, MT + PH);
    }
    for (int i = 1; i < ny; i++) {
        double y = py(&ay, ay.lo + i * ay.step);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\"/>\n", ML, y, ML + PW, y);
    }
    fprintf(f, "</g>\n<g stroke=\"#333\" stroke-width=\"1\">\n");
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\"/>\n", ML, MT, PW, PH);
    for (int i = 0; i <= nx; i++) {
        double x = px(&ax, ax.lo + i * ax.step);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\"/>\n", x, MT + PH, x, MT + PH + 5);
    }
    for (int i = 0; i <= ny; i++) {
        double y = py(&ay, ay.lo + i * ay.step);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>\n", ML - 5, y, ML, y);
    }
    fprintf(f, "</g>\n<g stroke=\"none\">\n");
    for (int i = 0; i <= nx; i++)
        fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%.0f</text>\n", px(&ax, ax.lo + i * ax.step),
                MT + PH + 19, ax.lo + i * ax.step);
    for (int i = 0; i <= ny; i++)
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" dy=\"0.35em\">%.*f</text>\n", ML - 9,
                py(&ay, ay.lo + i * ay.step), ay.decimals, ay.lo + i * ay.step);
    fprintf(f, "<text x=\"%.0f\" y=\"%d\" text-anchor=\"middle\" font-size=\"13\">step</text>\n", ML + PW / 2, H - 16);
    fprintf(f, "<text transform=\"translate(22 %.0f) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">loss</text>\n",
            MT + PH / 2);
    fprintf(f, "</g>\n");

    static const char *const train_color = "#1f77b4", *const val_color = "#d62728";
    if (train->n) polyline(f, train, &ax, &ay, train_color, 1.5);
    if (val->n) {
        polyline(f, val, &ax, &ay, val_color, 2.0);
        fprintf(f, "<g fill=\"%s\" stroke=\"white\" stroke-width=\"1\">\n", val_color);
        for (size_t i = 0; i < val->n; i++)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\"/>\n", px(&ax, val->p[i].x), py(&ay, val->p[i].y));
        fprintf(f, "</g>\n");
    }

    /* legend, top right (loss curves fall from the top left), with the last
     * training loss and the best validation loss */
    char tlabel[64], vlabel[64];
    double best = INFINITY;
    for (size_t i = 0; i < val->n; i++) best = fmin(best, val->p[i].y);
    snprintf(tlabel, sizeof tlabel, "train loss (last %.4f)", train->n ? train->p[train->n - 1].y : 0.0);
    snprintf(vlabel, sizeof vlabel, "validation loss (best %.4f)", best);
    /* about 7 units per character at font-size 12 */
    size_t chars = train->n ? strlen(tlabel) : 0;
    if (val->n && strlen(vlabel) > chars) chars = strlen(vlabel);
    int rows = (train->n > 0) + (val->n > 0), lw = 58 + 7 * (int)chars, lx = (int)(ML + PW) - lw - 10, ly = MT + 10;
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"white\" fill-opacity=\"0.9\" stroke=\"#bbb\"/>\n",
            lx, ly, lw, 10 + 20 * rows);
    int row = 0;
    if (train->n) {
        int y = ly + 15 + 20 * row++;
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"/>\n", lx + 10, y,
                lx + 38, y, train_color);
        fprintf(f, "<text x=\"%d\" y=\"%d\" dy=\"0.35em\">%s</text>\n", lx + 46, y, tlabel);
    }
    if (val->n) {
        int y = ly + 15 + 20 * row++;
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"/>\n", lx + 10, y,
                lx + 38, y, val_color);
        fprintf(f, "<circle cx=\"%d\" cy=\"%d\" r=\"3.5\" fill=\"%s\" stroke=\"white\"/>\n", lx + 24, y, val_color);
        fprintf(f, "<text x=\"%d\" y=\"%d\" dy=\"0.35em\">%s</text>\n", lx + 46, y, vlabel);
    }
    fprintf(f, "</svg>\n");
}

int plot_metrics_svg(const char *metrics_jsonl, const char *svg_path, const char *title)
{
    if (!metrics_jsonl || !svg_path) {
        fprintf(stderr, "peft: plot: NULL path\n");
        return -1;
    }
    series train = {0}, val = {0};
    int rc = read_metrics(metrics_jsonl, &train, &val);
    if (rc == 0) {
        FILE *f = fopen(svg_path, "w");
        if (!f) {
            fprintf(stderr, "peft: plot: cannot write %s: %s\n", svg_path, strerror(errno));
            rc = -1;
        } else {
            write_svg(f, &train, &val, title ? title : "loss");
            if (ferror(f) | fclose(f)) {
                fprintf(stderr, "peft: plot: cannot write %s\n", svg_path);
                rc = -1;
            }
        }
    }
    free(train.p);
    free(val.p);
    return rc;
}
