/* Data for the classification examples: a small TSV of "label<TAB>text" lines
 * made from two categories of Debian's fortunes package (one file per
 * category, fortunes separated by "%" lines). Plain C; no libpeft here.
 * Uses POSIX mkstemp/fdopen: define _POSIX_C_SOURCE 200809L before any include. */
#ifndef EXAMPLES_FORTUNES_TSV_H
#define EXAMPLES_FORTUNES_TSV_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FORTUNES_DIR "/usr/share/games/fortunes"

/* Append up to `limit` fortunes of `category` to `out` as "category<TAB>text"
 * lines (tabs and newlines inside a fortune become spaces; very short or long
 * ones are skipped). Returns how many were written, -1 if the file is missing. */
static int fortunes_append(FILE *out, const char *category, int limit)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", FORTUNES_DIR, category);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char text[512], line[512];
    size_t len = 0;
    int n = 0;
    while (n < limit) {
        int eof = !fgets(line, sizeof line, f);
        if (eof || !strcmp(line, "%\n")) { /* end of one fortune */
            if (len >= 20 && len < sizeof text - 1) {
                while (len && text[len - 1] == ' ') len--;
                fprintf(out, "%s\t%.*s\n", category, (int)len, text);
                n++;
            }
            len = 0;
            if (eof) break;
            continue;
        }
        for (char *c = line; *c && len < sizeof text - 1; c++) {
            char ch = (*c == '\t' || *c == '\n') ? ' ' : *c;
            if (ch == ' ' && (len == 0 || text[len - 1] == ' ')) continue; /* squeeze runs of spaces */
            text[len++] = ch;
        }
        if (len >= sizeof text - 1) len = sizeof text; /* too long: skipped at its end */
    }
    fclose(f);
    return n;
}

/* Write a temporary TSV with `per_class` fortunes of each of two categories;
 * its path goes to `path` (the caller removes it). Returns 0, or -1 when a
 * category file is missing or the file cannot be written. */
static int fortunes_tsv(const char *cat_a, const char *cat_b, int per_class, char *path, size_t cap)
{
    snprintf(path, cap, "/tmp/peft_example_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    FILE *out = fdopen(fd, "w");
    if (!out) {
        close(fd);
        unlink(path);
        return -1;
    }
    int a = fortunes_append(out, cat_a, per_class), b = fortunes_append(out, cat_b, per_class);
    if (fclose(out) != 0 || a <= 0 || b <= 0) {
        unlink(path);
        return -1;
    }
    return 0;
}

#endif
